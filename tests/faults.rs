//! Bad days on a real systemd 252 (PID 1 in namespaces) with the `.deb` installed: an app
//! that cannot start, and a slot that crash-loops under load, make the shim exit with a
//! status that says which, systemd's `Restart=` and start limits take over, and
//! `systemctl status` says why; a shim killed with SIGKILL is restarted with no old worker left, and the
//! connections that came meanwhile are served. Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use std::time::Duration;
use support::host::{deb_under_test, Host};
use support::load::Load;
use support::wait_until;

const UNIT: &str = "nodeapp@api.service";

fn config(host: &Host, extra: &str) {
    host.ok(&format!(
        "cat > /etc/nodeapp/api.toml <<'EOF'\nscript = \"server.js\"\ncwd = \"/srv/api/current\"\n\
         instances = 2\nlisten = [\"127.0.0.1:8080\"]\n{extra}\nEOF\nsystemctl daemon-reload"
    ));
}

#[test]
fn an_app_that_cannot_start_fails_the_unit_with_the_reason() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("faults-boot");
    host.install_with_releases(&deb);
    host.ok("ln -sfn releases/broken /srv/api/current");
    config(&host, "");

    // systemctl start waits for READY=1, which never comes: the start job fails.
    assert!(!host.sh(&format!("systemctl start {UNIT}")).status.success());
    assert_eq!(host.property(UNIT, "ExecMainStatus"), "70");
    assert_eq!(host.property(UNIT, "Result"), "exit-code");
    let journal = host.journal(UNIT);
    assert!(
        journal.contains("before it was ready: the app cannot start"),
        "{journal}"
    );
    // Restart=on-failure tries again each second until the start limit stops it.
    let mut state = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || {
            state = host.property(UNIT, "ActiveState");
            state == "failed" && host.property(UNIT, "NRestarts").parse::<u32>().unwrap() >= 2
        }),
        "{state}, {} restarts",
        host.property(UNIT, "NRestarts")
    );
    let status = host.sh(&format!("systemctl status --no-pager -n 20 {UNIT}"));
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("status=70"), "{status}");
    assert!(status.contains("the app cannot start"), "{status}");

    // The fixed release starts once the failed state is cleared.
    host.ok("ln -sfn releases/v1 /srv/api/current");
    host.ok(&format!(
        "systemctl reset-failed {UNIT} && systemctl start {UNIT}"
    ));
    host.wait_active(UNIT);
}

#[test]
fn a_crash_looping_worker_stops_the_unit_after_the_backoff() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("faults-loop");
    host.install_with_releases(&deb);
    config(
        &host,
        "restart_delay = \"100ms\"\ncrash_loop_limit = 3\n[env]\nCRASH_AFTER_MS = \"300\"\n\
         CRASH_SLOT = \"1\"",
    );
    host.ok(&format!("systemctl start nodeapp@api.socket {UNIT}"));
    let traffic = Load::start("127.0.0.1:8080".parse().unwrap(), Some(host.netns()), 4);
    // Slot 1 crashes 300 ms after listening, comes back after 100 ms, 200 ms, then the
    // third crash in a row ends the shim with 75; slot 0 drains, and systemd restarts
    // the service while new connections wait in the socket's backlog.
    assert!(
        wait_until(Duration::from_secs(30), || host
            .property(UNIT, "NRestarts")
            .parse::<u32>()
            .unwrap()
            >= 1),
        "the unit was not restarted:\n{}",
        host.journal(UNIT)
    );
    host.wait_active(UNIT);
    std::thread::sleep(Duration::from_millis(300));
    let (keep, close) = traffic.finish();
    let journal = host.journal(UNIT);
    // Only requests in flight on the crashing worker may fail: at most one per client
    // per crash.
    let crashes = journal.matches("exited with status 1 after").count() as u64;
    eprintln!(
        "crash loop under load: {crashes} crashes; kept-alive {} ok, {} failed; per-request \
         {} ok, {} failed",
        keep.ok, keep.failed, close.ok, close.failed
    );
    assert!(keep.ok > 0 && close.ok > 0);
    assert!(
        keep.failed <= 4 * crashes && close.failed <= 4 * crashes,
        "kept-alive {keep:?}\nper-request {close:?}"
    );
    assert!(
        journal.contains("failed 3 times in a row") && journal.contains("status=75"),
        "{journal}"
    );
    assert!(
        journal.contains("replacing it in 200ms (failure 2 of 3 in a row)"),
        "{journal}"
    );
}

