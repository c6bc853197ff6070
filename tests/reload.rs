//! Rolling reload and drain, on the shim under `nodeapp run` with real `node` workers and
//! continuous HTTP load on loopback: what `ExecReload=` does under systemd, without
//! systemd (tests/system.rs covers that). No root needed.

mod support;

use nix::sys::signal::Signal::{SIGHUP, SIGTERM};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::load::{assert_none_failed, Load};
use support::run::{free_addr, Running};
use support::*;

/// An app deployed the usual way: releases side by side, `current` pointing at one.
struct Deployed {
    app: Running,
    addr: SocketAddr,
}

impl Deployed {
    /// Writes release `v1` with `server.js` as given and the config, points `current`
    /// at it, and starts `nodeapp run` until every worker is ready.
    fn start(release_js: &str, extra: &str) -> Deployed {
        let addr = free_addr();
        let app = Running::start_with("api", |dir| {
            release(dir, "v1", release_js);
            point_current_at(dir, "v1");
            config(addr, extra)
        });
        Deployed { app, addr }
    }

    fn write_config(&self, extra: &str) {
        std::fs::write(self.path("api.toml"), config(self.addr, extra)).unwrap();
    }

    fn release(&self, name: &str, js: &str) {
        release(self.dir.path(), name, js);
    }

    fn point_current_at(&self, name: &str) {
        point_current_at(self.dir.path(), name);
    }
}

/// The status, reloads and the process are the shared launcher's.
impl std::ops::Deref for Deployed {
    type Target = Running;
    fn deref(&self) -> &Running {
        &self.app
    }
}

impl std::ops::DerefMut for Deployed {
    fn deref_mut(&mut self) -> &mut Running {
        &mut self.app
    }
}

fn config(addr: SocketAddr, extra: &str) -> String {
    let instances = if extra.contains("instances") {
        ""
    } else {
        "instances = 2\n"
    };
    format!(
        "script = \"server.js\"\ncwd = \"current\"\n{instances}listen = [\"{addr}\"]\n{extra}\n"
    )
}

fn release(dir: &Path, name: &str, js: &str) {
    let dir = dir.join("releases").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.js"), js).unwrap();
}

/// Repoints `current` atomically, the way deploy tools do (`ln -s` + rename).
fn point_current_at(dir: &Path, release: &str) {
    let tmp = dir.join("current.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("releases").join(release), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("current")).unwrap();
}

/// The fixture app, as the code of a release.
fn good_release() -> String {
    format!("require({:?});\n", Path::new(APP_DIR).join("server.js"))
}

#[test]
fn a_reload_under_load_replaces_every_worker_and_fails_no_request() {
    let mut app = Deployed::start(&good_release(), "");
    let before = app.serving_pids();
    let load = Load::start(app.addr, None, 4);
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        let out = app.reload();
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "reload {round}: {said}");
        assert!(said.contains("reloaded: 2 workers replaced"), "{said}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let after = app.serving_pids();
    let (keep, close) = load.finish();
    assert_none_failed("reload", &keep, &close);
    assert_eq!(after.len(), 2);
    assert!(before.is_disjoint(&after), "{before:?} then {after:?}");
    // Load reached the last generation too. Kept-alive connections stick to whichever
    // worker accepted them, so count the per-request clients as well.
    let served: BTreeSet<u32> = keep.pids.union(&close.pids).copied().collect();
    assert!(after.is_subset(&served), "{after:?} not all in {served:?}");
}

#[test]
fn a_release_that_throws_at_start_fails_the_reload_and_the_old_workers_keep_serving() {
    let mut app = Deployed::start(&good_release(), "");
    let before = app.serving_pids();
    app.release("v2", "throw new Error('this release is broken');\n");
    app.point_current_at("v2");

    let load = Load::start(app.addr, None, 2);
    let out = app.reload();
    std::thread::sleep(Duration::from_millis(300));
    let (keep, close) = load.finish();

    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("reload failed: the new worker 0")
            && said.contains("exited with status 1")
            && said.contains("the old workers keep serving"),
        "{said}"
    );
    assert_none_failed("failed reload", &keep, &close);
    assert_eq!(app.serving_pids(), before);
    let status = app.status();
    assert!(
        status["last_reload_failure"]
            .as_str()
            .is_some_and(|f| f.contains("exited with status 1")),
        "{status}"
    );

    // Fixed release: the next reload goes through and clears the failure.
    app.point_current_at("v1");
    assert!(app.reload().status.success());
    assert!(app.status()["last_reload_failure"].is_null());
}

