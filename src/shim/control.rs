//! The shim's control socket, `$RUNTIME_DIRECTORY/control` (`/run/nodeapp/<name>/control`
//! under systemd): how `ExecReload=` asks for a reload and waits for its outcome, since
//! systemd 252 has no other way to learn that a reload failed.
//!
//! One request per connection, one line each way: the client sends a verb (`reload`,
//! `status`), the shim answers with one JSON object that has at least `ok` and `message`.
//! The socket is the service user's alone (mode 0600); root may use it too.

use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::warn;

/// The socket's file name in the runtime directory.
const SOCKET: &str = "control";
/// How long a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Replace every worker, rolling; answered when that is done or has failed.
    Reload,
    /// The shim's view of its workers, answered at once.
    Status,
}

/// The runtime directory systemd made for the service (`RuntimeDirectory=`), if any.
pub fn runtime_dir() -> Option<PathBuf> {
    let dirs = std::env::var_os("RUNTIME_DIRECTORY")?;
    // systemd lists one path per `RuntimeDirectory=` entry, separated by colons.
    let first = dirs.to_str()?.split(':').next()?.to_string();
    (!first.is_empty()).then(|| PathBuf::from(first))
}

/// Where the control socket of app `name` is: in the runtime directory when run by
/// systemd (as `ExecReload=` is), else where the unit's `RuntimeDirectory=` puts it.
pub fn socket_path(name: &str) -> PathBuf {
    runtime_dir().map_or_else(|| unit_socket_path(name), |d| d.join(SOCKET))
}

/// The runtime directory of the unit `nodeapp@<name>.service`, for tools outside it.
pub fn unit_runtime_dir(name: &str) -> PathBuf {
    Path::new("/run/nodeapp").join(name)
}

/// Where the unit `nodeapp@<name>.service` has its control socket.
pub fn unit_socket_path(name: &str) -> PathBuf {
    unit_runtime_dir(name).join(SOCKET)
}

/// How long a `status` request may take: the shim answers it at once unless it is stuck.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Server {
    listener: UnixListener,
    path: PathBuf,
    pending: Vec<Pending>,
}

/// A connection whose request line has not arrived yet.
struct Pending {
    stream: UnixStream,
    buf: Vec<u8>,
    deadline: Instant,
}

/// A client waiting for its answer.
pub struct Client {
    stream: UnixStream,
}

impl Server {
    pub fn open(dir: &Path) -> io::Result<Server> {
        let path = dir.join(SOCKET);
        // A socket left by a shim that was killed; nothing listens on it any more.
        let _ = std::fs::remove_file(&path);
        // The socket is created with the umask's mode: make it 0600 from the start rather
        // than chmod it afterwards, when someone may already be connected.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&path);
        nix::sys::stat::umask(old);
        let listener = bound.map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open the control socket {}: {e}", path.display()),
            )
        })?;
        listener.set_nonblocking(true)?;
        Ok(Server {
            listener,
            path,
            pending: Vec::new(),
        })
    }

    /// Everything to poll for reading: the listener and the connections not yet heard.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.pending.iter().map(|p| p.stream.as_fd()))
    }

    /// When the oldest silent connection is dropped.
    pub fn deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|p| p.deadline).min()
    }

    /// Accepts new connections and reads what has arrived; returns the complete requests.
    pub fn requests(&mut self) -> Vec<(Request, Client)> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.pending.push(Pending {
                            stream,
                            buf: Vec::new(),
                            deadline: Instant::now() + REQUEST_TIMEOUT,
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!("control socket: {e}");
                    break;
                }
            }
        }
        let now = Instant::now();
        let mut requests = Vec::new();
        let mut still_pending = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            match p.read_line() {
                Ok(Some(line)) => {
                    let client = Client { stream: p.stream };
                    match parse_request(&line) {
                        Some(r) => requests.push((r, client)),
                        None => client.reply(
                            false,
                            &format!("unknown request {line:?}; send reload or status"),
                        ),
                    }
                }
                Ok(None) if now < p.deadline => still_pending.push(p),
                // Too slow, closed, or too long: drop it; it is not one of ours.
                _ => {}
            }
        }
        self.pending = still_pending;
        requests
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Pending {
    /// The request line once it is complete; an error when the client gave up or sent
    /// too much.
    fn read_line(&mut self) -> io::Result<Option<String>> {
        let mut chunk = [0u8; MAX_REQUEST];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
            if self.buf.len() > MAX_REQUEST {
                return Err(io::Error::other("request too long"));
            }
        }
        match self.buf.iter().position(|&b| b == b'\n') {
            Some(end) => Ok(Some(
                String::from_utf8_lossy(&self.buf[..end]).trim().to_string(),
            )),
            None => Ok(None),
        }
    }
}

fn parse_request(line: &str) -> Option<Request> {
    match line {
        "reload" => Some(Request::Reload),
        "status" => Some(Request::Status),
        _ => None,
    }
}

impl Client {
    pub fn reply(self, ok: bool, message: &str) {
        self.reply_with(json!({ "ok": ok, "message": message }));
    }

    /// Answers with `value` (an object that has `ok` and `message`) and hangs up. The
    /// answer is small enough for the socket buffer; a client that stopped reading only
    /// loses its own answer, the shim never waits for it.
    pub fn reply_with(mut self, value: Value) {
        let mut line = value.to_string();
        line.push('\n');
        let _ = self.stream.write_all(line.as_bytes());
    }
}

/// The shim's answer, as a client sees it.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    pub body: Value,
}

/// Sends `request` to the control socket at `path` and waits, however long it takes, for
/// the answer: a reload takes as long as its workers take to become ready, which the shim
/// bounds with `ready_timeout`.
pub fn send(path: &Path, request: Request) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot reach the shim at {}: {e}", path.display()),
        )
    })?;
    let verb = match request {
        Request::Reload => "reload",
        Request::Status => "status",
    };
    if request == Request::Status {
        stream.set_read_timeout(Some(STATUS_TIMEOUT))?;
    }
    stream.write_all(format!("{verb}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::other(
            "the shim closed the control connection without an answer (did it stop?)",
        ));
    }
    let body: Value = serde_json::from_str(answer.trim())
        .map_err(|e| io::Error::other(format!("unreadable answer from the shim: {e}")))?;
    Ok(Reply {
        ok: body["ok"].as_bool().unwrap_or(false),
        message: body["message"].as_str().unwrap_or_default().to_string(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_answered_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::open(dir.path()).unwrap();
        let path = dir.path().join(SOCKET);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let client = std::thread::spawn(move || send(&path, Request::Reload).unwrap());
        let (request, waiting) = loop {
            if let Some(r) = server.requests().pop() {
                break r;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(request, Request::Reload);
        waiting.reply(false, "worker 0 exited");
        let reply = client.join().unwrap();
        assert!(!reply.ok);
        assert_eq!(reply.message, "worker 0 exited");
    }

    #[test]
    fn unknown_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::open(dir.path()).unwrap();
        let mut s = UnixStream::connect(dir.path().join(SOCKET)).unwrap();
        s.write_all(b"explode\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(server.requests().is_empty());
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("unknown request"), "{answer}");
    }
}
