//! Memory, CPU time and uptime read straight from cgroupfs and /proc: the same figures
//! systemd reports as `MemoryCurrent` and `CPUUsageNSec`, without a D-Bus call each.

use nodeapp::shim::{control, notify};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where systemd puts instances of a template unit: `system-<prefix>.slice`. An admin's
/// `Slice=` moves them; the files are then not found and callers ask systemd instead.
fn unit_cgroup(unit: &str) -> String {
    format!("system.slice/system-nodeapp.slice/{unit}")
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Bytes charged to the unit's cgroup (v2 `memory.current`, v1 `memory.usage_in_bytes`).
pub fn memory(unit: &str) -> Option<u64> {
    let cg = unit_cgroup(unit);
    let root = Path::new(CGROUP_ROOT);
    read_u64(&root.join(&cg).join("memory.current"))
        .or_else(|| read_u64(&root.join("memory").join(&cg).join("memory.usage_in_bytes")))
}

/// CPU time used by the unit's cgroup (v2 `cpu.stat`, v1 `cpuacct.usage`).
pub fn cpu(unit: &str) -> Option<Duration> {
    let cg = unit_cgroup(unit);
    let root = Path::new(CGROUP_ROOT);
    let v2 = std::fs::read_to_string(root.join(&cg).join("cpu.stat"))
        .ok()
        .and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_micros)
        });
    v2.or_else(|| {
        ["cpuacct", "cpu,cpuacct"].iter().find_map(|h| {
            read_u64(&root.join(h).join(&cg).join("cpuacct.usage")).map(Duration::from_nanos)
        })
    })
}

/// The unit's main process, the shim: the one `nodeapp-shim` in its cgroup that is not an
/// `ExecReload=` client. `None` when the cgroup is not where systemd usually puts it.
pub fn main_pid(unit: &str) -> Option<u64> {
    let cg = unit_cgroup(unit);
    let root = Path::new(CGROUP_ROOT);
    let procs = std::fs::read_to_string(root.join(&cg).join("cgroup.procs"))
        .or_else(|_| std::fs::read_to_string(root.join("systemd").join(&cg).join("cgroup.procs")))
        .ok()?;
    procs
        .split_whitespace()
        .filter_map(|p| p.parse::<u64>().ok())
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            comm.trim() == "nodeapp-shim" && !cmdline.split(|&b| b == 0).any(|a| a == b"--reload")
        })
}

/// The status line the shim of app `name` keeps in its runtime directory, while it runs.
pub fn shim_status(name: &str) -> Option<String> {
    let path = control::unit_runtime_dir(name).join(notify::STATUS_FILE);
    let text = std::fs::read_to_string(path).ok()?;
    Some(text.trim_end().to_string())
}

/// How long process `pid` has run: its start time in /proc/<pid>/stat (clock ticks after
/// boot) against the boot time in /proc/stat.
pub fn process_uptime(pid: u64) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields count from the last ')'.
    let after = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = after.split(' ').nth(19)?.parse().ok()?;
    let boot = boot_time()?;
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0)? as u64;
    let started = Duration::from_secs(boot) + Duration::from_millis(start_ticks * 1000 / ticks);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
    Some(now.saturating_sub(started))
}

/// Seconds since the epoch at boot (`btime` in /proc/stat), read once per run.
fn boot_time() -> Option<u64> {
    static BOOT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::process_uptime;

    #[test]
    fn this_process_has_been_up_a_short_while() {
        let up = process_uptime(std::process::id() as u64).unwrap();
        assert!(up.as_secs() < 600, "{up:?}");
    }
}
