//! The shim: the service's main process. It starts one plain `node` worker per slot on the
//! listening sockets, keeps that many running, replaces them all on reload, tells systemd
//! the truth about them, and drains them on stop.
//!
//! One thread and one loop: `poll` over a signalfd, the control socket and one channel per
//! worker, with a single deadline for every timer. Each turn handles what arrived, then
//! enforces deadlines, refills empty slots, moves a reload on by one step, and reports. It
//! never relays request bytes or log lines: workers hold the sockets and write to journald
//! themselves.

pub mod control;
mod journal;
pub mod listeners;
pub mod notify;
mod recycle;
mod reload;
mod report;
mod signals;
mod worker;

pub use recycle::resident_bytes;
pub use worker::WorkerSpec;

use crate::config::{format_duration, Config};
use crate::exit;
use listeners::Listeners;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use notify::Notifier;
use reload::Reload;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use worker::{Message, Role, Worker};

/// Where the preload is installed; `NODEAPP_PRELOAD` overrides it.
const INSTALLED_PRELOAD: &str = "/usr/lib/nodeapp/preload.cjs";

/// Runs the app described by `config` on `listeners` until told to stop.
pub fn run(config: &Config, listeners: Listeners) -> io::Result<ExitCode> {
    let signals = signals::block_and_open()?;
    let wanted = config.instances.workers();
    check_cwd(config).map_err(io::Error::other)?;
    let runtime_dir = control::runtime_dir();
    let control = match &runtime_dir {
        Some(dir) => Some(control::Server::open(dir)?),
        None => None,
    };
    let spec = WorkerSpec {
        config: config.clone(),
        preload: preload_path()?,
        journal: crate::logging::stderr_is_journal(),
        addresses: listeners.names(),
    };
    let supervisor = Supervisor {
        spec,
        listeners,
        wanted,
        workers: Vec::new(),
        slots: vec![Slot::default(); wanted],
        signals,
        control,
        notifier: Notifier::from_env(runtime_dir.as_deref()),
        phase: Phase::Starting,
        reload: None,
        queued_reload: None,
        reload_failure: None,
        exit: None,
        notes: Default::default(),
        stop_asked_at: None,
        memory_check_at: config.memory.per_worker.map(|_| Instant::now()),
    };
    Ok(supervisor.run())
}

fn check_cwd(config: &Config) -> Result<(), String> {
    if config.cwd.is_dir() {
        Ok(())
    } else {
        Err(format!(
            "cwd {} is not a directory (set in {})",
            config.cwd.display(),
            config.path.display()
        ))
    }
}

/// The preload every worker loads with `--require`.
fn preload_path() -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os("NODEAPP_PRELOAD") {
        return Ok(p.into());
    }
    let exe_dir = std::env::current_exe()?
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let candidates = [
        exe_dir.join("preload.cjs"),
        PathBuf::from(INSTALLED_PRELOAD),
        // A build run from its source tree (`cargo run -- run ...`).
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src/shim/preload.cjs")),
    ];
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        io::Error::other(format!(
            "the worker preload is missing: {INSTALLED_PRELOAD}"
        ))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Until every slot has had a ready worker: then `READY=1`.
    Starting,
    Running,
    /// Every worker was told to drain; the shim exits when the last one has.
    Stopping,
}

struct Supervisor {
    /// What new workers run; a reload replaces it once it has succeeded.
    spec: WorkerSpec,
    listeners: Listeners,
    /// How many slots there are; slot `i` runs with `NODE_APP_INSTANCE=i`.
    wanted: usize,
    /// Every child still running or not yet reaped, whatever its role.
    workers: Vec<Worker>,
    /// Per slot: when it gets a new worker, and how often it had to.
    slots: Vec<Slot>,
    signals: SignalFd,
    control: Option<control::Server>,
    notifier: Notifier,
    phase: Phase,
    reload: Option<Reload>,
    /// Reloads asked for while one ran or while starting; they run next, as one.
    queued_reload: Option<Vec<control::Client>>,
    /// Why the last reload failed, until one succeeds; shown in the status.
    reload_failure: Option<String>,
    /// Set when the shim gives up: its exit status, and why.
    exit: Option<(u8, String)>,
    /// When resident memory is read next; `None` without `max_memory`.
    memory_check_at: Option<Instant>,
    /// Notes about the app's `listen()` calls already logged: every worker would repeat them.
    notes: std::collections::HashSet<String>,
    /// When a signal asked the shim to stop.
    stop_asked_at: Option<Instant>,
}

/// A stop signal repeated this soon is the same request, not a second Ctrl-C.
const REPEATED_SIGNAL: Duration = Duration::from_secs(1);

