//! What a user does, on a real systemd 252 booted as PID 1 in namespaces, with the real
//! `.deb` installed by dpkg: write configs, daemon-reload, start the sockets, get served.
//! Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use std::time::Duration;
use support::host::{deb_under_test, Host, OutputText};
use support::{wait_until, APP_DIR};

/// One app of the fixture, listening in one of the forms real apps use.
struct App {
    form: &'static str,
    listen: &'static [&'static str],
    instances: &'static str,
    /// A curl command line fragment that reaches the app's first address.
    reach: &'static str,
}

const APPS: &[App] = &[
    App {
        form: "port",
        listen: &["127.0.0.1:8001"],
        instances: "2",
        reach: "http://127.0.0.1:8001/",
    },
    App {
        form: "options",
        listen: &["[::1]:8002"],
        instances: "\"max\"",
        reach: "http://[::1]:8002/",
    },
    App {
        form: "express",
        listen: &["/run/express.sock"],
        instances: "2",
        reach: "--unix-socket /run/express.sock http://localhost/",
    },
    App {
        form: "fastify",
        listen: &["0.0.0.0:8004", "127.0.0.1:8005"],
        instances: "2",
        reach: "http://127.0.0.1:8004/",
    },
];

fn config(app: &App) -> String {
    let listen: Vec<String> = app.listen.iter().map(|l| format!("{l:?}")).collect();
    format!(
        "script = \"server.js\"\ncwd = \"/srv/app\"\ninstances = {}\nlisten = [{}]\n\
         [env]\nFORM = \"{}\"\nNODE_ENV = \"production\"\n",
        app.instances,
        listen.join(", "),
        app.form
    )
}

fn curl(host: &Host, reach: &str) -> String {
    host.ok(&format!("curl -sS --fail -m 20 {reach}"))
}

