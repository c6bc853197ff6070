//! Real apps run unchanged: framework apps installed from npm at pinned versions
//! (tests/fixtures/frameworks, written as each framework's docs show), each on 2 workers
//! under `nodeapp run`. For each: a reload under continuous load from kept-alive and
//! per-request clients fails no request and does not wait for `stop_timeout`; a stop with
//! a request in flight answers it and runs the app's own cleanup. No root needed.
//!
//! tests/fixtures/frameworks/prepare.sh installs the packages and builds the Next.js app
//! (tests/run calls it); without them these tests fail, saying so.

mod support;

use nix::sys::signal::Signal::SIGTERM;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::load::{assert_none_failed, Load};
use support::run::{free_addr, lines, Running};

pub const FRAMEWORKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frameworks");

/// Longer than any reload or stop should take: reaching it means something waited for it.
const STOP_TIMEOUT_S: u64 = 20;

/// How an app is run, and what it does on its own at stop.
struct App {
    name: &'static str,
    script: &'static str,
    args: &'static [&'static str],
    /// Relative to the fixtures directory.
    cwd: &'static str,
    /// The app writes `cleanup <pid>` to `CLEANUP_FILE` from its own shutdown code.
    cleans_up: bool,
    /// It also serves Prometheus metrics on a second address, listening first.
    metrics: bool,
}

impl App {
    const fn new(name: &'static str, script: &'static str) -> App {
        App {
            name,
            script,
            args: &[],
            cwd: "",
            cleans_up: true,
            metrics: false,
        }
    }

    const fn without_cleanup(self) -> App {
        App {
            cleans_up: false,
            ..self
        }
    }
}

fn fixtures_installed() {
    let modules = Path::new(FRAMEWORKS).join("node_modules");
    assert!(
        modules.join("express").exists(),
        "{} is missing: run tests/fixtures/frameworks/prepare.sh (tests/run does)",
        modules.display()
    );
}

/// The config for `app` on `addr` (and `metrics` for its exporter).
fn config(app: &App, addr: SocketAddr, metrics: Option<SocketAddr>, dir: &Path) -> String {
    let mut listen = format!("\"{addr}\"");
    let mut env = format!("PORT = \"{}\"\n", addr.port());
    if let Some(m) = metrics {
        listen += &format!(", \"{m}\"");
        env += &format!("METRICS_PORT = \"{}\"\n", m.port());
    }
    let args: Vec<String> = app.args.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "script = {:?}\ncwd = {:?}\nargs = [{}]\ninstances = 2\nlisten = [{listen}]\n\
         stop_timeout = \"{STOP_TIMEOUT_S}s\"\nready_timeout = \"30s\"\n\
         [env]\n{env}CLEANUP_FILE = {:?}\nNEXT_TELEMETRY_DISABLED = \"1\"\n",
        app.script,
        Path::new(FRAMEWORKS).join(app.cwd),
        args.join(", "),
        dir.join("cleanup"),
    )
}

/// Starts `app` on 2 workers; the running app and its address.
fn start(app: &App) -> (Running, SocketAddr, Option<SocketAddr>) {
    fixtures_installed();
    let addr = free_addr();
    let metrics = app.metrics.then(free_addr);
    let running = Running::start_with(app.name, |dir| config(app, addr, metrics, dir));
    (running, addr, metrics)
}

