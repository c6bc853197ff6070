//! `nodeapp import-pm2` never prints or writes a config that `nodeapp check` would reject
//! or that cannot start for a reason it can see, and refuses values PM2 itself rejects.

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

const NODEAPP: &str = env!("CARGO_BIN_EXE_nodeapp");

struct Import {
    out: Output,
    apps: Vec<Value>,
}

impl Import {
    fn app(&self, name: &str) -> &Value {
        self.apps
            .iter()
            .find(|a| a["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.apps))
    }

    fn refused(&self, name: &str) -> String {
        let app = self.app(name);
        assert!(app["config"].is_null(), "{name} imported: {app}");
        app["refused"].as_str().unwrap().to_string()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.out.stderr).into_owned()
    }
}

/// Imports `file` (written into `dir`) with --dry-run --json, configs in `dir/etc`.
fn import(dir: &Path, file: &str, text: &str, args: &[&str]) -> Import {
    std::fs::write(dir.join(file), text).unwrap();
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    let out = Command::new(NODEAPP)
        .args(["import-pm2", file, "--dry-run", "--json"])
        .args(args)
        .current_dir(dir)
        .env_remove("PORT")
        .env("NODEAPP_CONFIG_DIR", dir.join("etc"))
        .output()
        .unwrap();
    let apps = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_else(|| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)));
    Import { out, apps }
}

fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("server.js"),
        "require('http').createServer().listen(3000)",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("etc")).unwrap();
    dir
}

#[test]
fn what_cannot_start_here_is_refused_with_the_reason() {
    let dir = app_dir();
    let d = dir.path();
    std::fs::write(
        d.join("etc/taken.toml"),
        "script = \"server.js\"\ncwd = \"/srv\"\nlisten = [\"0.0.0.0:4000\"]\n",
    )
    .unwrap();
    let file = r#"module.exports = { apps: [
        { name: "missing", script: "dist/main.js", port: 3001 },
        { name: "nodir", script: "server.js", cwd: "/nonexistent/app", port: 3002 },
        { name: "reserved", script: "server.js", port: 3003, env: { NODE_APP_INSTANCE: "1" } },
        { name: "clash", script: "server.js", port: 4000 },
        { name: "twice", script: "server.js", port: 3003 },
        { name: "ok", script: "server.js", port: 3004 },
    ] };"#;
    let i = import(d, "ecosystem.config.js", file, &[]);
    assert!(i.refused("missing").contains("dist/main.js does not exist"));
    assert!(i
        .refused("nodir")
        .contains("cwd /nonexistent/app is not a directory here"));
    let reserved = i.refused("reserved");
    assert!(
        reserved.contains("would not pass `nodeapp check`")
            && reserved.contains("NODE_APP_INSTANCE is set by nodeapp itself"),
        "{reserved}"
    );
    assert!(i.refused("clash").contains("taken.toml"));
    // `reserved` was refused, so its port is free for the next app.
    assert!(i.app("twice")["config"].is_object());
    assert!(i.app("ok")["config"].is_object());
    assert_eq!(i.out.status.code(), Some(78));
}

#[test]
fn a_value_pm2_rejects_refuses_its_app_and_the_others_say_pm2_would_start_none() {
    let dir = app_dir();
    let file = r#"{
        // JSON as PM2 reads it: a JavaScript expression.
        apps: [
            { name: "api", script: "server.js", port: 3000, kill_timeout: "10s" },
            { name: "web", script: "server.js", port: 3001, min_uptime: "5s",
              max_memory_restart: "300M", env: { FEATURES: { beta: true } } },
        ],
        deploy: { production: { env: { FROM_DEPLOY: "yes" } } },
    }"#;
    let i = import(dir.path(), "ecosystem.json", file, &["--env", "production"]);
    let why = i.refused("api");
    assert!(
        why.contains("PM2 7 rejects it") && why.contains("kill_timeout is \"10s\""),
        "{why}"
    );
    let web = i.app("web");
    let notes = web["notes"].to_string();
    assert!(
        notes.contains("PM2 7 starts no app of this file until api"),
        "{notes}"
    );
    assert!(notes.contains("deploy.production.env"), "{notes}");
    let config = &web["config"];
    assert_eq!(config["restart_reset_after"], "5s");
    assert_eq!(config["max_memory"], "300M");
    assert_eq!(config["env"]["FEATURES"], r#"{"beta":true}"#);
    assert_eq!(config["env"]["FROM_DEPLOY"], "yes");
    assert!(i.stderr().contains("deploy not imported"), "{}", i.stderr());
}

#[test]
fn an_existing_config_is_replaced_only_with_force() {
    let dir = app_dir();
    let d = dir.path();
    std::fs::write(
        d.join("etc/api.toml"),
        format!(
            "script = \"server.js\"\ncwd = \"{}\"\nlisten = [\"0.0.0.0:3000\"]\n",
            d.display()
        ),
    )
    .unwrap();
    let file = r#"module.exports = { apps: [{ name: "api", script: "server.js", port: 3000 }] };"#;
    let i = import(d, "ecosystem.config.js", file, &[]);
    assert!(i
        .refused("api")
        .contains("api.toml exists; --force replaces it"));
    let i = import(d, "ecosystem.config.js", file, &["--force"]);
    assert!(i.app("api")["config"].is_object(), "{:?}", i.apps);
}
