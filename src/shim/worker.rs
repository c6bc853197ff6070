//! One worker: a plain `node` process (never a cluster worker) that inherits the listening
//! sockets as fds 3.. and talks to the shim over Node's own IPC channel.

use super::journal::JournalStreams;
use crate::config::Config;
use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What every worker of an app runs: the app's config, and what the shim adds to it.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    pub config: Config,
    pub preload: PathBuf,
    /// Connect each worker's stdout/stderr to journald itself (under systemd).
    pub journal: bool,
    /// What each listening socket is bound to (see `Listeners::names`).
    pub addresses: Vec<String>,
}

/// Variables of the shim's own environment that describe the shim, not the worker.
const NOT_INHERITED: &[&str] = &[
    "NOTIFY_SOCKET",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "WATCHDOG_PID",
    "WATCHDOG_USEC",
    "JOURNAL_STREAM",
];

/// What a worker says on its channel.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    /// The preload: one inherited socket (named as in `Listeners::names`) is served.
    Serving(String),
    /// The preload: every inherited socket is served.
    Listening,
    /// An app ported from PM2 called `process.send('ready')`.
    AppReady,
    /// The preload: the event loop ran its timer, so it is not blocked.
    Heartbeat,
    /// The preload saw the app listen in a way worth a journal line.
    Note(Note),
}

/// How the app's `listen()` calls met the inherited sockets, when not one to one.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    /// A server asked for an address that no socket has, and was given the unclaimed ones.
    Fallback {
        asked: String,
        addresses: Vec<String>,
    },
    /// A server asked for an address outside `listen`, and it was in use.
    AddressInUse { asked: String },
    /// A server asked for a socket that an earlier server of the app was given by fallback.
    Taken {
        asked: String,
        address: String,
        by: String,
    },
}

impl Note {
    /// The note in words, with the fix where there is one.
    pub fn describe(&self, config: &std::path::Path) -> String {
        let config = config.display();
        match self {
            Note::Fallback { asked, addresses } => format!(
                "the app listens on {asked}, which matches no address in listen ({config}); its \
                 server serves {} instead",
                addresses.join(", ")
            ),
            Note::AddressInUse { asked } => format!(
                "the app cannot listen on {asked}: the address is in use, probably by another \
                 worker of this app. Only addresses in listen are shared by every worker: add \
                 {asked} to listen in {config}, or run this server with instances = 1"
            ),
            Note::Taken { asked, address, by } => format!(
                "the app listens on {asked}, but {address} was given to its server that listened \
                 first on {by}, which matches no address in listen; add {by} to listen in \
                 {config}"
            ),
        }
    }
}

/// What a worker is there for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds its slot: serves, and is replaced if it dies.
    Serving,
    /// Started by a reload to take over its slot once it is ready.
    Candidate,
    /// Told to drain; killed if still running at its deadline.
    Draining,
}

pub struct Worker {
    pub slot: usize,
    pub pid: Pid,
    pub role: Role,
    pub started: Instant,
    /// When it became ready: its sockets listen, and with `wait_ready` the app said so.
    pub ready_since: Option<Instant>,
    /// The inherited sockets its app serves so far; all of them once `listening`.
    pub serving: Vec<String>,
    listening: bool,
    app_ready: bool,
    /// When a draining worker is killed.
    pub drain_deadline: Option<Instant>,
    /// SIGKILL was sent; only its exit is left to wait for.
    pub killed: bool,
    /// When the worker last showed that its event loop runs (any message counts).
    last_beat: Instant,
    heartbeat_timeout: Duration,
    /// When SIGABRT was sent to a hung worker; SIGKILL follows after `ABORT_GRACE`.
    aborted_at: Option<Instant>,
    wait_ready: bool,
    ready_timeout: Duration,
    stop_signal: Signal,
    stop_timeout: Duration,
    channel: Option<UnixStream>,
    pending: Vec<u8>,
}

/// How long a hung worker has, after SIGABRT, to write its core and exit.
pub const ABORT_GRACE: Duration = Duration::from_secs(5);

/// A line longer than this is not one of ours; it is dropped rather than buffered.
const MAX_MESSAGE: usize = 64 * 1024;

/// More addresses than a config can name are not kept.
const MAX_SOCKETS: usize = 64;

