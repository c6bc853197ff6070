//! Memory recycling. A worker whose resident memory passes `max_memory` is replaced the way
//! a reload replaces one: a new worker for its slot starts first, and only once that one is
//! ready is the old one drained. A leak then costs no request, and the kernel's cgroup
//! limit (`memory_max`) stays a backstop that should never fire.
//!
//! One replacement at a time, and never beside a reload: both put a candidate in a slot.

use super::worker::{self, Role};
use super::{Phase, Supervisor};
use crate::config::format_size;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How often resident memory is read: one small /proc read per worker.
pub(super) const CHECK_EVERY: Duration = Duration::from_secs(1);

/// After a replacement failed, its slot is left alone this long; the old worker serves.
const RETRY_AFTER: Duration = Duration::from_secs(30);

impl Supervisor {
    /// Starts a replacement for the first ready worker that is over `max_memory`.
    pub(super) fn recycle_oversized(&mut self) {
        let Some(limit) = self.spec.config.memory.per_worker else {
            return;
        };
        let now = Instant::now();
        if self.memory_check_at.is_some_and(|at| at > now) {
            return;
        }
        self.memory_check_at = Some(now + CHECK_EVERY);
        if self.phase != Phase::Running
            || self.reload.is_some()
            || self.queued_reload.is_some()
            || self.has_candidate(None)
        {
            return;
        }
        for slot in 0..self.wanted {
            if self.slots[slot].recycle_retry_at.is_some_and(|at| at > now) {
                continue;
            }
            let Some(old) = self.serving(slot).filter(|w| w.is_ready()) else {
                continue;
            };
            let Some(rss) = resident_bytes(old.pid.as_raw() as u32) else {
                continue;
            };
            if rss <= limit {
                continue;
            }
            warn!(
                "worker {slot} (pid {}) uses {} MiB, over max_memory ({}): starting its \
                 replacement",
                old.pid,
                rss >> 20,
                format_size(limit)
            );
            match worker::spawn(&self.spec, slot, Role::Candidate, &self.listeners.fds) {
                Ok(new) => {
                    info!("worker {slot}: replacement started (pid {})", new.pid);
                    self.slots[slot].recycles += 1;
                    self.workers.push(new);
                }
                Err(e) => self.fail_recycle(slot, format!("cannot start it: {e}")),
            }
            return;
        }
    }

    /// The replacement for an oversized worker exited or was not ready in time: the old
    /// worker keeps serving, and its slot is tried again later.
    pub(super) fn fail_recycle(&mut self, slot: usize, why: String) {
        error!(
            "replacing worker {slot} (over max_memory) failed: {why}; it keeps serving, next \
             try in {}s",
            RETRY_AFTER.as_secs()
        );
        if let Some(s) = self.slots.get_mut(slot) {
            s.recycle_retry_at = Some(Instant::now() + RETRY_AFTER);
        }
    }

    /// When memory is read next, if `max_memory` is set and the service is running.
    pub(super) fn memory_check_deadline(&self) -> Option<Instant> {
        self.memory_check_at
            .filter(|_| self.phase == Phase::Running)
    }

    /// Whether a candidate is starting, for `slot` or, with `None`, for any slot.
    pub(super) fn has_candidate(&self, slot: Option<usize>) -> bool {
        self.workers
            .iter()
            .any(|w| w.role == Role::Candidate && slot.map_or(true, |s| s == w.slot))
    }
}

/// A process's resident set size (what `VmRSS` says), from /proc/PID/statm in pages.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    Some(pages * page_size)
}
