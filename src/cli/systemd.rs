//! systemd over D-Bus (`org.freedesktop.systemd1`): jobs and their results, unit
//! properties, enabling, and `daemon-reload`.

use super::Failure;
use futures_util::StreamExt;
use std::collections::HashMap;
use zbus::blocking::{fdo::PropertiesProxy, Connection};
use zbus::names::InterfaceName;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

const DESTINATION: &str = "org.freedesktop.systemd1";
pub const UNIT: &str = "org.freedesktop.systemd1.Unit";
pub const SERVICE: &str = "org.freedesktop.systemd1.Service";
/// Calls sent before their answers are awaited; below dbus-daemon's limit of 128.
const MAX_IN_FLIGHT: usize = 100;

/// What `EnableUnitFiles`/`DisableUnitFiles` changed: (type, file, target) per link.
type Changes = Vec<(String, String, String)>;
/// One row of `ListUnitsByPatterns`: name, description, load, active and sub state,
/// followed unit, path, job id, type and path.
type UnitRow = (
    String,
    String,
    String,
    String,
    String,
    String,
    OwnedObjectPath,
    u32,
    String,
    OwnedObjectPath,
);

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_async = false
)]
trait Manager {
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reload_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Changes)>;
    fn disable_unit_files(&self, files: &[&str], runtime: bool) -> zbus::Result<Changes>;
    /// `systemctl daemon-reload`; the reply comes once the reload is done.
    fn reload(&self) -> zbus::Result<()>;
    fn subscribe(&self) -> zbus::Result<()>;
    fn list_units_by_patterns(
        &self,
        states: &[&str],
        patterns: &[&str],
    ) -> zbus::Result<Vec<UnitRow>>;
    #[zbus(signal)]
    fn job_removed(&self, id: u32, job: OwnedObjectPath, unit: String, result: String);
}

/// A job verb of the manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Start,
    Stop,
    Restart,
    Reload,
}

impl Job {
    pub fn verb(self) -> &'static str {
        match self {
            Job::Start => "start",
            Job::Stop => "stop",
            Job::Restart => "restart",
            Job::Reload => "reload",
        }
    }

    /// What the app is once the job is done, for the message that says so.
    pub fn done(self) -> &'static str {
        match self {
            Job::Start => "started",
            Job::Stop => "stopped",
            Job::Restart => "restarted",
            Job::Reload => "reloaded",
        }
    }
}

pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    /// systemd refuses a second `Subscribe` from one connection.
    subscribed: std::cell::Cell<bool>,
}

impl Systemd {
    /// Connects to the system bus (`DBUS_SYSTEM_BUS_ADDRESS` or the standard socket).
    pub fn connect() -> Result<Systemd, Failure> {
        let conn = Connection::system().map_err(|e| {
            Failure::unavailable(format!("cannot reach systemd on the system bus: {e}"))
        })?;
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .map_err(bus_failure)?;
        Ok(Systemd {
            conn,
            manager,
            subscribed: false.into(),
        })
    }

    /// Runs a job on `unit` and waits for its result: `Ok` when it is `done`, otherwise a
    /// failure that says what systemd reported.
    pub fn run_job(&self, job: Job, unit: &str) -> Result<(), Failure> {
        if !self.subscribed.replace(true) {
            self.manager.subscribe().map_err(bus_failure)?;
        }
        // Listen before asking: a short job can end before its path is returned to us.
        let mut removed = self.manager.receive_job_removed().map_err(bus_failure)?;
        let path = match job {
            Job::Start => self.manager.start_unit(unit, "replace"),
            Job::Stop => self.manager.stop_unit(unit, "replace"),
            Job::Restart => self.manager.restart_unit(unit, "replace"),
            Job::Reload => self.manager.reload_unit(unit, "replace"),
        }
        .map_err(|e| job_refused(job, unit, e))?;
        let result = loop {
            let Some(signal) = removed.next() else {
                return Err(Failure::unavailable(
                    "the system bus closed the connection".into(),
                ));
            };
            let Ok(args) = signal.args() else { continue };
            if *args.job() == path {
                break args.result().clone();
            }
        };
        if result == "done" {
            Ok(())
        } else {
            Err(Failure::job(format!(
                "{} {unit}: job {result}{}",
                job.verb(),
                self.why(unit)
            )))
        }
    }

