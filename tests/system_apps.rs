//! Real framework apps under systemd: Next.js `next start`, NestJS with shutdown hooks, an
//! Express app with a prom-client exporter on a second port, and a `ws` WebSocket server,
//! each on 2 workers of the real `.deb` in a systemd 252 namespace host. `systemctl reload`
//! under continuous load fails no request; the exporter's port is served by both workers
//! before and after; WebSocket clients get 1001 and reconnect to the new workers.
//! Needs root, `NODEAPP_DEB` and the framework fixtures (tests/run sets all up).

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::host::{deb_under_test, Host};
use support::load::{assert_none_failed, Load};
use support::ws;
use tungstenite::protocol::frame::coding::CloseCode;

const FRAMEWORKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frameworks");

/// Runs `f` on a thread inside the host's network namespace.
fn in_host<T: Send + 'static>(host: &Host, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = host.netns();
    std::thread::spawn(move || {
        support::enter_netns(&ns);
        f()
    })
    .join()
    .expect("thread in the host")
}

fn install(host: &Host, deb: &Path) {
    assert!(
        Path::new(FRAMEWORKS).join("node_modules/next").exists(),
        "run tests/fixtures/frameworks/prepare.sh first (tests/run does)"
    );
    host.ok(&format!("dpkg -i {}", deb.display()));
    // node_modules and next/.next are links into the test cache, kept as links.
    host.ok(&format!(
        "mkdir -p /srv/fw /srv/state && cp -a {FRAMEWORKS}/. /srv/fw/ && chown nodeapp /srv/state"
    ));
    let apps = [
        (
            "next",
            "../node_modules/next/dist/bin/next",
            "/srv/fw/next",
            "[\"start\"]",
            "\"127.0.0.1:8101\"",
            "PORT = \"8101\"",
        ),
        (
            "nest",
            "nest/main.js",
            "/srv/fw",
            "[]",
            "\"127.0.0.1:8102\"",
            "PORT = \"8102\"\nCLEANUP_FILE = \"/srv/state/nest\"",
        ),
        (
            "metrics",
            "metrics.js",
            "/srv/fw",
            "[]",
            "\"127.0.0.1:8103\", \"127.0.0.1:8104\"",
            "PORT = \"8103\"\nMETRICS_PORT = \"8104\"",
        ),
        (
            "ws",
            "ws.js",
            "/srv/fw",
            "[]",
            "\"127.0.0.1:8105\"",
            "PORT = \"8105\"",
        ),
    ];
    for (name, script, cwd, args, listen, env) in apps {
        host.ok(&format!(
            "cat > /etc/nodeapp/{name}.toml <<'EOF'\nscript = \"{script}\"\ncwd = \"{cwd}\"\n\
             args = {args}\ninstances = 2\nlisten = [{listen}]\nstop_timeout = \"20s\"\n\
             [env]\n{env}\nNEXT_TELEMETRY_DISABLED = \"1\"\nEOF"
        ));
    }
    host.ok("systemctl daemon-reload");
    for (name, ..) in apps {
        host.ok(&format!(
            "systemctl start nodeapp@{name}.socket nodeapp@{name}.service"
        ));
        host.wait_active(&format!("nodeapp@{name}.service"));
    }
}

/// `systemctl reload` while clients load `addr` from half a second before to half a
/// second after; no request may fail. The old workers' PIDs.
fn reload_under_load(host: &Host, name: &str, addr: &str) -> BTreeSet<u32> {
    let unit = format!("nodeapp@{name}.service");
    let before = workers_of(host, &unit);
    assert_eq!(before.len(), 2, "{}", host.journal(&unit));
    let load = Load::start(addr.parse().unwrap(), Some(host.netns()), 4);
    std::thread::sleep(Duration::from_millis(500));
    host.ok(&format!("systemctl reload {unit}"));
    std::thread::sleep(Duration::from_millis(500));
    let (keep, close) = load.finish();
    assert_none_failed(&format!("{name}: systemctl reload"), &keep, &close);
    let after = workers_of(host, &unit);
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    assert_drained(host, &unit, &before);
    before
}

/// Each of `pids` ended on its own after draining, not killed at `stop_timeout`.
fn assert_drained(host: &Host, unit: &str, pids: &BTreeSet<u32>) {
    let mut journal = String::new();
    let all = support::wait_until(Duration::from_secs(10), || {
        journal = host.journal(unit);
        pids.iter().all(|p| {
            journal
                .lines()
                .any(|l| l.contains(&format!("(pid {p}) ")) && l.ends_with("after draining"))
        })
    });
    assert!(all, "{pids:?} did not all drain:\n{journal}");
    for p in pids {
        assert!(
            !journal.contains(&format!("(pid {p}) was killed by SIGKILL")),
            "{journal}"
        );
    }
}

/// The workers that answer on the exporter's port, asked from inside the host.
fn metrics_pids(host: &Host, addr: SocketAddr) -> BTreeSet<u32> {
    in_host(host, move || support::metrics_pids(addr))
}

#[test]
fn framework_apps_reload_under_systemd_without_losing_a_request() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("apps");
    install(&host, &deb);

    reload_under_load(&host, "next", "127.0.0.1:8101");

    let old = reload_under_load(&host, "nest", "127.0.0.1:8102");
    let cleaned = host.ok("cat /srv/state/nest");
    for p in &old {
        assert!(cleaned.contains(&format!("cleanup {p}")), "{cleaned}");
    }

    let exporter: SocketAddr = "127.0.0.1:8104".parse().unwrap();
    let unit = "nodeapp@metrics.service";
    assert_eq!(metrics_pids(&host, exporter), workers_of(&host, unit));
    reload_under_load(&host, "metrics", "127.0.0.1:8103");
    assert_eq!(metrics_pids(&host, exporter), workers_of(&host, unit));

    // WebSockets: clients open across the reload are closed with 1001 and reconnect.
    let unit = "nodeapp@ws.service";
    let before = workers_of(&host, unit);
    let addr: SocketAddr = "127.0.0.1:8105".parse().unwrap();
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let ns = host.netns();
            std::thread::spawn(move || {
                support::enter_netns(&ns);
                let (mut client, pid) = ws::connect(addr).unwrap();
                let (code, at) = ws::await_close(&mut client);
                let (_, again) = ws::connect(addr).unwrap();
                (pid, code, at, again)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    host.ok(&format!("systemctl reload {unit}"));
    let after = workers_of(&host, unit);
    for r in readers {
        let (pid, code, at, again) = r.join().unwrap();
        assert!(before.contains(&pid), "{pid} {before:?}");
        assert_eq!(code, Some(CloseCode::Away), "{}", host.journal(unit));
        assert!(at.duration_since(started) < Duration::from_secs(3));
        // A client may first reach an old worker that is not replaced yet.
        assert!(after.contains(&again) || before.contains(&again), "{again}");
    }
    assert_drained(&host, unit, &before);
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn workers_of(host: &Host, unit: &str) -> BTreeSet<u32> {
    host.workers(unit).into_iter().collect()
}
