//! The restart policy, on the shim under `nodeapp run` with real `node` workers: crashed
//! workers come back after a growing delay; a slot that keeps failing, or an app that
//! cannot start, makes the shim exit with a status that says which, so that systemd's
//! `Restart=` and start limits take over. A worker whose event loop is blocked stops
//! sending heartbeats and is aborted and replaced. No root needed.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const NODEAPP: &str = env!("CARGO_BIN_EXE_nodeapp");

/// `nodeapp run` on the fixture app with `extra` config lines; its log goes to `log`.
fn run(dir: &Path, extra: &str, log: &Path) -> Proc {
    run_on(dir, extra, log).0
}

/// As [`run`], and the address it serves.
fn run_on(dir: &Path, extra: &str, log: &Path) -> (Proc, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = app_config(dir, "api", &[port.to_string()], extra);
    let mut cmd = Command::new(NODEAPP);
    cmd.arg("run")
        .arg(cfg)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    // Aborted workers must not leave core files in the fixture's directory.
    // SAFETY: setrlimit is async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            let none = nix::libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            nix::libc::setrlimit(nix::libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    (Proc::spawn(&mut cmd), port)
}

/// The PID that answered `GET /` on `addr`, if one did.
fn answered_by(addr: SocketAddr) -> Option<u32> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let r = request(stream, "/").ok()?;
    r.head
        .starts_with("HTTP/1.1 200")
        .then(|| served_by(&r.body))
}

fn lines_with(log: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_crash_looping_slot_backs_off_then_stops_the_shim() {
    let text = gives_up(
        "instances = 1\nrestart_delay = \"100ms\"\nrestart_backoff = 2\n\
         restart_delay_max = \"400ms\"\ncrash_loop_limit = 5\nrestart_reset_after = \"20s\"\n\
         [env]\nCRASH_AFTER_MS = \"150\"",
        75,
        "worker 0 failed 5 times in a row",
    );
    let waits: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split("replacing it in ").nth(1))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    assert_eq!(waits, ["100ms", "200ms", "400ms", "400ms"], "{text}");
    assert!(text.contains("crash_loop_limit"), "{text}");
}

#[test]
fn a_worker_that_ran_long_enough_starts_the_backoff_again() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut shim = run(
        dir.path(),
        "instances = 1\nrestart_delay = \"100ms\"\ncrash_loop_limit = 2\n\
         restart_reset_after = \"1s\"\n[env]\nCRASH_AFTER_MS = \"1300\"",
        &log,
    );
    // Each worker runs past restart_reset_after before it crashes: never a loop.
    assert!(wait_until(Duration::from_secs(20), || {
        lines_with(&log, "replacing it in").len() >= 3
    }));
    assert!(
        shim.child.try_wait().unwrap().is_none(),
        "the shim kept going"
    );
    for line in lines_with(&log, "replacing it in") {
        assert!(
            line.contains("in 100ms (failure 1 of 2 in a row)"),
            "{line}"
        );
    }
}

/// Runs the app with `extra` config lines until the shim gives up; asserts it exited with
/// `code` and logged `why`; returns its log.
fn gives_up(extra: &str, code: i32, why: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let mut shim = run(dir.path(), extra, &log);
    let status = shim
        .wait_timeout(Duration::from_secs(30))
        .expect("the shim gave up");
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(code), "{text}");
    assert!(text.contains(why), "{text}");
    text
}

#[test]
fn an_app_that_cannot_start_stops_the_shim_at_once() {
    let log = gives_up(
        "instances = 2\n[env]\nTHROW_AT_START = \"1\"",
        70,
        "before it was ready: the app cannot start",
    );
    assert!(!log.contains("replacing it in"), "no retry:\n{log}");
}

#[test]
fn a_worker_never_ready_at_start_stops_the_shim_at_ready_timeout() {
    gives_up(
        "instances = 1\nwait_ready = true\nready_timeout = \"1s\"",
        70,
        "not ready within 1s (ready_timeout): the app never called process.send('ready') \
         (wait_ready): the app cannot start",
    );
}

