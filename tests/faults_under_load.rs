//! Worker faults under continuous load, on a real systemd 252 (PID 1 in namespaces) with
//! the `.deb` installed: a crashed worker, a hung worker, a slow drain, a worker over
//! `max_memory`, and one killed by the kernel at the unit's `memory_max`. For each, the
//! service recovers by itself, and no request fails beyond those in flight on the faulty
//! worker: kept-alive and per-request clients each lose at most their one request there.
//! Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use std::time::Duration;
use support::host::{deb_under_test, Host};
use support::load::{assert_none_failed, Load, Stats};
use support::wait_until;

const UNIT: &str = "nodeapp@api.service";
const ADDR: &str = "127.0.0.1:8080";
/// Load clients per mode: at most this many requests can be in flight on one worker.
const CLIENTS: usize = 4;

/// A host serving the fixture app with two workers and `extra` config lines.
fn serve(prefix: &str, extra: &str) -> Option<Host> {
    let deb = deb_under_test()?;
    let host = Host::boot(prefix);
    host.install_with_releases(&deb);
    host.ok(&format!(
        "cat > /etc/nodeapp/api.toml <<'EOF'\nscript = \"server.js\"\ncwd = \"/srv/api/current\"\n\
         instances = 2\nlisten = [\"{ADDR}\"]\n{extra}\nEOF\n\
         systemctl daemon-reload && systemctl start nodeapp@api.socket {UNIT}"
    ));
    host.wait_active(UNIT);
    Some(host)
}

fn load(host: &Host) -> Load {
    let load = Load::start(ADDR.parse().unwrap(), Some(host.netns()), CLIENTS);
    std::thread::sleep(Duration::from_millis(500));
    load
}

/// Stops `load` half a second after the fault was dealt with; the totals per mode.
fn finish(load: Load, what: &str) -> (Stats, Stats) {
    std::thread::sleep(Duration::from_millis(500));
    let (keep, close) = load.finish();
    eprintln!(
        "{what}: kept-alive {} ok, {} failed; per-request {} ok, {} failed",
        keep.ok, keep.failed, close.ok, close.failed
    );
    assert!(keep.ok > 0 && close.ok > 0, "{what}: no load got through");
    (keep, close)
}

/// Only requests in flight on the faulty worker may have failed.
fn assert_only_in_flight_failed(what: &str, keep: &Stats, close: &Stats) {
    assert!(
        keep.failed <= CLIENTS as u64 && close.failed <= CLIENTS as u64,
        "{what}: more failed than were in flight on one worker:\nkept-alive {keep:?}\n\
         per-request {close:?}"
    );
}

/// The unit's journal has a line with `text`.
fn assert_logged(host: &Host, text: &str) {
    let journal = host.journal(UNIT);
    assert!(journal.contains(text), "no {text:?} in:\n{journal}");
}

/// Waits until the unit has two ready workers again, none of them in `gone`.
fn wait_recovered(host: &Host, gone: &[u32]) -> Vec<u32> {
    let mut workers = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        workers = host.workers(UNIT);
        workers.len() == 2
            && !workers.iter().any(|p| gone.contains(p))
            && host.property(UNIT, "StatusText") == "2/2 workers ready"
    });
    assert!(ok, "not recovered: {workers:?}\n{}", host.journal(UNIT));
    assert_eq!(host.property(UNIT, "ActiveState"), "active");
    assert_eq!(
        host.property(UNIT, "NRestarts"),
        "0",
        "the unit itself stayed up"
    );
    workers
}

#[test]
fn a_crashed_worker_costs_only_its_requests_in_flight() {
    let Some(host) = serve("crash-load", "") else {
        return;
    };
    let before = host.workers(UNIT);
    let victim = before[0];
    let traffic = load(&host);
    host.ok(&format!("kill -KILL {victim}"));
    let now = wait_recovered(&host, &[victim]);
    let (keep, close) = finish(traffic, "worker killed");
    assert_only_in_flight_failed("worker killed", &keep, &close);
    let replacement = now.iter().find(|p| !before.contains(p)).unwrap();
    assert!(
        close.pids.contains(replacement),
        "the replacement served: {close:?}"
    );
    assert_logged(&host, &format!("(pid {victim}) was killed by SIGKILL"));
}

