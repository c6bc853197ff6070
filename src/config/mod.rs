//! App configs (`/etc/nodeapp/<name>.toml`): parsing and validation, in one place.
//!
//! The generator, the shim, `nodeapp run` and `nodeapp check` all load configs through
//! [`load`], so they accept and refuse exactly the same files. Nothing here touches systemd
//! or starts processes; the one thing read from the system is whether `node` exists.

mod error;
mod listen;
mod memory;
mod restart;
mod values;

pub use error::{ConfigError, ConfigErrors};
pub use listen::ListenAddr;
pub use memory::{MemoryLimits, UnitMemory};
pub use restart::RestartPolicy;
pub use values::{format_duration, format_size, parse_duration, parse_size};

use error::{at_offset, whole_file, Reporter};
use nix::sys::signal::Signal;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Where configs live for unit `nodeapp@<name>`; tests and packagers may point elsewhere.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/nodeapp";

pub fn config_dir() -> PathBuf {
    std::env::var_os("NODEAPP_CONFIG_DIR").map_or_else(|| DEFAULT_CONFIG_DIR.into(), PathBuf::from)
}

/// A validated app config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The app's name: the file name without `.toml`, and the unit's instance name.
    pub name: String,
    pub path: PathBuf,
    /// The entry file, as written: relative to `cwd` or absolute.
    pub script: PathBuf,
    /// Absolute; a relative `cwd` in the file is taken from the file's own directory.
    pub cwd: PathBuf,
    pub instances: Instances,
    pub listen: Vec<ListenAddr>,
    /// Absolute: as given, or found on `PATH` when the config is loaded.
    pub node: PathBuf,
    pub node_args: Vec<String>,
    pub args: Vec<String>,
    /// `None`: the package's unprivileged `nodeapp` user.
    pub user: Option<String>,
    pub env: BTreeMap<String, String>,
    /// How long a new worker has to become ready before it is killed (and a reload fails).
    pub ready_timeout: Duration,
    /// Wait for the app's `process.send('ready')` rather than for its sockets to listen.
    pub wait_ready: bool,
    /// How long a draining worker has before it is killed.
    pub stop_timeout: Duration,
    /// What a worker is sent to make it drain.
    pub stop_signal: Signal,
    pub restart: RestartPolicy,
    /// How long a ready worker may go without a heartbeat before it counts as hung.
    pub heartbeat_timeout: Duration,
    pub memory: MemoryLimits,
}

pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUTS: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(3600);
const STOP_TIMEOUTS: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    Count(usize),
    /// One worker per CPU this service may use (see [`crate::cpus`]).
    Max,
}

impl Instances {
    /// How many workers this means for the calling process.
    pub fn workers(self) -> usize {
        match self {
            Instances::Count(n) => n,
            Instances::Max => crate::cpus::available(),
        }
    }
}

/// The most workers one app may ask for: a guard against typos such as `instances = 40000`.
pub const MAX_INSTANCES: usize = 1024;

/// Environment variables nodeapp sets for its workers; a config may not set them.
const RESERVED_ENV: &[&str] = &[
    "NODE_CHANNEL_FD",
    "NODE_CHANNEL_SERIALIZATION_MODE",
    "NODE_APP_INSTANCE",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    script: Option<Spanned<String>>,
    cwd: Option<Spanned<String>>,
    instances: Option<Spanned<toml::Value>>,
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    node: Option<Spanned<String>>,
    #[serde(default)]
    node_args: Vec<String>,
    #[serde(default)]
    args: Vec<String>,
    user: Option<Spanned<String>>,
    #[serde(default)]
    env: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
    ready_timeout: Option<Spanned<toml::Value>>,
    #[serde(default)]
    wait_ready: bool,
    stop_timeout: Option<Spanned<toml::Value>>,
    stop_signal: Option<Spanned<String>>,
    restart_delay: Option<Spanned<toml::Value>>,
    restart_delay_max: Option<Spanned<toml::Value>>,
    restart_backoff: Option<Spanned<toml::Value>>,
    restart_reset_after: Option<Spanned<toml::Value>>,
    crash_loop_limit: Option<Spanned<toml::Value>>,
    heartbeat_timeout: Option<Spanned<toml::Value>>,
    max_memory: Option<Spanned<toml::Value>>,
    memory_max: Option<Spanned<toml::Value>>,
    memory_high: Option<Spanned<toml::Value>>,
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let bytes = std::fs::read(path)
        .map_err(|e| whole_file(path, format!("cannot read the config: {e}")))?;
    parse(path, &bytes)
}