pub fn spawn(
    spec: &WorkerSpec,
    slot: usize,
    role: Role,
    listeners: &[OwnedFd],
) -> io::Result<Worker> {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;

    // The child's fd layout: listening sockets at 3.., its channel end right after.
    let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(theirs.as_raw_fd());
    let channel_fd = 3 + listeners.len();
    let journal = spec
        .journal
        .then(|| JournalStreams::new(&format!("{}/{slot}", spec.config.name)))
        .flatten();
    let parent = nix::unistd::getpid();

    let mut cmd = Command::new(&spec.config.node);
    if let Some(mib) = spec.config.heap_limit_mib() {
        cmd.arg(format!("--max-old-space-size={mib}"));
    }
    cmd.args(&spec.config.node_args)
        .arg("--require")
        .arg(&spec.preload)
        .arg(&spec.config.script)
        .args(&spec.config.args)
        .current_dir(&spec.config.cwd)
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C at the terminal reaches the shim alone, which
        // then drains the workers instead of them dying mid-request.
        .process_group(0);
    for var in NOT_INHERITED {
        cmd.env_remove(var);
    }
    cmd.envs(&spec.config.env)
        .env("NODE_APP_INSTANCE", slot.to_string())
        .env("NODEAPP_LISTEN_FDS", listeners.len().to_string())
        .env(
            "NODEAPP_LISTEN_NAMES",
            serde_json::to_string(&spec.addresses).expect("strings serialize"),
        )
        .env("NODEAPP_STOP_SIGNAL", spec.config.stop_signal.as_str())
        // A few beats per timeout, so that one late timer does not look like a hang.
        .env(
            "NODEAPP_HEARTBEAT_MS",
            (spec.config.heartbeat_timeout.as_millis() / 4)
                .max(50)
                .to_string(),
        )
        .env("NODE_CHANNEL_FD", channel_fd.to_string())
        .env("NODE_CHANNEL_SERIALIZATION_MODE", "json");

    // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
    // calls; `sources` and `journal` were allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            // Workers must not outlive a shim that was killed outright. The shim is
            // single-threaded, so the parent this is tied to is the shim itself.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                || libc::getppid() != parent.as_raw()
            {
                return Err(io::Error::other("the shim went away during spawn"));
            }
            place_fds(&mut sources)?;
            if let Some(j) = &journal {
                j.connect_in_child();
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot start {}: {e}", spec.config.node.display()),
        )
    })?;
    drop(theirs);
    Ok(Worker {
        slot,
        pid: Pid::from_raw(child.id() as i32),
        role,
        started: Instant::now(),
        ready_since: None,
        serving: Vec::new(),
        listening: false,
        app_ready: false,
        drain_deadline: None,
        killed: false,
        last_beat: Instant::now(),
        heartbeat_timeout: spec.config.heartbeat_timeout,
        aborted_at: None,
        wait_ready: spec.config.wait_ready,
        ready_timeout: spec.config.ready_timeout,
        stop_signal: spec.config.stop_signal,
        stop_timeout: spec.config.stop_timeout,
        channel: Some(ours),
        pending: Vec::new(),
    })
}

