//! Verbs that work on config files alone: `run`, `check`, `render`.

use super::{Failure, Outcome};
use nodeapp::config::{self, Config};
use nodeapp::{exit, generator, logging, shim};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(path: &Path) -> ExitCode {
    logging::init("nodeapp");
    let config = match config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    let listeners = match shim::listeners::bind(&config.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("nodeapp: {e}");
            return ExitCode::from(exit::OS_ERROR);
        }
    };
    let addrs: Vec<String> = config.listen.iter().map(ToString::to_string).collect();
    eprintln!("nodeapp: {} listening on {}", config.name, addrs.join(", "));
    match shim::run(&config, listeners) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nodeapp: {e}");
            ExitCode::from(exit::OS_ERROR)
        }
    }
}

/// Checks what the generator must not look up, because at early boot the user database
/// may not be reachable yet (LDAP, sssd): whether `user` exists here. systemd itself would
/// fail the start with status 217/USER.
pub fn check_on_this_host(config: &Config) -> Result<(), String> {
    let Some(user) = &config.user else {
        return Ok(());
    };
    match nix::unistd::User::from_name(user) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(format!(
            "{}: `user`: {user:?} does not exist on this system; create it, or leave `user` \
             out to run as the package's `nodeapp` user",
            config.path.display()
        )),
        Err(e) => Err(format!(
            "{}: `user`: cannot look up {user:?}: {e}",
            config.path.display()
        )),
    }
}

/// Two apps cannot listen on one address: the second socket unit would fail to bind.
/// The generator checks each file alone, so this is where such a clash is found.
pub fn shares_no_address(config: &Config, others: &[Config]) -> Result<(), String> {
    for other in others.iter().filter(|o| o.name != config.name) {
        if let Some(addr) = config.listen.iter().find(|a| other.listen.contains(a)) {
            return Err(format!(
                "{}: `listen`: {addr} is also in {}; two apps cannot listen on one address",
                config.path.display(),
                other.path.display()
            ));
        }
    }
    Ok(())
}

/// Loads a config as the generator does, then checks it against this host.
pub fn load_here(path: &Path) -> Result<Config, String> {
    let config = config::load(path).map_err(|e| e.to_string())?;
    check_on_this_host(&config)?;
    Ok(config)
}

/// A file path as given, or `/etc/nodeapp/<name>.toml` for a bare app name.
pub fn config_path(target: &str) -> Result<PathBuf, Failure> {
    if target.contains('/') || target.ends_with(".toml") {
        return Ok(PathBuf::from(target));
    }
    config::validate_name(target).map_err(Failure::usage)?;
    Ok(app_config(target))
}

pub fn app_config(name: &str) -> PathBuf {
    config::config_dir().join(format!("{name}.toml"))
}

/// The config directory and every config file in it, as the generator sees them.
pub fn every_config() -> Result<(PathBuf, Vec<PathBuf>), Failure> {
    let dir = config::config_dir();
    let files = generator::config_files(&dir).map_err(|e| {
        Failure::new(
            exit::OS_ERROR,
            format!("cannot read {}: {e}", dir.display()),
        )
    })?;
    Ok((dir, files))
}

pub fn check(targets: &[String]) -> Outcome {
    let paths: Vec<PathBuf> = if targets.is_empty() {
        let (dir, files) = every_config()?;
        if files.is_empty() {
            println!("no configs in {}", dir.display());
        }
        files
    } else {
        targets
            .iter()
            .map(|t| config_path(t))
            .collect::<Result<_, _>>()?
    };
    // Every valid config in the directory, loaded once: the ones checked, and the ones
    // whose addresses they must not share.
    let everyone = every_config()
        .map(|(_, files)| files)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| config::load(&p).ok())
        .collect::<Vec<_>>();
    let mut bad = 0;
    for path in &paths {
        let loaded = match everyone.iter().find(|c| c.path == *path) {
            Some(c) => check_on_this_host(c).map(|()| c.clone()),
            None => load_here(path),
        };
        match loaded.and_then(|c| shares_no_address(&c, &everyone).map(|()| c)) {
            Ok(c) => {
                println!("{}: ok ({})", path.display(), c.name);
                if let Some(warning) = c.memory_warning() {
                    eprintln!("warning: {warning}");
                }
            }
            Err(errors) => {
                bad += 1;
                eprintln!("{errors}");
            }
        }
    }
    if bad > 0 {
        return Err(Failure::config(format!(
            "{bad} of {} configs invalid",
            paths.len()
        )));
    }
    Ok(())
}

/// Where systemd finds the templates: an admin's copy in /etc wins over the package's.
const UNIT_DIRS: &[&str] = &["/etc/systemd/system", "/usr/lib/systemd/system"];
/// Where admin drop-ins live, in systemd's order of precedence.
const DROP_IN_DIRS: &[&str] = &["/etc/systemd/system", "/run/systemd/system"];

/// Prints what `systemctl cat` would show once the config is loaded: each template, then
/// its drop-ins in the order systemd applies them (by file name, later wins).
pub fn render(target: &str) -> Outcome {
    let path = config_path(target)?;
    let config = config::load(&path).map_err(|e| Failure::config(e.to_string()))?;
    let rendered = generator::render(&config);
    let name = &config.name;
    for (kind, generated, shipped) in [
        (
            "socket",
            &rendered.socket,
            include_str!("../../units/nodeapp@.socket"),
        ),
        (
            "service",
            &rendered.service,
            include_str!("../../units/nodeapp@.service"),
        ),
    ] {
        let template = format!("nodeapp@.{kind}");
        match UNIT_DIRS
            .iter()
            .map(|d| Path::new(d).join(&template))
            .find(|p| p.exists())
        {
            Some(p) => print_file(&p.display().to_string(), &read(&p)),
            None => print_file(&format!("{template} (as shipped; not installed)"), shipped),
        }
        // Same-named files: /etc hides /run, which hides the generator's output.
        let mut drop_ins: Vec<(String, String, String)> = Vec::new();
        for dir in DROP_IN_DIRS {
            for unit_dir in [
                format!("nodeapp@.{kind}.d"),
                format!("nodeapp@{name}.{kind}.d"),
            ] {
                let dir = Path::new(dir).join(unit_dir);
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let file = entry.file_name().to_string_lossy().into_owned();
                    if file.ends_with(".conf") && !drop_ins.iter().any(|(f, _, _)| *f == file) {
                        let p = entry.path();
                        drop_ins.push((file, p.display().to_string(), read(&p)));
                    }
                }
            }
        }
        if !drop_ins.iter().any(|(f, _, _)| f == generator::DROP_IN) {
            drop_ins.push((
                generator::DROP_IN.to_string(),
                format!("nodeapp@{name}.{kind}.d/{} (generated)", generator::DROP_IN),
                generated.clone(),
            ));
        }
        drop_ins.sort_by(|a, b| a.0.cmp(&b.0));
        for (_, title, text) in drop_ins {
            print_file(&title, &text);
        }
    }
    Ok(())
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("# cannot read: {e}\n"))
}

fn print_file(title: &str, text: &str) {
    println!("# {title}");
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    println!();
}
