//! `add` and `rm`: an app's config file and its place in systemd, created and removed.

use super::systemd::{self, Job, Systemd};
use super::{files, jobs, Failure, Outcome};
use clap::Args;
use nodeapp::{config, exit};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use toml::Value;

#[derive(Args)]
pub struct AddArgs {
    /// The app's name: 1 to 64 letters, digits, `_`, `-`, `.`.
    #[arg(value_parser = super::app_name)]
    name: String,
    /// The entry file, relative to --cwd or absolute.
    #[arg(long)]
    script: String,
    /// The app's directory (absolute).
    #[arg(long)]
    cwd: String,
    /// Worker count, or "max" for one per CPU the service may use.
    #[arg(long, default_value = "max")]
    instances: String,
    /// An address to listen on: "ip:port", "[ipv6]:port" or "/path.sock"; repeat for more.
    #[arg(long, required = true)]
    listen: Vec<String>,
    /// An environment variable for the workers, KEY=VALUE; repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = env_pair)]
    env: Vec<(String, String)>,
    /// Run as this user instead of the package's `nodeapp` user.
    #[arg(long)]
    user: Option<String>,
    /// The node binary, absolute or found on PATH.
    #[arg(long)]
    node: Option<String>,
    /// An argument for node itself (before the script); repeat for more.
    #[arg(long = "node-arg", value_name = "ARG", allow_hyphen_values = true)]
    node_args: Vec<String>,
    #[command(flatten)]
    activation: Activation,
}

/// What to do with configs once written: `add` and `import-pm2` take the same flags.
#[derive(Args)]
pub struct Activation {
    /// Replace a config that already exists.
    #[arg(long)]
    pub force: bool,
    /// Start the app at every boot.
    #[arg(long)]
    pub enable: bool,
    /// Start the app at every boot, and now; wait until its workers are ready.
    #[arg(long)]
    pub now: bool,
}

fn env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A config about to be written, by `add` or `import-pm2`.
#[derive(Debug, Default)]
pub struct Draft {
    pub script: String,
    pub cwd: String,
    /// A count, or "max".
    pub instances: String,
    pub listen: Vec<String>,
    pub node: Option<String>,
    pub node_args: Vec<String>,
    pub args: Vec<String>,
    pub user: Option<String>,
    pub ready_timeout: Option<String>,
    pub wait_ready: bool,
    pub stop_timeout: Option<String>,
    /// Restart policy and memory keys, as given (`restart_delay = "1s"`,
    /// `max_memory = "300M"`).
    pub tuning: Vec<(&'static str, Value)>,
    pub env: Vec<(String, String)>,
}

impl Draft {
    /// The config file: keys in the order the reference documents them, every value
    /// quoted as TOML needs.
    pub fn to_toml(&self) -> String {
        let s = |v: &str| Value::String(v.to_string()).to_string();
        let list = |vs: &[String]| {
            Value::Array(vs.iter().map(|v| Value::String(v.clone())).collect()).to_string()
        };
        let mut out = String::new();
        let _ = writeln!(out, "script = {}", s(&self.script));
        let _ = writeln!(out, "cwd = {}", s(&self.cwd));
        let _ = match self.instances.parse::<i64>() {
            Ok(n) => writeln!(out, "instances = {n}"),
            Err(_) => writeln!(out, "instances = {}", s(&self.instances)),
        };
        let _ = writeln!(out, "listen = {}", list(&self.listen));
        if let Some(node) = &self.node {
            let _ = writeln!(out, "node = {}", s(node));
        }
        if !self.node_args.is_empty() {
            let _ = writeln!(out, "node_args = {}", list(&self.node_args));
        }
        if !self.args.is_empty() {
            let _ = writeln!(out, "args = {}", list(&self.args));
        }
        if let Some(user) = &self.user {
            let _ = writeln!(out, "user = {}", s(user));
        }
        if let Some(t) = &self.ready_timeout {
            let _ = writeln!(out, "ready_timeout = {}", s(t));
        }
        if self.wait_ready {
            let _ = writeln!(out, "wait_ready = true");
        }
        if let Some(t) = &self.stop_timeout {
            let _ = writeln!(out, "stop_timeout = {}", s(t));
        }
        for (key, value) in &self.tuning {
            let _ = writeln!(out, "{key} = {value}");
        }
        if !self.env.is_empty() {
            let env: toml::Table = self
                .env
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            let _ = write!(out, "\n[env]\n{env}");
        }
        out
    }
}

impl AddArgs {
    fn draft(&self) -> Draft {
        Draft {
            script: self.script.clone(),
            cwd: self.cwd.clone(),
            instances: self.instances.clone(),
            listen: self.listen.clone(),
            node: self.node.clone(),
            node_args: self.node_args.clone(),
            user: self.user.clone(),
            env: self.env.clone(),
            ..Draft::default()
        }
    }
}

pub fn add(args: &AddArgs) -> Outcome {
    let text = args.draft().to_toml();
    let path = write_config(&args.name, &text, args.activation.force)?;
    println!("wrote {}", path.display());
    let bus = Systemd::connect()?;
    bus.daemon_reload()?;
    activate(&bus, std::slice::from_ref(&args.name), &args.activation)
}

/// Checks `text` as the generator would, then writes it as the config of `name`
/// (atomically: a reader sees the old file or the new one).
pub fn write_config(name: &str, text: &str, force: bool) -> Result<PathBuf, Failure> {
    let path = files::app_config(name);
    if path.exists() && !force {
        return Err(Failure::usage(format!(
            "{} exists; --force replaces it",
            path.display()
        )));
    }
    config::parse(&path, text.as_bytes())
        .map_err(|e| e.to_string())
        .and_then(|c| files::check_on_this_host(&c))
        .map_err(|e| Failure::config(format!("{e}\n{} was not written", path.display())))?;
    let cant = |e: std::io::Error| {
        Failure::new(
            exit::CANT_CREATE,
            format!("cannot write {}: {e}", path.display()),
        )
    };
    let dir = config::config_dir();
    std::fs::create_dir_all(&dir).map_err(cant)?;
    let tmp = dir.join(format!(".{name}.toml.new"));
    let mut file = std::fs::File::create(&tmp).map_err(cant)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            cant(e)
        })?;
    Ok(path)
}

