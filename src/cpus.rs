//! How many CPUs this process may use: what `instances = "max"` means.
//!
//! The host's core count is the wrong answer in a cgroup with a CPU quota or under a CPU
//! affinity mask (PM2 forks one worker per host core whatever the limits). The answer is
//! the smallest of: the CPUs in the affinity mask, and every quota on the way from this
//! process's cgroup up to the root (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`), rounded
//! up, and at least 1.

use std::path::Path;

/// CPUs this process may use, from its affinity mask and cgroup CPU quotas.
pub fn available() -> usize {
    let affinity = affinity_count().unwrap_or(1);
    let quota = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|cg| cgroup_quota(&cg, Path::new("/sys/fs/cgroup")));
    combine(affinity, quota)
}

fn combine(affinity: usize, quota: Option<f64>) -> usize {
    let by_quota = quota.map_or(usize::MAX, |q| q.ceil().max(1.0) as usize);
    affinity.min(by_quota).max(1)
}

fn affinity_count() -> Option<usize> {
    let set = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).ok()?;
    Some(
        (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .count(),
    )
}

/// The tightest CPU quota (in CPUs, fractional) over this cgroup and its ancestors, given
/// the text of `/proc/self/cgroup` and where the cgroup filesystems are mounted.
pub fn cgroup_quota(proc_self_cgroup: &str, root: &Path) -> Option<f64> {
    let mut tightest: Option<f64> = None;
    let mut consider = |q: Option<f64>| {
        if let Some(q) = q {
            tightest = Some(tightest.map_or(q, |t| t.min(q)));
        }
    };
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // cgroup v2: one hierarchy, mounted at the root on a unified system.
            if root.join("cgroup.controllers").exists() {
                consider(walk_up(&root.join(path), root, read_v2));
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            for mount in ["cpu,cpuacct", "cpu", "cpuacct,cpu"] {
                let base = root.join(mount);
                if base.join("cpu.cfs_quota_us").exists() {
                    consider(walk_up(&base.join(path), &base, read_v1));
                    break;
                }
            }
        }
    }
    tightest
}

fn walk_up(start: &Path, top: &Path, read: fn(&Path) -> Option<f64>) -> Option<f64> {
    let mut tightest: Option<f64> = None;
    let mut dir = Some(start);
    while let Some(d) = dir {
        if !d.starts_with(top) {
            break;
        }
        if let Some(q) = read(d) {
            tightest = Some(tightest.map_or(q, |t: f64| t.min(q)));
        }
        dir = d.parent();
    }
    tightest
}

/// `cpu.max` holds "max 100000" (no limit) or "<quota> <period>".
fn read_v2(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let quota: f64 = it.next()?.parse().ok()?;
    let period: f64 = it.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// `cpu.cfs_quota_us` is -1 when there is no limit.
fn read_v1(dir: &Path) -> Option<f64> {
    let read = |f: &str| -> Option<f64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let quota = read("cpu.cfs_quota_us")?;
    let period = read("cpu.cfs_period_us")?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(root: &Path, rel: &str, file: &str, text: &str) {
        let dir = root.join(rel);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(file), text).unwrap();
    }

    #[test]
    fn v2_quota_is_rounded_up_and_the_tightest_ancestor_wins() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::write(r.join("cgroup.controllers"), "cpu memory").unwrap();
        write(r, "system.slice", "cpu.max", "300000 100000\n");
        write(
            r,
            "system.slice/nodeapp@api.service",
            "cpu.max",
            "150000 100000\n",
        );
        let q = cgroup_quota("0::/system.slice/nodeapp@api.service\n", r).unwrap();
        assert_eq!(q, 1.5);
        assert_eq!(combine(8, Some(q)), 2);

        write(r, "system.slice", "cpu.max", "50000 100000\n");
        let q = cgroup_quota("0::/system.slice/nodeapp@api.service\n", r).unwrap();
        assert_eq!(combine(8, Some(q)), 1);
    }

    #[test]
    fn v2_without_a_limit_leaves_the_affinity_count() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::write(r.join("cgroup.controllers"), "cpu").unwrap();
        write(r, "a.slice/b.service", "cpu.max", "max 100000\n");
        assert_eq!(cgroup_quota("0::/a.slice/b.service\n", r), None);
        assert_eq!(combine(6, None), 6);
    }

    #[test]
    fn v1_quota_is_read_from_the_cpu_hierarchy() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "cpu,cpuacct", "cpu.cfs_quota_us", "-1\n");
        write(r, "cpu,cpuacct", "cpu.cfs_period_us", "100000\n");
        write(
            r,
            "cpu,cpuacct/system.slice/x.service",
            "cpu.cfs_quota_us",
            "250000\n",
        );
        write(
            r,
            "cpu,cpuacct/system.slice/x.service",
            "cpu.cfs_period_us",
            "100000\n",
        );
        let cg = "12:memory:/system.slice/x.service\n4:cpu,cpuacct:/system.slice/x.service\n\
                  1:name=systemd:/system.slice/x.service\n0::/system.slice/x.service\n";
        assert_eq!(cgroup_quota(cg, r), Some(2.5));
        assert_eq!(combine(2, Some(2.5)), 2, "affinity is tighter");
        assert_eq!(combine(4, Some(2.5)), 3);
    }

    #[test]
    fn no_cgroup_information_means_no_limit() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(cgroup_quota("garbage\n", root.path()), None);
        assert_eq!(combine(0, None), 1, "never fewer than one worker");
    }

    #[test]
    fn this_process_can_count_its_cpus() {
        let n = available();
        assert!(n >= 1 && n <= affinity_count().unwrap());
    }
}
