//! nodeapp: run Node.js web services the way systemd wants services run.
//!
//! - [`config`]: `/etc/nodeapp/<name>.toml`, parsed and validated in one place;
//! - [`generator`]: configs into drop-ins for `nodeapp@<name>.socket` / `.service`;
//! - [`shim`]: the service's main process, which runs and watches the `node` workers;
//! - [`cpus`]: what `instances = "max"` means in a cgroup.

pub mod config;
pub mod cpus;
pub mod exit;
pub mod generator;
pub mod logging;
pub mod shim;