/// One place for a worker, numbered from 0 (`NODE_APP_INSTANCE`).
#[derive(Debug, Clone, Default)]
struct Slot {
    /// When an empty slot gets a new worker; `None` means now.
    respawn_at: Option<Instant>,
    /// Workers replaced because they died, not because of a reload.
    restarts: u32,
    /// Failures in a row, each within `restart_reset_after` of its start.
    failures: u32,
    /// Workers replaced for passing `max_memory`.
    recycles: u32,
    /// After a failed replacement, when `max_memory` is enforced on this slot again.
    recycle_retry_at: Option<Instant>,
}

/// What woke `poll`.
enum Source {
    Signals,
    Control,
    Worker(Pid),
}

impl Supervisor {
    fn run(mut self) -> ExitCode {
        info!(
            "starting {} workers of {}: {} {}",
            self.wanted,
            self.spec.config.name,
            self.spec.config.node.display(),
            self.spec.config.script.display()
        );
        loop {
            self.notifier.ping_watchdog();
            self.enforce_deadlines();
            self.recycle_oversized();
            self.fill_slots();
            self.advance_reload();
            self.report();
            if self.phase == Phase::Stopping && self.workers.is_empty() {
                break;
            }
            self.wait_and_dispatch();
        }
        info!("all workers stopped");
        match self.exit {
            Some((code, why)) => {
                error!("exiting with status {code}: {why}");
                ExitCode::from(code)
            }
            None => ExitCode::SUCCESS,
        }
    }

    /// Blocks until a signal, a control request, a worker message or the next deadline,
    /// and handles what arrived.
    fn wait_and_dispatch(&mut self) {
        let timeout = match self.next_deadline() {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                // Round up: waking a millisecond early would spin until the deadline.
                PollTimeout::try_from(ms.saturating_add(1).min(60_000) as i32)
                    .unwrap_or(PollTimeout::MAX)
            }
        };
        let woken: Vec<Source> = {
            let mut sources = vec![(Source::Signals, self.signals.as_fd())];
            if let Some(control) = &self.control {
                sources.extend(control.fds().map(|fd| (Source::Control, fd)));
            }
            for w in &self.workers {
                if let Some(fd) = w.channel() {
                    sources.push((Source::Worker(w.pid), fd));
                }
            }
            let mut fds: Vec<PollFd> = sources
                .iter()
                .map(|(_, fd): &(Source, BorrowedFd)| PollFd::new(*fd, PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return,
                Err(e) => {
                    // Only a bug makes poll fail; sleeping avoids a hot loop meanwhile.
                    error!("poll: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    return;
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            sources
                .into_iter()
                .zip(ready)
                .filter(|(_, ready)| *ready)
                .map(|((source, _), _)| source)
                .collect()
        };
        let mut control_ready = false;
        for source in woken {
            match source {
                Source::Signals => {
                    for sig in signals::drain(&self.signals) {
                        self.handle_signal(sig);
                    }
                }
                Source::Control => control_ready = true,
                Source::Worker(pid) => self.handle_messages(pid),
            }
        }
        if control_ready || self.control.as_ref().and_then(|c| c.deadline()).is_some() {
            self.handle_control();
        }
    }

    fn handle_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => self.reap_workers(),
            Signal::SIGHUP => self.request_reload(None),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => match self.phase {
                // timeout(1) and some terminals deliver one request twice at once.
                Phase::Stopping
                    if self
                        .stop_asked_at
                        .is_some_and(|at| at.elapsed() < REPEATED_SIGNAL) => {}
                Phase::Stopping if sig == Signal::SIGINT => {
                    // A second Ctrl-C: the person at the terminal does not want to wait.
                    warn!("{sig} again while stopping: killing the workers now");
                    self.workers.iter_mut().for_each(Worker::kill);
                }
                // Already draining; tools such as timeout(1) send SIGTERM more than once.
                Phase::Stopping => {}
                _ => self.stop(sig),
            },
            other => info!("ignoring {other}"),
        }
    }

    fn handle_control(&mut self) {
        let Some(control) = self.control.as_mut() else {
            return;
        };
        for (request, client) in control.requests() {
            match request {
                control::Request::Reload => self.request_reload(Some(client)),
                control::Request::Status => client.reply_with(self.status_json()),
            }
        }
    }

    fn handle_messages(&mut self, pid: Pid) {
        let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
            return;
        };
        let worker = &mut self.workers[i];
        let mut promote = false;
        for message in worker.read_messages() {
            if message == Message::AppReady {
                info!("worker {} (pid {pid}) says it is ready", worker.slot);
            }
            if let Message::Note(note) = &message {
                let text = note.describe(&self.spec.config.path);
                if self.notes.len() < 64 && self.notes.insert(text.clone()) {
                    warn!("worker {} (pid {pid}): {text}", worker.slot);
                }
            }
            if worker.hear(&message) {
                info!(
                    "worker {} (pid {pid}) ready after {} ms",
                    worker.slot,
                    worker.started.elapsed().as_millis()
                );
                promote = worker.role == Role::Candidate;
            }
        }
        if promote {
            self.promote(i);
        }
    }

