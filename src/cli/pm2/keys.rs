//! The PM2 keys the importer maps, and those it names with what to use instead.

/// Keys with no nodeapp equivalent, and what to do instead; shared with the migration
/// guide (docs/pm2.md).
pub const UNMAPPED: &[(&str, &str)] = &[
    ("watch", "no file watching: deploy, then `nodeapp reload`"),
    ("ignore_watch", "no file watching"),
    ("watch_options", "no file watching"),
    (
        "cron_restart",
        "use a systemd timer whose service runs `systemctl restart nodeapp@<name>` (OnCalendar=)",
    ),
    (
        "autorestart",
        "crashed workers are always replaced; the service restarts on failure (Restart=)",
    ),
    (
        "error_file",
        "logs go to the journal: `nodeapp logs <name>`",
    ),
    ("out_file", "logs go to the journal: `nodeapp logs <name>`"),
    ("log_file", "logs go to the journal: `nodeapp logs <name>`"),
    ("merge_logs", "logs go to the journal"),
    (
        "log_date_format",
        "the journal timestamps every line: `journalctl -o short-iso`",
    ),
    (
        "log_type",
        "the journal stores structured fields: `journalctl -o json`",
    ),
    ("time", "the journal timestamps every line"),
    (
        "disable_logs",
        "send output to /dev/null in the app, or StandardOutput=null in a drop-in",
    ),
    (
        "pid_file",
        "the main PID is `systemctl show -p MainPID nodeapp@<name>`",
    ),
    ("gid", "set Group= in `systemctl edit nodeapp@<name>`"),
    (
        "shutdown_with_message",
        "workers drain on the stop signal (stop_signal), not on a message",
    ),
    (
        "stop_exit_codes",
        "the service's exit status is the shim's; RestartPreventExitStatus= in a drop-in",
    ),
    ("treekill", "KillMode=mixed: systemd kills the whole cgroup"),
    ("kill_retry_time", "no equivalent"),
    ("namespace", "no equivalent: units are named nodeapp@<name>"),
    ("vizion", "no equivalent"),
    ("post_update", "no equivalent"),
    ("force", "no equivalent"),
    (
        "increment_var",
        "no equivalent; NODE_APP_INSTANCE is the worker's slot",
    ),
    (
        "filter_env",
        "workers get only the config's env and systemd's environment",
    ),
    (
        "append_env_to_name",
        "no equivalent: name the app with --name",
    ),
    (
        "autostart",
        "use `nodeapp add --enable` / `systemctl enable`",
    ),
    ("pmx", "no equivalent"),
    ("automation", "no equivalent"),
    ("trace", "no equivalent"),
    ("disable_trace", "no equivalent"),
    ("instance_var", "the worker's slot is in NODE_APP_INSTANCE"),
    ("name_prefix", "no equivalent: name the app with --name"),
    ("install_url", "no equivalent"),
    ("watch_delay", "no file watching"),
    (
        "execute_command",
        "no equivalent: the worker is node running the script",
    ),
    ("v8", "no equivalent"),
    ("event_loop_inspector", "no equivalent"),
    ("deep_monitoring", "no equivalent"),
    ("username", "no equivalent"),
    ("windowsHide", "no equivalent"),
    ("write", "no equivalent"),
    ("io", "no equivalent"),
];

/// Keys the importer reads, by PM2's name for them (aliases folded, see schema.rs).
pub const MAPPED: &[&str] = &[
    "name",
    "port",
    "script",
    "cwd",
    "args",
    "exec_interpreter",
    "node_args",
    "instances",
    "exec_mode",
    "env",
    "uid",
    "kill_timeout",
    "listen_timeout",
    "wait_ready",
    "source_map_support",
    "disable_source_map_support",
    "min_uptime",
    "max_restarts",
    "restart_delay",
    "exp_backoff_restart_delay",
    "max_memory_restart",
];
