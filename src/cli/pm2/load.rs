//! Reading an ecosystem file the way `pm2 start <file>` does: which files PM2 takes as
//! ecosystem files at all, `.json` as a JavaScript expression, YAML, and `.js`/`.cjs`/
//! `.mjs` evaluated by node (src/cli/pm2/load.js), which may log, read the caller's
//! environment and leave timers running without holding the import up.

use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How PM2 reads a file, by its name (lib/Common.js isConfigFile: a substring test, in
/// this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Json,
    Yaml,
    Js,
    Mjs,
}

pub fn kind_of(file: &Path) -> Option<Kind> {
    let name = file.file_name()?.to_string_lossy();
    [
        (".json", Kind::Json),
        (".yml", Kind::Yaml),
        (".yaml", Kind::Yaml),
        (".config.js", Kind::Js),
        (".config.cjs", Kind::Js),
        (".config.mjs", Kind::Mjs),
    ]
    .into_iter()
    .find(|(ext, _)| name.contains(ext))
    .map(|(_, kind)| kind)
}

/// What evaluating the file gave.
#[derive(Debug, Default)]
pub struct Loaded {
    pub value: Value,
    /// Names of the caller's environment variables the file read.
    pub read_env: Vec<String>,
    /// The file enumerated the caller's environment (`{ ...process.env }`,
    /// `Object.assign({}, process.env)`).
    pub copied_env: bool,
}

/// How long evaluating a file may take; one that still runs is stopped.
const EVAL_TIMEOUT: Duration = Duration::from_secs(30);
const MARK: &str = "@@nodeapp-ecosystem@@";

pub fn load(file: &Path, kind: Kind) -> Result<Loaded, String> {
    let text = || std::fs::read_to_string(file).map_err(|e| e.to_string());
    match kind {
        Kind::Yaml => {
            let value: Value =
                serde_norway::from_str(&text()?).map_err(|e| format!("not valid YAML: {e}"))?;
            Ok(Loaded {
                value,
                ..Loaded::default()
            })
        }
        Kind::Json => evaluate(file, "json"),
        Kind::Js => evaluate(file, "js"),
        Kind::Mjs => evaluate(file, "mjs"),
    }
}

