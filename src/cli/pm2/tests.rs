use super::*;
use caller::Caller;
use serde_json::json;

fn one(app: Value, env: Option<&str>) -> Converted {
    with(
        app,
        Given {
            env_name: env.map(str::to_owned),
            ..Given::default()
        },
    )
}

#[test]
fn maps_the_keys_that_have_equivalents() {
    let c = one(
        json!({
            "name": "api", "script": "dist/server.js", "cwd": "api",
            "instances": "max", "exec_mode": "cluster",
            "node_args": "--max-old-space-size=400 --trace-warnings",
            "args": ["--color"], "kill_timeout": 5000, "listen_timeout": 8000,
            "wait_ready": true, "user": "www", "source_map_support": true,
            "env": {"PORT": 3000, "NODE_ENV": "development"},
            "env_production": {"NODE_ENV": "production"}
        }),
        Some("production"),
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["cwd"].as_str(), Some("/srv/eco/api"));
    assert_eq!(t["instances"].as_str(), Some("max"));
    assert_eq!(t["listen"][0].as_str(), Some("0.0.0.0:3000"));
    assert_eq!(t["node_args"].as_array().unwrap().len(), 3);
    assert_eq!(t["stop_timeout"].as_str(), Some("5s"));
    assert_eq!(t["ready_timeout"].as_str(), Some("8s"));
    assert_eq!(t["wait_ready"].as_bool(), Some(true));
    assert_eq!(t["user"].as_str(), Some("www"));
    assert_eq!(t["env"]["NODE_ENV"].as_str(), Some("production"));
    assert_eq!(t["env"]["PORT"].as_str(), Some("3000"));
}

#[test]
fn maps_pm2s_restart_policy() {
    let c = one(
        json!({
            "name": "api", "script": "a.js", "env": {"PORT": 1},
            "min_uptime": 5000, "max_restarts": 16, "exp_backoff_restart_delay": 100,
            "max_memory_restart": "300M"
        }),
        None,
    );
    assert!(c.notes.is_empty(), "{:?}", c.notes);
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["restart_reset_after"].as_str(), Some("5s"));
    assert_eq!(t["crash_loop_limit"].as_integer(), Some(16));
    assert_eq!(t["restart_delay"].as_str(), Some("100ms"));
    assert_eq!(t["restart_backoff"].as_float(), Some(1.5));
    assert_eq!(t["restart_delay_max"].as_str(), Some("15s"));
    assert_eq!(t["max_memory"].as_str(), Some("300M"));
    assert_eq!(max_memory(&json!(1_073_741_824)), Ok("1G".into()));
    assert_eq!(max_memory(&json!("200m")), Ok("200M".into()));
    assert!(max_memory(&json!("10M"))
        .unwrap_err()
        .contains("below the 32M"));
}

#[test]
fn says_what_it_could_not_map() {
    let c = one(
        json!({
            "script": "worker.js", "instances": -1, "watch": true,
            "cron_restart": "0 3 * * *", "max_memory_restart": "1M",
            "env": {"PORT": "8080", "HOST": "::1"}, "env_staging": {}, "bogus": 1
        }),
        None,
    );
    assert_eq!(c.name, "worker");
    let notes = c.notes.join("\n");
    for key in [
        "instances -1",
        "watch",
        "cron_restart",
        "max_memory_restart",
        "env_staging",
        "bogus",
    ] {
        assert!(notes.contains(key), "{key} missing from {notes}");
    }
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["listen"][0].as_str(), Some("[::1]:8080"));
    assert_eq!(t["instances"].as_str(), Some("max"));
}

fn with(app: Value, given: Given) -> Converted {
    with_deploy(app, given, None)
}

fn with_deploy(app: Value, given: Given, deploy: Option<Value>) -> Converted {
    let ctx = Context {
        base: Path::new("/srv/eco"),
        given: &given,
        caller: &Caller::default(),
        deploy: deploy.as_ref().and_then(Value::as_object),
    };
    convert(0, app.as_object().unwrap(), &ctx)
}

fn listen_of(c: &Converted) -> String {
    let t: toml::Table = c.toml.as_ref().unwrap().parse().unwrap();
    t["listen"][0].as_str().unwrap().to_string()
}

