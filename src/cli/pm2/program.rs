//! What node runs for an app: PM2 accepts commands where nodeapp needs a script for node.
//! `node server.js`, `ts-node src/index.ts`, `npm start` (through package.json's script)
//! and an `interpreter` of ts-node or babel-node all come down to a script, its arguments
//! and node's own arguments (a `--require` for the loaders).

use serde_json::Value;
use std::path::Path;

/// What the worker runs: `node [node_args] <script> [args]`.
#[derive(Debug, Default, PartialEq)]
pub struct Program {
    pub script: String,
    pub args: Vec<String>,
    pub node_args: Vec<String>,
    /// The node binary, when the file names one.
    pub node: Option<String>,
    /// Variables the command sets for the app (`NODE_ENV=production node ...`,
    /// `cross-env PORT=4444 ...`): they override the file's env, as in a shell.
    pub env: Vec<(String, String)>,
    pub notes: Vec<String>,
}

/// Loaders that run as node with a `--require` hook.
const LOADERS: &[(&str, &str)] = &[
    ("ts-node", "ts-node/register"),
    ("babel-node", "@babel/register"),
];

fn base(p: &str) -> &str {
    p.rsplit('/').next().unwrap_or(p)
}

/// The package manager a path runs: `npm`, or its JavaScript entry as a project installs
/// it (`node_modules/npm/bin/npm-cli.js`).
fn package_manager(program: &str) -> Option<&'static str> {
    match base(program) {
        "npm" | "npm-cli.js" => Some("npm"),
        "yarn" | "yarn.js" | "yarn.cjs" => Some("yarn"),
        "pnpm" | "pnpm.cjs" | "pnpm.mjs" => Some("pnpm"),
        _ => None,
    }
}

/// The PM2 keys that decide what runs.
pub struct App<'a> {
    pub script: &'a str,
    pub args: Vec<String>,
    pub interpreter: Option<&'a str>,
    /// `interpreter_args`/`node_args`, split.
    pub interpreter_args: Vec<String>,
    /// PM2's cluster mode (explicit, or implied by `instances`), which ignores
    /// `interpreter`: its workers are node.
    pub cluster: bool,
}

/// What a PM2 app runs, from `cwd`.
pub fn resolve(app: App, cwd: &Path) -> Result<Program, String> {
    let App {
        script,
        args,
        mut interpreter,
        interpreter_args,
        cluster,
    } = app;
    let mut p = Program::default();
    let mut interpreter_args = Some(interpreter_args);
    let first_word = split_command(script).into_iter().next().unwrap_or_default();
    let runs_a_package_manager = package_manager(&first_word).is_some();
    match interpreter.map(base) {
        Some(i) if cluster && i != "node" => {
            p.notes.push(format!(
                "interpreter {i:?} ignored, as PM2 ignores it in cluster mode: its workers are \
                 node"
            ));
            interpreter = None;
        }
        Some("bash" | "sh") if runs_a_package_manager => {
            p.notes.push(format!(
                "interpreter bash runs the {first_word} launcher; nodeapp runs what it starts"
            ));
            interpreter = None;
        }
        Some("authbind") => {
            // `authbind --deep node`: only there to bind ports below 1024, which systemd
            // binds for nodeapp.
            let words = interpreter_args.take().unwrap_or_default();
            let runs_node = words.iter().any(|w| base(w) == "node");
            if !runs_node {
                return Err("interpreter authbind does not run node here".into());
            }
            p.notes.push(
                "authbind dropped: systemd binds the listening socket, ports below 1024 \
                 included"
                    .into(),
            );
            interpreter = None;
        }
        _ => {}
    }
    p.node_args.extend(interpreter_args.unwrap_or_default());
    match interpreter.map(base) {
        None | Some("node") => {
            if let Some(i) = interpreter.filter(|i| *i != "node") {
                p.node = Some(i.to_string());
            }
        }
        Some(loader) if LOADERS.iter().any(|(l, _)| *l == loader) => {
            require_loader(&mut p, loader);
        }
        // PM2 runs the script itself: a command such as `pnpm`.
        Some("none") => {}
        Some(other) => {
            return Err(format!(
                "interpreter {other:?}: nodeapp runs Node.js apps only"
            ))
        }
    }
    // A script with a space is, to PM2, `bash -c "<script>"`, and PM2 drops `args`.
    let mut words: Vec<String> = if script.trim().contains(char::is_whitespace) {
        if !args.is_empty() {
            p.notes.push(format!(
                "args {args:?} not passed: PM2 runs a script with spaces as a shell command \
                 and drops args"
            ));
        }
        split_command(script)
    } else {
        std::iter::once(script.to_string()).chain(args).collect()
    };
    let program = words.remove(0);
    let name = base(&program);
    let is_file = cwd.join(&program).is_file();
    if !is_file && (name == "node" || name == "nodejs") {
        node_command(&mut p, words)?;
    } else if !is_file && LOADERS.iter().any(|(l, _)| *l == name) {
        require_loader(&mut p, name);
        node_command(&mut p, words)?;
    } else if let Some(manager) = package_manager(&program) {
        package_script(&mut p, manager, words, cwd)?;
    } else if script.trim().contains(char::is_whitespace) && !is_file {
        return Err(format!(
            "script {script:?} is a shell command that does not run node; nodeapp runs \
             Node.js apps only"
        ));
    } else {
        p.script = program;
        p.args = words;
    }
    Ok(p)
}

