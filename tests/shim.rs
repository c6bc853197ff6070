//! The shim with real `node` workers on real sockets, without systemd as PID 1: sockets
//! passed the way systemd passes them (`systemd-socket-activate`), or bound by
//! `nodeapp run`. No root needed.

mod support;

use nix::sys::signal::Signal::{SIGINT, SIGKILL, SIGTERM};
use std::collections::BTreeSet;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const SHIM: &str = env!("CARGO_BIN_EXE_nodeapp-shim");
const NODEAPP: &str = env!("CARGO_BIN_EXE_nodeapp");

fn wait_serving(sock: &Path) -> String {
    let mut last = Err(std::io::Error::other("no attempt"));
    wait_until(Duration::from_secs(15), || {
        last = get_unix(sock);
        last.is_ok()
    });
    last.unwrap_or_else(|e| panic!("nothing served on {}: {e}", sock.display()))
}

fn node_children(p: &mut Proc, n: usize) -> Vec<u32> {
    let mut kids = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            kids = p.track_children();
            kids.len() == n
        }),
        "expected {n} workers, found {kids:?}"
    );
    kids
}

/// The shim (or `nodeapp run`) exits 0 after draining, and none of `workers` is left.
fn assert_exits_0(shim: &mut Proc, workers: &[u32]) {
    let status = shim
        .wait_timeout(Duration::from_secs(15))
        .expect("exits after draining");
    assert!(status.success(), "{status}");
    for &w in workers {
        assert!(!alive(w), "worker {w} outlived the shim");
    }
}

/// The fixture app under `nodeapp run` on one unix socket, once it serves.
struct Served {
    _dir: tempfile::TempDir,
    sock: std::path::PathBuf,
    run: Proc,
}

fn nodeapp_run(cfg: &Path) -> Command {
    let mut cmd = Command::new(NODEAPP);
    cmd.arg("run").arg(cfg).stderr(Stdio::null());
    cmd
}

/// Writes a config with `extra` lines, starts `command(config)`, waits until it serves.
fn serve(extra: &str, command: impl FnOnce(&Path) -> Command) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    let cfg = app_config(dir.path(), "api", &[sock.display().to_string()], extra);
    let run = Proc::spawn(&mut command(&cfg));
    wait_serving(&sock);
    Served {
        _dir: dir,
        sock,
        run,
    }
}

#[test]
fn workers_serve_on_the_socket_passed_the_way_systemd_passes_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("api.sock");
    app_config(
        dir.path(),
        "api",
        &[sock.display().to_string()],
        "instances = 2",
    );

    let mut activator = Proc::spawn(
        Command::new("systemd-socket-activate")
            .arg("-l")
            .arg(&sock)
            .arg("-E")
            .arg(format!("NODEAPP_CONFIG_DIR={}", dir.path().display()))
            .args([SHIM, "api"])
            .stderr(Stdio::null()),
    );
    assert!(wait_until(Duration::from_secs(5), || sock.exists()));
    // The first connection starts the shim, and waits in the backlog until it is served.
    let first = get_unix(&sock).expect("first request");
    assert!(first.starts_with("form=port pid="), "{first}");

    // systemd-socket-activate execs the shim in its own process.
    let shim = activator.pid;
    let workers: BTreeSet<u32> = children(shim).into_iter().collect();
    activator.track_children();
    assert_eq!(workers.len(), 2, "two plain node workers under the shim");
    for _ in 0..20 {
        let pid = served_by(&get_unix(&sock).unwrap());
        assert!(
            workers.contains(&pid),
            "served by {pid}, not one of the workers {workers:?}"
        );
    }

    signal(shim, SIGTERM);
    assert_exits_0(&mut activator, &workers.into_iter().collect::<Vec<_>>());
}

