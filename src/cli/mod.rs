//! The `nodeapp` command line: one verb per module, systemd driven over D-Bus.

mod apps;
mod files;
mod jobs;
mod list;
mod logs;
mod pm2;
mod status;
mod systemd;
mod table;
mod usage;

use clap::{Args, Parser, Subcommand};
use nodeapp::{config, exit};
use std::path::PathBuf;
use std::process::ExitCode;
use systemd::Job;

#[derive(Parser)]
#[command(
    name = "nodeapp",
    version,
    about = "Run Node.js web services under systemd, one worker per core",
    long_about = "Run Node.js web services under systemd, one worker per core.\n\n\
        Each app is a config file, /etc/nodeapp/<name>.toml, run as the units \
        nodeapp@<name>.socket and nodeapp@<name>.service. This tool writes and checks \
        those configs and drives systemd over D-Bus; plain systemctl and journalctl \
        work just as well."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write /etc/nodeapp/<name>.toml, check it, and load it into systemd.
    Add(apps::AddArgs),
    /// Stop an app, disable it, and remove its config.
    Rm {
        #[arg(value_parser = app_name)]
        name: String,
    },
    /// One row per app: state, workers, main PID, uptime, restarts, memory, CPU, addresses.
    #[command(visible_alias = "list")]
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// An app's state and status line, and one row per worker.
    Status {
        #[arg(value_parser = app_name)]
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start an app's socket and workers; wait until they are ready.
    Start(Target),
    /// Stop an app: its workers drain, and its socket stops listening.
    Stop(Target),
    /// Stop and start the workers; the socket keeps listening, so no connection is refused.
    Restart(Target),
    /// Replace the workers one at a time with the current release and config; fails, with
    /// the old workers still serving, when a new worker does not come up.
    Reload(Target),
    /// Show an app's logs from the journal (runs journalctl).
    Logs(logs::LogsArgs),
    /// Validate configs exactly as the generator does; exit non-zero on any error.
    Check {
        /// Config files or app names; default: every config in /etc/nodeapp.
        targets: Vec<String>,
    },
    /// Print the units and drop-ins that make up an app, as systemd will read them.
    Render {
        /// A config file or an app name.
        target: String,
    },
    /// Turn the apps of a PM2 ecosystem file into nodeapp configs.
    #[command(name = "import-pm2")]
    ImportPm2(pm2::ImportArgs),
    /// Run an app in the foreground, without systemd: bind its addresses, start its
    /// workers, print their output; Ctrl-C drains them and exits.
    Run {
        /// The app's config file (for instance examples/hello/hello.toml).
        config: PathBuf,
    },
}

#[derive(Args)]
struct Target {
    /// The app's name (its config is /etc/nodeapp/<name>.toml).
    #[arg(value_parser = app_name)]
    name: String,
}

/// Why a verb failed, and the exit code that says so.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    pub fn new(code: u8, message: String) -> Failure {
        Failure { code, message }
    }
    pub fn job(message: String) -> Failure {
        Failure::new(exit::FAILED, message)
    }
    pub fn unavailable(message: String) -> Failure {
        Failure::new(exit::UNAVAILABLE, message)
    }
    pub fn permission(message: String) -> Failure {
        Failure::new(exit::NO_PERMISSION, message)
    }
    pub fn usage(message: String) -> Failure {
        Failure::new(exit::USAGE, message)
    }
    pub fn config(message: String) -> Failure {
        Failure::new(exit::CONFIG, message)
    }
}

type Outcome = Result<(), Failure>;

pub fn main() -> ExitCode {
    // Like other Unix tools, end quietly when the reader goes away (`nodeapp ls | head`)
    // rather than fail on a write to a closed pipe. Rust starts with SIGPIPE ignored.
    // SAFETY: nothing else runs yet, and SIG_DFL installs no handler.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Add(args) => apps::add(&args),
        Command::Rm { name } => apps::rm(&name),
        Command::Ls { json } => list::ls(json),
        Command::Status { name, json } => status::status(&name, json),
        Command::Start(t) => jobs::on_service(&t.name, Job::Start),
        Command::Stop(t) => jobs::stop(&t.name),
        Command::Restart(t) => jobs::on_service(&t.name, Job::Restart),
        Command::Reload(t) => jobs::on_service(&t.name, Job::Reload),
        Command::Logs(args) => logs::logs(&args),
        Command::Check { targets } => files::check(&targets),
        Command::Render { target } => files::render(&target),
        Command::ImportPm2(args) => pm2::import(&args),
        Command::Run { config } => return files::run(&config),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("nodeapp: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// clap's check for app names: the same rule the generator applies to file names.
fn app_name(s: &str) -> Result<String, String> {
    config::validate_name(s).map(|()| s.to_string())
}
