//! `nodeapp import-pm2`: the apps of a PM2 ecosystem file as nodeapp configs, with every
//! key that has no equivalent named, and what to use instead.

mod caller;
mod host;
mod keys;
mod load;
mod port;
mod program;
mod schema;
#[cfg(test)]
mod tests;

use super::apps::{self, Activation, Draft};
use super::systemd::Systemd;
use super::{Failure, Outcome};
use caller::Caller;
use clap::Args;
use keys::{MAPPED, UNMAPPED};
use nodeapp::config::{self, format_duration, format_size, parse_size};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct ImportArgs {
    /// The ecosystem file, as `pm2 start` takes it: *.config.js (.cjs, .mjs; evaluated
    /// with node), *.json (a JavaScript expression), *.yml or *.yaml.
    file: PathBuf,
    /// Apply the app's env_<NAME> over its env, as `pm2 start --env NAME` does.
    #[arg(long, value_name = "NAME")]
    env: Option<String>,
    /// Print the configs instead of writing them to /etc/nodeapp.
    #[arg(long)]
    dry_run: bool,
    /// With --dry-run: print one JSON object per app (name, config, notes, refused).
    #[arg(long, requires = "dry_run")]
    json: bool,
    /// The address an app listens on, where the file does not say: ADDR for every app
    /// without one, or APP=ADDR for one app; repeat for more.
    #[arg(long, value_name = "[APP=]ADDR")]
    listen: Vec<String>,
    /// The app's name, for a file with one app (instead of its PM2 name).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    activation: Activation,
}

/// One app of the ecosystem file, converted.
#[derive(Debug)]
struct Converted {
    name: String,
    toml: Result<String, String>,
    notes: Vec<String>,
    /// PM2 itself rejects a value of this app, and so starts no app of the file.
    rejected_by_pm2: bool,
}

impl Converted {
    /// `{name, config, notes, refused}`: the config as JSON, or why there is none.
    fn to_json(&self) -> Value {
        let config = self
            .toml
            .as_ref()
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .and_then(|t| serde_json::to_value(t).ok());
        serde_json::json!({
            "name": self.name,
            "config": config,
            "notes": self.notes,
            "refused": self.toml.as_ref().err(),
        })
    }
}

pub fn import(args: &ImportArgs) -> Outcome {
    let (loaded, file_notes) = load_ecosystem(&args.file)?;
    let ecosystem = &loaded.value;
    for note in &file_notes {
        eprintln!("{}: {note}", args.file.display());
    }
    // PM2 resolves a relative `cwd` (and an app without one) against the directory it is
    // run from, not the file's.
    let base = std::env::current_dir()
        .map_err(|e| Failure::usage(format!("the current directory: {e}")))?;
    let apps = app_list(ecosystem)?;
    let caller = Caller::from_env(&loaded);
    if args.name.is_some() && apps.len() > 1 {
        return Err(Failure::usage(format!(
            "--name names one app, and the file has {}; rename them in the file",
            apps.len()
        )));
    }
    let given = Given {
        env_name: args.env.clone(),
        name: args.name.clone(),
        listen: args
            .listen
            .iter()
            .map(|l| match l.split_once('=') {
                Some((app, addr)) => (Some(app.to_string()), addr.to_string()),
                None => (None, l.clone()),
            })
            .collect(),
        shell_port: std::env::var("PORT").ok().filter(|p| !p.is_empty()),
    };
    let deploy = match ecosystem {
        Value::Object(o) => o.get("deploy").and_then(Value::as_object),
        _ => None,
    };
    for note in sections(ecosystem) {
        eprintln!("{}: {note}", args.file.display());
    }
    let ctx = Context {
        base: &base,
        given: &given,
        caller: &caller,
        deploy,
    };
    let mut converted: Vec<Converted> = apps
        .iter()
        .enumerate()
        .map(|(i, app)| convert(i, app, &ctx))
        .collect();
    if let Some(bad) = converted.iter().find(|c| c.rejected_by_pm2) {
        let note = format!(
            "PM2 7 starts no app of this file until {}'s values are corrected; this is the \
             app as PM2 would run it then",
            bad.name
        );
        for c in converted.iter_mut().filter(|c| !c.rejected_by_pm2) {
            c.notes.push(note.clone());
        }
    }
    host::check(&mut converted, args.activation.force);

    if args.json {
        let out: Vec<Value> = converted.iter().map(Converted::to_json).collect();
        println!("{}", Value::Array(out));
        let refused = converted.iter().filter(|c| c.toml.is_err()).count();
        return match refused {
            0 => Ok(()),
            n => Err(Failure::config(format!(
                "{n} of {} apps not imported",
                converted.len()
            ))),
        };
    }
    let mut failed = 0;
    let mut written = Vec::new();
    for c in &converted {
        for note in &c.notes {
            eprintln!("{}: {note}", c.name);
        }
        match &c.toml {
            Err(why) => {
                failed += 1;
                eprintln!("{}: not imported: {why}", c.name);
            }
            Ok(text) if args.dry_run => {
                println!("# {}", super::files::app_config(&c.name).display());
                println!("{text}");
            }
            Ok(text) => match apps::write_config(&c.name, text, args.activation.force) {
                Ok(path) => {
                    println!("wrote {}", path.display());
                    written.push(c.name.clone());
                }
                Err(f) => {
                    failed += 1;
                    eprintln!("{}: not imported: {}", c.name, f.message);
                }
            },
        }
    }
    if !written.is_empty() {
        let bus = Systemd::connect()?;
        bus.daemon_reload()?;
        apps::activate(&bus, &written, &args.activation)?;
    }
    if failed > 0 {
        return Err(Failure::config(format!(
            "{failed} of {} apps not imported",
            converted.len()
        )));
    }
    Ok(())
}