/// Moves `sources[i]` to fd `3 + i`, without close-on-exec, in the child. Everything is
/// first moved above the target range, so that no source is overwritten before it moves.
fn place_fds(sources: &mut [RawFd]) -> io::Result<()> {
    let above = (3 + sources.len()).max(64) as libc::c_int;
    for fd in sources.iter_mut() {
        // SAFETY: fcntl and dup2 on fds we own, between fork and exec.
        let moved = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, above) };
        if moved < 0 {
            return Err(io::Error::last_os_error());
        }
        *fd = moved;
    }
    for (i, &fd) in sources.iter().enumerate() {
        let target = 3 + i as libc::c_int;
        // SAFETY: as above. dup2 leaves the new fd without close-on-exec; the moved copy
        // keeps it and vanishes at exec.
        if unsafe { libc::dup2(fd, target) } != target {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

impl Worker {
    pub fn channel(&self) -> Option<BorrowedFd<'_>> {
        self.channel.as_ref().map(AsFd::as_fd)
    }

    /// Reads what the worker has sent. When the worker closes its end the channel is
    /// dropped; the worker's exit is learned from SIGCHLD, not from here.
    pub fn read_messages(&mut self) -> Vec<Message> {
        let Some(stream) = self.channel.as_mut() else {
            return Vec::new();
        };
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => {
                    self.channel = None;
                    break;
                }
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.channel = None;
                    break;
                }
            }
        }
        let mut out = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            if let Some(m) = parse_message(&line[..line.len() - 1]) {
                out.push(m);
            }
        }
        if self.pending.len() > MAX_MESSAGE {
            self.pending.clear();
        }
        out
    }

    pub fn is_ready(&self) -> bool {
        self.ready_since.is_some()
    }

    /// Takes in what the worker said; true if that made it ready. It is ready once every
    /// inherited socket is served, and with `wait_ready` once the app also said so.
    pub fn hear(&mut self, message: &Message) -> bool {
        self.last_beat = Instant::now();
        match message {
            Message::Serving(address) => {
                if !self.serving.contains(address) && self.serving.len() < MAX_SOCKETS {
                    self.serving.push(address.clone());
                }
            }
            Message::Listening => self.listening = true,
            Message::AppReady => self.app_ready = true,
            Message::Heartbeat | Message::Note(_) => {}
        }
        let ready = self.listening && (self.app_ready || !self.wait_ready);
        if ready && self.ready_since.is_none() {
            self.ready_since = Some(Instant::now());
            return true;
        }
        false
    }

    /// What it still lacks to be ready, in words, for the `ready_timeout` message.
    pub fn not_ready_because(&self, addresses: &[String]) -> String {
        let missing: Vec<&str> = addresses
            .iter()
            .filter(|a| !self.serving.contains(a))
            .map(String::as_str)
            .collect();
        if !self.listening && !missing.is_empty() {
            let serves = if self.serving.is_empty() {
                "none of them".to_string()
            } else {
                format!("only {}", self.serving.join(", "))
            };
            format!(
                "no server of the app listens on {} (of the addresses in listen it serves \
                 {serves})",
                missing.join(", ")
            )
        } else if self.wait_ready && !self.app_ready {
            "the app never called process.send('ready') (wait_ready)".into()
        } else {
            "it did not start listening".into()
        }
    }

    /// When it will be killed for not being ready; `None` once ready or killed.
    pub fn ready_deadline(&self) -> Option<Instant> {
        (self.ready_since.is_none() && !self.killed && self.role != Role::Draining)
            .then(|| self.started + self.ready_timeout)
    }

    pub fn ready_timeout(&self) -> Duration {
        self.ready_timeout
    }

    /// Asks it to drain with its stop signal; it is killed at `stop_timeout` from now.
    pub fn drain(&mut self) {
        if self.role == Role::Draining {
            return;
        }
        self.role = Role::Draining;
        self.drain_deadline = Some(Instant::now() + self.stop_timeout);
        self.signal(self.stop_signal);
    }

    pub fn stop_signal(&self) -> Signal {
        self.stop_signal
    }

    pub fn stop_timeout(&self) -> Duration {
        self.stop_timeout
    }

    pub fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            self.signal(Signal::SIGKILL);
        }
    }

    /// The next moment something must be done about this worker, if any.
    /// When a ready worker that has stopped beating counts as hung; `None` before it is
    /// ready (`ready_timeout` covers that), while it drains (`stop_timeout` does), and
    /// once it was aborted.
    pub fn hung_deadline(&self) -> Option<Instant> {
        let since = self.ready_since?.max(self.last_beat);
        (self.role != Role::Draining && !self.killed && self.aborted_at.is_none())
            .then(|| since + self.heartbeat_timeout)
    }

    /// When an aborted worker that has not exited is killed.
    pub fn abort_deadline(&self) -> Option<Instant> {
        self.aborted_at
            .filter(|_| !self.killed)
            .map(|at| at + ABORT_GRACE)
    }

    pub fn heartbeat_timeout(&self) -> Duration {
        self.heartbeat_timeout
    }

    /// SIGABRT to a hung worker: Node dies at once and leaves a core to debug with.
    pub fn abort(&mut self) {
        self.signal(Signal::SIGABRT);
        self.aborted_at = Some(Instant::now());
    }

    pub fn deadline(&self) -> Option<Instant> {
        if self.killed {
            return None;
        }
        [
            self.ready_deadline(),
            self.drain_deadline,
            self.hung_deadline(),
            self.abort_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn signal(&self, sig: Signal) {
        // ESRCH: it exited and awaits reaping; nothing to do.
        let _ = nix::sys::signal::kill(self.pid, sig);
    }
}

/// Node's IPC channel in "json" mode carries one JSON value per line.
fn parse_message(line: &[u8]) -> Option<Message> {
    let value: serde_json::Value = serde_json::from_slice(line).ok()?;
    let o = match &value {
        serde_json::Value::String(s) if s == "ready" => return Some(Message::AppReady),
        serde_json::Value::Object(o) => o,
        _ => return None,
    };
    let text = |key: &str| o.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    Some(match o.get("nodeapp")?.as_str()? {
        "listening" => Message::Listening,
        "heartbeat" => Message::Heartbeat,
        "serving" => Message::Serving(text("address")?),
        "fallback" => Message::Note(Note::Fallback {
            asked: text("asked")?,
            addresses: o
                .get("addresses")?
                .as_array()?
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
        }),
        "addrinuse" => Message::Note(Note::AddressInUse {
            asked: text("asked")?,
        }),
        "taken" => Message::Note(Note::Taken {
            asked: text("asked")?,
            address: text("address")?,
            by: text("by")?,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_from_node_ipc_lines() {
        assert_eq!(
            parse_message(br#"{"nodeapp":"listening","pid":7}"#),
            Some(Message::Listening)
        );
        assert_eq!(parse_message(br#""ready""#), Some(Message::AppReady));
        assert_eq!(
            parse_message(br#"{"nodeapp":"serving","address":"127.0.0.1:3000"}"#),
            Some(Message::Serving("127.0.0.1:3000".into()))
        );
        assert_eq!(
            parse_message(
                br#"{"nodeapp":"fallback","asked":"port 8080","addresses":["[::]:3000"]}"#
            ),
            Some(Message::Note(Note::Fallback {
                asked: "port 8080".into(),
                addresses: vec!["[::]:3000".into()]
            }))
        );
        assert_eq!(parse_message(br#"{"nodeapp":"serving"}"#), None);
        assert_eq!(parse_message(br#"{"cmd":"NODE_HANDLE_ACK"}"#), None);
        assert_eq!(parse_message(b"not json"), None);
    }
}
