use super::*;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(Path::new("/etc/nodeapp/api.toml"), text.as_bytes())
}

fn errors(text: &str) -> Vec<String> {
    parse_str(text)
        .unwrap_err()
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

const VALID: &str = r#"
script = "server.js"
cwd = "/srv/api"
instances = "max"
listen = ["0.0.0.0:3000", "[::1]:3001", "/run/api.sock"]
node = "/bin/sh"
node_args = ["--max-old-space-size=256"]
args = ["--port", "3000"]
user = "www-data"
[env]
NODE_ENV = "production"
WORKERS = 4
DEBUG = false
"#;

#[test]
fn a_full_config_is_read_as_written() {
    let c = parse_str(VALID).unwrap();
    assert_eq!(c.name, "api");
    assert_eq!(c.script, PathBuf::from("server.js"));
    assert_eq!(c.cwd, PathBuf::from("/srv/api"));
    assert_eq!(c.instances, Instances::Max);
    assert_eq!(
        c.listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["0.0.0.0:3000", "[::1]:3001", "/run/api.sock"]
    );
    assert_eq!(c.node, PathBuf::from("/bin/sh"));
    assert_eq!(c.node_args, ["--max-old-space-size=256"]);
    assert_eq!(c.args, ["--port", "3000"]);
    assert_eq!(c.user.as_deref(), Some("www-data"));
    assert_eq!(c.env["NODE_ENV"], "production");
    assert_eq!(c.env["WORKERS"], "4");
    assert_eq!(c.env["DEBUG"], "false");
}

#[test]
fn defaults_fill_what_is_left_out() {
    let c =
        parse_str("script = \"a.js\"\ncwd = \"/srv/a\"\nlisten = [\"127.0.0.1:8080\"]\n").unwrap();
    assert_eq!(c.instances, Instances::Max);
    assert!(
        c.node.is_absolute() && c.node.ends_with("node"),
        "found on PATH: {:?}",
        c.node
    );
    assert_eq!(c.user, None);
    assert!(c.env.is_empty() && c.args.is_empty() && c.node_args.is_empty());
}

#[test]
fn a_relative_cwd_is_taken_from_the_config_files_directory() {
    let c = parse(
        Path::new("/srv/repo/deploy/api.toml"),
        b"script = \"server.js\"\ncwd = \"../app\"\nlisten = [\"127.0.0.1:1\"]\n",
    )
    .unwrap();
    assert_eq!(c.cwd, PathBuf::from("/srv/repo/deploy/../app"));
    assert!(c.cwd.is_absolute());
}

#[test]
fn unknown_keys_are_errors_that_list_the_valid_ones() {
    let e = errors("script = \"a.js\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\ninstance = 2\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("/etc/nodeapp/api.toml:4:1: "), "{}", e[0]);
    assert!(e[0].contains("instance"), "{}", e[0]);
    assert!(e[0].contains("instances"), "lists the valid keys: {}", e[0]);
}

#[test]
fn missing_required_keys_are_all_reported_at_once() {
    let e = errors("instances = 2\n");
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e.iter().any(|m| m.contains("`script`: is missing")));
    assert!(e.iter().any(|m| m.contains("`cwd`: is missing")));
    assert!(e.iter().any(|m| m.contains("`listen`: is missing")));
}

#[test]
fn an_empty_file_says_what_is_missing() {
    assert_eq!(errors("").len(), 3);
}

#[test]
fn instances_must_be_a_count_or_max() {
    for (value, shown) in [
        ("0", "is 0"),
        ("2000", "is 2000"),
        ("\"all\"", "\"all\""),
        ("1.5", "1.5"),
    ] {
        let e = errors(&format!(
            "script = \"a.js\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\ninstances = {value}\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("/etc/nodeapp/api.toml:4:13: `instances`: "),
            "{}",
            e[0]
        );
        assert!(e[0].contains(shown) && e[0].contains("\"max\""), "{}", e[0]);
    }
}

#[test]
fn a_bad_listen_address_is_pointed_at() {
    let e = errors(
        "script = \"a.js\"\ncwd = \"/a\"\nlisten = [\n  \"0.0.0.0:3000\",\n  \"0.0.0.0:70000\",\n]\n",
    );
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/etc/nodeapp/api.toml:5:3: `listen`: "),
        "{}",
        e[0]
    );
    assert!(e[0].contains("1 to 65535"), "{}", e[0]);
}

#[test]
fn duplicate_listen_addresses_are_refused() {
    let e = errors("script = \"a\"\ncwd = \"/a\"\nlisten = [\"[::]:80\", \"[::]:80\"]\n");
    assert!(e[0].contains("listed twice"), "{}", e[0]);
}

#[test]
fn wrong_types_name_the_key() {
    let e = errors("script = 5\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("/etc/nodeapp/api.toml:1:10: "), "{}", e[0]);
    assert!(e[0].contains("string"), "{}", e[0]);
}

#[test]
fn toml_syntax_errors_give_the_line() {
    let e = errors("script = \"a.js\"\ncwd = /srv\n");
    assert!(e[0].starts_with("/etc/nodeapp/api.toml:2:"), "{}", e[0]);
}

#[test]
fn a_file_that_is_not_utf8_is_refused_where_it_stops_being_text() {
    let e = parse(
        Path::new("/x/api.toml"),
        b"script = \"a.js\"\ncwd = \"\xff\"\n",
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("/x/api.toml:2:8: "), "{msg}");
    assert!(msg.contains("UTF-8"), "{msg}");
}

#[test]
fn environment_values_are_kept_byte_for_byte() {
    let value = "50% of $HOME \"quoted\" 'single' back\\slash two words\nnew line";
    let text = format!(
        "script = \"a.js\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\n[env]\nTRICKY = {}\n",
        toml::Value::String(value.into())
    );
    assert_eq!(parse_str(&text).unwrap().env["TRICKY"], value);
}

#[test]
fn nodeapps_own_environment_variables_are_refused() {
    let e = errors(
        "script = \"a\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\n[env]\nLISTEN_FDS = \"3\"\n\
         NODEAPP_X = \"1\"\nOK = [1]\n",
    );
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].contains("LISTEN_FDS is set by nodeapp"), "{}", e[0]);
    assert!(
        e[2].contains("`env.OK`") && e[2].contains("a list"),
        "{}",
        e[2]
    );
}