#[test]
fn the_port_comes_from_the_file_the_command_line_or_the_shell_in_pm2s_order() {
    let given = |listen: &[(&str, &str)], shell: Option<&str>| Given {
        listen: listen
            .iter()
            .map(|(a, l)| ((!a.is_empty()).then(|| a.to_string()), l.to_string()))
            .collect(),
        shell_port: shell.map(str::to_owned),
        ..Given::default()
    };
    let app = |extra: Value| {
        let mut a = json!({"name": "api", "script": "a.js"});
        a.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        a
    };
    // PM2's `port` sets PORT over env's.
    let c = with(
        app(json!({"port": "4000", "env": {"PORT": 1}})),
        Given::default(),
    );
    assert_eq!(listen_of(&c), "0.0.0.0:4000");
    let c = with(app(json!({"env": {"NODE_PORT": 4100}})), Given::default());
    assert_eq!(listen_of(&c), "0.0.0.0:4100");
    assert!(c.notes.iter().any(|n| n.contains("env.NODE_PORT")));
    let c = with(app(json!({"args": "start -p 4200"})), Given::default());
    assert_eq!(listen_of(&c), "0.0.0.0:4200");
    // The command line for this app beats the file; for all apps, only where the file
    // is silent; the shell's PORT last.
    let c = with(
        app(json!({"env": {"PORT": 1}})),
        given(&[("api", "127.0.0.1:4300")], None),
    );
    assert_eq!(listen_of(&c), "127.0.0.1:4300");
    let c = with(
        app(json!({"env": {"PORT": 1}})),
        given(&[("", "127.0.0.1:4400")], None),
    );
    assert_eq!(listen_of(&c), "0.0.0.0:1");
    let c = with(app(json!({})), given(&[("", "127.0.0.1:4400")], Some("9")));
    assert_eq!(listen_of(&c), "127.0.0.1:4400");
    let c = with(app(json!({})), given(&[], Some("4500")));
    assert_eq!(listen_of(&c), "0.0.0.0:4500");
    assert!(c.notes.iter().any(|n| n.contains("this shell's PORT")));
    let refused = with(app(json!({"name": "my api"})), Given::default());
    assert!(refused
        .toml
        .unwrap_err()
        .contains("--listen 'my api'=0.0.0.0:3000"));
    // --name names the one app.
    let named = with(
        app(json!({"env": {"PORT": 1}})),
        Given {
            name: Some("web".into()),
            ..Given::default()
        },
    );
    assert_eq!(named.name, "web");
}

