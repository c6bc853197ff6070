//! `nodeapp logs <name>`: the app's journal, shown by journalctl itself.

use super::{systemd, Failure, Outcome};
use clap::Args;
use nodeapp::exit;
use std::os::unix::process::CommandExt;
use std::process::Command;

#[derive(Args)]
pub struct LogsArgs {
    /// The app's name.
    #[arg(value_parser = super::app_name)]
    name: String,
    /// Keep printing new lines as they come.
    #[arg(short, long)]
    follow: bool,
    /// How many of the latest lines to show.
    #[arg(short = 'n', long, default_value_t = 50)]
    lines: u32,
    /// Only the lines of worker slot K (0, 1, …), whichever processes held it.
    #[arg(long, value_name = "K")]
    worker: Option<u32>,
}

/// The journalctl arguments for `args`. Workers log with the identifier `<app>/<slot>`;
/// matches on two fields must both hold, so `--worker` keeps to this unit's lines.
fn journalctl_args(args: &LogsArgs) -> Vec<String> {
    let unit = systemd::service_unit(&args.name);
    let mut out = vec![format!("--lines={}", args.lines)];
    if args.follow {
        out.push("--follow".into());
    }
    match args.worker {
        Some(k) => {
            out.push(format!("_SYSTEMD_UNIT={unit}"));
            out.push(format!("SYSLOG_IDENTIFIER={}/{k}", args.name));
        }
        None => out.push(format!("--unit={unit}")),
    }
    out
}

pub fn logs(args: &LogsArgs) -> Outcome {
    let e = Command::new("journalctl")
        .args(journalctl_args(args))
        .exec();
    Err(Failure::new(
        exit::UNAVAILABLE,
        format!("cannot run journalctl: {e}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_is_its_unit_and_identifier() {
        let args = LogsArgs {
            name: "api".into(),
            follow: true,
            lines: 10,
            worker: Some(1),
        };
        assert_eq!(
            journalctl_args(&args),
            [
                "--lines=10",
                "--follow",
                "_SYSTEMD_UNIT=nodeapp@api.service",
                "SYSLOG_IDENTIFIER=api/1"
            ]
        );
    }
}