#[test]
fn node_and_user_are_checked_for_form() {
    let e = errors(
        "script = \"a\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\nnode = \"bin/node\"\n\
         user = \"bad user\"\n",
    );
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].contains("`node`: must be an absolute path"),
        "{}",
        e[0]
    );
    assert!(e[1].contains("`user`: \"bad user\" is not a valid user name"));
}

#[test]
fn the_file_name_must_be_a_valid_app_name() {
    for bad in [
        "/etc/nodeapp/my app.toml",
        "/etc/nodeapp/.toml",
        "/etc/nodeapp/-x.toml",
    ] {
        let e = parse(Path::new(bad), VALID.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("not a valid app name"), "{e}");
    }
    let e = parse(Path::new("/etc/nodeapp/api.conf"), VALID.as_bytes()).unwrap_err();
    assert!(e.to_string().contains("<app>.toml"), "{e}");
}

#[test]
fn names_follow_the_instance_name_rules() {
    for ok in ["api", "api-2", "my_app.v2", "A1"] {
        assert!(validate_name(ok).is_ok(), "{ok}");
    }
    let long = "a".repeat(65);
    for bad in [
        "",
        "../x",
        "a b",
        "a/b",
        "a@b",
        ".hidden",
        "-x",
        long.as_str(),
        "é",
    ] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_missing_or_unrunnable_node_is_an_error_at_its_key() {
    let base = "script = \"a\"\ncwd = \"/a\"\nlisten = [\"127.0.0.1:1\"]\n";
    let e = errors(&format!("{base}node = \"/nonexistent/node\"\n"));
    assert!(
        e[0].starts_with("/etc/nodeapp/api.toml:4:8: `node`: /nonexistent/node: "),
        "{}",
        e[0]
    );
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("node");
    std::fs::write(&plain, "not a program").unwrap();
    let e = errors(&format!("{base}node = \"{}\"\n", plain.display()));
    assert!(e[0].contains("not an executable file"), "{}", e[0]);
    let e = errors(&format!("{base}node = \"no-such-node-binary\"\n"));
    assert!(
        e[0].contains("no `no-such-node-binary` on PATH"),
        "{}",
        e[0]
    );
}

#[test]
fn timeouts_and_the_stop_signal_have_defaults_and_limits() {
    let base = "script = \"a.js\"\ncwd = \"/srv/a\"\nlisten = [\"127.0.0.1:8080\"]\n";
    let c = parse_str(base).unwrap();
    assert_eq!(c.ready_timeout, DEFAULT_READY_TIMEOUT);
    assert_eq!(c.stop_timeout, DEFAULT_STOP_TIMEOUT);
    assert_eq!(c.stop_signal, Signal::SIGTERM);
    assert!(!c.wait_ready);

    let c = parse_str(&format!(
        "{base}ready_timeout = \"5s\"\nstop_timeout = \"1m30s\"\nstop_signal = \"SIGINT\"\n\
         wait_ready = true\n"
    ))
    .unwrap();
    assert_eq!(c.ready_timeout, Duration::from_secs(5));
    assert_eq!(c.stop_timeout, Duration::from_secs(90));
    assert_eq!(c.stop_signal, Signal::SIGINT);
    assert!(c.wait_ready);

    let e = errors(&format!(
        "{base}ready_timeout = 5\nstop_timeout = \"2 days\"\nstop_signal = \"KILL\"\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains(":4:17: `ready_timeout`: is 5; write a duration as a string, e.g. \"30s\""),
        "{e:?}"
    );
    assert!(
        e[1].contains(":5:16: `stop_timeout`: \"2 days\" is not a duration"),
        "{e:?}"
    );
    assert!(
        e[2].contains(":6:15: `stop_signal`: \"KILL\" is not a stop signal; use one of SIGTERM"),
        "{e:?}"
    );

    let e = errors(&format!("{base}ready_timeout = \"10ms\"\n"));
    assert!(
        e[0].contains("10ms is out of range; use 100ms to 1h"),
        "{e:?}"
    );
}

#[test]
fn the_restart_policy_has_defaults_and_limits() {
    let base = "script = \"a.js\"\ncwd = \"/srv/a\"\nlisten = [\"127.0.0.1:8080\"]\n";
    assert_eq!(parse_str(base).unwrap().restart, RestartPolicy::default());

    let c = parse_str(&format!(
        "{base}restart_delay = \"1s\"\nrestart_backoff = 1.5\nrestart_delay_max = \"1m\"\n\
         restart_reset_after = \"10s\"\ncrash_loop_limit = 16\n"
    ))
    .unwrap();
    assert_eq!(
        c.restart,
        RestartPolicy {
            delay: Duration::from_secs(1),
            backoff: 1.5,
            max_delay: Duration::from_secs(60),
            reset_after: Duration::from_secs(10),
            crash_loop_limit: 16,
        }
    );

    let e = errors(&format!(
        "{base}restart_backoff = \"fast\"\ncrash_loop_limit = 2.5\nrestart_reset_after = \"0s\"\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains(
            ":4:19: `restart_backoff`: is the string \"fast\"; expected a number from 1 to 10"
        ),
        "{e:?}"
    );
    assert!(
        e[1].contains(":5:20: `crash_loop_limit`: is 2.5; expected a whole number from 1 to 1000"),
        "{e:?}"
    );
    assert!(
        e[2].contains("`restart_reset_after`: 0s is out of range; use 1s to 1h"),
        "{e:?}"
    );

    let e = errors(&format!(
        "{base}restart_delay = \"20s\"\nrestart_delay_max = \"5s\"\n"
    ));
    assert!(
        e[0].contains(":5:21: `restart_delay_max`: 5s is less than restart_delay (20s)"),
        "{e:?}"
    );
}

#[test]
fn the_heartbeat_timeout_has_a_default_and_limits() {
    let base = "script = \"a.js\"\ncwd = \"/srv/a\"\nlisten = [\"127.0.0.1:8080\"]\n";
    assert_eq!(
        parse_str(base).unwrap().heartbeat_timeout,
        DEFAULT_HEARTBEAT_TIMEOUT
    );
    let c = parse_str(&format!("{base}heartbeat_timeout = \"5s\"\n")).unwrap();
    assert_eq!(c.heartbeat_timeout, Duration::from_secs(5));
    let e = errors(&format!("{base}heartbeat_timeout = \"500ms\"\n"));
    assert!(
        e[0].contains(":4:21: `heartbeat_timeout`: 500ms is out of range; use 1s to 1h"),
        "{e:?}"
    );
}

#[test]
fn memory_limits_take_sizes_shares_and_infinity() {
    let base = "script = \"a.js\"\ncwd = \"/srv/a\"\nlisten = [\"127.0.0.1:8080\"]\n";
    let c = parse_str(base).unwrap();
    assert_eq!(c.memory, MemoryLimits::default());
    assert_eq!(c.heap_limit_mib(), None);

    let c = parse_str(&format!(
        "{base}max_memory = \"512M\"\nmemory_max = \"4G\"\nmemory_high = \"75%\"\n"
    ))
    .unwrap();
    assert_eq!(c.memory.per_worker, Some(512 << 20));
    assert_eq!(c.memory.unit_max, Some(UnitMemory::Bytes(4 << 30)));
    assert_eq!(c.memory.unit_high, Some(UnitMemory::Percent(75)));
    assert_eq!(c.memory.unit_max.unwrap().to_string(), "4G");
    // 80% of the worker's budget goes to V8's old space...
    assert_eq!(c.heap_limit_mib(), Some(409));
    // ...unless the config sets the heap itself.
    let c = parse_str(&format!(
        "{base}max_memory = \"1G\"\nnode_args = [\"--max-old-space-size=900\"]\n"
    ))
    .unwrap();
    assert_eq!(c.heap_limit_mib(), None);
    let c = parse_str(&format!(
        "{base}max_memory = \"1G\"\n[env]\nNODE_OPTIONS = \"--max-old-space-size=700\"\n"
    ))
    .unwrap();
    assert_eq!(c.heap_limit_mib(), None);
    // Without max_memory, a worker's budget is its share of memory_max: 3G over two
    // workers and one replacement is 1G each, and 80% of that is the heap.
    let c = parse_str(&format!("{base}instances = 2\nmemory_max = \"3G\"\n")).unwrap();
    assert_eq!(c.heap_limit_mib(), Some(819));
    let c = parse_str(&format!("{base}instances = 8\nmemory_max = \"256M\"\n")).unwrap();
    assert_eq!(c.heap_limit_mib(), None, "28M each is too small to set");

    let e = errors(&format!(
        "{base}max_memory = 512\nmemory_max = \"lots\"\nmemory_high = \"150%\"\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[0].contains(":4:14: `max_memory`: is 512; write a size as a string, e.g. \"512M\""),
        "{e:?}"
    );
    assert!(
        e[1].contains(":5:14: `memory_max`: \"lots\" is not a size"),
        "{e:?}"
    );
    assert!(
        e[2].contains(":6:15: `memory_high`: \"150%\" is not a share of memory; use 1% to 100%"),
        "{e:?}"
    );
    let e = errors(&format!(
        "{base}max_memory = \"16M\"\nmemory_max = \"1G\"\nmemory_high = \"2G\"\n"
    ));
    assert!(
        e[0].contains("`max_memory`: 16M is too small for a Node.js worker; use at least 32M"),
        "{e:?}"
    );
    assert!(
        e[1].contains(":6:15: `memory_high`: 2G is above memory_max (1G)"),
        "{e:?}"
    );
    // Valid, but the cgroup limit leaves no room for the workers and a replacement.
    let tight = parse_str(&format!(
        "{base}instances = 3\nmax_memory = \"512M\"\nmemory_max = \"1G\"\n"
    ))
    .unwrap();
    let warning = tight.memory_warning().unwrap();
    assert!(
        warning.contains("`memory_max` (1G) is less than max_memory (512M) × 3 workers plus one replacement (2G)"),
        "{warning}"
    );
    let roomy = parse_str(&format!(
        "{base}instances = 3\nmax_memory = \"512M\"\nmemory_max = \"3G\"\n"
    ))
    .unwrap();
    assert_eq!(roomy.memory_warning(), None);
}
