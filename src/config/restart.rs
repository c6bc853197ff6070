//! When a crashed worker is replaced, and when the shim gives up and lets systemd decide.

use std::time::Duration;

/// How a slot whose worker died gets a new one: after `delay`, growing by `backoff` with
/// each failure in a row up to `max_delay`. A worker that ran for `reset_after` had
/// recovered: its slot starts again from `delay`. A slot that fails `crash_loop_limit`
/// times in a row makes the shim exit, so that systemd's `Restart=` and start limits apply.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RestartPolicy {
    pub delay: Duration,
    pub max_delay: Duration,
    pub backoff: f64,
    pub reset_after: Duration,
    pub crash_loop_limit: u32,
}

// `backoff` is validated finite, so equality is total.
impl Eq for RestartPolicy {}

impl Default for RestartPolicy {
    fn default() -> RestartPolicy {
        RestartPolicy {
            delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(15),
            backoff: 2.0,
            reset_after: Duration::from_secs(10),
            crash_loop_limit: 10,
        }
    }
}

impl RestartPolicy {
    /// The wait before the next worker of a slot that has failed `failures` times in a
    /// row (1 for the first failure).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let steps = failures.saturating_sub(1).min(64) as i32;
        let grown = self.delay.as_secs_f64() * self.backoff.powi(steps);
        Duration::from_secs_f64(grown.min(self.max_delay.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_by_the_backoff_up_to_the_cap() {
        let p = RestartPolicy::default();
        let ms: Vec<u128> = (1..=8).map(|f| p.delay_after(f).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]);
        let flat = RestartPolicy { backoff: 1.0, ..p };
        assert_eq!(flat.delay_after(40), Duration::from_millis(500));
    }
}