/// The file's apps, read as PM2 reads them. A file whose name PM2 does not take for an
/// ecosystem file is, to `pm2 start`, the app itself.
fn load_ecosystem(file: &Path) -> Result<(load::Loaded, Vec<String>), Failure> {
    let unreadable = |why: String| Failure::usage(format!("{}: {why}", file.display()));
    let Some(kind) = load::kind_of(file) else {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let note = format!(
            "PM2 does not read {name} as an ecosystem file (the name has none of .json, .yml, \
             .yaml, .config.js, .config.cjs, .config.mjs): `pm2 start {name}` runs it as the \
             app. If it lists apps, rename it to ecosystem.config.js"
        );
        let value = serde_json::json!({ "script": file.display().to_string() });
        let loaded = load::Loaded {
            value,
            ..load::Loaded::default()
        };
        return Ok((loaded, vec![note]));
    };
    let loaded = load::load(file, kind).map_err(unreadable)?;
    Ok((loaded, Vec::new()))
}

/// The top-level sections of the file beside its apps, with what replaces them.
fn sections(ecosystem: &Value) -> Vec<String> {
    let Value::Object(top) = ecosystem else {
        return Vec::new();
    };
    if !top.contains_key("apps") && !top.contains_key("pm2") {
        // The whole object is the app.
        return Vec::new();
    }
    top.keys()
        .filter(|k| !matches!(k.as_str(), "apps" | "pm2"))
        .map(|k| match k.as_str() {
            "deploy" => "deploy not imported: nodeapp rolls releases out with its Ansible role \
                         (releases side by side, a health gate per host, rollback; see \
                         docs/fleet.md); `--env NAME` still merges deploy.NAME.env, as PM2 does"
                .to_string(),
            "static" => "static not imported: PM2's static file servers have no nodeapp \
                         equivalent; serve the files from the app or a web server"
                .to_string(),
            other => format!("{other} ignored: not a section PM2 reads"),
        })
        .collect()
}

