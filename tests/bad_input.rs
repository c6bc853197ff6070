//! Bad input on a real systemd 252 (PID 1 in namespaces) with the `.deb` installed: each
//! broken config gets a clear error naming its file, and the good app beside them is
//! neither stopped nor disturbed, and serves every request meanwhile; environment values reach the worker byte for byte.
//! Needs root and `NODEAPP_DEB` (tests/run sets both up); skipped loudly otherwise.

mod support;

use support::host::{deb_under_test, Host, OutputText};
use support::load::{assert_none_failed, Load};

const GOOD: &str = "script = \"server.js\"\ncwd = \"/srv/api/current\"\ninstances = 2\n\
                    listen = [\"127.0.0.1:8080\"]\n";

/// Written as a TOML basic string; what the worker must receive is `TRICKY_VALUE`.
const TRICKY_TOML: &str =
    r#"TRICKY = "100% $HOME \"dq\" 'sq' back\\slash two  spaces\nnew line ${X} %i""#;
const TRICKY_VALUE: &str = "100% $HOME \"dq\" 'sq' back\\slash two  spaces\nnew line ${X} %i";

#[test]
fn broken_configs_are_named_and_the_good_app_is_not_disturbed() {
    let Some(deb) = deb_under_test() else { return };
    let host = Host::boot("bad-input");
    host.install_with_releases(&deb);
    host.ok(&format!(
        "cat > /etc/nodeapp/api.toml <<'EOF'\n{GOOD}[env]\n{TRICKY_TOML}\nEOF"
    ));
    host.ok("systemctl daemon-reload && systemctl start nodeapp@api.socket nodeapp@api.service");
    assert_eq!(
        host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/env/TRICKY"),
        TRICKY_VALUE,
        "the value, byte for byte"
    );
    let workers = host.workers("nodeapp@api.service");
    let traffic = Load::start("127.0.0.1:8080".parse().unwrap(), Some(host.netns()), 2);

    // Configs the generator must skip, each for its own reason.
    let skipped = [
        ("empty", "", "`script`: is missing"),
        ("latin1", "args = [\"caf\\351\"]\\n", "not UTF-8"),
        (
            "nonode",
            "node = \"/opt/none/bin/node\"\\n",
            "`node`: /opt/none/bin/node",
        ),
        ("typo", "instance = 2\\n", "unknown field `instance`"),
        ("badport", "listen = [\"127.0.0.1:70000\"]\\n", "`listen`"),
        (
            "wrongtype",
            "instances = \"two\"\\n",
            "`instances`: is the string \"two\"; expected a whole number",
        ),
        (
            "badsize",
            "max_memory = \"lots\"\\n",
            "`max_memory`: \"lots\" is not a size",
        ),
    ];
    for (name, text, _) in &skipped {
        // A full config where the broken part is the only fault, except for `empty`.
        let base = if text.is_empty() {
            String::new()
        } else {
            "script = \"server.js\"\\ncwd = \"/srv/api/current\"\\n".to_string()
        };
        let listen = if text.contains("listen") {
            ""
        } else {
            "listen = [\"127.0.0.1:9001\"]\\n"
        };
        let body = if text.is_empty() {
            String::new()
        } else {
            format!("{base}{listen}{text}")
        };
        host.ok(&format!("printf '{body}' > /etc/nodeapp/{name}.toml"));
    }
    host.ok("printf 'script = \"s.js\"\\n' > '/etc/nodeapp/my app.toml'");
    // Configs the generator accepts but this host cannot run: both fail at start, alone.
    host.ok(&format!(
        "printf '{}' > /etc/nodeapp/inuse.toml",
        GOOD.replace('\n', "\\n")
            .replace('"', "\\\"")
            .replace("\\\"", "\"")
    ));
    host.ok(
        "printf 'script = \"server.js\"\\ncwd = \"/srv/api/current\"\\nlisten = [\"127.0.0.1:9002\"]\\n\
         user = \"ghost\"\\n' > /etc/nodeapp/ghost.toml",
    );
    host.ok("systemctl daemon-reload");

    let check = host.sh("nodeapp check");
    let errors = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{errors}");
    for (name, _, why) in &skipped {
        let line = errors
            .lines()
            .find(|l| l.starts_with(&format!("/etc/nodeapp/{name}.toml:")))
            .unwrap_or_else(|| panic!("nothing about {name}.toml in:\n{errors}"));
        assert!(line.contains(why), "{name}: {line}");
        host.ok(&format!(
            "! test -e /run/systemd/generator/nodeapp@{name}.socket.d"
        ));
    }
    assert!(
        errors.contains("/etc/nodeapp/my app.toml") && errors.contains("not a valid app name"),
        "{errors}"
    );
    assert!(
        errors.contains("\"ghost\" does not exist on this system"),
        "{errors}"
    );

    assert!(
        errors.contains(
            "/etc/nodeapp/inuse.toml: `listen`: 127.0.0.1:8080 is also in /etc/nodeapp/api.toml"
        ),
        "{errors}"
    );
    // The port is taken by the good app: that socket fails to start.
    assert!(!host
        .sh("systemctl start nodeapp@inuse.socket")
        .status
        .success());
    assert_eq!(host.property("nodeapp@inuse.socket", "Result"), "resources");
    // No such user: systemd refuses to start the service (status 217/USER).
    assert!(!host
        .sh("systemctl start nodeapp@ghost.service")
        .status
        .success());
    assert_eq!(
        host.property("nodeapp@ghost.service", "ExecMainStatus"),
        "217"
    );

    // None of it touched the good app.
    let (keep, close) = traffic.finish();
    assert_none_failed("the good app beside broken configs", &keep, &close);
    assert_eq!(host.workers("nodeapp@api.service"), workers);
    assert_eq!(host.property("nodeapp@api.service", "NRestarts"), "0");
    assert_eq!(
        host.ok("curl -sS --fail -m 5 http://127.0.0.1:8080/env/TRICKY"),
        TRICKY_VALUE
    );
    let ls = host.sh("nodeapp ls --json").stdout_text();
    let list: serde_json::Value = serde_json::from_str(&ls).unwrap();
    let state = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .map(|a| a["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state("api").as_deref(), Some("active"));
    for (name, _, _) in &skipped {
        assert_eq!(state(name).as_deref(), Some("bad config"), "{ls}");
    }
}
