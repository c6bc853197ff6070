//! Memory limits. Two layers, as in production: the shim replaces one worker gracefully
//! when it grows past `max_memory`, and the kernel enforces the unit's cgroup limits
//! (`memory_max`, `memory_high`) as the hard backstop for the whole app.

use super::error::Reporter;
use super::values::{format_size, parse_size};
use super::{describe, Config};
use std::fmt;
use std::ops::Range;
use toml::Spanned;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Resident memory one worker may use before it is replaced (`max_memory`).
    pub per_worker: Option<u64>,
    /// systemd's `MemoryMax=` for the unit: past it the kernel's OOM killer acts.
    pub unit_max: Option<UnitMemory>,
    /// systemd's `MemoryHigh=`: past it the kernel reclaims and throttles (cgroup v2).
    pub unit_high: Option<UnitMemory>,
}

/// A cgroup memory limit, written as systemd reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitMemory {
    Bytes(u64),
    /// Of the machine's physical memory.
    Percent(u32),
    Infinity,
}

impl fmt::Display for UnitMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitMemory::Bytes(n) => write!(f, "{}", format_size(*n)),
            UnitMemory::Percent(p) => write!(f, "{p}%"),
            UnitMemory::Infinity => f.write_str("infinity"),
        }
    }
}

/// A worker smaller than this cannot run Node at all; a smaller `max_memory` is a typo.
const MIN_WORKER_MEMORY: u64 = 32 << 20;

/// The smallest share of `memory_max` that still sets a worker's heap limit.
const MIN_DERIVED_BUDGET: u64 = 64 << 20;

/// Share of `max_memory` given to V8's old space when the config does not set it: the
/// rest is code, stacks, buffers and the young generation.
const HEAP_SHARE_PERCENT: u64 = 80;

impl MemoryLimits {
    pub(super) fn parse(
        report: &mut Reporter,
        max_memory: Option<Spanned<toml::Value>>,
        memory_max: Option<Spanned<toml::Value>>,
        memory_high: Option<Spanned<toml::Value>>,
    ) -> MemoryLimits {
        let per_worker = max_memory.and_then(|v| {
            let span = v.span();
            match size(report, &v, "max_memory") {
                Some(n) if n < MIN_WORKER_MEMORY => {
                    report.at(
                        span,
                        "max_memory",
                        format!(
                            "{} is too small for a Node.js worker; use at least {}",
                            format_size(n),
                            format_size(MIN_WORKER_MEMORY)
                        ),
                    );
                    None
                }
                n => n,
            }
        });
        let high_span = memory_high.as_ref().map(Spanned::span);
        let limits = MemoryLimits {
            per_worker,
            unit_max: memory_max.and_then(|v| unit_memory(report, &v, "memory_max")),
            unit_high: memory_high.and_then(|v| unit_memory(report, &v, "memory_high")),
        };
        if let (Some(UnitMemory::Bytes(high)), Some(UnitMemory::Bytes(max))) =
            (limits.unit_high, limits.unit_max)
        {
            if high > max {
                report.at(
                    high_span.unwrap_or(0..0),
                    "memory_high",
                    format!(
                        "{} is above memory_max ({}); the throttling point must come before \
                         the hard limit",
                        format_size(high),
                        format_size(max)
                    ),
                );
            }
        }
        limits
    }
}

fn size(report: &mut Reporter, value: &Spanned<toml::Value>, key: &str) -> Option<u64> {
    let parsed = match value.get_ref() {
        toml::Value::String(s) => parse_size(s),
        other => Err(format!(
            "is {}; write a size as a string, e.g. \"512M\" or \"1G\"",
            describe(other)
        )),
    };
    parsed.map_err(|why| report.at(value.span(), key, why)).ok()
}

fn unit_memory(
    report: &mut Reporter,
    value: &Spanned<toml::Value>,
    key: &str,
) -> Option<UnitMemory> {
    let span: Range<usize> = value.span();
    if let toml::Value::String(s) = value.get_ref() {
        if s == "infinity" {
            return Some(UnitMemory::Infinity);
        }
        if let Some(p) = s.strip_suffix('%') {
            return match p.parse::<u32>() {
                Ok(p) if (1..=100).contains(&p) => Some(UnitMemory::Percent(p)),
                _ => {
                    report.at(
                        span,
                        key,
                        format!("{s:?} is not a share of memory; use 1% to 100%"),
                    );
                    None
                }
            };
        }
    }
    match size(report, value, key)? {
        0 => {
            report.at(
                span,
                key,
                "0 would leave the app no memory at all; give a size such as \"2G\", a share \
                 such as \"50%\", or \"infinity\"",
            );
            None
        }
        n => Some(UnitMemory::Bytes(n)),
    }
}

impl Config {
    /// The `--max-old-space-size` (MiB) a worker gets: a share of its budget, unless the
    /// config already sets one in `node_args` or `NODE_OPTIONS`.
    pub fn heap_limit_mib(&self) -> Option<u64> {
        let set = |s: &str| s.contains("--max-old-space-size");
        if self.node_args.iter().any(|a| set(a))
            || self.env.get("NODE_OPTIONS").is_some_and(|o| set(o))
        {
            return None;
        }
        self.worker_budget()
            .map(|bytes| (bytes / 100 * HEAP_SHARE_PERCENT) >> 20)
    }

    /// What one worker may use: `max_memory`, or else its share of the unit's
    /// `memory_max`, shared with the other workers and one replacement. A share too small
    /// to matter is no budget: the kernel's limit alone then applies.
    fn worker_budget(&self) -> Option<u64> {
        if let Some(bytes) = self.memory.per_worker {
            return Some(bytes);
        }
        let Some(UnitMemory::Bytes(unit)) = self.memory.unit_max else {
            return None;
        };
        let share = unit / (self.instances.workers() as u64 + 1);
        (share >= MIN_DERIVED_BUDGET).then_some(share)
    }

    /// Limits that are valid but work against each other: a `memory_max` below what the
    /// workers may use under `max_memory`, with one replacement beside them, lets the
    /// kernel kill workers the shim would have replaced gracefully.
    pub fn memory_warning(&self) -> Option<String> {
        let per_worker = self.memory.per_worker?;
        let Some(UnitMemory::Bytes(unit)) = self.memory.unit_max else {
            return None;
        };
        let workers = self.instances.workers() as u64;
        let needed = per_worker.saturating_mul(workers + 1);
        (unit < needed).then(|| {
            format!(
                "{}: `memory_max` ({}) is less than max_memory ({}) × {} workers plus one \
                 replacement ({}); the kernel may kill workers before the shim replaces them",
                self.path.display(),
                format_size(unit),
                format_size(per_worker),
                workers,
                format_size(needed)
            )
        })
    }
}