fn require_loader(p: &mut Program, loader: &str) {
    let hook = LOADERS.iter().find(|(l, _)| *l == loader).map(|(_, h)| *h);
    if let Some(hook) = hook {
        p.node_args
            .extend(["--require".to_string(), hook.to_string()]);
        p.notes.push(format!(
            "runs under node with --require {hook}, which is what {loader} does; the app \
             needs it installed"
        ));
    }
}

/// `node [options] script [args]`.
fn node_command(p: &mut Program, words: Vec<String>) -> Result<(), String> {
    let mut words = words.into_iter();
    for w in words.by_ref() {
        if w.starts_with('-') {
            p.node_args.push(w);
        } else {
            p.script = w;
            break;
        }
    }
    if p.script.is_empty() {
        return Err("node runs no script here".into());
    }
    p.args = words.collect();
    Ok(())
}

/// `npm start`, `npm run build`, `yarn start`, `pnpm start`: the package.json script, when
/// it runs node or a package's bin, so that the worker is the app and not the package
/// manager (which would not pass the sockets on).
fn package_script(
    p: &mut Program,
    manager: &str,
    words: Vec<String>,
    cwd: &Path,
) -> Result<(), String> {
    let mut words = words.into_iter().peekable();
    if words
        .peek()
        .is_some_and(|w| w == "run" || w == "run-script")
    {
        words.next();
    }
    let Some(task) = words.next() else {
        return Err(format!("`{manager}` without a script to run"));
    };
    let extra: Vec<String> = words.filter(|w| w != "--").collect();
    let package = cwd.join("package.json");
    let scripts: Value = std::fs::read_to_string(&package)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .map(|v| v["scripts"].clone())
        .unwrap_or(Value::Null);
    let Some(command) = scripts[&task].as_str() else {
        return Err(format!(
            "`{manager} {task}` runs package.json's script {task:?}, which {} does not have",
            package.display()
        ));
    };
    let mut cmd = split_command(command);
    p.notes.push(format!(
        "`{manager} {task}` runs {command:?}: the worker runs that directly, so that it \
         gets the listening sockets"
    ));
    // `VAR=value cmd` in a shell, and `cross-env VAR=value cmd`, set the app's environment.
    loop {
        match cmd.first().map(String::as_str) {
            Some(w) if w.contains('=') && !w.starts_with('-') => {
                let (k, v) = w.split_once('=').unwrap_or((w, ""));
                p.env.push((k.to_string(), v.to_string()));
                cmd.remove(0);
            }
            Some("cross-env") => {
                cmd.remove(0);
            }
            _ => break,
        }
    }
    if cmd.is_empty() || command.contains("&&") || command.contains(';') || command.contains('|') {
        return Err(format!(
            "`{manager} {task}` runs {command:?}, which is more than one command; give \
             nodeapp the node command it ends in"
        ));
    }
    let program = cmd.remove(0);
    cmd.extend(extra);
    match base(&program) {
        "node" | "nodejs" => node_command(p, cmd),
        loader if LOADERS.iter().any(|(l, _)| *l == loader) => {
            require_loader(p, loader);
            node_command(p, cmd)
        }
        "nest" if cmd.first().is_some_and(|w| w == "start") => {
            // The Nest CLI compiles, then runs node on the build in a child process of
            // its own, which would not get the sockets.
            p.notes.push(
                "`nest start` builds the app and runs node dist/main.js; the worker runs \
                 dist/main.js (build it with `nest build` when deploying)"
                    .into(),
            );
            p.script = "dist/main.js".into();
            p.args = Vec::new();
            Ok(())
        }
        bin if cwd.join("node_modules/.bin").join(bin).exists() => {
            // A package's bin (next, nuxt, strapi, ...): node runs the JavaScript file.
            p.script = format!("node_modules/.bin/{bin}");
            p.args = cmd;
            Ok(())
        }
        bin if nodeapp::config::find_on_path(bin).is_some() => Err(format!(
            "`{manager} {task}` runs {command:?}, and {bin} is a program, not a Node.js \
             package of the app; give nodeapp the node command it ends in"
        )),
        bin => Err(format!(
            "`{manager} {task}` runs {command:?}, and {bin} is not installed in {}; install \
             the app's dependencies first",
            cwd.join("node_modules/.bin").display()
        )),
    }
}