/// `apps`, else `pm2`, else the whole value, as PM2 reads them (lib/API.js); one app that
/// is not in a list is a list of one.
fn app_list(ecosystem: &Value) -> Result<Vec<Map<String, Value>>, Failure> {
    let list = match ecosystem {
        Value::Object(o) if o.contains_key("apps") => &o["apps"],
        Value::Object(o) if o.contains_key("pm2") => &o["pm2"],
        other => other,
    };
    let apps: Vec<Map<String, Value>> = match list {
        Value::Array(items) => items
            .iter()
            .filter_map(|v| v.as_object().cloned())
            .collect(),
        Value::Object(o) => vec![o.clone()],
        _ => Vec::new(),
    };
    if apps.is_empty() {
        return Err(Failure::usage(
            "the ecosystem file has no apps (expected `module.exports = { apps: [...] }`)".into(),
        ));
    }
    Ok(apps)
}

/// A JSON scalar as PM2 would put it in the environment.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// PM2 takes argument lists as an array or as one string split on spaces, quotes
/// grouping words.
fn words(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(scalar).collect(),
        Value::String(s) => program::split_command(s),
        _ => Vec::new(),
    }
}

/// What the command line adds to the file.
#[derive(Default)]
struct Given {
    env_name: Option<String>,
    name: Option<String>,
    /// `--listen`: for one app (by its PM2 name), or for every app without a port.
    listen: Vec<(Option<String>, String)>,
    /// The shell's PORT, which PM2 passes to every app it starts.
    shell_port: Option<String>,
}

/// What every app of the file is converted with.
struct Context<'a> {
    /// The directory PM2 resolves relative paths against: the one it runs in.
    base: &'a Path,
    given: &'a Given,
    caller: &'a Caller,
    /// The file's `deploy` section, whose `<env>.env` `--env` merges.
    deploy: Option<&'a Map<String, Value>>,
}

fn convert(index: usize, raw: &Map<String, Value>, ctx: &Context) -> Converted {
    let mut notes = Vec::new();
    let verified = schema::verify(raw);
    let app = verified.as_ref().map_or(raw, |v| &v.app);
    let script = app.get("script").and_then(Value::as_str).unwrap_or("");
    let pm2_name = match app.get("name").and_then(scalar).filter(|n| !n.is_empty()) {
        Some(n) => n,
        // PM2 names an app after its script when the file does not.
        None => Path::new(script).file_stem().map_or_else(
            || format!("app{index}"),
            |s| s.to_string_lossy().into_owned(),
        ),
    };
    let name = match &ctx.given.name {
        Some(n) => n.clone(),
        None => unit_name(&pm2_name, &mut notes),
    };
    let rejected_by_pm2 = verified.is_err();
    let toml = match &verified {
        Err(errors) => Err(format!(
            "PM2 7 rejects it, and with it the whole file: {}; correct the file and import \
             again",
            errors.join("; ")
        )),
        Ok(v) => {
            for key in &v.unknown {
                notes.push(format!(
                    "{key} not mapped: not a PM2 key (PM2 drops it without a word)"
                ));
            }
            draft(app, &pm2_name, ctx, &mut notes).and_then(|d| {
                config::validate_name(&name)?;
                Ok(d.to_toml())
            })
        }
    };
    Converted {
        name,
        toml,
        notes,
        rejected_by_pm2,
    }
}

