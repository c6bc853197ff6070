//! The `nodeapp` CLI against a real systemd 252 (PID 1 in namespaces) over real D-Bus, with
//! the real `.deb` installed: add, ls, status, reload (success and failure), stop, start,
//! restart, logs, rm, and import-pm2 on a real ecosystem file.
//! Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use serde_json::Value;
use std::process::Output;
use std::time::Duration;
use support::host::{deb_under_test, Host, OutputText};
use support::{wait_until, APP_DIR};

const UNIT: &str = "nodeapp@api.service";

/// Runs `nodeapp ARGS` inside the host (a shell line, so quoting is the shell's).
fn nodeapp(host: &Host, args: &str) -> Output {
    host.sh(&format!("nodeapp {args}"))
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `nodeapp ARGS`, which must exit 0; its stdout.
fn nodeapp_ok(host: &Host, args: &str) -> String {
    let out = nodeapp(host, args);
    assert!(out.status.success(), "nodeapp {args}:\n{}", text(&out));
    out.stdout_text()
}

/// `nodeapp ARGS`, which must exit with `code`; its stderr.
fn nodeapp_fails(host: &Host, args: &str, code: i32) -> String {
    let out = nodeapp(host, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "nodeapp {args}:\n{}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(host: &Host, args: &str) -> Value {
    let out = nodeapp(host, args);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn app_in<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in {list:#}"))
}

#[test]
fn add_list_status_control_and_remove_apps() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("cli");
    host.install_with_releases(&deb);

    // add --now: written, enabled at boot, running and ready when it returns.
    let said = nodeapp_ok(
        &host,
        "add api --script server.js --cwd /srv/api/current --instances 2 \
         --listen 127.0.0.1:8080 --env 'GREETING=hello \"big\" $world' --now",
    );
    assert!(said.contains("2/2 workers ready"), "{said}");
    assert_eq!(host.property(UNIT, "ActiveState"), "active");
    host.ok("systemctl is-enabled nodeapp@api.socket nodeapp@api.service");
    assert_eq!(
        host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/env/GREETING"),
        "hello \"big\" $world"
    );

    // Bad input changes nothing.
    let err = nodeapp_fails(
        &host,
        "add api --script x.js --cwd /srv --listen 127.0.0.1:9",
        64,
    );
    assert!(
        err.contains("/etc/nodeapp/api.toml exists; --force"),
        "{err}"
    );
    let err = nodeapp_fails(
        &host,
        "add ../x --script x.js --cwd /srv --listen 127.0.0.1:9",
        2,
    );
    assert!(err.contains("not a valid app name"), "{err}");
    let err = nodeapp_fails(
        &host,
        "add web --script x.js --cwd /srv --listen 127.0.0.1:99999",
        78,
    );
    assert!(
        err.contains("/etc/nodeapp/web.toml") && err.contains("listen"),
        "{err}"
    );
    let err = nodeapp_fails(
        &host,
        "add web --script x.js --cwd /srv --listen 127.0.0.1:9 --user ghost",
        78,
    );
    assert!(
        err.contains("\"ghost\" does not exist on this system"),
        "{err}"
    );
    host.ok("test ! -e /etc/nodeapp/web.toml");

    // An app that is only defined, and a config the generator skips.
    nodeapp_ok(
        &host,
        "add idle --script server.js --cwd /srv/api/current --instances 1 --listen 127.0.0.1:8081",
    );
    host.ok("printf 'script = \"s.js\"\\ncwd = \"/srv\"\\nlisten = [\"127.0.0.1:8082\"]\\ncolour = 1\\n' > /etc/nodeapp/broken.toml");

    // ls: a plain table when piped, and JSON with systemd's figures.
    let table = nodeapp_ok(&host, "ls");
    assert!(!table.contains('\x1b'), "no colour when piped:\n{table}");
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        table.lines().next().unwrap().split_whitespace().next(),
        Some("NAME")
    );
    assert_eq!(&row("api")[1..3], ["active", "2/2"], "{table}");
    assert_eq!(row("idle")[1], "inactive", "{table}");
    assert_eq!(&row("broken")[1..3], ["bad", "config"], "{table}");
    let list = json(&host, "ls --json");
    let api = app_in(&list, "api");
    let main_pid: u64 = host.property(UNIT, "MainPID").parse().unwrap();
    assert_eq!(api["state"], "active");
    assert_eq!(
        (api["ready"].as_u64(), api["wanted"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(api["main_pid"].as_u64(), Some(main_pid));
    assert_eq!(api["restarts"].as_u64(), Some(0));
    assert!(api["memory_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{api}");
    assert!(api["uptime_ms"].as_u64().is_some(), "{api}");
    assert_eq!(api["listen"][0], "127.0.0.1:8080");
    assert_eq!(app_in(&list, "idle")["state"], "inactive");
    let broken = app_in(&list, "broken");
    assert_eq!(broken["state"], "bad config");
    assert!(
        broken["config_error"]
            .as_str()
            .unwrap()
            .contains("/etc/nodeapp/broken.toml:4:1"),
        "{broken}"
    );

    // The shim keeps its status line where anyone can read it; its socket stays private.
    assert_eq!(
        host.ok("cat /run/nodeapp/api/status"),
        host.property(UNIT, "StatusText")
    );
    assert_eq!(host.ok("stat -c %a /run/nodeapp/api/control"), "600");

    // status: one row per worker, with what the shim knows and /proc says.
    let workers = host.workers(UNIT);
    let status = nodeapp_ok(&host, "status api");
    assert!(status.contains("status:   2/2 workers ready"), "{status}");
    for pid in &workers {
        assert!(
            status.contains(&format!(" {pid} ")),
            "worker {pid}:\n{status}"
        );
    }
    let kill = workers[0];
    host.ok(&format!("kill -KILL {kill}"));
    assert!(wait_until(Duration::from_secs(10), || {
        let s = json(&host, "status api --json");
        s["workers"].as_array().is_some_and(|w| {
            w.len() == 2
                && w.iter()
                    .all(|w| !w["ready_ms"].is_null() && w["pid"] != kill)
        })
    }));
    let s = json(&host, "status api --json");
    let mut restarts: Vec<u64> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(w["role"], "serving");
            assert!(w["rss_bytes"].as_u64().unwrap_or(0) > 1 << 20, "{w}");
            w["restarts"].as_u64().unwrap()
        })
        .collect();
    restarts.sort();
    assert_eq!(
        restarts,
        [0, 1],
        "the killed worker's slot counts one restart: {s:#}"
    );
    assert_eq!(
        s["restarts"].as_u64(),
        Some(0),
        "the unit itself did not restart"
    );
    let err = nodeapp_fails(&host, "status idle", 3);
    assert!(err.contains("idle is inactive"), "{err}");

    // reload: success replaces every worker; a broken release fails with the reason.
    let before = host.workers(UNIT);
    let said = nodeapp_ok(&host, "reload api");
    assert!(said.contains("api: reloaded"), "{said}");
    let after = host.workers(UNIT);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} -> {after:?}"
    );
    host.ok("ln -sfn releases/broken /srv/api/current");
    let err = nodeapp_fails(&host, "reload api", 1);
    assert!(
        err.contains("reload nodeapp@api.service: job failed")
            && err.contains("last reload failed: the new worker 0"),
        "{err}"
    );
    assert_eq!(host.workers(UNIT), after, "the old workers keep serving");
    host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/");
    host.ok("ln -sfn releases/v1 /srv/api/current");

    // A config edit is picked up without a manual daemon-reload; a broken edit is refused.
    host.ok("sed -i 's/^instances = 2/instances = 3/' /etc/nodeapp/api.toml");
    let said = nodeapp_ok(&host, "reload api");
    assert!(said.contains("3/3 workers ready"), "{said}");
    host.ok("cp /etc/nodeapp/api.toml /tmp/api.toml && sed -i '1i instances = \"lots\"' /etc/nodeapp/api.toml");
    let err = nodeapp_fails(&host, "restart api", 78);
    assert!(
        err.contains("/etc/nodeapp/api.toml") && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(host.workers(UNIT).len(), 3);
    host.ok("cp /tmp/api.toml /etc/nodeapp/api.toml");

    // logs: the app's lines, and one worker slot's.
    let logs = nodeapp_ok(&host, "logs api -n 200");
    assert!(logs.contains("app started: form=port"), "{logs}");
    let slot1 = nodeapp_ok(&host, "logs api --worker 1 -n 200");
    assert!(
        slot1.contains("api/1[") && !slot1.contains("api/0["),
        "{slot1}"
    );

    // stop: nothing listens; start and restart bring it back.
    nodeapp_ok(&host, "stop api");
    assert_eq!(host.property(UNIT, "ActiveState"), "inactive");
    assert_eq!(
        host.property("nodeapp@api.socket", "ActiveState"),
        "inactive"
    );
    assert!(!host
        .sh("curl -sS -m 5 http://127.0.0.1:8080/")
        .status
        .success());
    nodeapp_ok(&host, "start api");
    host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/");
    let main_before = host.property(UNIT, "MainPID");
    nodeapp_ok(&host, "restart api");
    assert_ne!(host.property(UNIT, "MainPID"), main_before);
    let err = nodeapp_fails(&host, "start nosuch", 64);
    assert!(err.contains("no app \"nosuch\""), "{err}");

    // rm: stopped, disabled, config gone; the other apps are untouched.
    nodeapp_ok(&host, "rm api");
    host.ok("test ! -e /etc/nodeapp/api.toml");
    assert_eq!(host.property(UNIT, "ActiveState"), "inactive");
    assert!(!host
        .sh("systemctl is-enabled nodeapp@api.socket")
        .status
        .success());
    assert!(!host
        .sh("curl -sS -m 5 http://127.0.0.1:8080/")
        .status
        .success());
    let names: Vec<String> = json(&host, "ls --json")
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["broken", "idle"]);
}

const ECOSYSTEM: &str = r#"
module.exports = {
  apps: [
    {
      name: "web",
      script: "server.js",
      cwd: "/srv/app",
      instances: 2,
      exec_mode: "cluster",
      kill_timeout: 3000,
      max_memory_restart: "200M",
      cron_restart: "0 3 * * *",
      env: { PORT: 8090, NODE_ENV: "development" },
      env_production: { NODE_ENV: "production", PORT: 8091 },
    },
    {
      name: "admin",
      script: "./server.js",
      cwd: "/srv/app",
      wait_ready: true,
      listen_timeout: 5000,
      env: { PORT: 8092, HOST: "127.0.0.1", SEND_READY_AFTER_MS: "100" },
    },
  ],
};
"#;

#[test]
fn import_pm2_turns_an_ecosystem_file_into_running_apps() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("cli-pm2");
    host.ok(&format!("dpkg -i {}", deb.display()));
    host.ok(&format!("mkdir -p /srv/app && cp -r {APP_DIR}/. /srv/app/"));
    host.ok(&format!(
        "cat > /srv/app/ecosystem.config.js <<'EOF'\n{ECOSYSTEM}\nEOF"
    ));

    // --dry-run prints both configs and writes nothing.
    let out = nodeapp(
        &host,
        "import-pm2 /srv/app/ecosystem.config.js --env production --dry-run",
    );
    assert!(out.status.success(), "{}", text(&out));
    let printed = out.stdout_text();
    assert!(
        printed.contains("# /etc/nodeapp/web.toml")
            && printed.contains("# /etc/nodeapp/admin.toml"),
        "{printed}"
    );
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(notes.contains("web: cron_restart not mapped"), "{notes}");
    assert!(printed.contains("max_memory = \"200M\""), "{printed}");
    host.ok("test -z \"$(ls /etc/nodeapp)\"");

    let said = nodeapp_ok(
        &host,
        "import-pm2 /srv/app/ecosystem.config.js --env production --now",
    );
    assert!(said.contains("web: started: 2/2 workers ready"), "{said}");
    assert!(said.contains("admin: started: 1/1 workers ready"), "{said}");
    assert_eq!(
        host.ok("curl -sS --fail -m 5 http://127.0.0.1:8091/env/NODE_ENV"),
        "production"
    );
    assert!(host
        .ok("curl -sS --fail -m 5 http://127.0.0.1:8092/")
        .starts_with("form=port"));
    // max_memory_restart became max_memory, and V8's heap is 80% of it.
    let heap: u32 = host
        .ok("curl -sS --fail -m 5 http://127.0.0.1:8091/heap-limit")
        .trim()
        .parse()
        .unwrap();
    assert!((160..240).contains(&heap), "heap limit {heap} MiB");
    let web = host.ok("cat /etc/nodeapp/web.toml");
    assert!(
        web.contains("stop_timeout = \"3s\"") && web.contains("instances = 2"),
        "{web}"
    );
    let admin = host.ok("cat /etc/nodeapp/admin.toml");
    assert!(
        admin.contains("wait_ready = true") && admin.contains("ready_timeout = \"5s\""),
        "{admin}"
    );
    let list = json(&host, "ls --json");
    assert_eq!(app_in(&list, "web")["state"], "active");
    assert_eq!(app_in(&list, "admin")["state"], "active");
    host.ok("systemctl is-enabled nodeapp@web.socket nodeapp@admin.service");

    // Importing again refuses to overwrite without --force.
    let err = nodeapp_fails(&host, "import-pm2 /srv/app/ecosystem.config.js", 78);
    assert!(err.contains("exists; --force"), "{err}");
}
