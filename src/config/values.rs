//! Values with a unit: durations (`"500ms"`, `"3s"`, `"1m30s"`), sizes (`"512M"`) and
//! stop signals.

use nix::sys::signal::Signal;
use std::time::Duration;

/// Parses `"500ms"`, `"3s"`, `"2m"`, `"1h"`, or a sum such as `"1m30s"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration; write a number and a unit, e.g. \"500ms\", \"3s\", \
             \"2m\" or \"1m30s\""
        )
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(unit);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `"3s"`, `"1m30s"`, `"250ms"`: the shortest way `parse_duration` reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 != 0 {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) if m % 60 == 0 => format!("{}h", m / 60),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Parses a size as systemd reads one: bytes, or a number with `K`, `M`, `G` or `T`
/// (powers of 1024), e.g. `"512M"` or `"1G"`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "{text:?} is not a size; write a whole number and a unit, e.g. \"512M\" or \"1G\" \
             (K, M, G, T: powers of 1024)"
        )
    };
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match &t[digits..] {
        "" | "B" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(bad)
}

/// `"512M"`, `"1G"`, `"1536K"`: the largest unit that states `bytes` exactly.
pub fn format_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Signals a worker may be asked to drain with. SIGUSR1 is missing on purpose: Node starts
/// its inspector on it. SIGKILL and SIGSTOP cannot be handled, so they cannot drain.
pub const STOP_SIGNALS: &[Signal] = &[
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGUSR2,
];

/// `"SIGTERM"` or `"TERM"`, as in systemd's `KillSignal=`.
pub fn parse_stop_signal(text: &str) -> Result<Signal, String> {
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    STOP_SIGNALS
        .iter()
        .copied()
        .find(|s| &s.as_str()[3..] == name)
        .ok_or_else(|| {
            let names: Vec<&str> = STOP_SIGNALS.iter().map(|s| s.as_str()).collect();
            format!(
                "{text:?} is not a stop signal; use one of {}",
                names.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "3", "s", "3 s", "1.5s", "-1s", "3sec", "ms3"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_format_back_to_what_they_parse_from() {
        for text in ["250ms", "3s", "2m", "1m30s", "1500ms", "2h"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        for bad in ["", "M", "1.5G", "-1M", "512 MB", "1P", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        for text in ["512M", "1G", "1536K", "3T"] {
            assert_eq!(format_size(parse_size(text).unwrap()), text);
        }
    }

    #[test]
    fn stop_signals_are_named_with_or_without_sig() {
        assert_eq!(parse_stop_signal("SIGINT"), Ok(Signal::SIGINT));
        assert_eq!(parse_stop_signal("term"), Ok(Signal::SIGTERM));
        let err = parse_stop_signal("SIGKILL").unwrap_err();
        assert!(err.contains("SIGTERM, SIGINT"), "{err}");
        assert!(parse_stop_signal("SIGUSR1").is_err());
    }
}