#[test]
fn a_new_worker_never_ready_fails_the_reload_at_ready_timeout() {
    let mut app = Deployed::start(&good_release(), "ready_timeout = \"1s\"");
    let before = app.serving_pids();
    app.release("v2", "setInterval(() => {}, 1000); // never listens\n");
    app.point_current_at("v2");
    let t = Instant::now();
    let out = app.reload();
    let took = t.elapsed();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("was not ready within 1s (ready_timeout)"),
        "{said}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(app.serving_pids(), before);
    // The stuck candidate was killed, not left behind.
    assert!(wait_until(Duration::from_secs(5), || app
        .run
        .track_children()
        .len()
        == 2));
}

#[test]
fn with_wait_ready_a_worker_counts_once_the_app_says_so() {
    let mut app = Deployed::start(
        &good_release(),
        "wait_ready = true\n[env]\nSEND_READY_AFTER_MS = 800",
    );
    let t = Instant::now();
    let out = app.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two workers one after the other, each ready 800 ms after it listens.
    assert!(
        t.elapsed() >= Duration::from_millis(1600),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn sighup_reloads_with_the_config_as_it_is_now() {
    let mut app = Deployed::start(&good_release(), "");
    let before = app.serving_pids();
    app.write_config("instances = 3");
    signal(app.run.pid, SIGHUP);
    assert!(
        wait_until(Duration::from_secs(15), || {
            let s = app.status();
            s["phase"] == "running" && s["ready"] == 3 && s["wanted"] == 3
        }),
        "{}",
        app.status()
    );
    assert!(before.is_disjoint(&app.serving_pids()));

    // A config that no longer parses fails the reload and changes nothing.
    app.write_config("instances = 0");
    let pids = app.serving_pids();
    let out = app.reload();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("invalid config") && said.contains("api.toml:4:13: `instances`: is 0"),
        "{said}"
    );
    assert_eq!(app.serving_pids(), pids);
}

#[test]
fn workers_get_the_configured_stop_signal_and_are_killed_at_stop_timeout() {
    // The app handles SIGINT itself (as apps ported from PM2 do), ignores SIGTERM, and
    // keeps running after its server has closed, as an app with a database pool does.
    let js = format!(
        "{}setInterval(() => {{}}, 1000);\nprocess.on('SIGTERM', () => {{}});\n\
         process.on('SIGINT', () => require('fs').writeFileSync(process.env.MARK + process.pid, ''));\n",
        good_release()
    );
    let dir = tempfile::tempdir().unwrap();
    let mark = format!("{}/got-sigint-", dir.path().display());
    let mut app = Deployed::start(
        &js,
        &format!("stop_signal = \"SIGINT\"\nstop_timeout = \"500ms\"\n[env]\nMARK = {mark:?}"),
    );
    let workers: Vec<u32> = app.run.track_children();
    assert_eq!(workers.len(), 2);
    let t = Instant::now();
    signal(app.run.pid, SIGTERM);
    let status = app
        .run
        .wait_timeout(Duration::from_secs(10))
        .expect("exits");
    assert!(status.success(), "{status}");
    // Never exiting on its own, each worker was killed at stop_timeout.
    assert!(
        t.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    for w in workers {
        assert!(
            Path::new(&format!("{mark}{w}")).exists(),
            "worker {w} got no SIGINT"
        );
        assert!(!alive(w));
    }
}
