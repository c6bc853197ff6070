//! `nodeapp-shim <name>`: the main process of `nodeapp@<name>.service`.
//!
//! Runs the app configured in `/etc/nodeapp/<name>.toml` on the sockets systemd passed.
//! `nodeapp-shim --reload <name>` is the unit's `ExecReload=`: it asks the running shim for
//! a rolling reload and exits with its outcome, so that `systemctl reload` fails when the
//! reload did.

use nodeapp::{config, exit, logging, shim};
use std::process::ExitCode;
use tracing::error;

fn main() -> ExitCode {
    // First, while the environment is as systemd made it: this reads and clears
    // LISTEN_PID/LISTEN_FDS so that workers do not inherit them.
    let fds = listenfd::ListenFd::from_env();
    logging::init("nodeapp-shim");

    let args: Vec<String> = std::env::args().skip(1).collect();
    let (name, reload) = match args.as_slice() {
        [name] => (name, false),
        [flag, name] if flag == "--reload" => (name, true),
        _ => {
            eprintln!(
                "usage: nodeapp-shim NAME            run /etc/nodeapp/NAME.toml (nodeapp@NAME.service does)\n       \
                 nodeapp-shim --reload NAME   replace its workers, rolling; fail if that fails"
            );
            return ExitCode::from(exit::USAGE);
        }
    };
    if let Err(why) = config::validate_name(name) {
        error!("{why}");
        return ExitCode::from(exit::USAGE);
    }
    if reload {
        return ask_for_reload(name);
    }
    let path = config::config_dir().join(format!("{name}.toml"));
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors.0 {
                error!("{e}");
            }
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
                "invalid config: {}",
                errors.0[0]
            ))]);
            return ExitCode::from(exit::CONFIG);
        }
    };
    let result = shim::listeners::from_systemd(fds).and_then(|l| shim::run(&config, l));
    match result {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&e.to_string())]);
            ExitCode::from(exit::OS_ERROR)
        }
    }
}

fn ask_for_reload(name: &str) -> ExitCode {
    let socket = shim::control::socket_path(name);
    match shim::control::send(&socket, shim::control::Request::Reload) {
        Ok(reply) if reply.ok => {
            tracing::info!("{}", reply.message);
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            error!("{}", reply.message);
            ExitCode::FAILURE
        }
        Err(e) => {
            error!("reload failed: {e}");
            ExitCode::FAILURE
        }
    }
}
