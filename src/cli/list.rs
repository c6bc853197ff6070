//! `nodeapp ls`: every app in the config directory, with what systemd and the shim say
//! about it. systemd has no call that returns properties of many units, and each D-Bus
//! call costs about as much as reading a file: so one `ListUnitsByPatterns` for every
//! state, then memory, CPU, main PID and status line from cgroupfs, /proc and the shim's
//! status file, and D-Bus `Get`s (all sent at once) only for what only systemd knows.

use super::systemd::{self, Props, Systemd, SERVICE};
use super::table::{self, human_bytes, human_duration, Table, Tone};
use super::usage;
use super::{files, Outcome};
use nodeapp::config;
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One app, as `ls` shows it.
#[derive(Debug, Default)]
pub struct AppRow {
    pub name: String,
    /// The service's `ActiveState`; `listening` when only the socket is active, `bad
    /// config` when the generator skips the file.
    pub state: String,
    pub ready: Option<u64>,
    pub wanted: Option<u64>,
    pub main_pid: Option<u64>,
    pub uptime: Option<Duration>,
    pub restarts: Option<u64>,
    pub memory: Option<u64>,
    pub cpu: Option<Duration>,
    pub listen: Vec<String>,
    pub status: String,
    pub config_error: Option<String>,
}

pub fn ls(as_json: bool) -> Outcome {
    let (dir, files) = files::every_config()?;
    let bus = Systemd::connect()?;
    let states = bus.unit_states("nodeapp@*")?;
    let mut rows = Vec::with_capacity(files.len());
    for file in &files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut row = AppRow {
            name: name.clone(),
            ..AppRow::default()
        };
        match config::load(file) {
            Ok(c) => {
                row.listen = c.listen.iter().map(ToString::to_string).collect();
                row.wanted = Some(c.instances.workers() as u64);
            }
            Err(errors) => {
                row.state = "bad config".into();
                row.config_error = Some(errors.to_string());
                rows.push(row);
                continue;
            }
        }
        let service = systemd::service_unit(&name);
        let socket = systemd::socket_unit(&name);
        let state = |unit: &str| states.get(unit).map_or("inactive", String::as_str);
        row.state = match (state(&service), state(&socket)) {
            ("inactive", "active") => "listening".into(),
            (s, _) => s.into(),
        };
        rows.push(row);
    }
    fill_live(&bus, &mut rows)?;
    rows.sort_by(|a, b| natural_order(&a.name, &b.name));
    if as_json {
        let list: Vec<Value> = rows.iter().map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
    } else if rows.is_empty() {
        println!("no apps in {}", dir.display());
    } else {
        print!("{}", to_table(&rows).render(table::use_colour()));
    }
    Ok(())
}

/// What is known only while an app runs: from its cgroup and /proc where the files are
/// where systemd puts them, and from systemd for the rest, all asked for at once.
fn fill_live(bus: &Systemd, rows: &mut [AppRow]) -> Outcome {
    let live: Vec<usize> = (0..rows.len())
        .filter(|&i| {
            !matches!(
                rows[i].state.as_str(),
                "inactive" | "listening" | "bad config"
            )
        })
        .collect();
    let mut asks = Vec::new();
    let mut statuses = Vec::new();
    for &i in &live {
        let unit = systemd::service_unit(&rows[i].name);
        rows[i].memory = usage::memory(&unit);
        rows[i].cpu = usage::cpu(&unit);
        rows[i].main_pid = usage::main_pid(&unit);
        let status = usage::shim_status(&rows[i].name);
        let mut names = vec!["NRestarts"];
        if status.is_none() {
            names.push("StatusText");
        }
        if rows[i].main_pid.is_none() {
            names.push("MainPID");
        }
        if rows[i].memory.is_none() {
            names.push("MemoryCurrent");
        }
        if rows[i].cpu.is_none() {
            names.push("CPUUsageNSec");
        }
        asks.push((unit, names));
        statuses.push(status);
    }
    let answers = bus.some_properties(&asks, SERVICE)?;
    for ((&i, props), status) in live.iter().zip(&answers).zip(statuses) {
        let row = &mut rows[i];
        row.memory = row.memory.or_else(|| props.u64("MemoryCurrent"));
        row.cpu = row
            .cpu
            .or_else(|| props.u64("CPUUsageNSec").map(Duration::from_nanos));
        row.main_pid = row
            .main_pid
            .or_else(|| props.u64("MainPID").filter(|&p| p != 0));
        row.uptime = row.main_pid.and_then(usage::process_uptime);
        row.restarts = props.u64("NRestarts");
        set_status(row, status.unwrap_or_else(|| props.string("StatusText")));
    }
    Ok(())
}

/// Takes the shim's status line, and the worker counts it holds.
fn set_status(row: &mut AppRow, status: String) {
    row.status = status;
    if let Some((ready, wanted)) = workers_ready(&row.status) {
        row.ready = Some(ready);
        row.wanted = Some(wanted);
    } else if row.main_pid.is_none() {
        row.ready = Some(0);
    }
}