    /// Collects every exited worker; a serving worker that exits gets a replacement.
    fn reap_workers(&mut self) {
        loop {
            // `exited`: the worker ended itself, rather than being killed by a signal.
            let (pid, how, exited) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    (pid, format!("exited with status {code}"), true)
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    (pid, format!("was killed by {sig}"), false)
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!("waitpid: {e}");
                    return;
                }
            };
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let worker = self.workers.swap_remove(i);
            let slot = worker.slot;
            let uptime = worker.started.elapsed().as_secs_f64();
            match worker.role {
                Role::Draining => info!("worker {slot} (pid {pid}) {how} after draining"),
                Role::Candidate => self.fail_candidate(
                    slot,
                    format!(
                        "the new worker {slot} (pid {pid}) {how} after {uptime:.1}s, before \
                         it was ready"
                    ),
                ),
                Role::Serving if self.phase == Phase::Stopping => {
                    info!("worker {slot} (pid {pid}) {how}")
                }
                // An app that exits before it is ready cannot start; retrying it here
                // would only hide that from systemd. A worker killed from outside (the
                // OOM killer, an operator) is replaced like any crash.
                Role::Serving if self.phase == Phase::Starting && exited && !worker.is_ready() => {
                    self.halt(
                        exit::APP_CANNOT_START,
                        format!(
                            "worker {slot} (pid {pid}) {how} after {uptime:.1}s, before it was \
                             ready: the app cannot start"
                        ),
                    );
                }
                Role::Serving => self.schedule_respawn(slot, pid, &how, worker.started),
            }
        }
    }

    /// A serving worker died: its slot gets a new one after the backoff, unless the slot
    /// keeps failing, in which case the shim gives up.
    fn schedule_respawn(&mut self, slot: usize, pid: Pid, how: &str, started: Instant) {
        let policy = self.spec.config.restart;
        let uptime = started.elapsed();
        let Some(s) = self.slots.get_mut(slot) else {
            return;
        };
        s.restarts += 1;
        s.failures = if uptime >= policy.reset_after {
            1
        } else {
            s.failures + 1
        };
        if s.failures >= policy.crash_loop_limit {
            let why = format!(
                "worker {slot} failed {} times in a row, each within {} of its start \
                 (crash_loop_limit); the last (pid {pid}) {how}",
                s.failures,
                format_duration(policy.reset_after)
            );
            self.halt(exit::CRASH_LOOP, why);
            return;
        }
        let delay = policy.delay_after(s.failures);
        s.respawn_at = Some(Instant::now() + delay);
        warn!(
            "worker {slot} (pid {pid}) {how} after {:.1}s; replacing it in {} (failure {} of \
             {} in a row)",
            uptime.as_secs_f64(),
            format_duration(delay),
            s.failures,
            policy.crash_loop_limit
        );
    }

    /// Gives up: drains every worker, then exits with `code`, which tells systemd the
    /// service failed; its `Restart=` and start limits take over (gunicorn's rule).
    fn halt(&mut self, code: u8, why: String) {
        if self.phase == Phase::Stopping {
            return;
        }
        error!("{why}; stopping the service");
        self.begin_stop(&format!("failed: {why}"));
        self.exit = Some((code, why));
    }

    /// Asks every worker to drain; each is killed if still running after `stop_timeout`.
    fn stop(&mut self, sig: Signal) {
        info!("{sig}: stopping {} workers", self.workers.len());
        self.stop_asked_at = Some(Instant::now());
        let live = self.workers.len();
        self.begin_stop(&format!("stopping: draining {live} workers"));
    }

    fn begin_stop(&mut self, status: &str) {
        // Stopping first: a reload cut short must not tell systemd READY=1 on its way out.
        self.phase = Phase::Stopping;
        self.fail_reload("the service is stopping".into());
        if let Some(waiters) = self.queued_reload.take() {
            for w in waiters {
                w.reply(false, "the service is stopping");
            }
        }
        self.notifier.stopping(status);
        self.workers.iter_mut().for_each(Worker::drain);
    }

    /// Kills workers that were not ready in time, or that drained for too long.
    fn enforce_deadlines(&mut self) {
        let now = Instant::now();
        let mut failed_candidate = None;
        let mut cannot_start = None;
        for w in &mut self.workers {
            if w.ready_deadline().is_some_and(|at| at <= now) {
                let waited = w.ready_timeout().as_secs_f64();
                let because = w.not_ready_because(&self.spec.addresses);
                if w.role == Role::Candidate {
                    failed_candidate = Some((
                        w.slot,
                        format!(
                            "the new worker {} (pid {}) was not ready within {waited}s \
                             (ready_timeout): {because}",
                            w.slot, w.pid
                        ),
                    ));
                    w.role = Role::Draining;
                } else {
                    let why = format!(
                        "worker {} (pid {}) not ready within {waited}s (ready_timeout): \
                         {because}",
                        w.slot, w.pid
                    );
                    warn!("{why}: killing it");
                    if self.phase == Phase::Starting {
                        cannot_start = Some(why);
                    }
                }
                w.kill();
            } else if w.hung_deadline().is_some_and(|at| at <= now) {
                warn!(
                    "worker {} (pid {}) sent no heartbeat for {} (heartbeat_timeout): its \
                     event loop is blocked; sending SIGABRT",
                    w.slot,
                    w.pid,
                    format_duration(w.heartbeat_timeout())
                );
                w.abort();
            } else if w.abort_deadline().is_some_and(|at| at <= now) {
                warn!(
                    "worker {} (pid {}) still running {} after SIGABRT: killing it",
                    w.slot,
                    w.pid,
                    format_duration(worker::ABORT_GRACE)
                );
                w.kill();
            } else if w.drain_deadline.is_some_and(|at| at <= now) && !w.killed {
                warn!(
                    "worker {} (pid {}) still running {}s after {} (stop_timeout): killing it",
                    w.slot,
                    w.pid,
                    w.stop_timeout().as_secs_f64(),
                    w.stop_signal()
                );
                w.kill();
            }
        }
        if let Some((slot, why)) = failed_candidate {
            self.fail_candidate(slot, why);
        }
        if let Some(why) = cannot_start {
            self.halt(
                exit::APP_CANNOT_START,
                format!("{why}: the app cannot start"),
            );
        }
    }

    /// Starts a worker in every empty slot whose time has come.
    fn fill_slots(&mut self) {
        if self.phase == Phase::Stopping {
            return;
        }
        let now = Instant::now();
        for slot in 0..self.wanted {
            let due = self.slots[slot].respawn_at.map_or(true, |at| at <= now);
            if !due || !self.needs_worker(slot) {
                continue;
            }
            // A slot that a running reload already replaced runs the new release.
            let spec = match &self.reload {
                Some(r) if r.replaced(slot) => &r.spec,
                _ => &self.spec,
            };
            match worker::spawn(spec, slot, Role::Serving, &self.listeners.fds) {
                Ok(w) => {
                    info!("worker {slot} started (pid {})", w.pid);
                    self.workers.push(w);
                    self.slots[slot].respawn_at = None;
                }
                Err(e) => {
                    let s = &mut self.slots[slot];
                    s.failures += 1;
                    let delay = self.spec.config.restart.delay_after(s.failures);
                    error!(
                        "worker {slot}: {e}; trying again in {}",
                        format_duration(delay)
                    );
                    s.respawn_at = Some(now + delay);
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let respawns = (0..self.wanted)
            .filter(|&slot| self.phase != Phase::Stopping && self.needs_worker(slot))
            .filter_map(|slot| self.slots[slot].respawn_at);
        let workers = self.workers.iter().filter_map(Worker::deadline);
        let control = self.control.as_ref().and_then(|c| c.deadline());
        let watchdog = self.notifier.watchdog_deadline();
        let memory = self.memory_check_deadline();
        respawns
            .chain(workers)
            .chain(control)
            .chain(watchdog)
            .chain(memory)
            .min()
    }

    /// Whether `slot` waits for a new worker: none serves it, and no replacement for it
    /// is starting (that one takes it over once ready).
    fn needs_worker(&self, slot: usize) -> bool {
        self.serving(slot).is_none() && !self.has_candidate(Some(slot))
    }

    /// The worker that holds `slot`, if any.
    fn serving(&self, slot: usize) -> Option<&Worker> {
        self.workers
            .iter()
            .find(|w| w.slot == slot && w.role == Role::Serving)
    }

    fn ready_workers(&self) -> usize {
        (0..self.wanted)
            .filter(|&slot| self.serving(slot).is_some_and(Worker::is_ready))
            .count()
    }
}
