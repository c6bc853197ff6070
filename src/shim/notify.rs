//! The service's state, told to systemd through sd_notify, or to the terminal under
//! `nodeapp run`.

use tracing::{debug, info, warn};

pub struct Notifier {
    systemd: bool,
    last_status: String,
}

impl Notifier {
    pub fn from_env() -> Notifier {
        Notifier {
            systemd: std::env::var_os("NOTIFY_SOCKET").is_some(),
            last_status: String::new(),
        }
    }

    pub fn ready(&mut self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
        self.last_status = status.to_string();
        info!("ready: {status}");
    }

    /// Sends `STATUS=` when it changed; under `nodeapp run` it is logged instead.
    pub fn status(&mut self, status: &str) {
        if status == self.last_status {
            return;
        }
        self.last_status = status.to_string();
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
        self.last_status = status.to_string();
    }

    pub fn stopping(&mut self, status: &str) {
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status(status),
        ]);
        self.last_status = status.to_string();
        info!("{status}");
    }

    fn send(&self, state: &[sd_notify::NotifyState]) {
        if self.systemd {
            if let Err(e) = sd_notify::notify(state) {
                warn!("cannot notify systemd: {e}");
            }
        }
    }
}