#[test]
fn an_unmodified_app_runs_on_every_core_under_socket_activation() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("skeleton");

    host.ok(&format!("dpkg -i {}", deb.display()));
    host.ok("id nodeapp && test -x /usr/lib/nodeapp/nodeapp-shim && test -f /usr/lib/nodeapp/preload.cjs");
    host.ok(&format!("mkdir -p /srv/app && cp -r {APP_DIR}/. /srv/app/"));
    for app in APPS {
        host.ok(&format!(
            "cat > /etc/nodeapp/{}.toml <<'EOF'\n{}EOF",
            app.form,
            config(app)
        ));
    }
    // An invalid config beside the valid ones: an unknown key and a port out of range.
    host.ok(
        "printf 'script = \"server.js\"\\ncwd = \"/srv/app\"\\nlisten = [\"0.0.0.0:80000\"]\\n\
             colour = \"blue\"\\n' > /etc/nodeapp/broken.toml",
    );
    host.ok("systemctl daemon-reload");

    // The generator wrote drop-ins for every valid app and none for the broken one.
    for app in APPS {
        let socket = host.ok(&format!(
            "cat /run/systemd/generator/nodeapp@{}.socket.d/50-nodeapp.conf",
            app.form
        ));
        for addr in app.listen {
            assert!(socket.contains(&format!("ListenStream={addr}")), "{socket}");
        }
    }
    host.ok("! test -e /run/systemd/generator/nodeapp@broken.socket.d");
    let check = host.sh("nodeapp check");
    assert_eq!(
        check.status.code(),
        Some(78),
        "nodeapp check fails on the broken config"
    );
    let errors = String::from_utf8_lossy(&check.stderr);
    assert!(
        errors.contains("/etc/nodeapp/broken.toml:4:1:") && errors.contains("colour"),
        "{errors}"
    );

    for app in APPS {
        host.ok(&format!("systemctl start nodeapp@{}.socket", app.form));
    }
    // The broken app has no sockets to start; starting it fails and disturbs no one.
    assert!(!host
        .sh("systemctl start nodeapp@broken.socket")
        .status
        .success());

    let cpus = host.ok("nproc");
    for app in APPS {
        let unit = format!("nodeapp@{}.service", app.form);
        let n = if app.instances == "\"max\"" {
            cpus.as_str()
        } else {
            app.instances
        };
        // The first connection starts the service; it waits in the backlog meanwhile.
        let body = curl(&host, app.reach);
        assert!(
            body.starts_with(&format!("form={} pid=", app.form)),
            "{body}"
        );
        // The first worker to listen may answer before the others are ready; the unit
        // becomes active (READY=1) once every worker listens.
        assert!(
            wait_until(Duration::from_secs(20), || host
                .property(&unit, "ActiveState")
                == "active"),
            "{unit} never became active"
        );
        assert_eq!(
            host.property(&unit, "StatusText"),
            format!("{n}/{n} workers ready")
        );
        let pids = host.workers(&unit);
        assert_eq!(
            pids.len().to_string(),
            n,
            "{unit}: exactly N workers under the unit: {pids:?}"
        );
        for pid in &pids {
            let cmd = host.ok(&format!("tr '\\0' ' ' < /proc/{pid}/cmdline"));
            assert!(
                cmd.starts_with("/usr/bin/node --require /usr/lib/nodeapp/preload.cjs"),
                "{cmd}"
            );
        }
        let journal = host.journal(&unit);
        for pid in &pids {
            assert!(
                journal.contains(&format!("{}/", app.form))
                    && journal.contains(&format!(
                        "[{pid}]: app started: form={} pid={pid}",
                        app.form
                    )),
                "{unit}: the app's startup line, credited to worker {pid}:\n{journal}"
            );
        }
    }
    // Every address of an app is served.
    assert!(curl(&host, "http://127.0.0.1:8005/").starts_with("form=fastify"));

    // A worker that dies is replaced; the unit itself does not restart.
    let unit = "nodeapp@port.service";
    let before = host.workers(unit);
    host.ok(&format!("kill -KILL {}", before[0]));
    let mut after = Vec::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            after = host.workers(unit);
            after.len() == 2 && !after.contains(&before[0])
        }),
        "worker {} not replaced: {after:?}",
        before[0]
    );
    assert!(wait_until(Duration::from_secs(10), || host
        .property(unit, "StatusText")
        == "2/2 workers ready"));
    assert_eq!(host.property(unit, "NRestarts"), "0");
    assert!(curl(&host, "http://127.0.0.1:8001/").starts_with("form=port"));

    // Stopping leaves nothing behind.
    for app in APPS {
        host.ok(&format!(
            "systemctl stop nodeapp@{0}.socket nodeapp@{0}.service",
            app.form
        ));
        let unit = format!("nodeapp@{}.service", app.form);
        assert_eq!(host.property(&unit, "ActiveState"), "inactive");
        assert_eq!(
            host.property(&unit, "Result"),
            "success",
            "{unit}: the shim exited 0"
        );
        assert!(host.unit_pids(&unit).is_empty());
    }
    let leftovers = host
        .sh("ps -eo stat=,comm= | grep -E '^Z|nodeapp|node$'")
        .stdout_text();
    assert!(
        leftovers.is_empty(),
        "no worker, zombie or shim left:\n{leftovers}"
    );

    // Removal stops nothing that still runs and leaves no unit behind.
    host.ok("systemctl start nodeapp@port.socket && curl -sS -m 20 http://127.0.0.1:8001/");
    host.ok("dpkg -r nodeapp");
    host.ok(
        "! systemctl is-active nodeapp@port.service && test ! -e /usr/lib/nodeapp/nodeapp-shim",
    );
    let leftovers = host
        .sh("ps -eo comm= | grep -E 'nodeapp|node$'")
        .stdout_text();
    assert!(
        leftovers.is_empty(),
        "removal stopped every app:\n{leftovers}"
    );
}
