use super::*;
use caller::Caller;
use serde_json::json;

fn one(app: Value, env: Option<&str>) -> Converted {
    convert(
        0,
        app.as_object().unwrap(),
        Path::new("/srv/eco"),
        &Given {
            env_name: env.map(str::to_owned),
            ..Given::default()
        },
        &Caller::default(),
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
    let app = app.as_object().unwrap();
    convert(0, app, Path::new("/srv/eco"), &given, &Caller::default())
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
