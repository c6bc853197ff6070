//! Signals arrive as readable events on one fd in the main loop, never in a handler.

use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;

/// The signals the shim acts on. They are blocked for the whole process and read from a
/// signalfd; workers get an empty mask back before `exec` (see `worker::spawn`).
pub const HANDLED: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

pub fn block_and_open() -> io::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for &sig in HANDLED {
        // A parent may leave any of these ignored, and an ignored SIGCHLD makes the kernel
        // reap workers itself: the shim would never learn that one died. Workers would
        // also inherit an ignored SIGINT/SIGTERM across exec.
        // SAFETY: no handler is installed; SIG_DFL is always a valid disposition.
        unsafe { nix::sys::signal::signal(sig, SigHandler::SigDfl) }?;
        mask.add(sig);
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    // Close-on-exec, or every worker would inherit it.
    Ok(SignalFd::with_flags(
        &mask,
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )?)
}

/// Every signal waiting on the fd, in arrival order (SIGCHLDs coalesce; reaping loops).
pub fn drain(fd: &SignalFd) -> Vec<Signal> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            out.push(sig);
        }
    }
    out
}
