//! Connections that outlive a request, drained by real clients: WebSockets (`ws`, and
//! socket.io with its own client), HTTP/2 (curl, multiplexing) with the core and the
//! compatibility API, and HTTPS kept alive for 65 s (h2load, nghttp2's load generator). Each app runs on 2 workers
//! under `nodeapp run`; a reload must fail nothing and must not wait for `stop_timeout`.
//! No root needed; h2load comes from Debian's nghttp2-client (tests/run installs it).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::run::{free_addr, Running};
use support::ws::{self, Ws};
use tungstenite::protocol::frame::coding::CloseCode;

const FRAMEWORKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frameworks");
/// Longer than a drain should take: a worker still there then was waiting for it.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// What a reload of 2 workers, or their drain, may take when nothing waits for
/// `stop_timeout`.
const PROMPT: Duration = Duration::from_secs(3);

fn start(name: &str, script: &str) -> (Running, SocketAddr) {
    assert!(
        Path::new(FRAMEWORKS).join("node_modules/ws").exists(),
        "run tests/fixtures/frameworks/prepare.sh first (tests/run does)"
    );
    let addr = free_addr();
    let running = Running::start(
        name,
        &format!(
            "script = {script:?}\ncwd = {FRAMEWORKS:?}\ninstances = 2\nlisten = [\"{addr}\"]\n\
             stop_timeout = \"{}s\"\n[env]\nPORT = \"{}\"\n",
            STOP_TIMEOUT.as_secs(),
            addr.port()
        ),
    );
    (running, addr)
}

/// Each of `pids` exited with status 0 after draining, well before `stop_timeout`.
fn assert_drained_cleanly(app: &Running, pids: &BTreeSet<u32>) {
    for end in app.drained(pids, PROMPT) {
        assert_eq!(end, "exited with status 0", "{}", app.log());
    }
}

/// Reloads and returns how long it took; asserts it succeeded.
fn reload(app: &mut Running) -> Duration {
    let started = Instant::now();
    let out = app.reload();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        app.log()
    );
    eprintln!("{}: reload took {:.2}s", app.name, took.as_secs_f64());
    took
}

#[test]
fn websockets_close_with_1001_on_reload_and_stop_and_clients_reconnect() {
    let (mut app, addr) = start("ws", "ws.js");
    let before = app.serving_pids();
    let clients: Vec<(Ws, u32)> = (0..6).map(|_| ws::connect(addr).unwrap()).collect();
    let greeted: BTreeSet<u32> = clients.iter().map(|c| c.1).collect();
    assert!(greeted.is_subset(&before), "{greeted:?} {before:?}");

    // New connections keep being made during the reload; every one must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let (made, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let prober = {
        let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match ws::connect(addr) {
                    Ok((mut ws, _)) => {
                        let _ = ws.close(None);
                        made.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(e);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            errors
        })
    };
    let readers: Vec<_> = clients
        .into_iter()
        .map(|(mut ws, _)| std::thread::spawn(move || ws::await_close(&mut ws)))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let reload_started = Instant::now();
    let took = reload(&mut app);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let errors = prober.join().unwrap();
    assert!(
        took < PROMPT,
        "the reload waited for the WebSockets: {took:?}"
    );
    let mut latest = Duration::ZERO;
    for r in readers {
        let (code, at) = r.join().unwrap();
        assert_eq!(code, Some(CloseCode::Away), "{}", app.log());
        latest = latest.max(at.duration_since(reload_started));
    }
    eprintln!(
        "ws: 6 clients closed with 1001 at most {} ms after the reload began; {} new \
         connections during it, {} failed",
        latest.as_millis(),
        made.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(latest < PROMPT);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{errors:?}");
    assert!(made.load(Ordering::Relaxed) > 5);
    assert_drained_cleanly(&app, &before);

    // The clients reconnect to the new workers.
    let after = app.serving_pids();
    let mut again: Vec<(Ws, u32)> = (0..6).map(|_| ws::connect(addr).unwrap()).collect();
    assert!(again.iter().all(|c| after.contains(&c.1)), "{after:?}");

    // Stop with clients open: they get 1001 and the shim does not wait for them.
    let readers: Vec<_> = again
        .drain(..)
        .map(|(mut ws, _)| std::thread::spawn(move || ws::await_close(&mut ws)))
        .collect();
    let stop_started = Instant::now();
    let status = app.stop(nix::sys::signal::Signal::SIGTERM, STOP_TIMEOUT);
    assert!(status.success(), "{status}\n{}", app.log());
    assert!(
        stop_started.elapsed() < PROMPT,
        "{:?}",
        stop_started.elapsed()
    );
    for r in readers {
        assert_eq!(r.join().unwrap().0, Some(CloseCode::Away));
    }
}