#[test]
fn a_killed_worker_is_replaced_and_ctrl_c_drains_and_exits_0() {
    let Served {
        _dir,
        sock,
        mut run,
    } = serve("instances = 2", nodeapp_run);
    let before = node_children(&mut run, 2);

    signal(before[0], SIGKILL);
    let mut after = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            after = run.track_children();
            after.len() == 2 && !after.contains(&before[0])
        }),
        "worker {} was not replaced: {after:?}",
        before[0]
    );
    assert!(after.contains(&before[1]), "the other worker kept running");
    wait_serving(&sock);

    signal(run.pid, SIGINT);
    assert_exits_0(&mut run, &after);
    assert!(!sock.exists(), "the socket file it bound is removed");
}

#[test]
fn a_request_in_flight_at_stop_is_answered_and_told_to_close() {
    let Served {
        _dir,
        sock,
        mut run,
    } = serve("instances = 1", nodeapp_run);
    run.track_children();

    let stream = UnixStream::connect(&sock).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let slow = std::thread::spawn(move || request(stream, "/slow"));
    std::thread::sleep(Duration::from_millis(200));
    signal(run.pid, SIGTERM);

    let response = slow
        .join()
        .unwrap()
        .expect("the in-flight request is answered");
    assert!(
        response.head.starts_with("HTTP/1.1 200"),
        "{}",
        response.head
    );
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("connection: close"),
        "a draining worker tells keep-alive clients to go: {}",
        response.head
    );
    assert_exits_0(&mut run, &[]);
}

#[test]
fn max_instances_follows_the_cpu_affinity_mask() {
    // One CPU allowed, whatever the machine has: one worker.
    let mut app = serve("instances = \"max\"", |cfg| {
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", "0", NODEAPP, "run"])
            .arg(cfg)
            .stderr(Stdio::null());
        cmd
    });
    node_children(&mut app.run, 1);
}

#[test]
fn every_listen_address_is_served_by_the_apps_one_server() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.sock");
    let b = dir.path().join("b.sock");
    for form in ["port", "options", "express", "fastify"] {
        let listen = [a.display().to_string(), b.display().to_string()];
        let cfg = app_config(
            dir.path(),
            "api",
            &listen,
            &format!("instances = 1\n[env]\nFORM = \"{form}\""),
        );
        let mut run = Proc::spawn(
            Command::new(NODEAPP)
                .arg("run")
                .arg(&cfg)
                .stderr(Stdio::null()),
        );
        let body = wait_serving(&a);
        assert!(body.starts_with(&format!("form={form} ")), "{body}");
        assert_eq!(
            served_by(&wait_serving(&b)),
            served_by(&body),
            "{form}: same worker"
        );
        signal(run.pid, SIGTERM);
        assert_exits_0(&mut run, &[]);
    }
}

#[test]
fn the_shim_refuses_to_run_without_sockets_from_systemd() {
    let dir = tempfile::tempdir().unwrap();
    app_config(dir.path(), "api", &["127.0.0.1:1".into()], "");
    let out = Command::new(SHIM)
        .arg("api")
        .env("NODEAPP_CONFIG_DIR", dir.path())
        .env_remove("LISTEN_FDS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(71));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("systemd passed no sockets"), "{err}");
}

#[test]
fn an_invalid_config_stops_the_shim_with_the_config_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("api.toml"),
        "script = \"server.js\"\ncwd = 7\n",
    )
    .unwrap();
    let out = Command::new(SHIM)
        .arg("api")
        .env("NODEAPP_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "RestartPreventExitStatus= stops retries"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.toml:2:7"),
        "names file, line and column: {err}"
    );

    let out = Command::new(NODEAPP)
        .arg("check")
        .arg(dir.path().join("api.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("api.toml:2:7"));
}

#[test]
fn a_worker_is_replaced_even_when_the_parent_left_sigchld_ignored() {
    let Served {
        _dir,
        sock,
        mut run,
    } = serve("instances = 1", |cfg| {
        let mut cmd = nodeapp_run(cfg);
        // SAFETY: only sets a signal disposition between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                use nix::sys::signal::{signal, SigHandler, SIGCHLD};
                signal(SIGCHLD, SigHandler::SigIgn)
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        cmd
    });
    let first = node_children(&mut run, 1)[0];
    signal(first, SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || {
            let now = run.track_children();
            now.len() == 1 && now[0] != first
        }),
        "the killed worker was not replaced"
    );
    wait_serving(&sock);
}