#[test]
fn a_worker_whose_event_loop_is_blocked_is_aborted_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut shim, addr) = run_on(
        dir.path(),
        "instances = 1\nheartbeat_timeout = \"1s\"",
        &log,
    );
    let mut first = None;
    assert!(wait_until(Duration::from_secs(15), || {
        first = answered_by(addr);
        first.is_some()
    }));
    shim.track_children();
    // Idle is not hung: the heartbeat timer keeps running.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        answered_by(addr),
        first,
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );

    let blocker = std::thread::spawn(move || {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        request(stream, "/block/30000").is_ok()
    });
    let mut now = None;
    assert!(
        wait_until(Duration::from_secs(15), || {
            now = answered_by(addr);
            now.is_some() && now != first
        }),
        "not replaced: {}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(
        !blocker.join().unwrap(),
        "the blocked request died with its worker"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("sent no heartbeat for 1s (heartbeat_timeout): its event loop is blocked; sending SIGABRT"),
        "{text}"
    );
    assert!(text.contains("was killed by SIGABRT"), "{text}");
}

#[test]
fn a_worker_over_max_memory_is_replaced_before_it_drains_and_no_request_fails() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut shim, addr) = run_on(dir.path(), "instances = 2\nmax_memory = \"160M\"", &log);
    assert!(wait_until(Duration::from_secs(15), || answered_by(addr).is_some()));
    shim.track_children();
    // V8's heap is held to 80% of the budget: 128 MiB, plus its young generation.
    let heap: u64 = request(TcpStream::connect(addr).unwrap(), "/heap-limit")
        .unwrap()
        .body
        .trim()
        .parse()
        .unwrap();
    assert!((128..256).contains(&heap), "heap limit {heap} MiB");

    let load = load::Load::start(addr, None, 2);
    std::thread::sleep(Duration::from_millis(500));
    let leaky = served_by(
        &request(TcpStream::connect(addr).unwrap(), "/grow/150")
            .unwrap()
            .body,
    );
    let drained = format!("(pid {leaky}) exited with status 0 after draining");
    let replaced = wait_until(Duration::from_secs(20), || {
        !lines_with(&log, &drained).is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    let (keep, close) = load.finish();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(replaced, "not replaced:\n{text}");
    load::assert_none_failed("max_memory replacement", &keep, &close);
    let over = lines_with(&log, "over max_memory (160M): starting its replacement");
    assert_eq!(over.len(), 1, "{text}");
    assert!(over[0].contains(&format!("(pid {leaky})")), "{text}");
    // The replacement was ready before the old worker was asked to drain.
    let took_over = text
        .find(&format!("took over; draining pid {leaky}"))
        .expect("took over");
    assert!(
        text.find("replacement started").unwrap() < took_over,
        "{text}"
    );
    assert!(answered_by(addr).is_some_and(|pid| pid != leaky));
}

#[test]
fn a_reload_starts_the_count_of_crashes_in_a_row_again() {
    use nix::sys::signal::Signal::{SIGHUP, SIGKILL};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let (mut shim, addr) = run_on(
        dir.path(),
        "instances = 1\nrestart_delay = \"100ms\"\ncrash_loop_limit = 2",
        &log,
    );
    let mut worker = None;
    let mut serving = |shim: &mut Proc| {
        assert!(wait_until(Duration::from_secs(15), || {
            let now = answered_by(addr);
            let fresh = now.is_some() && now != worker;
            if fresh {
                worker = now;
            }
            fresh
        }));
        shim.track_children();
        worker.unwrap()
    };
    // Killed young, then reloaded, then killed young again: two crashes, not in a row.
    let first = serving(&mut shim);
    signal(first, SIGKILL);
    let second = serving(&mut shim);
    signal(shim.pid, SIGHUP);
    assert!(wait_until(Duration::from_secs(15), || {
        !lines_with(&log, "reloaded: 1 workers replaced").is_empty()
    }));
    let third = serving(&mut shim);
    assert_ne!(third, second);
    signal(third, SIGKILL);
    serving(&mut shim);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(shim.child.try_wait().unwrap().is_none(), "{text}");
    assert_eq!(
        lines_with(&log, "(failure 1 of 2 in a row)").len(),
        2,
        "{text}"
    );
}