/// Validates `bytes` as the config file at `path` (the path names the app and anchors a
/// relative `cwd`; it is not read).
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigErrors> {
    let name = app_name(path)?;
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let text = String::from_utf8_lossy(&bytes[..e.valid_up_to()]);
        at_offset(
            path,
            &text,
            e.valid_up_to(),
            "the file is not UTF-8 text; save it as UTF-8",
        )
    })?;
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let offset = e.span().map_or(0, |s| s.start);
        at_offset(path, text, offset, toml_message(&e))
    })?;

    let mut report = Reporter::new(path, text);
    let whole = 0..0;

    let script = match raw.script {
        Some(s) if s.get_ref().is_empty() => {
            report.at(s.span(), "script", "is empty; name the app's entry file");
            None
        }
        Some(s) => Some(PathBuf::from(s.into_inner())),
        None => {
            report.at(
                whole.clone(),
                "script",
                "is missing; name the app's entry file, e.g. script = \"server.js\"",
            );
            None
        }
    };

    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let cwd = match raw.cwd {
        Some(c) if c.get_ref().is_empty() || c.get_ref().contains(['\n', '\0']) => {
            report.at(c.span(), "cwd", "is not a usable directory path");
            None
        }
        Some(c) => std::path::absolute(base.join(c.get_ref())).ok(),
        None => {
            report.at(
                whole.clone(),
                "cwd",
                "is missing; name the app's directory, e.g. cwd = \"/srv/api\"",
            );
            None
        }
    };

    let instances = match raw.instances {
        None => Instances::Max,
        Some(v) => match v.get_ref() {
            toml::Value::String(s) if s == "max" => Instances::Max,
            toml::Value::Integer(n) if (1..=MAX_INSTANCES as i64).contains(n) => {
                Instances::Count(*n as usize)
            }
            other => {
                report.at(
                    v.span(),
                    "instances",
                    format!(
                        "is {}; expected a whole number from 1 to {MAX_INSTANCES}, or \"max\" \
                         for one worker per CPU this service may use",
                        describe(other)
                    ),
                );
                Instances::Max
            }
        },
    };

    let mut listen = Vec::new();
    match raw.listen {
        None => report.at(
            whole.clone(),
            "listen",
            "is missing; give the addresses to serve, e.g. listen = [\"0.0.0.0:3000\"]",
        ),
        Some(list) if list.get_ref().is_empty() => report.at(
            list.span(),
            "listen",
            "is empty; give at least one address, e.g. listen = [\"0.0.0.0:3000\"]",
        ),
        Some(list) => {
            for item in list.into_inner() {
                match ListenAddr::parse(item.get_ref()) {
                    Ok(addr) if listen.contains(&addr) => {
                        report.at(item.span(), "listen", format!("{addr} is listed twice"))
                    }
                    Ok(addr) => listen.push(addr),
                    Err(why) => report.at(item.span(), "listen", why),
                }
            }
        }
    }

    let node = match raw.node {
        None => find_node("node")
            .map_err(|why| report.at(whole.clone(), "node", why))
            .ok(),
        Some(n) if n.get_ref().is_empty() || n.get_ref().contains('\0') => {
            report.at(
                n.span(),
                "node",
                "is empty; name the node binary, e.g. \"/usr/bin/node\"",
            );
            None
        }
        Some(n) => find_node(n.get_ref())
            .map_err(|why| report.at(n.span(), "node", why))
            .ok(),
    };

    let user = raw.user.and_then(|u| {
        if valid_user_name(u.get_ref()) {
            Some(u.into_inner())
        } else {
            report.at(
                u.span(),
                "user",
                format!(
                    "{:?} is not a valid user name (letters, digits, `_`, `-`, `.`; at most 32)",
                    u.get_ref()
                ),
            );
            None
        }
    });

    let mut env = BTreeMap::new();
    for (key, value) in raw.env {
        let k = key.get_ref();
        if k.is_empty() || k.contains(['=', '\0']) {
            report.at(key.span(), "env", format!("{k:?} is not a variable name"));
            continue;
        }
        if RESERVED_ENV.contains(&k.as_str()) || k.starts_with("NODEAPP_") {
            report.at(key.span(), "env", format!("{k} is set by nodeapp itself"));
            continue;
        }
        let text = match value.get_ref() {
            toml::Value::String(s) if !s.contains('\0') => s.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                report.at(
                    value.span(),
                    &format!("env.{k}"),
                    format!(
                        "is {}; expected a string, number or boolean",
                        describe(other)
                    ),
                );
                continue;
            }
        };
        env.insert(key.into_inner(), text);
    }

    let ready_timeout = duration(
        &mut report,
        raw.ready_timeout,
        "ready_timeout",
        DEFAULT_READY_TIMEOUT,
        READY_TIMEOUTS,
    );
    let stop_timeout = duration(
        &mut report,
        raw.stop_timeout,
        "stop_timeout",
        DEFAULT_STOP_TIMEOUT,
        STOP_TIMEOUTS,
    );
    let stop_signal = match raw.stop_signal {
        None => Signal::SIGTERM,
        Some(s) => values::parse_stop_signal(s.get_ref()).unwrap_or_else(|why| {
            report.at(s.span(), "stop_signal", why);
            Signal::SIGTERM
        }),
    };

    let heartbeat_timeout = duration(
        &mut report,
        raw.heartbeat_timeout,
        "heartbeat_timeout",
        DEFAULT_HEARTBEAT_TIMEOUT,
        Duration::from_secs(1)..=Duration::from_secs(3600),
    );
    let defaults = RestartPolicy::default();
    let mut restart = RestartPolicy {
        delay: duration(
            &mut report,
            raw.restart_delay,
            "restart_delay",
            defaults.delay,
            Duration::ZERO..=Duration::from_secs(60),
        ),
        max_delay: defaults.max_delay,
        backoff: number(
            &mut report,
            raw.restart_backoff,
            "restart_backoff",
            defaults.backoff,
            1.0..=10.0,
            false,
        ),
        reset_after: duration(
            &mut report,
            raw.restart_reset_after,
            "restart_reset_after",
            defaults.reset_after,
            Duration::from_secs(1)..=Duration::from_secs(3600),
        ),
        crash_loop_limit: number(
            &mut report,
            raw.crash_loop_limit,
            "crash_loop_limit",
            f64::from(defaults.crash_loop_limit),
            1.0..=1000.0,
            true,
        ) as u32,
    };
    let max_span = raw.restart_delay_max.as_ref().map(|v| v.span());
    restart.max_delay = duration(
        &mut report,
        raw.restart_delay_max,
        "restart_delay_max",
        defaults.max_delay.max(restart.delay),
        Duration::ZERO..=Duration::from_secs(600),
    );
    if restart.max_delay < restart.delay {
        report.at(
            max_span.unwrap_or(whole.clone()),
            "restart_delay_max",
            format!(
                "{} is less than restart_delay ({}); the cap must be at least the first delay",
                format_duration(restart.max_delay),
                format_duration(restart.delay)
            ),
        );
    }

    let memory = MemoryLimits::parse(&mut report, raw.max_memory, raw.memory_max, raw.memory_high);

    report.finish()?;
    Ok(Config {
        name,
        path: path.to_path_buf(),
        script: script.expect("reported above"),
        cwd: cwd.expect("reported above"),
        instances,
        listen,
        node: node.expect("reported above"),
        node_args: raw.node_args,
        args: raw.args,
        user,
        env,
        ready_timeout,
        wait_ready: raw.wait_ready,
        stop_timeout,
        stop_signal,
        restart,
        heartbeat_timeout,
        memory,
    })
}