/// Runs src/cli/pm2/load.js on the file in the caller's directory and environment, as the
/// `pm2` command would.
fn evaluate(file: &Path, kind: &str) -> Result<Loaded, String> {
    let path = file.canonicalize().map_err(|e| e.to_string())?;
    let mut child = Command::new("node")
        .arg("-e")
        .arg(include_str!("load.js"))
        .arg(&path)
        .arg(kind)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run node to read it: {e}"))?;
    // Both pipes are read while node runs, so that neither fills and blocks it.
    let reader = read_all(child.stdout.take().expect("piped"));
    let errors = read_all(child.stderr.take().expect("piped"));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > EVAL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "node did not finish reading it within {}s",
                EVAL_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = reader.join().unwrap_or_default();
    let printed = errors.join().unwrap_or_default();
    let Some(result) = out.lines().rev().find_map(|l| l.strip_prefix(MARK)) else {
        let last = printed.trim().lines().last().unwrap_or("").to_string();
        return Err(format!("node could not read it ({status}): {last}"));
    };
    let result: Value =
        serde_json::from_str(result).map_err(|e| format!("unreadable result: {e}"))?;
    if let Some(why) = result["error"].as_str() {
        return Err(format!("PM2 could not load it either: {why}"));
    }
    if result["exported"] == "function" {
        return Err(
            "it exports a function; PM2 reads no apps from it (export an object: \
                    `module.exports = { apps: [...] }`)"
                .into(),
        );
    }
    let names = |key: &str| -> Vec<String> {
        result[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Loaded {
        value: result["value"].clone(),
        read_env: names("read"),
        copied_env: result["copied"] == true,
    })
}

fn read_all(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm2_takes_a_file_as_ecosystem_by_a_substring_of_its_name() {
        let k = |n: &str| kind_of(Path::new(n));
        assert_eq!(k("ecosystem.config.js"), Some(Kind::Js));
        assert_eq!(k("pm2.config.cjs"), Some(Kind::Js));
        assert_eq!(k("ecosystem.config.mjs"), Some(Kind::Mjs));
        assert_eq!(k("ecosystem.json5"), Some(Kind::Json));
        assert_eq!(k("processes.json"), Some(Kind::Json));
        assert_eq!(k("process.yml"), Some(Kind::Yaml));
        assert_eq!(k("app.yaml"), Some(Kind::Yaml));
        assert_eq!(k("ecosystem.js"), None);
        assert_eq!(k("ecosystem.config.ts"), None);
    }
}

#[cfg(test)]
mod evaluation {
    use super::*;

    /// Writes `text` as `name` in a fresh directory and loads it as PM2 would.
    fn load_text(name: &str, text: &str) -> Result<Loaded, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        load(&file, kind_of(&file).expect("an ecosystem file name"))
    }

    #[test]
    fn a_js_file_may_log_and_leave_a_timer_running() {
        let started = Instant::now();
        let l = load_text(
            "ecosystem.config.js",
            "console.log('loading the config'); setInterval(() => {}, 1000);\n\
             module.exports = { apps: [{ name: 'api', script: 'server.js' }] };\n",
        )
        .unwrap();
        assert_eq!(l.value["apps"][0]["name"], "api");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn json_is_read_as_pm2_reads_it_comments_and_trailing_commas_included() {
        let l = load_text(
            "ecosystem.json",
            "{\n  // the API\n  \"apps\": [{ \"name\": 'api', script: \"a.js\", },],\n}\n",
        )
        .unwrap();
        assert_eq!(l.value["apps"][0]["script"], "a.js");
    }

    #[test]
    fn yaml_is_read() {
        let l = load_text(
            "process.yml",
            "apps:\n  - name: api\n    script: server.js\n    instances: 2\n    env:\n      PORT: 3000\n",
        )
        .unwrap();
        assert_eq!(l.value["apps"][0]["instances"], 2);
        assert_eq!(l.value["apps"][0]["env"]["PORT"], 3000);
    }

    #[test]
    fn an_es_module_is_read_as_its_namespace() {
        let l = load_text(
            "ecosystem.config.mjs",
            "export const apps = [{ name: 'api', script: 'a.js' }];\n",
        )
        .unwrap();
        assert_eq!(l.value["apps"][0]["name"], "api");
    }

    #[test]
    fn a_function_export_and_a_missing_module_are_refused_in_one_line() {
        let f = load_text(
            "ecosystem.config.js",
            "module.exports = () => ({ apps: [] });\n",
        );
        assert!(f.unwrap_err().contains("exports a function"));
        let m = load_text(
            "ecosystem.config.js",
            "require('dotenv').config();\nmodule.exports = { apps: [] };\n",
        )
        .unwrap_err();
        assert!(
            m.contains("it requires \"dotenv\", which cannot be found from") && !m.contains('\n'),
            "{m}"
        );
        let t = load_text(
            "ecosystem.config.js",
            "module.exports = { apps: [nope] };\n",
        )
        .unwrap_err();
        assert!(
            t.contains("ReferenceError: nope is not defined") && !t.contains('\n'),
            "{t}"
        );
    }

    #[test]
    fn reading_and_copying_the_callers_environment_is_seen() {
        let l = load_text(
            "ecosystem.config.js",
            "module.exports = { apps: [{ script: 'a.js', env: { ...process.env, PORT: process.env.PATH && 1 } }] };\n",
        )
        .unwrap();
        assert!(l.copied_env);
        assert!(l.read_env.contains(&"PATH".to_string()), "{:?}", l.read_env);
    }
}
