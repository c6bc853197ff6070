//! Worker output straight to journald, one stream per worker and per fd.
//!
//! journald credits a stream to the process that connected it, so the shim cannot open
//! the streams for its workers: each worker connects its own, after `fork` and before
//! `exec`, which makes every line carry the worker's PID and the identifier `<app>/<slot>`.
//! Everything that allocates is prepared here, before `fork`.

use nix::libc;
use nix::sys::socket::UnixAddr;
use std::os::fd::RawFd;

const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";

/// What a child needs to connect its stdout and stderr to journald.
pub struct JournalStreams {
    addr: UnixAddr,
    stdout_header: Vec<u8>,
    stderr_header: Vec<u8>,
}

impl JournalStreams {
    pub fn new(identifier: &str) -> Option<JournalStreams> {
        let addr = UnixAddr::new(STDOUT_SOCKET).ok()?;
        // identifier, unit id (empty: taken from the cgroup), priority, level prefix,
        // forward to syslog, kmsg, console.
        let header =
            |priority: u8| format!("{identifier}\n\n{priority}\n1\n0\n0\n0\n").into_bytes();
        Some(JournalStreams {
            addr,
            stdout_header: header(6),
            stderr_header: header(3),
        })
    }

    /// In the child, between `fork` and `exec`: connect stdout (info) and stderr (error).
    /// Only async-signal-safe calls. A stream that cannot be set up leaves that fd as
    /// inherited from the shim, which is the unit's journal stream too.
    pub fn connect_in_child(&self) {
        connect_stream(&self.addr, &self.stdout_header, 1);
        connect_stream(&self.addr, &self.stderr_header, 2);
    }
}

fn connect_stream(addr: &UnixAddr, header: &[u8], target: RawFd) {
    use nix::sys::socket::SockaddrLike;
    // SAFETY: plain syscalls on fds this child owns; nothing here allocates.
    unsafe {
        let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let ok = libc::connect(fd, addr.as_ptr().cast(), addr.len()) == 0
            && write_all(fd, header)
            && libc::shutdown(fd, libc::SHUT_RD) == 0
            && libc::dup2(fd, target) == target;
        libc::close(fd);
        let _ = ok;
    }
}

unsafe fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        let n = libc::write(fd, buf.as_ptr().cast(), buf.len());
        if n < 0 {
            if *libc::__errno_location() == libc::EINTR {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}