/// The app's name, from the file name; it becomes the instance of `nodeapp@<name>`.
fn app_name(path: &Path) -> Result<String, ConfigErrors> {
    let file = path
        .file_name()
        .and_then(|f| f.to_str())
        .unwrap_or_default();
    let Some(name) = file.strip_suffix(".toml") else {
        return Err(whole_file(path, "config files are named <app>.toml"));
    };
    validate_name(name).map_err(|why| whole_file(path, why))?;
    Ok(name.to_string())
}

/// App names become systemd instance names and file names: keep them to characters that
/// need no escaping in either.
pub fn validate_name(name: &str) -> Result<(), String> {
    const RULE: &str = "app names are 1 to 64 characters: letters, digits, `_`, `-`, `.`, \
                        starting with a letter or digit";
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid app name; {RULE}"))
    }
}

/// The directories searched for `node` when `PATH` is unset: systemd's default for services.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An absolute path to an executable `node`: `name` itself when absolute, else the first
/// match on `PATH`.
fn find_node(name: &str) -> Result<PathBuf, String> {
    // Mode bits rather than access(2): for root, access() says yes to any file.
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let given = Path::new(name);
    if given.is_absolute() {
        return match given.metadata() {
            Err(e) => Err(format!(
                "{name}: {e}; install Node.js or point `node` at its binary"
            )),
            Ok(_) if !executable(given) => Err(format!("{name} is not an executable file")),
            Ok(_) => Ok(given.to_path_buf()),
        };
    }
    if name.contains('/') {
        return Err(
            "must be an absolute path (\"/usr/bin/node\") or a command name found \
                    on PATH"
                .into(),
        );
    }
    find_on_path(name).ok_or_else(|| {
        let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
        format!("no `{name}` on PATH ({path}); install Node.js or set node = \"/path/to/node\"")
    })
}