#[test]
fn socket_io_clients_are_closed_cleanly_and_reconnect_to_the_new_workers() {
    let (mut app, addr) = start("socketio", "socketio.js");
    let clients = 6;
    let run = Command::new("node")
        .arg(Path::new(FRAMEWORKS).join("clients/socketio-client.js"))
        .args([
            &addr.port().to_string(),
            &clients.to_string(),
            "6",
            "websocket",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node");
    // Let every client connect and upgrade to WebSocket first.
    std::thread::sleep(Duration::from_millis(2000));
    let before = app.serving_pids();
    let took = reload(&mut app);
    let after = app.serving_pids();
    assert_drained_cleanly(&app, &before);
    let out = run.wait_with_output().unwrap();
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < PROMPT,
        "the reload waited for socket.io clients: {took:?}"
    );
    let summary = events.last().unwrap();
    assert_eq!(summary["event"], "summary", "{events:?}");
    assert_eq!(summary["connect_errors"], 0, "{events:?}");
    // Each client: greeted by an old worker, closed by the drain (again if it reconnected
    // to an old worker not yet replaced), greeted last by a new one.
    for client in 0..clients {
        let pids: Vec<u32> = events
            .iter()
            .filter(|e| e["event"] == "connect" && e["client"] == client)
            .map(|e| e["pid"].as_u64().unwrap() as u32)
            .collect();
        assert!(pids.len() >= 2, "client {client}: {events:?}");
        assert!(before.contains(&pids[0]), "{pids:?}");
        assert!(after.contains(pids.last().unwrap()), "{pids:?}");
    }
    let connects = summary["connects"].as_u64().unwrap();
    assert_eq!(
        summary["disconnects"],
        serde_json::json!({ "transport close": connects - clients }),
        "{events:?}"
    );
}

/// What h2load counted.
struct H2load {
    done: u64,
    succeeded: u64,
    failed: u64,
    /// Requests h2load could not start because their connection had received GOAWAY:
    /// never sent, so no stream of the server failed. h2load counts them as failed
    /// (`Process Request Failure`) where browsers and curl send them on a new connection.
    not_started: u64,
    text: String,
}

fn h2load(args: &[&str], url: &str) -> H2load {
    let out = Command::new("h2load")
        .args(args)
        .arg(url)
        .output()
        .expect("h2load (Debian's nghttp2-client)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("{text}"))
        .to_owned();
    let count = |what: &str| -> u64 {
        line.split(',')
            .find(|part| part.trim().ends_with(what))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what} in {line}"))
    };
    // One client thread: the last line has the running total.
    let not_started = text
        .lines()
        .filter_map(|l| l.strip_prefix("Process Request Failure:"))
        .filter_map(|n| n.trim().parse().ok())
        .max()
        .unwrap_or(0);
    H2load {
        done: count("done"),
        succeeded: count("succeeded"),
        failed: count("failed"),
        not_started,
        text,
    }
}

/// h2load on 4 connections from before the reload until after the old workers would have
/// been killed at `stop_timeout`; every stream sent must succeed.
fn reload_under_h2load(name: &str, script: &str, extra: &[&str], idle_tls: bool) {
    let (mut app, addr) = start(name, script);
    let url = format!("https://{addr}/");
    let duration = (STOP_TIMEOUT + Duration::from_secs(2))
        .as_secs()
        .to_string();
    let mut args = vec!["-t", "1", "-c", "4", "-m", "8", "-D", &duration];
    args.extend_from_slice(extra);
    let args: Vec<String> = args.into_iter().map(String::from).collect();
    let load = std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        h2load(&args, &url)
    });
    std::thread::sleep(Duration::from_millis(1000));
    reload_beside_an_idle_client(&mut app, addr, idle_tls);
    let h = load.join().unwrap();
    // Sent and not answered with success: h2load's failures beyond those it never started.
    let stream_errors = (h.done - h.succeeded) + h.failed.saturating_sub(h.not_started);
    eprintln!(
        "{name}: {} requests done, {} succeeded, {stream_errors} sent and failed, {} not \
         started after GOAWAY",
        h.done, h.succeeded, h.not_started
    );
    assert!(h.done > 100, "{}", h.text);
    assert_eq!(stream_errors, 0, "{}\n{}", h.text, app.log());
    assert_eq!(h.done, h.succeeded, "{}", h.text);
    assert!(!app.log().contains("UnsupportedWarning"), "{}", app.log());
}