/// A reload under load, then a stop with a request in flight, as in the module doc.
fn reload_and_stop(app: &App) {
    let (mut running, addr, metrics) = start(app);
    let before = running.serving_pids();
    assert_eq!(before.len(), 2, "{}", running.log());
    if let Some(m) = metrics {
        assert_eq!(
            support::metrics_pids(m),
            before,
            "both workers serve the metrics port"
        );
    }

    let load = Load::start(addr, None, 4);
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let out = running.reload();
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let (keep, close) = load.finish();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{}: reload: {said}\n{}",
        app.name,
        running.log()
    );
    eprintln!(
        "{}: reload took {:.2}s; failed: {} of {} kept-alive, {} of {} per-connection",
        app.name,
        took.as_secs_f64(),
        keep.failed,
        keep.ok + keep.failed,
        close.failed,
        close.ok + close.failed
    );
    assert_none_failed(&format!("{}: reload", app.name), &keep, &close);
    let after = running.serving_pids();
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    if let Some(m) = metrics {
        assert_eq!(
            support::metrics_pids(m),
            after,
            "both new workers serve the metrics port"
        );
    }
    // The old workers went on their own (some apps re-raise the signal once clean),
    // not at stop_timeout.
    for end in running.drained(&before, Duration::from_secs(STOP_TIMEOUT_S / 2)) {
        assert!(
            [
                "exited with status 0",
                "was killed by SIGTERM",
                "exited with status 143"
            ]
            .contains(&end.as_str()),
            "{}: {end}\n{}",
            app.name,
            running.log()
        );
    }
    if app.cleans_up {
        assert_cleaned_up(&running, &before);
    }

    // Stop with a request in flight: it is answered, and the app cleans up.
    let slow = slow_request(addr);
    std::thread::sleep(Duration::from_millis(200));
    let status = running.stop(SIGTERM, Duration::from_secs(STOP_TIMEOUT_S));
    let answer = slow.wait_with_output().unwrap();
    assert!(
        answer.status.success() && String::from_utf8_lossy(&answer.stdout).contains("pid="),
        "{}: the request in flight at stop: {}\n{}",
        app.name,
        String::from_utf8_lossy(&answer.stderr),
        running.log()
    );
    assert!(
        status.success(),
        "{}: {status}\n{}",
        app.name,
        running.log()
    );
    if app.cleans_up {
        assert_cleaned_up(&running, &after);
    }
}

/// Every worker in `pids` ran the app's own cleanup, once.
fn assert_cleaned_up(running: &Running, pids: &std::collections::BTreeSet<u32>) {
    let file = running.path("cleanup");
    support::wait_until(Duration::from_secs(5), || {
        let done = lines(&file);
        pids.iter().all(|p| done.contains(&format!("cleanup {p}")))
    });
    let done = lines(&file);
    for p in pids {
        let n = done
            .iter()
            .filter(|l| **l == format!("cleanup {p}"))
            .count();
        assert_eq!(n, 1, "cleanup of {p} in {done:?}\n{}", running.log());
    }
}

/// `GET /slow` (answered after 700 ms) in a process of its own.
fn slow_request(addr: SocketAddr) -> Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "15"])
        .arg(format!("http://{addr}/slow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("curl")
}

#[test]
fn express_with_the_guides_sigterm_handler() {
    reload_and_stop(&App::new("express", "express-sigterm.js"));
}

#[test]
fn koa_without_a_handler() {
    reload_and_stop(&App::new("koa", "koa.js").without_cleanup());
}

#[test]
fn hapi_with_server_stop() {
    reload_and_stop(&App::new("hapi", "hapi.js"));
}

#[test]
fn fastify_with_close_with_grace() {
    reload_and_stop(&App::new("fastify", "fastify.js"));
}

#[test]
fn terminus() {
    reload_and_stop(&App::new("terminus", "terminus.js"));
}

#[test]
fn nestjs_with_shutdown_hooks() {
    reload_and_stop(&App::new("nest", "nest/main.js"));
}

#[test]
fn nextjs_next_start() {
    reload_and_stop(&App {
        args: &["start"],
        cwd: "next",
        ..App::new("next", "../node_modules/next/dist/bin/next").without_cleanup()
    });
}

#[test]
fn esm_with_top_level_await() {
    reload_and_stop(&App::new("esm", "esm.mjs").without_cleanup());
}

#[test]
fn a_metrics_server_on_a_second_port_listening_first() {
    reload_and_stop(&App {
        metrics: true,
        ..App::new("metrics", "metrics.js").without_cleanup()
    });
}

#[test]
fn a_listen_0_helper_before_the_real_server() {
    reload_and_stop(&App::new("helper0", "helper0.js").without_cleanup());
}
