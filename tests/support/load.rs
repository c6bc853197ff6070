//! Continuous HTTP load for tests: client threads that each send one request after another,
//! over a kept-alive connection or a new connection per request (`Connection: close`), and
//! count every request that did not get a 200.
//!
//! A kept-alive client reconnects only when the server said `Connection: close`; a
//! connection that the server closes under it (reset, or EOF before a response) fails that
//! request, as it would for a real client.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    KeepAlive,
    Close,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub errors: Vec<String>,
    /// Every worker PID that answered (the fixture app puts `pid=N` in its bodies).
    pub pids: BTreeSet<u32>,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.ok += other.ok;
        self.failed += other.failed;
        self.errors.extend(
            other
                .errors
                .into_iter()
                .take(5usize.saturating_sub(self.errors.len())),
        );
        self.pids.extend(other.pids);
    }
}

pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<(Mode, JoinHandle<Stats>)>,
}

impl Load {
    /// Starts `clients` threads of each mode against `addr`. With `netns`, the threads
    /// join that network namespace first (a namespace host's `/proc/<pid>/ns/net`).
    pub fn start(addr: SocketAddr, netns: Option<PathBuf>, clients: usize) -> Load {
        Load::start_at(addr, netns, clients, "/")
    }

    /// As [`Load::start`], with every request for `path`.
    pub fn start_at(
        addr: SocketAddr,
        netns: Option<PathBuf>,
        clients: usize,
        path: &'static str,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for mode in [Mode::KeepAlive, Mode::Close] {
            for _ in 0..clients {
                let stop = stop.clone();
                let netns = netns.clone();
                threads.push((
                    mode,
                    std::thread::spawn(move || {
                        if let Some(ns) = netns {
                            super::enter_netns(&ns);
                        }
                        client(addr, mode, path, &stop)
                    }),
                ));
            }
        }
        Load { stop, threads }
    }

    /// Stops the clients; the totals per mode.
    pub fn finish(mut self) -> (Stats, Stats) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut keep, mut close) = (Stats::default(), Stats::default());
        for (mode, t) in std::mem::take(&mut self.threads) {
            let stats = t.join().expect("load thread");
            match mode {
                Mode::KeepAlive => keep.merge(stats),
                Mode::Close => close.merge(stats),
            }
        }
        (keep, close)
    }
}

/// A test that fails before `finish` still stops its clients.
impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn client(addr: SocketAddr, mode: Mode, path: &str, stop: &AtomicBool) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = s.set_nodelay(true);
                    s
                }
                Err(e) => {
                    stats.fail(format!("connect: {e}"));
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            },
        };
        match exchange(stream, mode, path) {
            Ok((pid, again)) => {
                stats.ok += 1;
                stats.pids.insert(pid);
                conn = again;
            }
            Err(e) => stats.fail(e),
        }
    }
    stats
}

impl Stats {
    fn fail(&mut self, why: String) {
        self.failed += 1;
        if self.errors.len() < 5 {
            self.errors.push(why);
        }
    }
}

/// One request and its response: the PID that answered, and the connection if it may be
/// used again.
fn exchange(mut s: TcpStream, mode: Mode, path: &str) -> Result<(u32, Option<TcpStream>), String> {
    let close = if mode == Mode::Close {
        "Connection: close\r\n"
    } else {
        ""
    };
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: load\r\n{close}\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "connection closed before a full response ({} bytes)",
                raw.len()
            ));
        }
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let lower = head.to_ascii_lowercase();
        let length: usize = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no content-length: {head:?}"))?;
        if body.len() < length {
            continue;
        }
        if !head.starts_with("HTTP/1.1 200") {
            return Err(format!("status: {}", head.lines().next().unwrap_or("")));
        }
        let pid = body
            .split("pid=")
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| format!("no pid in {body:?}"))?;
        let reusable = mode == Mode::KeepAlive && !lower.contains("connection: close");
        return Ok((pid, reusable.then_some(s)));
    }
}

/// Asserts that load got through in both modes and that not one request failed.
pub fn assert_none_failed(what: &str, keep: &Stats, close: &Stats) {
    assert!(keep.ok > 0 && close.ok > 0, "{what}: no load got through");
    assert_eq!(
        (keep.failed, close.failed),
        (0, 0),
        "{what}: failed requests: keep-alive {:?}, close {:?}",
        keep.errors,
        close.errors
    );
    eprintln!(
        "{what}: {} kept-alive and {} per-connection requests, none failed",
        keep.ok, close.ok
    );
}
