//! An app's keys as PM2 7 reads them before it starts anything (lib/Common.js
//! verifyConfs, lib/tools/Config.js validateJSON over lib/API/schema.json): aliases and
//! camelCase forms folded into one key, numeric strings made numbers, `"10s"` and `"300M"`
//! made milliseconds and bytes, argument strings split. A value PM2 rejects is an error;
//! PM2 then starts no app of the file.

use serde_json::{Map, Number, Value};

#[derive(Clone, Copy, PartialEq)]
enum Type {
    Str,
    Num,
    Bool,
    Arr,
    Obj,
}
use Type::*;

/// What PM2 checks of a value beyond its type.
#[derive(Clone, Copy)]
enum Rule {
    Any,
    /// `^\d+(G|M|K)?$`, made bytes.
    Size,
    /// `^\d+(h|m|s)?$`, made milliseconds; at least 100.
    Duration,
    /// `^(cluster|fork)(_mode)?$`.
    ExecMode,
    Min(f64),
}

struct Key {
    name: &'static str,
    /// In PM2's order: a string given where the first type is an array is split.
    types: &'static [Type],
    aliases: &'static [&'static str],
    rule: Rule,
}

const fn key(name: &'static str, types: &'static [Type]) -> Key {
    Key {
        name,
        types,
        aliases: &[],
        rule: Rule::Any,
    }
}

const fn aka(name: &'static str, types: &'static [Type], aliases: &'static [&'static str]) -> Key {
    Key {
        name,
        types,
        aliases,
        rule: Rule::Any,
    }
}

const fn rule(name: &'static str, types: &'static [Type], rule: Rule) -> Key {
    Key {
        name,
        types,
        aliases: &[],
        rule,
    }
}

/// lib/API/schema.json of pm2@7.0.4, in its order.
const SCHEMA: &[Key] = &[
    aka("script", &[Str], &["exec"]),
    key("name", &[Str]),
    key("name_prefix", &[Str]),
    key("filter_env", &[Bool, Arr, Str]),
    key("namespace", &[Str]),
    key("install_url", &[Str]),
    key("cwd", &[Str]),
    key("args", &[Arr, Str]),
    aka("exec_interpreter", &[Str], &["interpreter"]),
    aka(
        "node_args",
        &[Arr, Str],
        &["interpreterArgs", "interpreter_args"],
    ),
    aka("out_file", &[Str], &["out", "output", "out_log"]),
    aka(
        "error_file",
        &[Str],
        &["error", "err", "err_file", "err_log"],
    ),
    aka("log_file", &[Bool, Str], &["log"]),
    key("disable_logs", &[Bool]),
    key("log_type", &[Str]),
    key("log_date_format", &[Str]),
    key("time", &[Bool]),
    key("env", &[Obj, Str]),
    rule("max_memory_restart", &[Str, Num], Rule::Size),
    aka("pid_file", &[Str], &["pid"]),
    key("restart_delay", &[Num]),
    key("exp_backoff_restart_delay", &[Num]),
    key("source_map_support", &[Bool]),
    key("disable_source_map_support", &[Bool]),
    key("wait_ready", &[Bool]),
    key("instances", &[Num]),
    key("kill_timeout", &[Num]),
    key("shutdown_with_message", &[Bool]),
    key("listen_timeout", &[Num]),
    aka("cron_restart", &[Str], &["cron"]),
    aka("merge_logs", &[Bool], &["combine_logs"]),
    key("vizion", &[Bool]),
    key("autorestart", &[Bool]),
    key("watch_delay", &[Num]),
    key("watch", &[Bool, Arr, Str]),
    key("ignore_watch", &[Arr, Str]),
    key("watch_options", &[Obj]),
    rule("min_uptime", &[Num, Str], Rule::Duration),
    rule("max_restarts", &[Num], Rule::Min(0.0)),
    key("execute_command", &[Bool]),
    rule("exec_mode", &[Str], Rule::ExecMode),
    key("force", &[Bool]),
    key("append_env_to_name", &[Bool]),
    key("post_update", &[Arr]),
    key("trace", &[Bool]),
    key("disable_trace", &[Bool]),
    key("v8", &[Bool]),
    key("event_loop_inspector", &[Bool]),
    key("deep_monitoring", &[Bool]),
    key("increment_var", &[Str]),
    key("instance_var", &[Str]),
    key("pmx", &[Bool]),
    key("automation", &[Bool]),
    key("treekill", &[Bool]),
    key("port", &[Num]),
    key("username", &[Str]),
    aka("uid", &[Num, Str], &["user"]),
    key("gid", &[Num, Str]),
    key("windowsHide", &[Bool]),
    key("kill_retry_time", &[Num]),
    key("write", &[Bool]),
    key("io", &[Obj]),
];