pub fn fill_from_service(row: &mut AppRow, props: &Props) {
    row.main_pid = props.u64("MainPID").filter(|&p| p != 0);
    row.restarts = props.u64("NRestarts");
    row.memory = props.u64("MemoryCurrent");
    row.cpu = props.u64("CPUUsageNSec").map(Duration::from_nanos);
    row.uptime = props
        .u64("ExecMainStartTimestamp")
        .filter(|&t| t != 0 && row.main_pid.is_some())
        .map(since_realtime_usec);
    set_status(row, props.string("StatusText"));
}

fn since_realtime_usec(usec: u64) -> Duration {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_sub(Duration::from_micros(usec))
}

/// Names as people sort them: `app2` before `app10`.
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    /// Runs of digits as numbers, everything else as text.
    fn parts(s: &str) -> Vec<(u8, u64, &str)> {
        let mut out = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.starts_with(|c: char| c.is_ascii_digit());
            let end = rest
                .find(|c: char| c.is_ascii_digit() != digits)
                .unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            match run.parse::<u64>() {
                Ok(n) if digits => out.push((0, n, run)),
                _ => out.push((1, 0, run)),
            }
            rest = tail;
        }
        out
    }
    parts(a).cmp(&parts(b)).then_with(|| a.cmp(b))
}

/// `ready/wanted` from the shim's status line, which says `… 2/3 workers ready …`.
pub fn workers_ready(status: &str) -> Option<(u64, u64)> {
    let at = status.find(" workers ready")?;
    let fraction = status[..at].rsplit([' ', ':']).next()?;
    let (ready, wanted) = fraction.split_once('/')?;
    Some((ready.parse().ok()?, wanted.parse().ok()?))
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn to_table(rows: &[AppRow]) -> Table {
    let mut t = Table::new(vec![
        "name", "state", "workers", "pid", "uptime", "restarts", "memory", "cpu", "listen",
    ]);
    for r in rows {
        let workers = match (r.ready, r.wanted) {
            (Some(ready), Some(wanted)) => format!("{ready}/{wanted}"),
            (None, Some(wanted)) => format!("-/{wanted}"),
            _ => "-".into(),
        };
        let workers_tone = match (r.ready, r.wanted) {
            (Some(a), Some(b)) if a < b && r.main_pid.is_some() => Tone::Warn,
            _ => Tone::Plain,
        };
        t.row(vec![
            (r.name.clone(), Tone::Plain),
            (r.state.clone(), Tone::of_state(&r.state)),
            (workers, workers_tone),
            (dash(r.main_pid), Tone::Plain),
            (dash(r.uptime.map(human_duration)), Tone::Plain),
            (
                dash(r.restarts),
                if r.restarts.unwrap_or(0) > 0 {
                    Tone::Warn
                } else {
                    Tone::Plain
                },
            ),
            (dash(r.memory.map(human_bytes)), Tone::Plain),
            (
                dash(r.cpu.map(|d| format!("{:.1}s", d.as_secs_f64()))),
                Tone::Plain,
            ),
            (
                if r.listen.is_empty() {
                    "-".into()
                } else {
                    r.listen.join(",")
                },
                Tone::Plain,
            ),
        ]);
    }
    t
}

fn to_json(r: &AppRow) -> Value {
    json!({
        "name": r.name,
        "state": r.state,
        "ready": r.ready,
        "wanted": r.wanted,
        "main_pid": r.main_pid,
        "uptime_ms": r.uptime.map(|d| d.as_millis() as u64),
        "restarts": r.restarts,
        "memory_bytes": r.memory,
        "cpu_ns": r.cpu.map(|d| d.as_nanos() as u64),
        "listen": r.listen,
        "status": r.status,
        "config_error": r.config_error,
    })
}

#[cfg(test)]
mod tests {
    use super::{natural_order, workers_ready};

    #[test]
    fn names_sort_as_people_expect() {
        let mut names = vec!["app10", "app2", "api", "app1", "b", "app1-x", "10x"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(
            names,
            ["10x", "api", "app1", "app1-x", "app2", "app10", "b"]
        );
    }

    #[test]
    fn reads_worker_counts_from_every_status_form() {
        assert_eq!(workers_ready("2/2 workers ready"), Some((2, 2)));
        assert_eq!(workers_ready("starting: 0/4 workers ready"), Some((0, 4)));
        assert_eq!(
            workers_ready("reloading: 1/2 workers replaced; 2/2 workers ready"),
            Some((2, 2))
        );
        assert_eq!(
            workers_ready("1/2 workers ready; last reload failed: the new worker 0 exited"),
            Some((1, 2))
        );
        assert_eq!(workers_ready("stopping: draining 2 workers"), None);
    }
}
