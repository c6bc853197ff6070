//! `start`, `stop`, `restart`, `reload`: one systemd job each, waited for until systemd
//! reports its result.

use super::systemd::{self, Job, Systemd, UNIT};
use super::{files, Failure, Outcome};

/// `start`, `restart` or `reload` of the app's service, once its config passes. Starting
/// the service starts its socket too: the service requires it.
pub fn on_service(name: &str, job: Job) -> Outcome {
    let bus = prepare(name)?;
    bus.run_job(job, &systemd::service_unit(name))?;
    report(&bus, name, job.done());
    Ok(())
}

pub fn stop(name: &str) -> Outcome {
    let bus = Systemd::connect()?;
    // Stopping the socket first stops the service with it (it requires the socket), and no
    // connection can start the service again in between.
    bus.run_job(Job::Stop, &systemd::socket_unit(name))?;
    bus.run_job(Job::Stop, &systemd::service_unit(name))?;
    println!("{name}: {}", Job::Stop.done());
    Ok(())
}

/// Refuses an invalid config before anything changes, and has systemd read the config
/// again when it was edited since (the drop-ins name it in `SourcePath=`, so systemd
/// flags the change as `NeedDaemonReload`).
fn prepare(name: &str) -> Result<Systemd, Failure> {
    let path = files::app_config(name);
    if !path.exists() {
        return Err(Failure::usage(format!(
            "no app {name:?}: {} does not exist (`nodeapp add` writes it)",
            path.display()
        )));
    }
    files::load_here(&path).map_err(|e| Failure::config(format!("{e}\nnothing was changed")))?;
    let bus = Systemd::connect()?;
    let stale = [systemd::service_unit(name), systemd::socket_unit(name)]
        .iter()
        .any(|unit| {
            bus.properties(unit, UNIT)
                .is_ok_and(|p| p.flag("NeedDaemonReload"))
        });
    if stale {
        eprintln!(
            "{}: changed on disk; reloading systemd's configuration",
            path.display()
        );
        bus.daemon_reload()?;
    }
    Ok(bus)
}

fn report(bus: &Systemd, name: &str, done: &str) {
    let status = bus
        .properties(&systemd::service_unit(name), systemd::SERVICE)
        .map(|p| p.string("StatusText"))
        .unwrap_or_default();
    if status.is_empty() {
        println!("{name}: {done}");
    } else {
        println!("{name}: {done}: {status}");
    }
}
