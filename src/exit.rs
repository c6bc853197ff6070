//! Exit codes with meanings, from sysexits(3), so that systemd and scripts can tell a bad
//! config (do not retry) from a failure of the system (retry may help).

/// Command-line usage error.
pub const USAGE: u8 = 64;
/// A config is invalid. Units set `RestartPreventExitStatus=` to this: retrying cannot help.
pub const CONFIG: u8 = 78;
/// An operating system error: a socket, fork or file that failed.
pub const OS_ERROR: u8 = 71;