/// Enables (socket and service, so the workers start at boot) and starts the apps named,
/// as asked. systemd's configuration must already include their configs.
pub fn activate(bus: &Systemd, names: &[String], asked: &Activation) -> Outcome {
    for name in names {
        if asked.enable || asked.now {
            let units = [systemd::socket_unit(name), systemd::service_unit(name)];
            let units: Vec<&str> = units.iter().map(String::as_str).collect();
            bus.enable(&units)?;
            println!("{name}: enabled at boot ({})", units.join(", "));
        }
        if asked.now {
            jobs::on_service(name, Job::Start)?;
        }
    }
    Ok(())
}

pub fn rm(name: &str) -> Outcome {
    let path = files::app_config(name);
    if !path.exists() {
        return Err(Failure::usage(format!(
            "no app {name:?}: {} does not exist",
            path.display()
        )));
    }
    let bus = Systemd::connect()?;
    let socket = systemd::socket_unit(name);
    let service = systemd::service_unit(name);
    bus.run_job(Job::Stop, &socket)?;
    bus.run_job(Job::Stop, &service)?;
    bus.disable(&[&socket, &service])?;
    std::fs::remove_file(&path).map_err(|e| {
        Failure::new(
            exit::CANT_CREATE,
            format!("cannot remove {}: {e}", path.display()),
        )
    })?;
    bus.daemon_reload()?;
    bus.reset_failed(&service);
    bus.reset_failed(&socket);
    println!("{name}: stopped, disabled, and {} removed", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        add: AddArgs,
    }

    #[test]
    fn the_written_config_quotes_what_toml_needs_quoted() {
        let w = Wrap::parse_from([
            "x",
            "api",
            "--script",
            "server.js",
            "--cwd",
            "/srv/my \"api\"",
            "--instances",
            "2",
            "--listen",
            "127.0.0.1:3000",
            "--env",
            "NODE_ENV=production",
            "--env",
            "GREETING=a \"b\" $c %d\\e",
            "--env",
            "my.key=1",
            "--node-arg",
            "--max-old-space-size=512",
        ]);
        let text = w.add.draft().to_toml();
        let parsed: toml::Table = text.parse().unwrap();
        assert_eq!(parsed["cwd"].as_str(), Some("/srv/my \"api\""));
        assert_eq!(parsed["instances"].as_integer(), Some(2));
        assert_eq!(parsed["env"]["GREETING"].as_str(), Some("a \"b\" $c %d\\e"));
        assert_eq!(parsed["env"]["my.key"].as_str(), Some("1"));
        assert_eq!(
            parsed["node_args"][0].as_str(),
            Some("--max-old-space-size=512")
        );
    }
}