/// Every key PM2 keeps, by its own name.
#[cfg(test)]
pub fn keys() -> impl Iterator<Item = &'static str> {
    SCHEMA.iter().map(|k| k.name)
}

/// An app as PM2 would keep it.
#[derive(Debug, Default)]
pub struct Verified {
    /// Canonical keys only (and `env_*`), values converted.
    pub app: Map<String, Value>,
    /// Keys of the file PM2 does not know and drops without a word.
    pub unknown: Vec<String>,
}

/// PM2's checks of one app: the app as PM2 keeps it, or what makes PM2 reject the file.
pub fn verify(raw: &Map<String, Value>) -> Result<Verified, Vec<String>> {
    let mut app = raw.clone();
    prepare(&mut app);
    let mut errors = Vec::new();
    let mut out = Map::new();
    for k in SCHEMA {
        // PM2 takes the first truthy of the key and its aliases, the last one otherwise.
        let mut value = app.get(k.name).cloned();
        for alias in aliases(k) {
            if !value.as_ref().is_some_and(truthy) {
                value = app.get(&alias).cloned();
            }
        }
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        match valid(k, value) {
            Ok(Some(v)) => {
                out.insert(k.name.to_string(), v);
            }
            Ok(None) => {}
            Err(why) => errors.push(why),
        }
    }
    let env = aka("env_", &[Obj, Str], &[]);
    for (name, value) in app.iter().filter(|(n, _)| is_env_key(n)) {
        match valid(&env, value.clone()) {
            Ok(Some(v)) if truthy(&v) => {
                out.insert(name.clone(), v);
            }
            Ok(_) => {}
            Err(why) => errors.push(why.replacen("env_", name, 1)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let known = |name: &str| {
        matches!(name, "cmd" | "command")
            || is_env_key(name)
            || SCHEMA
                .iter()
                .any(|k| k.name == name || aliases(k).any(|a| a == name))
    };
    let unknown = raw.keys().filter(|k| !known(k)).cloned().collect();
    Ok(Verified { app: out, unknown })
}

/// What verifyConfs does before the schema: `cmd`/`command` as `script`, `fork` as
/// `fork_mode`, `instances` as a number (`"max"` is 0, other strings are parseInt's).
fn prepare(app: &mut Map<String, Value>) {
    if let Some(Value::String(mode)) = app.get_mut("exec_mode") {
        if mode == "fork" || mode == "cluster" {
            mode.push_str("_mode");
        }
    }
    for alias in ["cmd", "command"] {
        if !app.get("script").is_some_and(truthy) {
            if let Some(script) = app.remove(alias).filter(truthy) {
                app.insert("script".into(), script);
            }
        }
    }
    if let Some(Value::String(n)) = app.get("instances") {
        let n = if n == "max" {
            0
        } else {
            parse_int(n).unwrap_or(0)
        };
        app.insert("instances".into(), Value::from(n));
    }
}

/// The key's aliases in the order PM2 tries them: those of the schema, last first, then
/// the camelCase form.
fn aliases(k: &Key) -> impl Iterator<Item = String> + '_ {
    let camel = k
        .name
        .split('_')
        .enumerate()
        .map(|(i, part)| match part.chars().next() {
            Some(first) if i > 0 && part.len() > 1 => {
                first.to_ascii_uppercase().to_string() + &part[1..]
            }
            _ => part.to_string(),
        })
        .collect::<String>();
    k.aliases
        .iter()
        .rev()
        .map(|a| a.to_string())
        .chain(std::iter::once(camel))
}

fn is_env_key(name: &str) -> bool {
    name.strip_prefix("env_")
        .is_some_and(|rest| !rest.chars().any(char::is_whitespace))
}

/// JavaScript's truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Config.js `_valid`: the value converted, or why PM2 rejects it.
fn valid(k: &Key, mut value: Value) -> Result<Option<Value>, String> {
    // A numeric string is a number wherever a number is allowed.
    if k.types.contains(&Num) {
        if let Value::String(s) = &value {
            match js_number(s) {
                Some(n) => value = n,
                None if s.trim().is_empty() => return Ok(None),
                None => {}
            }
        }
    }
    let ty = match &value {
        Value::String(_) => Str,
        Value::Number(_) => Num,
        Value::Bool(_) => Bool,
        Value::Array(_) => Arr,
        Value::Object(_) => Obj,
        Value::Null => return Ok(None),
    };
    if !k.types.contains(&ty) {
        let wanted: Vec<&str> = k.types.iter().map(|t| type_name(*t)).collect();
        return Err(format!(
            "{} is {value}, and PM2 takes only {} there",
            k.name,
            wanted.join(" or ")
        ));
    }
    match (&value, k.rule) {
        (Value::String(s), Rule::Size) if !matches_unit(s, "GMK") => {
            return Err(format!(
                "max_memory_restart is {s:?}, and PM2 takes bytes or a whole number with G, M \
                 or K (\"{}\")",
                suggest_size(s)
            ))
        }
        (Value::String(s), Rule::Duration) if !matches_unit(s, "hms") => {
            return Err(format!(
                "min_uptime is {s:?}, and PM2 takes milliseconds or a whole number with h, m \
                 or s (\"10s\")"
            ))
        }
        (Value::String(s), Rule::ExecMode)
            if !["cluster", "fork", "cluster_mode", "fork_mode"].contains(&s.as_str()) =>
        {
            return Err(format!(
                "exec_mode is {s:?}, and PM2 takes \"fork\" or \"cluster\""
            ))
        }
        _ => {}
    }
    if let Value::Number(n) = &value {
        let min = match k.rule {
            Rule::Duration => Some(100.0),
            Rule::Min(m) => Some(m),
            _ => None,
        };
        if let (Some(min), Some(f)) = (min, n.as_f64()) {
            if f < min {
                return Err(format!("{} is {n}, and PM2's least is {min}", k.name));
            }
        }
    }
    if let (Value::String(s), [Arr, ..]) = (&value, k.types) {
        value = Value::Array(split_args(s).into_iter().map(Value::String).collect());
    }
    if let Value::String(s) = &value {
        let unit = |c: char| match (k.rule, c) {
            (Rule::Size, 'G') => Some(1u64 << 30),
            (Rule::Size, 'M') => Some(1 << 20),
            (Rule::Size, 'K') => Some(1 << 10),
            (Rule::Duration, 'h') => Some(3_600_000),
            (Rule::Duration, 'm') => Some(60_000),
            (Rule::Duration, 's') => Some(1000),
            _ => None,
        };
        if let Some(scale) = s.chars().last().and_then(unit) {
            let n: u64 = s[..s.len() - 1].parse().unwrap_or(0);
            value = Value::from(n.saturating_mul(scale));
        }
    }
    Ok(Some(value))
}

fn type_name(t: Type) -> &'static str {
    match t {
        Str => "a string",
        Num => "a number",
        Bool => "true or false",
        Arr => "a list",
        Obj => "an object",
    }
}

/// `^\d+[units]?$`.
fn matches_unit(s: &str, units: &str) -> bool {
    let digits = s.trim_end_matches(|c| units.contains(c));
    s.len() - digits.len() <= 1 && !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// A size PM2 would take for one it does not ("1.5GB" → "1536M").
fn suggest_size(s: &str) -> String {
    let upper = s.trim().to_ascii_uppercase();
    let t = upper.trim_end_matches(['B', 'I']);
    let (number, scale) = match t.chars().last() {
        Some('G') => (&t[..t.len() - 1], 1u64 << 30),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('K') => (&t[..t.len() - 1], 1 << 10),
        _ => (t, 1),
    };
    let bytes = number.trim().parse::<f64>().map(|n| n * scale as f64);
    match bytes {
        Ok(b) if b >= 1.0 && b % (1u64 << 30) as f64 == 0.0 => format!("{}G", b as u64 >> 30),
        Ok(b) if b >= 1.0 => format!("{}M", (b / (1u64 << 20) as f64).ceil() as u64),
        _ => "512M".into(),
    }
}

/// JavaScript's `!isNaN(s)` then `parseFloat(s)` on a string that is a decimal number.
fn js_number(s: &str) -> Option<Value> {
    let t = s.trim();
    let decimal = !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'))
        && t.chars().any(|c| c.is_ascii_digit());
    let f: f64 = t.parse().ok().filter(|_| decimal)?;
    if f.fract() == 0.0 && f.abs() < 9e15 {
        Some(Value::from(f as i64))
    } else {
        Number::from_f64(f).map(Value::Number)
    }
}

/// JavaScript's parseInt: leading digits after an optional sign.
fn parse_int(s: &str) -> Option<i64> {
    let t = s.trim_start();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse::<i64>().ok().map(|n| sign * n)
}

/// PM2's split of an argument string: spaces separate; `"a b"` and `'a b'` are one word
/// without their quotes; `k="a b"` is one word with them.
pub fn split_args(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut words = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let end = quoted_assignment(&chars, i)
            .or_else(|| quoted(&chars, i))
            .unwrap_or_else(|| {
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() {
                    j += 1;
                }
                j
            });
        let word: String = chars[start..end].iter().collect();
        let bare = match (word.chars().next(), word.chars().last()) {
            (Some(a), Some(b)) if word.len() >= 2 && a == b && (a == '"' || a == '\'') => {
                word[1..word.len() - 1].to_string()
            }
            _ => word,
        };
        if !bare.trim().is_empty() {
            words.push(bare);
        }
        i = end;
    }
    words
}

/// `[^\s"'=]+="[^"]*"` (or with single quotes) at `i`: where it ends.
fn quoted_assignment(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    while j < chars.len() && !chars[j].is_whitespace() && !"\"'=".contains(chars[j]) {
        j += 1;
    }
    if j == i || chars.get(j) != Some(&'=') {
        return None;
    }
    quoted(chars, j + 1)
}

/// `"[^"]*"` or `'[^']*'` at `i`: where it ends.
fn quoted(chars: &[char], i: usize) -> Option<usize> {
    let q = *chars.get(i).filter(|c| **c == '"' || **c == '\'')?;
    let close = chars[i + 1..].iter().position(|c| *c == q)?;
    Some(i + 1 + close + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(v: Value) -> Result<Verified, Vec<String>> {
        verify(v.as_object().unwrap())
    }

    #[test]
    fn aliases_and_camel_case_fold_into_one_key() {
        let v = app(json!({
            "cmd": "server.js", "execMode": "cluster", "maxMemoryRestart": "300M",
            "interpreter": "node", "interpreterArgs": "--max-old-space-size=400",
            "user": "www-data", "combine_logs": true, "Exec_mode": "x",
        }))
        .unwrap();
        assert_eq!(v.app["script"], "server.js");
        assert_eq!(v.app["exec_mode"], "cluster");
        assert_eq!(v.app["max_memory_restart"], 300 << 20);
        assert_eq!(v.app["exec_interpreter"], "node");
        assert_eq!(v.app["node_args"], json!(["--max-old-space-size=400"]));
        assert_eq!(v.app["uid"], "www-data");
        assert_eq!(v.app["merge_logs"], true);
        assert_eq!(v.unknown, ["Exec_mode"]);
    }

    #[test]
    fn strings_become_numbers_durations_and_sizes_as_pm2_reads_them() {
        let v = app(json!({
            "script": "a.js", "kill_timeout": "3000", "min_uptime": "10s", "port": "8080",
            "instances": "4", "max_memory_restart": "1G", "max_restarts": 0,
        }))
        .unwrap();
        assert_eq!(v.app["kill_timeout"], 3000);
        assert_eq!(v.app["min_uptime"], 10_000);
        assert_eq!(v.app["port"], 8080);
        assert_eq!(v.app["instances"], 4);
        assert_eq!(v.app["max_memory_restart"], 1u64 << 30);
        // 0 is falsy: PM2 looks for maxRestarts instead, finds nothing and keeps its default.
        assert!(!v.app.contains_key("max_restarts"));
        let v = app(json!({"script": "a.js", "instances": "max"})).unwrap();
        assert_eq!(v.app["instances"], 0);
    }

    #[test]
    fn values_pm2_rejects_are_errors_that_say_what_it_takes() {
        let errors = app(json!({
            "script": "a.js", "kill_timeout": "10s", "max_memory_restart": "1.5GB",
            "min_uptime": 50, "exec_mode": "cluster-mode", "wait_ready": "true",
            "env_production": 5,
        }))
        .unwrap_err();
        let all = errors.join("\n");
        assert_eq!(errors.len(), 6, "{all}");
        assert!(all.contains("kill_timeout is \"10s\", and PM2 takes only a number"));
        assert!(all.contains("(\"1536M\")"), "{all}");
        assert!(all.contains("min_uptime is 50, and PM2's least is 100"));
        assert!(all.contains("exec_mode is \"cluster-mode\""));
        assert!(all.contains("wait_ready is \"true\""));
        assert!(all.contains("env_production is 5"), "{all}");
    }

    #[test]
    fn argument_strings_are_split_as_pm2_splits_them() {
        assert_eq!(
            split_args(r#"start -p 3000 "a b" 'c d' --title="x y"  "#),
            ["start", "-p", "3000", "a b", "c d", r#"--title="x y""#]
        );
        assert_eq!(split_args(""), Vec::<String>::new());
        let v = app(json!({"script": "a.js", "args": "--port 80 'two words'"})).unwrap();
        assert_eq!(v.app["args"], json!(["--port", "80", "two words"]));
    }
}
