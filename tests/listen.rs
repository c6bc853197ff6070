//! How the app's `listen()` calls meet the sockets in `listen`, under `nodeapp run` with
//! real `node` workers: matched by port, `listen(0)` left alone, a hard-coded port that
//! matches nothing still served (with one journal line), a second server outside `listen`
//! explained when a second worker cannot bind it, and a release that serves fewer
//! addresses refused by the reload. No root needed.

mod support;

use nix::sys::signal::Signal::{SIGINT, SIGTERM};
use std::net::SocketAddr;
use std::time::Duration;
use support::run::{free_addr, Running};

/// Writes `app.js` into a fresh directory and a config that runs it; `Running::start_with`
/// gets the text.
fn app_config(dir: &std::path::Path, js: &str, listen: &[SocketAddr], extra: &str) -> String {
    std::fs::write(dir.join("app.js"), js).unwrap();
    let listen: Vec<String> = listen.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "script = \"app.js\"\ncwd = {:?}\nlisten = [{}]\n{extra}\n",
        dir,
        listen.join(", ")
    )
}

/// A server that answers `<name> pid=N` on every request.
fn server(name: &str, listen_args: &str) -> String {
    format!(
        "require('http').createServer((q, s) => s.end(`{name} pid=${{process.pid}}\\n`))\
         .listen({listen_args});\n"
    )
}

fn get(addr: SocketAddr) -> String {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    support::request(s, "/").unwrap().body
}

#[test]
fn each_socket_goes_to_the_server_that_asks_for_its_port() {
    let (a, b) = (free_addr(), free_addr());
    // The exporter listens first; each server asks for its own port.
    let js = server("metrics", &b.port().to_string()) + &server("app", &a.port().to_string());
    let app = Running::start_with("api", |dir| app_config(dir, &js, &[a, b], "instances = 2"));
    for _ in 0..20 {
        assert!(get(a).starts_with("app "));
        assert!(get(b).starts_with("metrics "));
    }
    assert!(!app.log().contains("matches no address"), "{}", app.log());
}

#[test]
fn listen_0_binds_as_in_plain_node() {
    let a = free_addr();
    let js = "const h = require('http').createServer((q, s) => s.end('helper')).listen(0, () => \
              console.log('helper on ' + h.address().port));\n"
        .to_string()
        + &server("app", &a.port().to_string());
    let app = Running::start_with("api", |dir| app_config(dir, &js, &[a], "instances = 2"));
    assert!(get(a).starts_with("app "));
    let log = app.log();
    let ports: Vec<&str> = log
        .lines()
        .filter_map(|l| l.strip_prefix("helper on "))
        .collect();
    assert_eq!(ports.len(), 2, "{log}");
    assert!(
        ports
            .iter()
            .all(|p| *p != "0" && *p != a.port().to_string()),
        "{log}"
    );
}

#[test]
fn a_hard_coded_port_that_matches_nothing_is_served_with_one_journal_line() {
    let a = free_addr();
    let app = Running::start_with("api", |dir| {
        app_config(dir, &server("app", "8089"), &[a], "instances = 2")
    });
    assert!(get(a).starts_with("app "));
    let log = app.log();
    let notes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("matches no address in listen"))
        .collect();
    assert_eq!(notes.len(), 1, "once for the app, not per worker:\n{log}");
    assert!(
        notes[0].contains("listens on 0.0.0.0:8089") && notes[0].contains(&format!("serves {a}")),
        "{}",
        notes[0]
    );
}

#[test]
fn address_right_after_listen_works_while_the_fallback_waits() {
    let a = free_addr();
    let js =
        "const s = require('http').createServer((q, r) => r.end(`app pid=${process.pid}\\n`));\n\
              s.listen(8089);\nconsole.log(`asked for ${s.address().port}`);\n";
    let app = Running::start_with("api", |dir| app_config(dir, js, &[a], "instances = 2"));
    assert!(get(a).starts_with("app "));
    assert_eq!(
        app.log().matches("asked for 8089").count(),
        2,
        "{}",
        app.log()
    );
}

#[test]
fn an_exporter_on_a_port_outside_listen_names_the_fix_when_the_second_worker_cannot_bind_it() {
    let (a, outside) = (free_addr(), free_addr());
    let js = server("metrics", &outside.port().to_string()) + &server("app", &a.port().to_string());
    let err = Running::try_start(
        "api",
        |dir| app_config(dir, &js, &[a], "instances = 2"),
        Duration::from_secs(15),
    )
    .err()
    .expect("the second worker cannot bind the exporter's port");
    let log = err.1;
    assert!(
        log.contains(&format!(
            "the app cannot listen on 0.0.0.0:{}: the address is in use, probably by another \
             worker of this app",
            outside.port()
        )) && log.contains(&format!("add 0.0.0.0:{} to listen", outside.port())),
        "{log}"
    );
}

#[test]
fn an_app_may_listen_on_fd_3_itself() {
    let a = free_addr();
    let app = Running::start_with("api", |dir| {
        app_config(dir, &server("app", "{ fd: 3 }"), &[a], "instances = 2")
    });
    assert!(get(a).starts_with("app "));
    assert!(!app.log().contains("matches no address"));
}

#[test]
fn a_reload_whose_new_workers_serve_fewer_addresses_fails_and_names_the_missing_one() {
    let (a, b) = (free_addr(), free_addr());
    let both = server("metrics", &b.port().to_string()) + &server("app", &a.port().to_string());
    let mut app = Running::start_with("api", |dir| {
        app_config(dir, &both, &[a, b], "instances = 2\nready_timeout = \"2s\"")
    });
    let before = app.serving_pids();
    std::fs::write(app.path("app.js"), server("app", &a.port().to_string())).unwrap();
    let out = app.reload();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "no server of the app listens on {b} (of the addresses in listen it serves only {a})"
        )),
        "{said}"
    );
    assert_eq!(app.serving_pids(), before);
    assert!(get(b).starts_with("metrics "));
}

#[test]
fn a_stop_signal_delivered_twice_at_once_counts_once() {
    let a = free_addr();
    let js = format!(
        "require('http').createServer((q, s) => setTimeout(() => s.end(`slow pid=${{process.pid}}\\n`), 700))\
         .listen({});\n",
        a.port()
    );
    let mut app = Running::start_with("api", |dir| app_config(dir, &js, &[a], "instances = 2"));
    let slow = std::thread::spawn(move || get(a));
    std::thread::sleep(Duration::from_millis(200));
    // What timeout(1) does: the signal to the child, then to its whole process group. Apart
    // enough that the kernel does not merge them into one.
    support::signal(app.run.pid, SIGINT);
    std::thread::sleep(Duration::from_millis(100));
    support::signal(app.run.pid, SIGINT);
    let status = app.stop(SIGTERM, Duration::from_secs(10));
    assert!(slow.join().unwrap().starts_with("slow "), "{}", app.log());
    assert!(status.success(), "{}", app.log());
    assert!(
        !app.log().contains("killing the workers now"),
        "{}",
        app.log()
    );
}
