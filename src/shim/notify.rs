//! The service's state, told to systemd through sd_notify, or to the terminal under
//! `nodeapp run`. The status line is also kept in `$RUNTIME_DIRECTORY/status`: `nodeapp ls`
//! reads it there for every app at once instead of asking systemd for each.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// The status file's name in the runtime directory.
pub const STATUS_FILE: &str = "status";

pub struct Notifier {
    systemd: bool,
    last_status: String,
    status_file: Option<PathBuf>,
    /// With `WatchdogSec=`: how often to ping, and when next.
    watchdog: Option<(Duration, Instant)>,
}

impl Notifier {
    pub fn from_env(runtime_dir: Option<&Path>) -> Notifier {
        Notifier {
            systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
            last_status: String::new(),
            status_file: runtime_dir.map(|d| d.join(STATUS_FILE)),
            // Twice per period, as sd_watchdog_enabled(3) advises.
            watchdog: sd_notify::watchdog_enabled().map(|period| (period / 2, Instant::now())),
        }
    }

    /// `WATCHDOG=1` when one is due. Called from the main loop only, so the pings stop
    /// when the loop does, and systemd then aborts and restarts the service.
    pub fn ping_watchdog(&mut self) {
        let Some((every, next)) = self.watchdog else {
            return;
        };
        let now = Instant::now();
        if now >= next {
            self.send(&[sd_notify::NotifyState::Watchdog]);
            self.watchdog = Some((every, now + every));
        }
    }

    /// When the next watchdog ping is due, for the main loop's wait.
    pub fn watchdog_deadline(&self) -> Option<Instant> {
        self.watchdog.map(|(_, next)| next)
    }

    pub fn ready(&mut self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
        self.remember(status);
        info!("ready: {status}");
    }

    /// Sends `STATUS=` when it changed; under `nodeapp run` it is logged instead.
    pub fn status(&mut self, status: &str) {
        if status == self.last_status {
            return;
        }
        self.remember(status);
        if self.systemd {
            self.send(&[sd_notify::NotifyState::Status(status)]);
        } else {
            // Each step is already logged where it happens; the summary adds nothing.
            debug!("{status}");
        }
    }

    /// `RELOADING=1` with the `MONOTONIC_USEC=` that newer systemd requires alongside it.
    pub fn reloading(&mut self, status: &str) {
        let mut state = vec![
            sd_notify::NotifyState::Reloading,
            sd_notify::NotifyState::Status(status),
        ];
        state.extend(sd_notify::NotifyState::monotonic_usec_now().ok());
        self.send(&state);
        self.remember(status);
    }

    pub fn stopping(&mut self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status(status),
        ]);
        self.remember(status);
        info!("{status}");
    }

    /// Keeps the status line, here and in the status file (replaced whole, so a reader
    /// never sees half a line).
    fn remember(&mut self, status: &str) {
        self.last_status = status.to_string();
        let Some(path) = &self.status_file else {
            return;
        };
        let tmp = path.with_extension("new");
        let written =
            std::fs::write(&tmp, format!("{status}\n")).and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            debug!("cannot write {}: {e}", path.display());
        }
    }

    fn send(&self, state: &[sd_notify::NotifyState]) {
        if self.systemd {
            if let Err(e) = sd_notify::notify(state) {
                warn!("cannot notify systemd: {e}");
            }
        }
    }
}
