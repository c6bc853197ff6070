//! `nodeapp status <name>`: systemd's view of the unit, then the shim's view of each worker
//! (asked over its control socket), with each worker's RSS read from /proc.

use super::list::{fill_from_service, AppRow};
use super::systemd::{self, Systemd, SERVICE, UNIT};
use super::table::{self, human_bytes, human_duration, Table, Tone};
use super::{files, Failure, Outcome};
use nodeapp::shim::control::{self, Request};
use nodeapp::{config, exit, shim};
use serde_json::{json, Value};
use std::time::Duration;

/// One worker, as the shim reports it, plus its RSS.
struct WorkerRow {
    slot: u64,
    pid: u64,
    role: String,
    uptime: Duration,
    ready: Option<Duration>,
    restarts: u64,
    /// Replaced for passing `max_memory`.
    recycles: u64,
    rss: Option<u64>,
}

pub fn status(name: &str, as_json: bool) -> Outcome {
    let path = files::app_config(name);
    let config = match config::load(&path) {
        Ok(c) => Some(c),
        Err(_) if !path.exists() => {
            return Err(Failure::usage(format!(
                "no app {name:?}: {} does not exist",
                path.display()
            )))
        }
        Err(_) => None,
    };
    let bus = Systemd::connect()?;
    let service = systemd::service_unit(name);
    let unit = bus.properties(&service, UNIT)?;
    let mut app = AppRow {
        name: name.to_string(),
        state: unit.string("ActiveState"),
        ..AppRow::default()
    };
    if let Some(c) = &config {
        app.listen = c.listen.iter().map(ToString::to_string).collect();
    }
    fill_from_service(&mut app, &bus.properties(&service, SERVICE)?);
    let sub_state = unit.string("SubState");
    let running = matches!(app.state.as_str(), "active" | "reloading");

    let (workers, shim_error) = if app.main_pid.is_some() {
        match control::send(&control::unit_socket_path(name), Request::Status) {
            Ok(reply) => (worker_rows(&reply.body), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        }
    } else {
        (Vec::new(), None)
    };

    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(
                &app,
                &service,
                &sub_state,
                &workers,
                &shim_error,
                config.is_none()
            ))
            .expect("json")
        );
    } else {
        print_text(&app, &service, &sub_state, &workers, &shim_error);
        if config.is_none() {
            println!("config:   invalid; `nodeapp check {name}` says why");
        }
    }
    if running {
        Ok(())
    } else {
        Err(Failure::new(
            exit::NOT_RUNNING,
            format!("{name} is {}", app.state),
        ))
    }
}

fn worker_rows(body: &Value) -> Vec<WorkerRow> {
    let ms = |v: &Value| v.as_u64().map(Duration::from_millis);
    body["workers"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|w| {
                    let pid = w["pid"].as_u64().unwrap_or(0);
                    WorkerRow {
                        slot: w["slot"].as_u64().unwrap_or(0),
                        pid,
                        role: w["role"].as_str().unwrap_or("").to_string(),
                        uptime: ms(&w["uptime_ms"]).unwrap_or_default(),
                        ready: ms(&w["ready_ms"]),
                        restarts: w["restarts"].as_u64().unwrap_or(0),
                        recycles: w["recycles"].as_u64().unwrap_or(0),
                        rss: shim::resident_bytes(pid as u32),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn print_text(
    app: &AppRow,
    service: &str,
    sub_state: &str,
    workers: &[WorkerRow],
    shim_error: &Option<String>,
) {
    let colour = table::use_colour();
    let state = table::paint(&app.state, Tone::of_state(&app.state), colour);
    let since = app
        .uptime
        .map(|u| format!(" for {}", human_duration(u)))
        .unwrap_or_default();
    println!("{service}: {state} ({sub_state}){since}");
    if let Some(pid) = app.main_pid {
        println!("main PID: {pid} (nodeapp-shim)");
    }
    if !app.status.is_empty() {
        println!("status:   {}", app.status);
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "restarts: {}   memory: {}   cpu: {}",
        opt(app.restarts.map(|r| r.to_string())),
        opt(app.memory.map(human_bytes)),
        opt(app.cpu.map(|d| format!("{:.1}s", d.as_secs_f64())))
    );
    if !app.listen.is_empty() {
        println!("listen:   {}", app.listen.join(", "));
    }
    if let Some(e) = shim_error {
        println!("workers:  unknown: {e}");
        return;
    }
    if workers.is_empty() {
        return;
    }
    let mut t = Table::new(vec![
        "slot", "pid", "role", "uptime", "ready", "rss", "restarts", "recycled",
    ]);
    for w in workers {
        let role_tone = if w.role == "serving" {
            Tone::Plain
        } else {
            Tone::Warn
        };
        t.row(vec![
            (w.slot.to_string(), Tone::Plain),
            (w.pid.to_string(), Tone::Plain),
            (w.role.clone(), role_tone),
            (human_duration(w.uptime), Tone::Plain),
            (
                w.ready.map_or_else(
                    || "not yet".into(),
                    |r| format!("{} ago", human_duration(r)),
                ),
                if w.ready.is_some() {
                    Tone::Plain
                } else {
                    Tone::Warn
                },
            ),
            (w.rss.map_or_else(|| "-".into(), human_bytes), Tone::Plain),
            (
                w.restarts.to_string(),
                if w.restarts > 0 {
                    Tone::Warn
                } else {
                    Tone::Plain
                },
            ),
            (w.recycles.to_string(), Tone::Plain),
        ]);
    }
    println!();
    print!("{}", t.render(colour));
}

fn to_json(
    app: &AppRow,
    service: &str,
    sub_state: &str,
    workers: &[WorkerRow],
    shim_error: &Option<String>,
    config_invalid: bool,
) -> Value {
    let workers: Vec<Value> = workers
        .iter()
        .map(|w| {
            json!({
                "slot": w.slot,
                "pid": w.pid,
                "role": w.role,
                "uptime_ms": w.uptime.as_millis() as u64,
                "ready_ms": w.ready.map(|d| d.as_millis() as u64),
                "rss_bytes": w.rss,
                "restarts": w.restarts,
                "recycles": w.recycles,
            })
        })
        .collect();
    json!({
        "name": app.name,
        "unit": service,
        "state": app.state,
        "sub_state": sub_state,
        "main_pid": app.main_pid,
        "uptime_ms": app.uptime.map(|d| d.as_millis() as u64),
        "status": app.status,
        "restarts": app.restarts,
        "memory_bytes": app.memory,
        "cpu_ns": app.cpu.map(|d| d.as_nanos() as u64),
        "listen": app.listen,
        "workers": workers,
        "workers_error": shim_error,
        "config_invalid": config_invalid,
    })
}
