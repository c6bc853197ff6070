//! An app under `nodeapp run` (the shim without systemd): started from a config text,
//! asked for its status and reloaded over its control socket as `ExecReload=` does, and
//! stopped with a signal. Its output goes to a log file the test can read.

use super::{wait_until, Proc};
use nodeapp::shim::control::{self, Request};
use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

const SHIM: &str = env!("CARGO_BIN_EXE_nodeapp-shim");
const NODEAPP: &str = env!("CARGO_BIN_EXE_nodeapp");

/// A loopback address no one listens on, below Linux's ephemeral range (32768-60999): a
/// port from that range could become a client's local port under load before the app
/// binds it.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let span = 32768 - 20000;
    let start = (std::process::id() % span) as u16;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 20000 + (start.wrapping_add(n.wrapping_mul(7919)) % span as u16);
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

pub struct Running {
    pub dir: tempfile::TempDir,
    pub run: Proc,
    pub name: String,
}

impl Running {
    /// Writes `<dir>/<name>.toml` with `config` and runs it until every worker is ready.
    pub fn start(name: &str, config: &str) -> Running {
        Running::start_with(name, |_| config.to_owned())
    }

    /// As [`Running::start`], with the config made from the app's directory.
    pub fn start_with(name: &str, config: impl FnOnce(&Path) -> String) -> Running {
        Running::try_start(name, config, Duration::from_secs(30))
            .unwrap_or_else(|(status, log)| panic!("{name} not ready: {status}\n{log}"))
    }

    /// As [`Running::start_with`]; on failure, the last status and the log.
    pub fn try_start(
        name: &str,
        config: impl FnOnce(&Path) -> String,
        timeout: Duration,
    ) -> Result<Running, (serde_json::Value, String)> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, config(dir.path())).unwrap();
        let log = std::fs::File::create(dir.path().join("log")).unwrap();
        let mut cmd = Command::new(NODEAPP);
        cmd.arg("run")
            .arg(&file)
            .env("RUNTIME_DIRECTORY", dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let mut app = Running {
            run: Proc::spawn(&mut cmd),
            dir,
            name: name.into(),
        };
        let ready = wait_until(timeout, || {
            let s = app.status();
            let exited = app.run.child.try_wait().ok().flatten().is_some();
            exited || (s["phase"] == "running" && s["ready"] == s["wanted"])
        }) && app.run.child.try_wait().ok().flatten().is_none();
        app.run.track_children();
        if ready {
            Ok(app)
        } else {
            Err((app.status(), app.log()))
        }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Everything the shim and its workers wrote so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("log")).unwrap_or_default()
    }

    fn control(&self) -> PathBuf {
        self.path("control")
    }

    /// The shim's status, or `null` while its control socket does not answer.
    pub fn status(&self) -> serde_json::Value {
        control::send(&self.control(), Request::Status)
            .map(|r| r.body)
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn serving_pids(&self) -> BTreeSet<u32> {
        self.status()["workers"]
            .as_array()
            .map(|ws| {
                ws.iter()
                    .filter(|w| w["role"] == "serving")
                    .filter_map(|w| w["pid"].as_u64())
                    .map(|p| p as u32)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// What `ExecReload=` runs: blocks until the reload is done or failed.
    pub fn reload(&mut self) -> Output {
        let out = Command::new(SHIM)
            .args(["--reload", &self.name])
            .env("RUNTIME_DIRECTORY", self.dir.path())
            .output()
            .unwrap();
        self.run.track_children();
        out
    }

    /// How each of `pids` ended after draining, as the shim logged it ("exited with status
    /// 0", "was killed by SIGTERM"), once all of them have, within `timeout`.
    pub fn drained(&self, pids: &BTreeSet<u32>, timeout: Duration) -> Vec<String> {
        let ends = || -> Vec<String> {
            let log = self.log();
            pids.iter()
                .filter_map(|p| {
                    log.lines().find_map(|l| {
                        l.split_once(&format!("(pid {p}) "))
                            .and_then(|(_, rest)| rest.strip_suffix(" after draining"))
                            .map(str::to_owned)
                    })
                })
                .collect()
        };
        wait_until(timeout, || ends().len() == pids.len());
        let got = ends();
        assert_eq!(
            got.len(),
            pids.len(),
            "{pids:?} not all drained within {timeout:?}:\n{}",
            self.log()
        );
        got
    }

    /// Sends the shim `sig` and waits for it to exit.
    pub fn stop(&mut self, sig: nix::sys::signal::Signal, timeout: Duration) -> ExitStatus {
        self.run.track_children();
        super::signal(self.run.pid, sig);
        self.run
            .wait_timeout(timeout)
            .unwrap_or_else(|| panic!("still running {timeout:?} after {sig}:\n{}", self.log()))
    }
}

/// The lines of `file`, or none if it does not exist.
pub fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}