/// A command line split into words as a shell would for simple commands: spaces separate,
/// quotes group.
pub fn split_command(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in s.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
            }
            (None, c) => word.push(c),
        }
    }
    if any || !word.is_empty() {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app<'a>(script: &'a str, args: &[&str], interpreter: Option<&'a str>) -> App<'a> {
        App {
            script,
            args: args.iter().map(|s| s.to_string()).collect(),
            interpreter,
            interpreter_args: Vec::new(),
            cluster: false,
        }
    }

    fn run(script: &str, args: &[&str], interpreter: Option<&str>, dir: &Path) -> Program {
        resolve(app(script, args, interpreter), dir).unwrap()
    }

    #[test]
    fn commands_and_loaders_become_node_with_a_script() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("package.json"),
            r#"{"scripts": {"start": "NODE_ENV=production node --inspect dist/main.js --color",
                            "web": "next start -p 3000",
                            "host": "cross-env PORT=4444 next start --hostname 0.0.0.0",
                            "api": "nest start", "prod": "bash start.sh",
                            "os": "run-script-os"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(d.join("node_modules/.bin")).unwrap();
        std::fs::write(d.join("node_modules/.bin/next"), "").unwrap();
        let p = run("node server.js --port 8080", &[], None, d);
        assert_eq!(
            (p.script.as_str(), p.args.clone()),
            ("server.js", vec!["--port".into(), "8080".into()])
        );
        let p = run("node", &["--max-old-space-size=512", "app.js"], None, d);
        assert_eq!(
            (p.script.as_str(), p.node_args.clone()),
            ("app.js", vec!["--max-old-space-size=512".into()])
        );
        let p = run("src/index.ts", &[], Some("./node_modules/.bin/ts-node"), d);
        assert_eq!(p.node_args, ["--require", "ts-node/register"]);
        let p = run("npm", &["run", "start"], None, d);
        assert_eq!(p.script, "dist/main.js");
        assert_eq!(p.node_args, ["--inspect"]);
        assert_eq!(p.args, ["--color"]);
        assert_eq!(p.env, [("NODE_ENV".into(), "production".into())]);
        let p = run(
            "./node_modules/npm/bin/npm-cli.js",
            &["run", "host"],
            None,
            d,
        );
        assert_eq!(p.script, "node_modules/.bin/next");
        assert_eq!(p.args, ["start", "--hostname", "0.0.0.0"]);
        assert_eq!(p.env, [("PORT".into(), "4444".into())]);
        assert_eq!(run("npm", &["run", "api"], None, d).script, "dist/main.js");
        let shell = resolve(app("npm", &["run", "prod"], None), d).unwrap_err();
        assert!(shell.contains("bash is a program"), "{shell}");
        let missing = resolve(app("npm", &["run", "os"], None), d).unwrap_err();
        assert!(
            missing.contains("run-script-os is not installed"),
            "{missing}"
        );
        let p = run("yarn", &["web"], None, d);
        assert_eq!(
            (p.script.as_str(), p.args.clone()),
            (
                "node_modules/.bin/next",
                vec!["start".into(), "-p".into(), "3000".into()]
            )
        );
        assert!(resolve(app("app.py", &[], Some("python3")), d).is_err());
        assert!(resolve(app("npm", &["run", "nope"], None), d)
            .unwrap_err()
            .contains("does not have"));
        let mut authbind = app("src/app.js", &[], Some("authbind"));
        authbind.interpreter_args = vec!["--deep".into(), "node".into()];
        let p = resolve(authbind, d).unwrap();
        assert_eq!((p.script.as_str(), p.node_args.len()), ("src/app.js", 0));
        let mut clustered = app("yarn", &["web"], Some("bash"));
        clustered.cluster = true;
        assert_eq!(
            resolve(clustered, d).unwrap().script,
            "node_modules/.bin/next"
        );
        assert_eq!(split_command(r#"a "b c" 'd'"#), ["a", "b c", "d"]);
    }
}