#[test]
fn a_killed_shim_is_restarted_and_the_connections_meanwhile_are_served() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("faults-kill");
    host.install_with_releases(&deb);
    config(&host, "");
    host.ok(&format!("systemctl start nodeapp@api.socket {UNIT}"));
    host.wait_active(UNIT);
    let shim = host.property(UNIT, "MainPID");
    let workers = host.workers(UNIT);
    const CLIENTS: u64 = 4;

    let traffic = Load::start("127.0.0.1:8080".parse().unwrap(), Some(host.netns()), 4);
    std::thread::sleep(Duration::from_millis(500));
    host.ok(&format!("kill -KILL {shim}"));
    let mut main = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            main = host.property(UNIT, "MainPID");
            main != shim && main != "0" && host.property(UNIT, "ActiveState") == "active"
        }),
        "not restarted:\n{}",
        host.journal(UNIT)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (keep, close) = traffic.finish();
    eprintln!(
        "shim killed under load: kept-alive {} ok, {} failed; per-request {} ok, {} failed",
        keep.ok, keep.failed, close.ok, close.failed
    );

    // The workers die with the shim (PR_SET_PDEATHSIG), so each client may lose the one
    // request it had in flight on them; every connection made while the service was down
    // waited in the socket's backlog and was served by the new workers.
    assert!(
        keep.failed <= CLIENTS && close.failed <= CLIENTS,
        "kept-alive {keep:?}\nper-request {close:?}"
    );
    let new_workers = host.workers(UNIT);
    assert!(
        close.pids.iter().any(|p| new_workers.contains(p)),
        "the new workers served: {new_workers:?}, {close:?}"
    );
    for pid in &workers {
        assert!(
            !host.sh(&format!("test -d /proc/{pid}")).status.success(),
            "old worker {pid} survived the shim"
        );
    }
    assert_eq!(host.property(UNIT, "NRestarts"), "1");
}

#[test]
fn the_watchdog_restarts_a_shim_whose_loop_stopped() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("faults-watchdog");
    host.install_with_releases(&deb);
    config(&host, "");
    host.ok(&format!(
        "mkdir -p /etc/systemd/system/{UNIT}.d && printf '[Service]\\nWatchdogSec=2s\\n\
         TimeoutAbortSec=2s\\n' > /etc/systemd/system/{UNIT}.d/watchdog.conf && \
         systemctl daemon-reload && systemctl start nodeapp@api.socket {UNIT}"
    ));
    host.wait_active(UNIT);
    // A healthy loop pings: well past the watchdog period, nothing happened.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        host.property(UNIT, "NRestarts"),
        "0",
        "{}",
        host.journal(UNIT)
    );
    let shim = host.property(UNIT, "MainPID");
    let workers = host.workers(UNIT);

    // A stopped loop does not: systemd aborts the shim and restarts the service.
    host.ok(&format!("kill -STOP {shim}"));
    assert!(
        wait_until(Duration::from_secs(30), || {
            host.property(UNIT, "NRestarts") == "1"
                && host.property(UNIT, "ActiveState") == "active"
        }),
        "{}",
        host.journal(UNIT)
    );
    let journal = host.journal(UNIT);
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    for pid in &workers {
        assert!(
            !host.sh(&format!("test -d /proc/{pid}")).status.success(),
            "old worker {pid} survived"
        );
    }
    host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/");
}
