//! What the shim tells others: the status line systemd shows (`STATUS=`, `READY=1`), and
//! the whole picture `nodeapp status` asks for over the control socket.

use super::worker::{Role, Worker};
use super::{Phase, Supervisor};
use serde_json::json;

impl Supervisor {
    /// Tells systemd where things stand: `READY=1` once every slot first has a ready
    /// worker, a `STATUS=` line on every turn.
    pub(super) fn report(&mut self) {
        let ready = self.ready_workers();
        let wanted = self.wanted;
        match self.phase {
            Phase::Starting if ready == wanted => {
                self.notifier
                    .ready(&format!("{ready}/{wanted} workers ready"));
                self.phase = Phase::Running;
            }
            Phase::Starting => self
                .notifier
                .status(&format!("starting: {ready}/{wanted} workers ready")),
            Phase::Running => {
                // Outside a reload, a candidate replaces a worker over max_memory.
                let recycling = self.workers.iter().find(|w| w.role == Role::Candidate);
                let status = match (&self.reload, recycling) {
                    (Some(r), _) => format!("{}; {ready}/{wanted} workers ready", r.status()),
                    (None, Some(w)) => format!(
                        "{}; replacing worker {} (over max_memory)",
                        self.running_status(),
                        w.slot
                    ),
                    (None, None) => self.running_status(),
                };
                self.notifier.status(&status);
            }
            Phase::Stopping => {
                let live = self.workers.len();
                let status = match &self.exit {
                    Some((_, why)) => format!("failed: {why}"),
                    None => format!("stopping: draining {live} workers"),
                };
                self.notifier.status(&status)
            }
        }
    }

    /// The status line outside a reload: `2/2 workers ready`, and why the last reload
    /// failed, if it did.
    pub(super) fn running_status(&self) -> String {
        let ready = self.ready_workers();
        match &self.reload_failure {
            Some(why) => format!(
                "{ready}/{} workers ready; last reload failed: {why}",
                self.wanted
            ),
            None => format!("{ready}/{} workers ready", self.wanted),
        }
    }

    /// What `nodeapp status` shows: the shim's own view of every worker.
    pub(super) fn status_json(&self) -> serde_json::Value {
        let phase = match (self.phase, &self.reload) {
            (Phase::Starting, _) => "starting",
            (Phase::Running, Some(_)) => "reloading",
            (Phase::Running, None) => "running",
            (Phase::Stopping, _) => "stopping",
        };
        let mut workers: Vec<&Worker> = self.workers.iter().collect();
        workers.sort_by_key(|w| (w.slot, w.started));
        let workers: Vec<serde_json::Value> = workers
            .into_iter()
            .map(|w| {
                json!({
                    "slot": w.slot,
                    "pid": w.pid.as_raw(),
                    "role": format!("{:?}", w.role).to_lowercase(),
                    "uptime_ms": w.started.elapsed().as_millis() as u64,
                    "ready_ms": w.ready_since.map(|t| t.elapsed().as_millis() as u64),
                    "restarts": self.slots.get(w.slot).map_or(0, |s| s.restarts),
                    "recycles": self.slots.get(w.slot).map_or(0, |s| s.recycles),
                })
            })
            .collect();
        json!({
            "ok": true,
            "message": phase,
            "app": self.spec.config.name,
            "phase": phase,
            "wanted": self.wanted,
            "ready": self.ready_workers(),
            "workers": workers,
            "last_reload_failure": self.reload_failure,
        })
    }
}
