//! Rolling reload: for each slot in turn, start a worker of the new release beside the old
//! one, wait until it is ready, then drain the old one. The config file is read again
//! first, so a reload also applies edits to `script`, `env`, `instances` and the rest.
//!
//! A new worker that exits, or is not ready within `ready_timeout`, stops the reload there:
//! the workers not yet replaced keep serving, and the reason goes to the journal, the
//! status line and whoever asked. Nothing proceeds on a timeout.

use super::control::Client;
use super::worker::{self, Role};
use super::{check_cwd, Phase, Slot, Supervisor, WorkerSpec};
use crate::config;
use std::time::Instant;
use tracing::{error, info, warn};

pub(super) struct Reload {
    /// What the new workers run.
    pub(super) spec: WorkerSpec,
    /// How many slots the new config wants.
    wanted: usize,
    /// Slots below this one run the new release.
    next: usize,
    started: Instant,
    waiters: Vec<Client>,
}

impl Reload {
    pub(super) fn replaced(&self, slot: usize) -> bool {
        slot < self.next
    }

    pub(super) fn status(&self) -> String {
        format!(
            "reloading: {}/{} workers replaced",
            self.next.min(self.wanted),
            self.wanted
        )
    }
}

impl Supervisor {
    /// A reload was asked for: over the control socket (`waiter` gets the outcome) or by
    /// SIGHUP.
    pub(super) fn request_reload(&mut self, waiter: Option<Client>) {
        if self.phase == Phase::Stopping {
            if let Some(w) = waiter {
                w.reply(false, "the service is stopping");
            }
            return;
        }
        // One at a time; asking again during a reload means "and then once more", so that
        // a release deployed meanwhile is picked up too.
        if self.phase == Phase::Starting || self.reload.is_some() || self.has_candidate(None) {
            info!("reload queued until the current start or reload is done");
            self.queued_reload
                .get_or_insert_with(Vec::new)
                .extend(waiter);
            return;
        }
        self.begin_reload(waiter.into_iter().collect());
    }

    fn begin_reload(&mut self, waiters: Vec<Client>) {
        let path = self.spec.config.path.clone();
        info!("reloading: reading {} again", path.display());
        self.notifier.reloading("reloading: reading the config");
        let config = match config::load(&path) {
            Ok(c) => c,
            Err(errors) => {
                for e in &errors.0 {
                    error!("{e}");
                }
                let why = format!("invalid config: {}", errors.0[0]);
                return self.end_failed_reload(why, waiters, 0);
            }
        };
        if let Err(why) = check_cwd(&config) {
            return self.end_failed_reload(why, waiters, 0);
        }
        if config.listen != self.spec.config.listen {
            warn!(
                "listen changed in {}: the sockets belong to nodeapp@{name}.socket; they \
                 change after `systemctl daemon-reload` and `systemctl restart \
                 nodeapp@{name}.socket`",
                path.display(),
                name = config.name
            );
        }
        let wanted = config.instances.workers();
        self.reload = Some(Reload {
            spec: WorkerSpec {
                config,
                ..self.spec.clone()
            },
            wanted,
            next: 0,
            started: Instant::now(),
            waiters,
        });
    }

    /// One step of the reload under way, if any: start the next new worker, or finish.
    pub(super) fn advance_reload(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let Some(reload) = &self.reload else {
            // A worker replaced for its memory use finishes first.
            if self.has_candidate(None) {
                return;
            }
            if let Some(waiters) = self.queued_reload.take() {
                self.begin_reload(waiters);
            }
            return;
        };
        if self.workers.iter().any(|w| w.role == Role::Candidate) {
            return; // waiting for it to be ready
        }
        if reload.next >= reload.wanted {
            return self.finish_reload();
        }
        let slot = reload.next;
        match worker::spawn(&reload.spec, slot, Role::Candidate, &self.listeners.fds) {
            Ok(w) => {
                info!("reloading: new worker {slot} started (pid {})", w.pid);
                self.workers.push(w);
            }
            Err(e) => self.fail_reload(format!("cannot start the new worker {slot}: {e}")),
        }
    }

    /// The candidate at `index` is ready: it takes over its slot, the old worker drains.
    pub(super) fn promote(&mut self, index: usize) {
        let slot = self.workers[index].slot;
        let new_pid = self.workers[index].pid;
        for old in self
            .workers
            .iter_mut()
            .filter(|w| w.slot == slot && w.role == Role::Serving)
        {
            info!(
                "worker {slot}: pid {new_pid} took over; draining pid {}",
                old.pid
            );
            old.drain();
        }
        self.workers[index].role = Role::Serving;
        if slot >= self.wanted {
            // The new config wants more workers: the slot exists from now on.
            self.wanted = slot + 1;
            self.slots.resize(self.wanted, Slot::default());
        }
        self.slots[slot].respawn_at = None;
        if let Some(r) = self.reload.as_mut() {
            r.next = slot + 1;
        }
    }

    fn finish_reload(&mut self) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        // The new config may want fewer workers than before.
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.slot >= reload.wanted && w.role == Role::Serving)
        {
            info!(
                "worker {} (pid {}) is no longer wanted: draining it",
                w.slot, w.pid
            );
            w.drain();
        }
        self.wanted = reload.wanted;
        self.slots.resize(reload.wanted, Slot::default());
        // Every slot runs a fresh worker of the release just loaded: crashes of the ones
        // before it are no longer "in a row".
        for s in &mut self.slots {
            s.failures = 0;
        }
        self.spec = reload.spec;
        self.reload_failure = None;
        let message = format!(
            "reloaded: {} workers replaced in {:.1}s",
            reload.wanted,
            reload.started.elapsed().as_secs_f64()
        );
        info!("{message}");
        let status = self.running_status();
        self.notifier.ready(&status);
        for w in reload.waiters {
            w.reply(true, &message);
        }
    }

    /// A candidate exited or was not ready in time: the reload under way fails, or
    /// without one, the replacement of an oversized worker.
    pub(super) fn fail_candidate(&mut self, slot: usize, why: String) {
        if self.reload.is_some() {
            self.fail_reload(why);
        } else {
            self.fail_recycle(slot, why);
        }
    }

    /// Stops the reload under way, if any: its candidate is killed, the old workers that
    /// were not replaced keep serving.
    pub(super) fn fail_reload(&mut self, why: String) {
        let Some(reload) = self.reload.take() else {
            return;
        };
        for w in self
            .workers
            .iter_mut()
            .filter(|w| w.role == Role::Candidate)
        {
            w.role = Role::Draining;
            w.kill();
        }
        self.end_failed_reload(why, reload.waiters, reload.next);
    }

    fn end_failed_reload(&mut self, why: String, waiters: Vec<Client>, replaced: usize) {
        let outcome = if replaced == 0 {
            "the old workers keep serving".to_string()
        } else {
            format!("{replaced} worker(s) already run the new release, the others the old one")
        };
        let message = format!("reload failed: {why}; {outcome}");
        error!("{message}");
        self.reload_failure = Some(why);
        if self.phase != Phase::Stopping {
            let status = self.running_status();
            // READY=1 ends the reload for systemd; the failure itself reaches it through
            // ExecReload's exit status.
            self.notifier.ready(&status);
        }
        for w in waiters {
            w.reply(false, &message);
        }
    }
}
