//! Exit codes with meanings, from sysexits(3), so that systemd and scripts can tell a bad
//! config (do not retry) from a failure of the system (retry may help).

/// Command-line usage error.
pub const USAGE: u8 = 64;
/// A config is invalid. Units set `RestartPreventExitStatus=` to this: retrying cannot help.
pub const CONFIG: u8 = 78;
/// An operating system error: a socket, fork or file that failed.
pub const OS_ERROR: u8 = 71;
/// What was asked failed: a job systemd ran ended other than `done`, an app is not running.
pub const FAILED: u8 = 1;
/// A service this needs is not there: the system bus, systemd.
pub const UNAVAILABLE: u8 = 69;
/// A file could not be written.
pub const CANT_CREATE: u8 = 73;
/// Not allowed: most verbs that change systemd's state need root.
pub const NO_PERMISSION: u8 = 77;
/// `nodeapp status`: the app is not running, as `systemctl status` says with 3 (LSB).
pub const NOT_RUNNING: u8 = 3;
/// The shim: the app could not start (a worker exited, or was not ready in time, before
/// the service was ready). systemd's `Restart=` and start limits decide what comes next.
pub const APP_CANNOT_START: u8 = 70;
/// The shim: one worker slot failed `crash_loop_limit` times in a row.
pub const CRASH_LOOP: u8 = 75;
