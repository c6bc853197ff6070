//! Helpers shared by the integration tests: real processes, real sockets, cleaned up by
//! PID whatever happens.
#![allow(dead_code)]

pub mod host;
pub mod load;
pub mod run;
pub mod ws;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const APP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/app");

/// Moves the calling thread (only it) into the network namespace `ns`, such as a namespace
/// host's `/proc/<pid>/ns/net`.
pub fn enter_netns(ns: &Path) {
    let f = std::fs::File::open(ns).expect("open netns");
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

/// Polls `check` until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A response to one request: status line and headers, then the body.
pub struct Response {
    pub head: String,
    pub body: String,
}

/// One HTTP/1.1 request for `path` that asks to keep the connection open, read until the
/// server closes it or the body is complete.
pub fn request<S: Read + Write>(mut stream: S, path: &str) -> std::io::Result<Response> {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n")?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = stream.read(&mut buf)?;
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>())
            });
            let complete = match length {
                Some(Ok(len)) => body.len() >= len,
                _ => n == 0, // chunked or unknown: read to EOF
            };
            if complete || n == 0 {
                return Ok(Response {
                    head: head.to_string(),
                    body: body.to_string(),
                });
            }
        } else if n == 0 {
            return Err(std::io::Error::other(format!("no response: {text:?}")));
        }
    }
}

fn body_of_ok(r: Response) -> std::io::Result<String> {
    if r.head.starts_with("HTTP/1.1 200") {
        Ok(r.body)
    } else {
        Err(std::io::Error::other(format!("not 200: {}", r.head)))
    }
}

pub fn get_unix(path: &Path) -> std::io::Result<String> {
    let s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    body_of_ok(request(s, "/")?)
}

/// The `pid=N` a test app puts in its responses.
pub fn served_by(body: &str) -> u32 {
    body.split("pid=")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .expect(body)
}

/// The direct children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

pub fn alive(pid: u32) -> bool {
    // A zombie is not alive: it only waits for its parent to reap it.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

pub fn signal(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// A child process that is killed (by PID) with everything it started if the test ends
/// early.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    descendants: Vec<u32>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
        let pid = child.id();
        Proc {
            child,
            pid,
            descendants: Vec::new(),
        }
    }

    /// Remembers the current children so that they are killed too if the test fails.
    pub fn track_children(&mut self) -> Vec<u32> {
        let kids = children(self.pid);
        for &k in &kids {
            if !self.descendants.contains(&k) {
                self.descendants.push(k);
            }
        }
        kids
    }

    /// Waits for exit; `None` if it is still running after `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        use nix::sys::signal::Signal::SIGKILL;
        self.track_children();
        signal(self.pid, SIGKILL);
        for &d in &self.descendants {
            signal(d, SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The workers that answer a Prometheus scrape on `addr` (the framework fixtures'
/// exporter says `app_worker_pid <pid>`), over enough new connections to reach two.
pub fn metrics_pids(addr: std::net::SocketAddr) -> std::collections::BTreeSet<u32> {
    let mut pids = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let r = request(s, "/metrics").unwrap();
        assert!(r.head.starts_with("HTTP/1.1 200"), "{}", r.head);
        let pid = r
            .body
            .lines()
            .find_map(|l| l.strip_prefix("app_worker_pid "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no app_worker_pid in {}", r.body));
        pids.insert(pid as u32);
        if pids.len() == 2 {
            break;
        }
    }
    pids
}

/// A config file for the fixture app in a fresh temporary directory.
pub fn app_config(dir: &Path, name: &str, listen: &[String], extra: &str) -> PathBuf {
    let listen: Vec<String> = listen.iter().map(|l| format!("{l:?}")).collect();
    let text = format!(
        "script = \"server.js\"\ncwd = {APP_DIR:?}\nlisten = [{}]\n{extra}\n",
        listen.join(", ")
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