#[test]
fn a_hung_worker_is_aborted_and_replaced_under_load() {
    let Some(host) = serve("hang-load", "heartbeat_timeout = \"2s\"") else {
        return;
    };
    let before = host.workers(UNIT);
    let traffic = load(&host);
    // One request blocks its worker's event loop for a minute; curl gives up when the
    // worker is aborted and its connection goes.
    let blocked = host.sh(&format!("curl -sS -m 30 http://{ADDR}/block/60000"));
    assert!(
        !blocked.status.success(),
        "the blocked request cannot be answered"
    );
    let journal = host.journal(UNIT);
    let hung: u32 = journal
        .lines()
        .find(|l| l.contains("sent no heartbeat for 2s"))
        .and_then(|l| l.split("(pid ").nth(1))
        .and_then(|p| p.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no hung worker found:\n{journal}"));
    assert!(before.contains(&hung), "{before:?} {hung}");
    wait_recovered(&host, &[hung]);
    let (keep, close) = finish(traffic, "worker hung");
    assert_only_in_flight_failed("worker hung", &keep, &close);
    assert_logged(&host, &format!("(pid {hung}) was killed by SIGABRT"));
}

#[test]
fn a_slow_drain_finishes_its_requests_before_the_old_worker_goes() {
    let Some(host) = serve("drain-load", "stop_timeout = \"5s\"") else {
        return;
    };
    let before = host.workers(UNIT);
    let traffic = load(&host);
    // Requests that take 700 ms each are always in flight on every worker.
    let slow = Load::start_at(ADDR.parse().unwrap(), Some(host.netns()), 2, "/slow");
    std::thread::sleep(Duration::from_millis(1000));
    host.ok(&format!("systemctl reload {UNIT}"));
    wait_recovered(&host, &before);
    let (slow_keep, slow_close) = slow.finish();
    let (keep, close) = finish(traffic, "reload during slow requests");
    assert_none_failed("slow requests during reload", &slow_keep, &slow_close);
    assert_none_failed("fast requests during reload", &keep, &close);
    let journal = host.journal(UNIT);
    for pid in before {
        assert!(
            journal.contains(&format!("(pid {pid}) exited with status 0 after draining")),
            "{journal}"
        );
    }
    assert!(!journal.contains("(stop_timeout): killing it"), "{journal}");
}

#[test]
fn a_worker_over_max_memory_is_recycled_without_a_failed_request() {
    let Some(host) = serve("memory-load", "max_memory = \"160M\"") else {
        return;
    };
    let before = host.workers(UNIT);
    let traffic = load(&host);
    let answer = host.ok(&format!("curl -sS --fail -m 10 http://{ADDR}/grow/150"));
    let leaky: u32 = answer
        .split("pid=")
        .nth(1)
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let now = wait_recovered(&host, &[leaky]);
    let (keep, close) = finish(traffic, "max_memory recycle");
    assert_none_failed("max_memory recycle", &keep, &close);
    assert!(
        now.iter().any(|p| before.contains(p)),
        "only the leaky one went"
    );
    assert_logged(&host, &format!("(pid {leaky}) uses "));
    assert_logged(&host, "over max_memory (160M): starting its replacement");
    assert_logged(&host, &format!("took over; draining pid {leaky}"));
    // `nodeapp status` counts the replacement against its slot, not as a restart.
    let status: serde_json::Value =
        serde_json::from_str(&host.ok("nodeapp status api --json")).unwrap();
    let count = |key: &str| -> u64 {
        status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w[key].as_u64().unwrap())
            .sum()
    };
    assert_eq!((count("recycles"), count("restarts")), (1, 0), "{status}");
}

#[test]
fn a_worker_killed_at_the_units_memory_max_is_replaced() {
    let Some(host) = serve("oom-load", "memory_max = \"400M\"") else {
        return;
    };
    assert_eq!(host.property(UNIT, "MemoryMax"), (400u64 << 20).to_string());
    // Without max_memory, V8's heap gets 80% of a worker's share of it: 400M over two
    // workers and one replacement, 106 MiB (plus the young generation).
    let heap: u32 = host
        .ok(&format!("curl -sS --fail -m 5 http://{ADDR}/heap-limit"))
        .trim()
        .parse()
        .unwrap();
    assert!((106..180).contains(&heap), "heap limit {heap} MiB");
    let before = host.workers(UNIT);
    let traffic = load(&host);
    // Past the unit's limit the kernel's OOM killer picks the biggest process: this worker.
    let grew = host.sh(&format!("curl -sS -m 20 http://{ADDR}/grow/500"));
    assert!(!grew.status.success(), "the worker died before answering");
    let mut now = Vec::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            now = host.workers(UNIT);
            now.len() == 2 && now != before
        }),
        "{now:?}\n{}",
        host.journal(UNIT)
    );
    let gone: Vec<u32> = before
        .iter()
        .copied()
        .filter(|p| !now.contains(p))
        .collect();
    assert_eq!(gone.len(), 1, "one worker was killed: {before:?} → {now:?}");
    wait_recovered(&host, &gone);
    let (keep, close) = finish(traffic, "worker OOM-killed");
    assert_only_in_flight_failed("worker OOM-killed", &keep, &close);
    assert_logged(&host, &format!("(pid {}) was killed by SIGKILL", gone[0]));
}