/// The first executable `name` on `PATH` (systemd's default when unset), as a shell finds
/// a command.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    // Mode bits rather than access(2): for root, access() says yes to any file.
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let path = std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_absolute() && executable(p))
}

fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && !name.starts_with(['-', '.'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {s:?}"),
        toml::Value::Integer(n) => format!("{n}"),
        toml::Value::Float(x) => format!("{x}"),
        toml::Value::Boolean(b) => format!("{b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "a list".into(),
        toml::Value::Table(_) => "a table".into(),
    }
}

/// A duration in `range`: `default` when absent, reported when wrong.
fn duration(
    report: &mut Reporter,
    value: Option<Spanned<toml::Value>>,
    key: &str,
    default: Duration,
    range: RangeInclusive<Duration>,
) -> Duration {
    let Some(value) = value else { return default };
    let parsed = match value.get_ref() {
        toml::Value::String(s) => parse_duration(s),
        other => Err(format!(
            "is {}; write a duration as a string, e.g. \"{}\"",
            describe(other),
            format_duration(default)
        )),
    };
    match parsed {
        Ok(d) if range.contains(&d) => d,
        Ok(d) => {
            report.at(
                value.span(),
                key,
                format!(
                    "{} is out of range; use {} to {}",
                    format_duration(d),
                    format_duration(*range.start()),
                    format_duration(*range.end())
                ),
            );
            default
        }
        Err(why) => {
            report.at(value.span(), key, why);
            default
        }
    }
}

/// A number in `range` (an integer if `whole`): `default` when absent, reported when
/// wrong.
fn number(
    report: &mut Reporter,
    value: Option<Spanned<toml::Value>>,
    key: &str,
    default: f64,
    range: RangeInclusive<f64>,
    whole: bool,
) -> f64 {
    let Some(value) = value else { return default };
    let n = match value.get_ref() {
        toml::Value::Integer(n) => Some(*n as f64),
        toml::Value::Float(x) if !whole && x.is_finite() => Some(*x),
        _ => None,
    };
    match n {
        Some(n) if range.contains(&n) => n,
        _ => {
            let kind = if whole { "a whole number" } else { "a number" };
            report.at(
                value.span(),
                key,
                format!(
                    "is {}; expected {kind} from {} to {}",
                    describe(value.get_ref()),
                    range.start(),
                    range.end()
                ),
            );
            default
        }
    }
}

/// toml's message, less the source excerpt it may add: our error already says where.
fn toml_message(e: &toml::de::Error) -> String {
    e.message().trim().replace('\n', "; ")
}

#[cfg(test)]
mod tests;
