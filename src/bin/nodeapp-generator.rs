//! `nodeapp-generator NORMAL_DIR [EARLY_DIR LATE_DIR]`: the systemd generator that turns
//! `/etc/nodeapp/*.toml` into drop-ins for `nodeapp@<name>.socket` and `.service`.
//!
//! It runs at early boot and on every daemon-reload, when journald may not be running: it
//! reports to the kernel log, which journald picks up later. It exits 0 even when configs
//! are skipped, because a failing generator would mark the whole daemon-reload as failed.

use nodeapp::{config, generator};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out_dir) = args.first() else {
        eprintln!("usage: nodeapp-generator NORMAL_DIR [EARLY_DIR LATE_DIR]");
        return ExitCode::from(nodeapp::exit::USAGE);
    };
    let config_dir = config::config_dir();
    match generator::generate(&config_dir, Path::new(out_dir)) {
        Ok(outcome) => {
            for errors in &outcome.skipped {
                for e in &errors.0 {
                    log(3, &format!("{e} (app skipped)"));
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log(3, &format!("cannot read {}: {e}", config_dir.display()));
            ExitCode::SUCCESS
        }
    }
}

/// One line to the kernel log at `priority`, or to stderr where that cannot be written.
fn log(priority: u8, message: &str) {
    let line = format!(
        "<{priority}>nodeapp-generator[{}]: {message}\n",
        std::process::id()
    );
    let wrote = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut k| k.write_all(line.as_bytes()));
    if wrote.is_err() {
        eprintln!("nodeapp-generator: {message}");
    }
}
