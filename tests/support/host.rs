//! Throwaway Debian hosts for system tests: systemd 252 as PID 1 in fresh namespaces on an
//! overlay of this machine's root (see `tests/host/boot.sh`). Everything written inside
//! vanishes when the host is dropped; the host is ended by killing its PID 1 by PID.

use super::{children, wait_until};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BOOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/host/boot.sh");

/// Whether system tests can run here: they need root, and the `.deb` under test, which
/// `tests/run` builds and names in `NODEAPP_DEB`. Elsewhere they are skipped loudly; in CI
/// (`CI` set) a missing requirement fails the test instead.
pub fn deb_under_test() -> Option<PathBuf> {
    let why = if !nix::unistd::geteuid().is_root() {
        "they need root (systemd boots as PID 1 in new namespaces)"
    } else if std::env::var_os("NODEAPP_DEB").is_none() {
        "NODEAPP_DEB does not name the .deb to test; run them with tests/run"
    } else {
        return Some(PathBuf::from(std::env::var_os("NODEAPP_DEB").unwrap()));
    };
    if std::env::var_os("CI").is_some() {
        panic!("system tests cannot run: {why}");
    }
    eprintln!("\n!!! SKIPPED: system test not run: {why} !!!\n");
    None
}

pub struct Host {
    name: String,
    unshare: Child,
    /// systemd, PID 1 inside; its PID out here.
    pub init: u32,
}

impl Host {
    pub fn boot(prefix: &str) -> Host {
        let name = format!("{prefix}-{}", std::process::id());
        let unshare = Command::new("/bin/bash")
            .arg(BOOT)
            .arg(&name)
            // The checkout (the .deb under test, the fixture app) may be under /tmp, which
            // the host replaces with its own.
            .env("NODEAPP_HOST_SHARE", env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start tests/host/boot.sh");
        let mut host = Host {
            name,
            init: 0,
            unshare,
        };
        let pid = host.unshare.id();
        // Until boot.sh has exec'd unshare, its children are its own short-lived commands.
        let is_unshare = || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "unshare")
        };
        assert!(
            wait_until(Duration::from_secs(20), || {
                host.init = if is_unshare() {
                    children(pid).first().copied().unwrap_or(0)
                } else {
                    0
                };
                host.init != 0
            }),
            "host {}: systemd did not start",
            host.name
        );
        let mut state = String::new();
        let up = wait_until(Duration::from_secs(90), || {
            state = host.sh("systemctl is-system-running").stdout_text();
            state == "running" || state == "degraded"
        });
        assert!(up, "host {}: system state {state:?} after 90s", host.name);
        host
    }

    /// Runs a shell script inside the host.
    pub fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-a", "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Runs a shell script inside the host, which must succeed; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "in host {}: `{script}` failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout_text()
    }

    /// Installs the `.deb`, and the fixture app as release `v1` of /srv/api beside a
    /// release `broken` that throws at start; `/srv/api/current` points at `v1`.
    pub fn install_with_releases(&self, deb: &Path) {
        self.ok(&format!("dpkg -i {}", deb.display()));
        self.ok(&format!(
            "mkdir -p /srv/api/releases/v1 /srv/api/releases/broken && \
             cp -r {}/. /srv/api/releases/v1/ && \
             echo \"throw new Error('this release is broken')\" > /srv/api/releases/broken/server.js && \
             ln -s releases/v1 /srv/api/current",
            super::APP_DIR
        ));
    }

    /// `systemctl show -p NAME --value UNIT`.
    pub fn property(&self, unit: &str, name: &str) -> String {
        self.ok(&format!("systemctl show -p {name} --value {unit}"))
    }

    /// PIDs in a unit's cgroup, main process included.
    pub fn unit_pids(&self, unit: &str) -> Vec<u32> {
        let cg = self.property(unit, "ControlGroup");
        if cg.is_empty() {
            return Vec::new();
        }
        // Unified hierarchy first; on hybrid systems systemd tracks in name=systemd.
        let text = self.sh(&format!(
            "cat /sys/fs/cgroup{cg}/cgroup.procs 2>/dev/null || \
             cat /sys/fs/cgroup/systemd{cg}/cgroup.procs 2>/dev/null"
        ));
        text.stdout_text()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// The unit's workers: every PID in its cgroup but the main one (the shim).
    pub fn workers(&self, unit: &str) -> Vec<u32> {
        let main: u32 = self.property(unit, "MainPID").parse().unwrap();
        let mut pids: Vec<u32> = self
            .unit_pids(unit)
            .into_iter()
            .filter(|&p| p != main)
            .collect();
        pids.sort();
        pids
    }

    /// Waits until `unit` is active; panics with its state otherwise.
    pub fn wait_active(&self, unit: &str) {
        let mut state = String::new();
        let active = wait_until(Duration::from_secs(20), || {
            state = self.property(unit, "ActiveState");
            state == "active"
        });
        assert!(
            active,
            "{unit} is {state}, not active:\n{}",
            self.journal(unit)
        );
    }

    /// The host's network namespace, for load generated from out here.
    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.init))
    }

    /// The full journal of a unit.
    pub fn journal(&self, unit: &str) -> String {
        self.ok(&format!("journalctl --no-pager -o short -u {unit}"))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if self.init != 0 {
            super::signal(self.init, nix::sys::signal::Signal::SIGKILL);
        }
        // unshare runs with --kill-child and exits once its child, PID 1, is gone.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
        // The host's cgroups, deepest first, once the kernel has emptied them.
        let name = self.name.clone();
        let gone = wait_until(Duration::from_secs(10), || remove_cgroups(&name));
        if !gone {
            eprintln!("warning: host {name}: cgroups left under /sys/fs/cgroup/*/nodeapp-hosts/");
        }
    }
}

/// Removes the host's cgroup in every hierarchy; true when none is left.
fn remove_cgroups(name: &str) -> bool {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    let mut left = false;
    for root in roots {
        let dir = root.join("nodeapp-hosts").join(name);
        if dir.exists() {
            remove_tree(&dir);
            left |= dir.exists();
        }
    }
    !left
}

pub trait OutputText {
    fn stdout_text(&self) -> String;
}

impl OutputText for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).trim().to_string()
    }
}