#[test]
fn a_copied_environment_is_not_written_and_values_from_it_are_named() {
    let caller = Caller {
        read: vec![("API_PORT".into(), "8080".into())],
        copied: Some(
            [
                ("HOME", "/root"),
                ("PATH", "/usr/bin"),
                ("API_PORT", "8080"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into(),
        ),
    };
    let mut env = json!({"HOME": "/root", "PATH": "/usr/bin", "NODE_ENV": "production",
                         "PORT": "8080"})
    .as_object()
    .unwrap()
    .clone();
    let mut notes = Vec::new();
    caller.sift(&mut env, &mut notes);
    assert_eq!(env.keys().collect::<Vec<_>>(), ["NODE_ENV", "PORT"]);
    assert!(notes[0].contains("2 variables") && notes[0].contains("HOME, PATH"));
    assert!(notes[1].contains("env.PORT is \"8080\" from this shell's $API_PORT"));
}

#[test]
fn refuses_what_it_cannot_run() {
    let no_port = one(json!({"name": "a", "script": "a.js"}), None);
    assert!(no_port.toml.unwrap_err().contains("PORT"));
    let python = one(
        json!({"name": "b", "script": "b.py", "interpreter": "python3", "env": {"PORT": 1}}),
        None,
    );
    assert!(python.toml.unwrap_err().contains("Node.js apps only"));
    // PM2 takes any name; a unit name is made from it, and the note says so.
    let spaced = one(
        json!({"name": "my app: api", "script": "a.js", "env": {"PORT": 1}}),
        None,
    );
    assert_eq!(spaced.name, "my-app-api");
    assert!(spaced.toml.is_ok());
    assert!(
        spaced.notes[0].contains("not a valid app name"),
        "{:?}",
        spaced.notes
    );
}

#[test]
fn every_key_pm2_keeps_is_mapped_or_named_with_what_replaces_it() {
    for key in schema::keys() {
        let known = MAPPED.contains(&key) || UNMAPPED.iter().any(|(k, _)| *k == key);
        assert!(known, "{key}");
    }
}

#[test]
fn values_are_read_as_pm2_reads_them() {
    let c = one(
        json!({
            "name": "api", "cmd": "a.js", "kill_timeout": "3000", "min_uptime": "10s",
            "port": "8080", "uid": "www-data",
            "env": {"FLAGS": {"beta": true}, "EMPTY": null, "N": 1.5}
        }),
        None,
    );
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["script"].as_str(), Some("a.js"));
    assert_eq!(t["stop_timeout"].as_str(), Some("3s"));
    assert_eq!(t["restart_reset_after"].as_str(), Some("10s"));
    assert_eq!(t["listen"][0].as_str(), Some("0.0.0.0:8080"));
    assert_eq!(t["user"].as_str(), Some("www-data"));
    assert_eq!(t["env"]["FLAGS"].as_str(), Some(r#"{"beta":true}"#));
    assert_eq!(t["env"]["EMPTY"].as_str(), Some("null"));
    assert_eq!(t["env"]["N"].as_str(), Some("1.5"));
}

#[test]
fn a_value_pm2_rejects_refuses_the_app_and_says_how_to_correct_it() {
    let c = one(
        json!({"name": "api", "script": "a.js", "port": 80, "kill_timeout": "10s"}),
        None,
    );
    assert!(c.rejected_by_pm2);
    let why = c.toml.unwrap_err();
    assert!(why.contains("PM2 7 rejects it"), "{why}");
    assert!(why.contains("kill_timeout is \"10s\""), "{why}");
}

#[test]
fn deploy_env_is_merged_under_env_name_as_pm2_does() {
    let app = json!({
        "name": "api", "script": "a.js",
        "env": {"PORT": 3000, "A": "env", "B": "env"},
        "env_production": {"B": "env_production"}
    });
    let deploy = json!({"production": {"env": {"A": "deploy", "B": "deploy"}}});
    let c = with_deploy(
        app.clone(),
        Given {
            env_name: Some("production".into()),
            ..Given::default()
        },
        Some(deploy.clone()),
    );
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["env"]["A"].as_str(), Some("deploy"));
    assert_eq!(t["env"]["B"].as_str(), Some("env_production"));
    assert!(c.notes.iter().any(|n| n.contains("deploy.production.env")));
    // Without --env, neither applies.
    let c = with_deploy(app, Given::default(), Some(deploy));
    let t: toml::Table = c.toml.unwrap().parse().unwrap();
    assert_eq!(t["env"]["A"].as_str(), Some("env"));
}

#[test]
fn sections_beside_the_apps_are_named() {
    let notes = sections(&json!({"apps": [], "deploy": {}, "static": [], "extra": 1}));
    assert_eq!(notes.len(), 3);
    assert!(notes[0].contains("Ansible role"));
    assert!(notes[1].starts_with("static not imported"));
    assert!(notes[2].starts_with("extra ignored"));
    assert!(sections(&json!({"script": "a.js", "deploy": {}})).is_empty());
}

#[test]
fn host_and_hostname_keep_an_app_where_pm2_had_it() {
    let at = |env: Value| {
        listen_of(&one(
            json!({"name": "a", "script": "a.js", "env": env}),
            None,
        ))
    };
    assert_eq!(at(json!({"PORT": 80, "HOST": "localhost"})), "127.0.0.1:80");
    assert_eq!(
        at(json!({"PORT": 80, "HOSTNAME": "127.0.0.1"})),
        "127.0.0.1:80"
    );
    assert_eq!(at(json!({"PORT": 80, "HOST": "::"})), "[::]:80");
    assert_eq!(
        at(json!({"PORT": 80, "HOST": "api.internal"})),
        "0.0.0.0:80"
    );
}
