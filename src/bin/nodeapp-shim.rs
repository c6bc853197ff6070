//! `nodeapp-shim <name>`: the main process of `nodeapp@<name>.service`.
//!
//! Runs the app configured in `/etc/nodeapp/<name>.toml` on the sockets systemd passed.

use nodeapp::{config, exit, logging, shim};
use std::process::ExitCode;
use tracing::error;

fn main() -> ExitCode {
    // First, while the environment is as systemd made it: this reads and clears
    // LISTEN_PID/LISTEN_FDS so that workers do not inherit them.
    let fds = listenfd::ListenFd::from_env();
    logging::init("nodeapp-shim");

    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name] = args.as_slice() else {
        eprintln!("usage: nodeapp-shim NAME   (runs /etc/nodeapp/NAME.toml; started by nodeapp@NAME.service)");
        return ExitCode::from(exit::USAGE);
    };
    if let Err(why) = config::validate_name(name) {
        error!("{why}");
        return ExitCode::from(exit::USAGE);
    }
    let path = config::config_dir().join(format!("{name}.toml"));
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                error!("{e}");
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
                "invalid config: {}",
                errors.0[0]
            ))]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let result = shim::listeners::from_systemd(fds).and_then(|l| shim::run(&config, l));
    match result {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&e.to_string())]);
            ExitCode::from(exit::OS_ERROR)
        }
    }
}