/// PM2 allows any name; a unit instance name does not. Spaces, `:` and the like become
/// `-`, and the note says so.
fn unit_name(pm2_name: &str, notes: &mut Vec<String>) -> String {
    if config::validate_name(pm2_name).is_ok() {
        return pm2_name.to_string();
    }
    let mut name = String::new();
    for c in pm2_name.chars() {
        let ok = c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
        if ok {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name: String = name
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(64)
        .collect();
    if config::validate_name(&name).is_ok() {
        notes.push(format!(
            "named {name} (PM2's name {pm2_name:?} is not a valid app name; --name picks another)"
        ));
        name
    } else {
        pm2_name.to_string()
    }
}

fn draft(
    app: &Map<String, Value>,
    pm2_name: &str,
    ctx: &Context,
    notes: &mut Vec<String>,
) -> Result<Draft, String> {
    let given = ctx.given;
    let env_name = given.env_name.as_deref();
    let script = app
        .get("script")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no `script` (PM2: \"No script path - aborting\")")?;
    let cwd = match app.get("cwd").and_then(Value::as_str) {
        Some(c) => ctx.base.join(c),
        None => ctx.base.to_path_buf(),
    };
    let mut d = Draft {
        script: script.to_string(),
        cwd: cwd.display().to_string(),
        ..Draft::default()
    };

    // verify() made `instances` a number: 0 is "max", negative is all CPUs but that many.
    d.instances = match app.get("instances").and_then(Value::as_i64) {
        None => "1".into(),
        Some(0) => "max".into(),
        Some(n) if n < 0 => {
            notes.push(format!(
                "instances {n} (all CPUs but {}) has no equivalent; using \"max\"",
                -n
            ));
            "max".into()
        }
        Some(n) => n.to_string(),
    };
    let cluster = match app.get("exec_mode").and_then(Value::as_str) {
        Some(mode) => mode.starts_with("cluster"),
        None => app.contains_key("instances"),
    };
    let program = program::resolve(
        program::App {
            script,
            args: app.get("args").map(words).unwrap_or_default(),
            interpreter: app.get("exec_interpreter").and_then(Value::as_str),
            interpreter_args: app.get("node_args").map(words).unwrap_or_default(),
            cluster,
        },
        &cwd,
    )?;
    d.script = program.script;
    d.args = program.args;
    d.node = program.node;
    d.node_args = program.node_args;
    notes.extend(program.notes);
    let command_env = program.env;
    if app.get("source_map_support").and_then(Value::as_bool) == Some(true) {
        d.node_args.push("--enable-source-maps".into());
    }
    d.user = user(app.get("uid"))?;
    d.stop_timeout = millis(app, "kill_timeout").map(format_duration);
    d.ready_timeout = millis(app, "listen_timeout").map(format_duration);
    d.wait_ready = app.get("wait_ready").and_then(Value::as_bool) == Some(true);
    restart_policy(app, &mut d);
    if let Some(v) = app.get("max_memory_restart") {
        match max_memory(v) {
            Ok(size) => d.tuning.push(("max_memory", toml::Value::String(size))),
            Err(why) => notes.push(format!("max_memory_restart not mapped: {why}")),
        }
    }

    let mut env = environment(app, env_name, ctx.deploy, notes);
    for (k, v) in command_env {
        env.insert(k, Value::String(v));
    }
    ctx.caller.sift(&mut env, notes);
    d.env = env.iter().map(|(k, v)| (k.clone(), env_value(v))).collect();
    d.listen = vec![port::listen_address(pm2_name, &env, given, &d.args, notes)?];

    for key in app.keys() {
        if key.starts_with("env_") || MAPPED.contains(&key.as_str()) {
            continue;
        }
        if let Some((k, why)) = UNMAPPED.iter().find(|(k, _)| k == key) {
            notes.push(format!("{k} not mapped: {why}"));
        }
    }
    Ok(d)
}

/// The app's environment as PM2 builds it (lib/Common.js mergeEnvironmentVariables):
/// `env`, `port` as PORT over it; with `--env NAME`, `deploy.NAME.env` over that, then
/// `env_NAME` over everything.
fn environment(
    app: &Map<String, Value>,
    env_name: Option<&str>,
    deploy: Option<&Map<String, Value>>,
    notes: &mut Vec<String>,
) -> Map<String, Value> {
    let mut env = Map::new();
    match app.get("env") {
        Some(Value::Object(o)) => env.extend(o.clone()),
        Some(Value::String(s)) => notes.push(format!(
            "env is the string {s:?}, which PM2 does not read as variables; not written"
        )),
        _ => {}
    }
    if let Some(port) = app.get("port").and_then(scalar) {
        env.insert("PORT".into(), Value::String(port));
    }
    let Some(n) = env_name else {
        for key in app.keys().filter(|k| k.starts_with("env_")) {
            notes.push(format!("{key} not applied (pass --env {})", &key[4..]));
        }
        return env;
    };
    let from_deploy = deploy
        .and_then(|d| d.get(n))
        .and_then(|d| d.get("env"))
        .and_then(Value::as_object);
    if let Some(extra) = from_deploy {
        env.extend(extra.clone());
        notes.push(format!(
            "env includes deploy.{n}.env ({}), as `pm2 start --env {n}` merges it",
            extra.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    match app.get(&format!("env_{n}")).and_then(Value::as_object) {
        Some(extra) => env.extend(extra.clone()),
        None => notes.push(format!("has no env_{n}; using env alone")),
    }
    for key in app.keys().filter(|k| k.starts_with("env_")) {
        if *key != format!("env_{n}") {
            notes.push(format!("{key} not applied (pass --env {})", &key[4..]));
        }
    }
    env
}

/// A value of `env` as the app sees it: PM2 passes objects as JSON, and `null` as "null".
fn env_value(v: &Value) -> String {
    scalar(v).unwrap_or_else(|| v.to_string())
}

/// A duration key in milliseconds, as verify() left it.
fn millis(app: &Map<String, Value>, key: &str) -> Option<Duration> {
    let ms = app.get(key).and_then(Value::as_f64)?;
    (ms >= 0.0).then(|| Duration::from_millis(ms.round() as u64))
}

/// PM2's `uid` (or `user`): a user name, or a uid PM2 looks up in /etc/passwd.
fn user(uid: Option<&Value>) -> Result<Option<String>, String> {
    let Some(uid) = uid else { return Ok(None) };
    if let Some(n) = uid.as_u64() {
        let found = u32::try_from(n)
            .ok()
            .and_then(|n| nix::unistd::User::from_uid(n.into()).ok().flatten());
        return match found {
            Some(u) => Ok(Some(u.name)),
            None => Err(format!(
                "uid {n} is no user on this system (PM2: \"User {n} cannot be found\"); \
                 write the user's name"
            )),
        };
    }
    Ok(scalar(uid))
}

/// PM2's restart keys: `min_uptime` is how long a worker must run to count as started,
/// `max_restarts` how many unstable restarts in a row it allows; `restart_delay` is a fixed
/// wait, `exp_backoff_restart_delay` a first wait that grows ×1.5 up to 15 s.
fn restart_policy(app: &Map<String, Value>, d: &mut Draft) {
    let duration = |d: Duration| toml::Value::String(format_duration(d));
    if let Some(min) = millis(app, "min_uptime") {
        // nodeapp's shortest reset is 1 s.
        d.tuning.push((
            "restart_reset_after",
            duration(min.max(Duration::from_secs(1))),
        ));
    }
    if let Some(n) = app.get("max_restarts").and_then(Value::as_f64) {
        d.tuning
            .push(("crash_loop_limit", toml::Value::Integer((n as i64).max(1))));
    }
    if let Some(first) = millis(app, "exp_backoff_restart_delay") {
        d.tuning.push(("restart_delay", duration(first)));
        d.tuning.push(("restart_backoff", toml::Value::Float(1.5)));
        d.tuning.push((
            "restart_delay_max",
            duration(first.max(Duration::from_secs(15))),
        ));
    } else if let Some(fixed) = millis(app, "restart_delay") {
        d.tuning.push(("restart_delay", duration(fixed)));
        d.tuning.push(("restart_backoff", toml::Value::Integer(1)));
        d.tuning.push(("restart_delay_max", duration(fixed)));
    }
}

/// PM2's `max_memory_restart` ("300M", "1G", "512K", or bytes) as `max_memory`: both are
/// per worker, in powers of 1024.
fn max_memory(value: &Value) -> Result<String, String> {
    let bytes = match value {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a size"))?,
        Value::String(s) => parse_size(&s.to_ascii_uppercase())?,
        other => return Err(format!("{other} is not a size")),
    };
    let mib = bytes.div_ceil(1 << 20);
    if mib < 32 {
        return Err(format!(
            "{value} is below the 32M a Node.js worker needs; set max_memory by hand"
        ));
    }
    Ok(format_size(mib << 20))
}