/// Reloads under whatever load the caller runs, beside an idle kept-alive TLS client on an
/// old worker when `idle_tls`: the reload must be prompt, the old workers must drain
/// cleanly, and the idle client must see its connection closed.
fn reload_beside_an_idle_client(app: &mut Running, addr: SocketAddr, idle_tls: bool) {
    let before = app.serving_pids();
    let idle = idle_tls.then(|| idle_tls_connection(addr));
    if let Some((_, pid)) = &idle {
        assert!(before.contains(pid), "the idle client is on an old worker");
    }
    let took = reload(app);
    assert!(took < PROMPT, "{}: the reload waited: {took:?}", app.name);
    assert_drained_cleanly(app, &before);
    if let Some((idle, _)) = idle {
        let idle = idle.wait_with_output().unwrap();
        assert!(
            idle.status.success(),
            "the idle connection: {}",
            String::from_utf8_lossy(&idle.stderr)
        );
    }
}

/// A TLS connection that made one HTTP/1.1 request and then stays idle until the server
/// closes it, as browsers keep theirs; Python's ssl module. Returns once the answer came,
/// with the PID of the worker that holds the connection.
fn idle_tls_connection(addr: SocketAddr) -> (std::process::Child, u32) {
    let script = r#"
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], int(sys.argv[2]))))
s.settimeout(30)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
data = s.recv(65536)
assert data.startswith(b"HTTP/1.1 200"), data
print(data.split(b"pid=")[1].split()[0].decode(), flush=True)
rest = s.recv(65536)  # idle until the server closes
assert rest == b"", rest
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let out = child.stdout.as_mut().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    let pid = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("no pid: {line:?}"));
    (child, pid)
}

/// curl over HTTP/2, 8 streams at a time on one connection, batch after batch until
/// `stop`: a real client that, as browsers do, sends the requests a GOAWAY kept it from
/// starting on a new connection. Requests answered 200, and the failures.
fn curl_h2_load(addr: SocketAddr, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    let mut ok = 0;
    let mut failed = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut cmd = Command::new("curl");
        cmd.args(["--http2", "-k", "-s", "--parallel", "--parallel-max", "8"])
            .args(["-w", "%{http_code} %{http_version} %{errormsg}\\n"]);
        for _ in 0..100 {
            cmd.args(["-o", "/dev/null", &format!("https://{addr}/")]);
        }
        let out = cmd.output().expect("curl");
        let lines = String::from_utf8_lossy(&out.stdout).into_owned();
        let answered: Vec<&str> = lines.lines().collect();
        for line in &answered {
            if line.starts_with("200 2") {
                ok += 1;
            } else {
                failed.push(line.to_string());
            }
        }
        if answered.len() < 100 {
            failed.push(format!(
                "curl answered {} of 100 ({})",
                answered.len(),
                out.status
            ));
        }
    }
    (ok, failed)
}

/// A reload while curl keeps HTTP/2 streams in flight; none may fail.
fn reload_under_curl_h2(name: &str, script: &str, idle_tls: bool) {
    let (mut app, addr) = start(name, script);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || curl_h2_load(addr, stop))
    };
    std::thread::sleep(Duration::from_millis(1000));
    reload_beside_an_idle_client(&mut app, addr, idle_tls);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    eprintln!(
        "{name}: {ok} HTTP/2 requests answered, {} failed",
        failed.len()
    );
    assert!(ok > 500, "{ok}");
    assert!(failed.is_empty(), "{failed:?}\n{}", app.log());
    assert!(!app.log().contains("UnsupportedWarning"), "{}", app.log());
}

#[test]
fn http2_core_api_gets_goaway_and_no_stream_fails() {
    reload_under_curl_h2("h2", "h2.js", false);
}

#[test]
fn http2_compatibility_api_gets_goaway_and_no_stream_fails() {
    // Its server has `allowHTTP1`: an idle HTTP/1.1 client is there too.
    reload_under_curl_h2("h2compat", "h2-compat.js", true);
}

#[test]
fn https_kept_alive_for_65s_is_drained_without_waiting() {
    reload_under_h2load("https", "https.js", &["--h1"], true);
}
