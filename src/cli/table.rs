//! Plain-text tables, coloured on a terminal and plain when piped or when `NO_COLOR` is set,
//! and the human forms of durations and sizes they show.

use std::io::IsTerminal;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
    Dim,
}

impl Tone {
    /// The tone `systemctl` would give a unit's `ActiveState`.
    pub fn of_state(state: &str) -> Tone {
        match state {
            "active" => Tone::Good,
            "reloading" | "activating" | "deactivating" | "listening" => Tone::Warn,
            "failed" | "bad config" => Tone::Bad,
            _ => Tone::Dim,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Tone::Plain => "",
            Tone::Good => "\x1b[32m",
            Tone::Warn => "\x1b[33m",
            Tone::Bad => "\x1b[31m",
            Tone::Dim => "\x1b[2m",
        }
    }
}

pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<(String, Tone)>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<(String, Tone)>) {
        self.rows.push(cells);
    }

    /// The table with columns padded to their widest cell; ANSI colour only if `colour`.
    pub fn render(&self, colour: bool) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, (text, _)) in row.iter().enumerate() {
                widths[i] = widths[i].max(text.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<(String, Tone)> = self
            .header
            .iter()
            .map(|h| (h.to_uppercase(), Tone::Plain))
            .collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let last = row.len() - 1;
            for (i, (text, tone)) in row.iter().enumerate() {
                let pad = if i == last {
                    0
                } else {
                    widths[i] - text.chars().count() + 2
                };
                out.push_str(&paint(text, *tone, colour));
                out.push_str(&" ".repeat(pad));
            }
            out.push('\n');
        }
        out
    }
}

/// `text` in the colour of `tone`, if `colour`.
pub fn paint(text: &str, tone: Tone, colour: bool) -> String {
    if colour && tone != Tone::Plain {
        format!("{}{text}\x1b[0m", tone.code())
    } else {
        text.to_string()
    }
}

/// Colour when stdout is a terminal and `NO_COLOR` is not set (no-color.org).
pub fn use_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty())
}

/// `3d4h`, `2h5m`, `4m10s`, `12s`: the two largest units, as `ps` users expect.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}d{hours}h")
    } else if hours > 0 {
        format!("{hours}h{mins}m")
    } else if mins > 0 {
        format!("{mins}m{secs}s")
    } else {
        format!("{secs}s")
    }
}

/// Bytes in binary units, one decimal: `48.2M`, `1.5G`, `512K`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_like_ps() {
        assert_eq!(human_duration(Duration::from_secs(12)), "12s");
        assert_eq!(human_duration(Duration::from_secs(250)), "4m10s");
        assert_eq!(human_duration(Duration::from_secs(7500)), "2h5m");
        assert_eq!(
            human_duration(Duration::from_secs(3 * 86400 + 4 * 3600)),
            "3d4h"
        );
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(50_540_000), "48.2M");
        assert_eq!(human_bytes(3 << 29), "1.5G");
    }

    #[test]
    fn tables_pad_columns_and_colour_only_when_asked() {
        let mut t = Table::new(vec!["name", "state"]);
        t.row(vec![
            ("api".into(), Tone::Plain),
            ("active".into(), Tone::Good),
        ]);
        t.row(vec![
            ("worker-long".into(), Tone::Plain),
            ("failed".into(), Tone::Bad),
        ]);
        assert_eq!(
            t.render(false),
            "NAME         STATE\napi          active\nworker-long  failed\n"
        );
        assert!(t.render(true).contains("\x1b[32mactive\x1b[0m"));
    }
}