    /// What the unit says about itself after a failed job: the shim's status line and
    /// systemd's `Result=`, for the error message.
    fn why(&self, unit: &str) -> String {
        let mut parts = Vec::new();
        if let Ok(unit_props) = self.properties(unit, UNIT) {
            let state = unit_props.string("ActiveState");
            if !state.is_empty() {
                parts.push(format!("unit is {state}"));
            }
        }
        if unit.ends_with(".service") {
            if let Ok(service) = self.properties(unit, SERVICE) {
                let result = service.string("Result");
                if !result.is_empty() && result != "success" {
                    parts.push(format!("result {result}"));
                }
                let status = service.string("StatusText");
                if !status.is_empty() {
                    parts.push(status);
                }
            }
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(": {}", parts.join("; "))
        }
    }

    /// `ActiveState` of every loaded unit whose name matches `pattern`, in one call.
    pub fn unit_states(&self, pattern: &str) -> Result<HashMap<String, String>, Failure> {
        let units = self
            .manager
            .list_units_by_patterns(&[], &[pattern])
            .map_err(bus_failure)?;
        Ok(units
            .into_iter()
            .map(|(name, _, _, active, ..)| (name, active))
            .collect())
    }

    /// Every property of one interface of `unit`, in one call.
    pub fn properties(&self, unit: &str, interface: &'static str) -> Result<Props, Failure> {
        let props = PropertiesProxy::builder(&self.conn)
            .destination(DESTINATION)
            .and_then(|b| b.path(unit_path(unit)))
            .and_then(|b| b.cache_properties(CacheProperties::No).build())
            .map_err(bus_failure)?;
        let interface =
            InterfaceName::from_static_str(interface).map_err(|e| bus_failure(e.into()))?;
        props
            .get_all(interface)
            .map(Props)
            .map_err(|e| bus_failure(e.into()))
    }

