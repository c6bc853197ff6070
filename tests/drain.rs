//! The drain's edges, under `nodeapp run` with real `node` workers: an app's slow shutdown
//! runs to its end, a handler installed before the preload still gets the hand-over,
//! `signal-exit` does not count as the app's handler, and pipelined requests are all
//! answered. No root needed.

mod support;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use support::run::{free_addr, lines, Running};

const FRAMEWORKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/frameworks");

/// Writes `app.js` (and any `files`) into the app's directory and configures 2 workers.
fn start(js: &str, files: &[(&str, &str)], extra: &str) -> (Running, SocketAddr) {
    let addr = free_addr();
    let app = Running::start_with("api", |dir| {
        std::fs::write(dir.join("app.js"), js).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
        format!(
            "script = \"app.js\"\ncwd = {dir:?}\ninstances = 2\nlisten = [\"{addr}\"]\n\
             stop_timeout = \"10s\"\n{extra}\n[env]\nPORT = \"{}\"\nOUT = {:?}\n",
            addr.port(),
            dir.join("out")
        )
    });
    (app, addr)
}

/// An HTTP server on `PORT`; `/slow` answers after 700 ms.
const SERVER: &str = "const fs = require('fs');\n\
    const server = require('http').createServer((q, s) => {\n\
      const end = () => s.end(`pid=${process.pid}\\n`);\n\
      q.url === '/slow' ? setTimeout(end, 700) : end();\n\
    }).listen(Number(process.env.PORT));\n\
    const note = (what) => fs.appendFileSync(process.env.OUT, `${what} ${process.pid}\\n`);\n";

/// Reloads, and returns how each old worker ended.
fn reload(app: &mut Running) -> (std::collections::BTreeSet<u32>, Vec<String>) {
    let before = app.serving_pids();
    let out = app.reload();
    assert!(out.status.success(), "{}", app.log());
    let ends = app.drained(&before, Duration::from_secs(8));
    (before, ends)
}

#[test]
fn a_slow_cleanup_in_the_apps_handler_runs_to_its_end() {
    // An app that flushes telemetry or closes a queue for 2.5 s before it closes.
    let js = SERVER.to_string()
        + "process.on('SIGTERM', async () => {\n\
             await new Promise((r) => setTimeout(r, 2500));\n\
             note('cleaned');\n\
             server.close(() => process.exit(0));\n\
           });\n";
    let (mut app, _) = start(&js, &[], "");
    let (old, ends) = reload(&mut app);
    assert!(ends.iter().all(|e| e == "exited with status 0"), "{ends:?}");
    let out = lines(&app.path("out"));
    for p in old {
        assert!(
            out.contains(&format!("cleaned {p}")),
            "{out:?}\n{}",
            app.log()
        );
    }
}

#[test]
fn a_handler_installed_before_the_preload_gets_the_signal_after_the_drain_began() {
    // As an OpenTelemetry setup loaded with `--require` does: it only flushes and logs.
    let early = "process.on('SIGTERM', () => console.log(`early handler ${process.pid}`));\n";
    let (mut app, addr) = start(
        SERVER,
        &[("early.js", early)],
        "node_args = [\"--require\", \"./early.js\"]",
    );
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    std::thread::sleep(Duration::from_millis(150));
    let (old, ends) = reload(&mut app);
    // The request in flight is answered, and the worker ends once its connections are
    // gone, not at stop_timeout.
    let answer = slow.join().unwrap();
    assert!(
        answer.contains("200 OK") && answer.contains("pid="),
        "{answer}"
    );
    assert!(ends.iter().all(|e| e == "exited with status 0"), "{ends:?}");
    let log = app.log();
    for p in old {
        assert!(log.contains(&format!("early handler {p}")), "{log}");
    }
}

#[test]
fn signal_exit_is_not_the_apps_handler() {
    assert!(
        Path::new(FRAMEWORKS)
            .join("node_modules/signal-exit")
            .exists(),
        "run tests/fixtures/frameworks/prepare.sh first"
    );
    let js = format!(
        "{SERVER}const {{ onExit }} = require({:?});\n\
         onExit(() => note('onexit'));\n",
        Path::new(FRAMEWORKS).join("node_modules/signal-exit")
    );
    let (mut app, _) = start(&js, &[], "");
    let (old, ends) = reload(&mut app);
    assert!(ends.iter().all(|e| e == "exited with status 0"), "{ends:?}");
    let out = lines(&app.path("out"));
    for p in old {
        assert!(out.contains(&format!("onexit {p}")), "{out:?}");
    }
}

#[test]
fn pipelined_requests_are_all_answered_when_the_drain_begins_during_the_first() {
    let (mut app, addr) = start(SERVER, &[], "");
    let client = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
        s.write_all(format!("{req}GET / HTTP/1.1\r\nHost: x\r\n\r\n{req}").as_bytes())
            .unwrap();
        let mut all = String::new();
        let _ = s.read_to_string(&mut all);
        all
    });
    std::thread::sleep(Duration::from_millis(200));
    let status = app.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(10));
    let all = client.join().unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    assert!(status.success());
}

/// One request on a new connection; the whole answer, head and body.
fn get(addr: SocketAddr, path: &str) -> String {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = support::request(s, path).unwrap();
    format!("{}\r\n\r\n{}", r.head, r.body)
}
