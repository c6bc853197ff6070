//! The shim: the service's main process. It starts one plain `node` worker per slot on the
//! listening sockets, keeps that many running, tells systemd the truth about them, and
//! drains them on stop.
//!
//! One thread and one loop: `poll` over a signalfd and one channel per worker, with a
//! single deadline for every timer. Each turn handles what arrived, then converges the
//! running workers towards the wanted ones, then reports. It never relays request bytes
//! or log lines: workers hold the sockets and write to journald themselves.

mod journal;
pub mod listeners;
mod notify;
mod signals;
mod worker;

pub use worker::WorkerSpec;

use crate::config::{Config, Instances};
use listeners::Listeners;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use notify::Notifier;
use std::io;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};
use worker::{Message, Worker};

/// How long a replaced worker's slot stays empty; crash-loop backoff builds on this.
const RESPAWN_DELAY: Duration = Duration::from_millis(500);
/// How long workers get to drain on stop before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the preload is installed; `NODEAPP_PRELOAD` overrides it.
const INSTALLED_PRELOAD: &str = "/usr/lib/nodeapp/preload.cjs";

/// Runs the app described by `config` on `listeners` until told to stop.
pub fn run(config: &Config, listeners: Listeners) -> io::Result<ExitCode> {
    let signals = signals::block_and_open()?;
    let wanted = match config.instances {
        Instances::Count(n) => n,
        Instances::Max => crate::cpus::available(),
    };
    if !config.cwd.is_dir() {
        return Err(io::Error::other(format!(
            "cwd {} is not a directory (set in {})",
            config.cwd.display(),
            config.path.display()
        )));
    }
    let spec = WorkerSpec {
        config: config.clone(),
        preload: preload_path()?,
        journal: crate::logging::stderr_is_journal(),
        listen_names: serde_json::to_string(&listeners.names()).expect("strings serialize"),
    };
    let supervisor = Supervisor {
        spec,
        listeners,
        slots: (0..wanted).map(|_| Slot::default()).collect(),
        signals,
        notifier: Notifier::from_env(),
        phase: Phase::Starting,
    };
    Ok(supervisor.run())
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

#[derive(Default)]
struct Slot {
    worker: Option<Worker>,
    /// When an empty slot gets a new worker; `None` means now.
    respawn_at: Option<Instant>,
}

enum Phase {
    /// Until every slot has had a listening worker: then `READY=1`.
    Starting,
    Running,
    /// Workers were told to drain; whatever is left at `kill_at` is killed.
    Stopping {
        kill_at: Option<Instant>,
    },
}

struct Supervisor {
    spec: WorkerSpec,
    listeners: Listeners,
    slots: Vec<Slot>,
    signals: SignalFd,
    notifier: Notifier,
    phase: Phase,
}

impl Supervisor {
    fn run(mut self) -> ExitCode {
        info!(
            "starting {} workers of {}: {} {}",
            self.slots.len(),
            self.spec.config.name,
            self.spec.config.node.display(),
            self.spec.config.script.display()
        );
        loop {
            self.kill_overdue_workers();
            self.manage_workers();
            self.report();
            if matches!(self.phase, Phase::Stopping { .. }) && self.live_workers() == 0 {
                break;
            }
            self.wait_and_dispatch();
        }
        info!("all workers stopped");
        ExitCode::SUCCESS
    }

    /// Blocks until a signal, a worker message or the next deadline, and handles them.
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
        let (signal_ready, channels_ready) = {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            let mut owners = Vec::new();
            for (i, slot) in self.slots.iter().enumerate() {
                if let Some(fd) = slot.worker.as_ref().and_then(Worker::channel) {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                    owners.push(i);
                }
            }
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
            let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
            let channels: Vec<usize> = owners
                .into_iter()
                .zip(&fds[1..])
                .filter(|(_, fd)| ready(fd))
                .map(|(i, _)| i)
                .collect();
            (ready(&fds[0]), channels)
        };
        if signal_ready {
            for sig in signals::drain(&self.signals) {
                self.handle_signal(sig);
            }
        }
        for i in channels_ready {
            self.handle_messages(i);
        }
    }

    fn handle_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => self.reap_workers(),
            Signal::SIGTERM | Signal::SIGINT | Signal::SIGQUIT => match self.phase {
                Phase::Stopping { .. } if sig == Signal::SIGINT => {
                    // A second Ctrl-C: the person at the terminal does not want to wait.
                    warn!("{sig} again while stopping: killing the workers now");
                    self.kill_all();
                }
                // Already draining; tools such as timeout(1) send SIGTERM more than once.
                Phase::Stopping { .. } => {}
                _ => self.stop(sig),
            },
            other => info!("ignoring {other}"),
        }
    }

    fn handle_messages(&mut self, i: usize) {
        let Some(worker) = self.slots[i].worker.as_mut() else {
            return;
        };
        for message in worker.read_messages() {
            match message {
                Message::Listening if !worker.ready => {
                    worker.ready = true;
                    info!(
                        "worker {} (pid {}) listening after {} ms",
                        worker.slot,
                        worker.pid,
                        worker.started.elapsed().as_millis()
                    );
                }
                Message::Listening => {}
                Message::AppReady => {
                    info!(
                        "worker {} (pid {}) says it is ready",
                        worker.slot, worker.pid
                    )
                }
            }
        }
    }

    /// Collects every exited worker; a worker that exits on its own gets a replacement.
    fn reap_workers(&mut self) {
        loop {
            let (pid, how) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, format!("exited with status {code}")),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, format!("was killed by {sig}")),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    error!("waitpid: {e}");
                    return;
                }
            };
            let stopping = matches!(self.phase, Phase::Stopping { .. });
            let Some(slot) = self
                .slots
                .iter_mut()
                .find(|s| s.worker.as_ref().is_some_and(|w| w.pid == pid))
            else {
                continue;
            };
            let worker = slot.worker.take().expect("matched above");
            let uptime = worker.started.elapsed().as_secs_f64();
            if stopping {
                info!("worker {} (pid {pid}) {how} after draining", worker.slot);
            } else {
                warn!(
                    "worker {} (pid {pid}) {how} after {uptime:.1}s; replacing it in {} ms",
                    worker.slot,
                    RESPAWN_DELAY.as_millis()
                );
                slot.respawn_at = Some(Instant::now() + RESPAWN_DELAY);
            }
        }
    }

    /// Asks every worker to drain; they are killed if still running after the timeout.
    fn stop(&mut self, sig: Signal) {
        let live = self.live_workers();
        info!("{sig}: stopping {live} workers");
        self.notifier
            .stopping(&format!("stopping: draining {live} workers"));
        self.phase = Phase::Stopping {
            kill_at: Some(Instant::now() + STOP_TIMEOUT),
        };
        for w in self.workers() {
            w.signal(Signal::SIGTERM);
        }
    }

    fn kill_overdue_workers(&mut self) {
        if let Phase::Stopping { kill_at: Some(at) } = self.phase {
            if Instant::now() >= at {
                warn!(
                    "workers still running {}s after SIGTERM: killing them",
                    STOP_TIMEOUT.as_secs()
                );
                self.kill_all();
            }
        }
    }

    fn kill_all(&mut self) {
        for w in self.workers() {
            w.signal(Signal::SIGKILL);
        }
        self.phase = Phase::Stopping { kill_at: None };
    }

    /// Starts a worker in every empty slot whose time has come.
    fn manage_workers(&mut self) {
        if matches!(self.phase, Phase::Stopping { .. }) {
            return;
        }
        let now = Instant::now();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.worker.is_some() || slot.respawn_at.is_some_and(|at| at > now) {
                continue;
            }
            match worker::spawn(&self.spec, i, &self.listeners.fds) {
                Ok(w) => {
                    info!("worker {i} started (pid {})", w.pid);
                    slot.worker = Some(w);
                    slot.respawn_at = None;
                }
                Err(e) => {
                    error!(
                        "worker {i}: {e}; trying again in {} ms",
                        RESPAWN_DELAY.as_millis()
                    );
                    slot.respawn_at = Some(now + RESPAWN_DELAY);
                }
            }
        }
    }

    fn report(&mut self) {
        let wanted = self.slots.len();
        let ready = self.workers().filter(|w| w.ready).count();
        match self.phase {
            Phase::Starting if ready == wanted => {
                self.notifier
                    .ready(&format!("{ready}/{wanted} workers ready"));
                self.phase = Phase::Running;
            }
            Phase::Starting => self
                .notifier
                .status(&format!("starting: {ready}/{wanted} workers ready")),
            Phase::Running => self
                .notifier
                .status(&format!("{ready}/{wanted} workers ready")),
            Phase::Stopping { .. } => {
                let live = self.live_workers();
                self.notifier
                    .status(&format!("stopping: draining {live} workers"))
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let respawn = self
            .slots
            .iter()
            .filter(|s| s.worker.is_none())
            .filter_map(|s| s.respawn_at);
        match self.phase {
            Phase::Stopping { kill_at } => kill_at,
            _ => respawn.min(),
        }
    }

    fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.slots.iter().filter_map(|s| s.worker.as_ref())
    }

    fn live_workers(&self) -> usize {
        self.workers().count()
    }
}