    /// Some properties of many units in one round: every `Get` is sent before the first
    /// answer is awaited. systemd has no bulk call, and `GetAll` on a service serialises
    /// some 250 properties; this keeps `nodeapp ls` fast with many apps.
    pub fn some_properties(
        &self,
        requests: &[(String, Vec<&'static str>)],
        interface: &'static str,
    ) -> Result<Vec<Props>, Failure> {
        let conn = self.conn.inner();
        let interface =
            InterfaceName::from_static_str(interface).map_err(|e| bus_failure(e.into()))?;
        zbus::block_on(async {
            let mut asks = Vec::new();
            for (i, (unit, names)) in requests.iter().enumerate() {
                for &name in names {
                    let interface = interface.clone();
                    asks.push(async move {
                        let reply = conn
                            .call_method(
                                Some(DESTINATION),
                                unit_path(unit).as_str(),
                                Some("org.freedesktop.DBus.Properties"),
                                "Get",
                                &(interface, name),
                            )
                            .await?;
                        let value: OwnedValue = reply.body().deserialize()?;
                        Ok::<_, zbus::Error>((i, name, value))
                    });
                }
            }
            let mut out: Vec<Props> = requests.iter().map(|_| Props(HashMap::new())).collect();
            // dbus-daemon refuses more than 128 pending calls per connection by default.
            let answers: Vec<_> = futures_util::stream::iter(asks)
                .buffer_unordered(MAX_IN_FLIGHT)
                .collect()
                .await;
            for answer in answers {
                let (i, name, value) = answer.map_err(bus_failure)?;
                out[i].0.insert(name.to_string(), value);
            }
            Ok(out)
        })
    }

    pub fn daemon_reload(&self) -> Result<(), Failure> {
        self.manager
            .reload()
            .map_err(|e| permission_or_bus("reload systemd's configuration", e))
    }

    pub fn enable(&self, units: &[&str]) -> Result<(), Failure> {
        self.manager
            .enable_unit_files(units, false, false)
            .map(|_| ())
            .map_err(|e| permission_or_bus(&format!("enable {}", units.join(" ")), e))
    }

    pub fn disable(&self, units: &[&str]) -> Result<(), Failure> {
        self.manager
            .disable_unit_files(units, false)
            .map(|_| ())
            .map_err(|e| permission_or_bus(&format!("disable {}", units.join(" ")), e))
    }

    pub fn reset_failed(&self, unit: &str) {
        // Only clears a "failed" state; a unit that is not loaded has none to clear.
        let _ = self.manager.reset_failed_unit(unit);
    }
}

/// Properties as systemd returned them; missing or mistyped ones read as empty or zero.
pub struct Props(HashMap<String, OwnedValue>);

impl Props {
    pub fn string(&self, key: &str) -> String {
        self.0
            .get(key)
            .and_then(|v| v.try_clone().ok())
            .and_then(|v| String::try_from(v).ok())
            .unwrap_or_default()
    }

    pub fn flag(&self, key: &str) -> bool {
        self.0
            .get(key)
            .and_then(|v| bool::try_from(v).ok())
            .unwrap_or(false)
    }

    /// A number, or `None` when systemd does not know it (it sends `u64::MAX` then).
    pub fn u64(&self, key: &str) -> Option<u64> {
        let v = self.0.get(key)?;
        let n = u64::try_from(v)
            .ok()
            .or_else(|| u32::try_from(v).ok().map(u64::from))?;
        (n != u64::MAX).then_some(n)
    }
}

pub fn service_unit(app: &str) -> String {
    format!("nodeapp@{app}.service")
}

pub fn socket_unit(app: &str) -> String {
    format!("nodeapp@{app}.socket")
}

/// The object path of a unit: systemd escapes every byte that is not a letter or digit
/// (and a leading digit) as `_xx`. Computing it saves a `GetUnit` call per unit, and
/// systemd loads the unit when the path is first used.
pub fn unit_path(unit: &str) -> String {
    let mut path = String::from("/org/freedesktop/systemd1/unit/");
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

fn bus_failure(e: zbus::Error) -> Failure {
    Failure::unavailable(format!("D-Bus: {e}"))
}

fn permission_or_bus(what: &str, e: zbus::Error) -> Failure {
    match &e {
        zbus::Error::MethodError(name, _, _)
            if name.as_str() == "org.freedesktop.DBus.Error.AccessDenied"
                || name.as_str()
                    == "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" =>
        {
            Failure::permission(format!("not allowed to {what}: run nodeapp as root"))
        }
        _ => Failure::unavailable(format!("cannot {what}: {e}")),
    }
}

fn job_refused(job: Job, unit: &str, e: zbus::Error) -> Failure {
    if let zbus::Error::MethodError(_, Some(detail), _) = &e {
        if !detail.contains("ccess denied") && !detail.contains("uthentication") {
            return Failure::job(format!("{} {unit}: {detail}", job.verb()));
        }
    }
    permission_or_bus(&format!("{} {unit}", job.verb()), e)
}

#[cfg(test)]
mod tests {
    use super::unit_path;

    #[test]
    fn unit_paths_are_escaped_as_systemd_does() {
        assert_eq!(
            unit_path("nodeapp@api.service"),
            "/org/freedesktop/systemd1/unit/nodeapp_40api_2eservice"
        );
        assert_eq!(
            unit_path("nodeapp@my-app_2.socket"),
            "/org/freedesktop/systemd1/unit/nodeapp_40my_2dapp_5f2_2esocket"
        );
        assert_eq!(
            unit_path("1x.service"),
            "/org/freedesktop/systemd1/unit/_31x_2eservice"
        );
    }
}
