//! `nodeapp`: the command-line tool.

use clap::{Parser, Subcommand};
use nodeapp::{config, exit, generator, logging, shim};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "nodeapp",
    version,
    about = "Run Node.js web services under systemd, one worker per core"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an app in the foreground, without systemd: bind its addresses, start its
    /// workers, print their output; Ctrl-C drains them and exits.
    Run {
        /// The app's config file (for instance examples/hello/hello.toml).
        config: PathBuf,
    },
    /// Validate configs exactly as the generator does; exit non-zero on any error.
    Check {
        /// Config files or app names; default: every config in /etc/nodeapp.
        targets: Vec<String>,
    },
    /// Print the drop-ins the generator writes for an app.
    Render {
        /// A config file or an app name.
        target: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(&config),
        Command::Check { targets } => check(&targets),
        Command::Render { target } => render(&target),
    }
}

fn run(path: &Path) -> ExitCode {
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

/// A file path as given, or `/etc/nodeapp/<name>.toml` for a bare app name.
fn config_path(target: &str) -> Result<PathBuf, String> {
    if target.contains('/') || target.ends_with(".toml") {
        return Ok(PathBuf::from(target));
    }
    config::validate_name(target)?;
    Ok(config::config_dir().join(format!("{target}.toml")))
}

fn check(targets: &[String]) -> ExitCode {
    let paths: Vec<PathBuf> = if targets.is_empty() {
        let dir = config::config_dir();
        match generator::config_files(&dir) {
            Ok(files) if files.is_empty() => {
                println!("no configs in {}", dir.display());
                return ExitCode::SUCCESS;
            }
            Ok(files) => files,
            Err(e) => {
                eprintln!("nodeapp: cannot read {}: {e}", dir.display());
                return ExitCode::from(exit::OS_ERROR);
            }
        }
    } else {
        match targets.iter().map(|t| config_path(t)).collect() {
            Ok(p) => p,
            Err(why) => {
                eprintln!("nodeapp: {why}");
                return ExitCode::from(exit::USAGE);
            }
        }
    };
    let mut bad = 0;
    for path in &paths {
        match config::load(path) {
            Ok(c) => println!("{}: ok ({})", path.display(), c.name),
            Err(errors) => {
                bad += 1;
                eprintln!("{errors}");
            }
        }
    }
    if bad > 0 {
        eprintln!("{bad} of {} configs invalid", paths.len());
        ExitCode::from(exit::CONFIG)
    } else {
        ExitCode::SUCCESS
    }
}

fn render(target: &str) -> ExitCode {
    let loaded = config_path(target)
        .map_err(|e| e.to_string())
        .and_then(|p| config::load(&p).map_err(|e| e.to_string()));
    match loaded {
        Ok(config) => {
            let r = generator::render(&config);
            let name = &config.name;
            println!(
                "# nodeapp@{name}.socket.d/{}\n{}",
                generator::DROP_IN,
                r.socket
            );
            println!(
                "# nodeapp@{name}.service.d/{}\n{}",
                generator::DROP_IN,
                r.service
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
