//! Deploys without losing a request, on a real systemd 252 booted as PID 1 in namespaces
//! with the real `.deb` installed: `systemctl reload`, `systemctl restart` and stop/start
//! under continuous load from kept-alive and per-request clients; and a broken release
//! that `systemctl reload` must refuse while the old workers go on serving.
//! Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use std::time::Duration;
use support::host::{deb_under_test, Host};
use support::load::{assert_none_failed, Load};

const UNIT: &str = "nodeapp@api.service";

fn deploy(host: &Host, deb: &std::path::Path) {
    host.install_with_releases(deb);
    host.ok("cat > /etc/nodeapp/api.toml <<'EOF'\n\
         script = \"server.js\"\ncwd = \"/srv/api/current\"\ninstances = 2\n\
         listen = [\"127.0.0.1:8080\"]\nready_timeout = \"10s\"\nEOF");
    host.ok("systemctl daemon-reload && systemctl start nodeapp@api.socket");
    host.ok("curl -sS --fail -m 20 http://127.0.0.1:8080/");
    host.wait_active(UNIT);
}

/// Runs `action` while clients load the app, half a second either side of it, and asserts
/// that no request failed; returns what `action` returned.
fn under_load<R>(host: &Host, what: &str, action: impl FnOnce() -> R) -> R {
    let traffic = Load::start("127.0.0.1:8080".parse().unwrap(), Some(host.netns()), 4);
    std::thread::sleep(Duration::from_millis(500));
    let result = action();
    std::thread::sleep(Duration::from_millis(500));
    let (keep, close) = traffic.finish();
    assert_none_failed(what, &keep, &close);
    result
}

/// Repoints `current` atomically, as deploy tools do.
fn point_current_at(host: &Host, release: &str) {
    host.ok(&format!(
        "ln -sfn releases/{release} /srv/api/current.new && mv -T /srv/api/current.new /srv/api/current"
    ));
}

#[test]
fn reload_and_restart_under_load_lose_no_request() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("zero-downtime");
    deploy(&host, &deb);

    // Reload: every worker replaced, one at a time.
    let before = host.workers(UNIT);
    assert_eq!(before.len(), 2);
    under_load(&host, "systemctl reload", || {
        host.ok(&format!("systemctl reload {UNIT}"))
    });
    let after = host.workers(UNIT);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every worker PID changed: {before:?} then {after:?}"
    );
    assert_eq!(host.property(UNIT, "StatusText"), "2/2 workers ready");
    let journal = host.journal(UNIT);
    assert!(
        journal.contains("reloaded: 2 workers replaced"),
        "{journal}"
    );

    // Restart: the service is down for a moment; PID 1 holds the socket meanwhile.
    let shim = host.property(UNIT, "MainPID");
    under_load(&host, "systemctl restart", || {
        host.ok(&format!("systemctl restart {UNIT}"));
        host.wait_active(UNIT);
    });
    assert_ne!(host.property(UNIT, "MainPID"), shim);

    // Stop, then start: connections made while it is stopped wait in the backlog (or
    // start it again through the socket).
    under_load(&host, "systemctl stop; systemctl start", || {
        host.ok(&format!("systemctl stop {UNIT}"));
        std::thread::sleep(Duration::from_millis(500));
        host.ok(&format!("systemctl start {UNIT}"));
        host.wait_active(UNIT);
    });
    assert_eq!(host.property(UNIT, "Result"), "success");
}

#[test]
fn a_broken_release_fails_the_reload_and_the_old_workers_keep_serving() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("broken-release");
    deploy(&host, &deb);
    let before = host.workers(UNIT);

    point_current_at(&host, "broken");
    let reload = under_load(&host, "failed reload", || {
        host.sh(&format!("systemctl reload {UNIT}"))
    });
    let said = String::from_utf8_lossy(&reload.stderr);
    assert!(
        !reload.status.success(),
        "systemctl reload must fail: {said}"
    );
    assert_eq!(host.workers(UNIT), before, "the old workers still serve");
    assert_eq!(host.property(UNIT, "ActiveState"), "active");
    let status = host.property(UNIT, "StatusText");
    assert!(
        status.starts_with("2/2 workers ready; last reload failed: the new worker 0")
            && status.contains("exited with status 1"),
        "{status}"
    );
    let journal = host.journal(UNIT);
    assert!(
        journal.contains("Error: this release is broken")
            && journal.contains("reload failed: the new worker 0"),
        "{journal}"
    );

    // The release fixed: the reload goes through and the status says so.
    point_current_at(&host, "v1");
    host.ok(&format!("systemctl reload {UNIT}"));
    assert_eq!(host.property(UNIT, "StatusText"), "2/2 workers ready");
}
