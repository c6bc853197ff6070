//! The listening sockets every worker serves: taken from systemd (socket activation) or,
//! for `nodeapp run`, bound by the shim itself.

use crate::config::ListenAddr;
use nix::sys::socket::{
    self, getsockopt, setsockopt, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage, UnixAddr,
};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// The listening sockets, in `listen` order, and unix socket files to remove at exit.
pub struct Listeners {
    pub fds: Vec<OwnedFd>,
    bound_paths: Vec<PathBuf>,
}

impl Listeners {
    /// What each socket is bound to, as `ip:port`, `[ip6]:port` or a path: workers need it
    /// because Node cannot tell the name of a unix socket it opened from an fd.
    pub fn names(&self) -> Vec<String> {
        self.fds
            .iter()
            .map(
                |fd| match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
                    Ok(a) => match a.as_unix_addr() {
                        Some(u) => u
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default(),
                        None => a.to_string(),
                    },
                    Err(_) => String::new(),
                },
            )
            .collect()
    }
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for p in &self.bound_paths {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Takes the sockets systemd passed (`LISTEN_PID`/`LISTEN_FDS`). `fds` must come from
/// `ListenFd::from_env()` called first thing in `main`, before the environment changes.
pub fn from_systemd(mut fds: listenfd::ListenFd) -> io::Result<Listeners> {
    if fds.len() == 0 {
        return Err(io::Error::other(
            "systemd passed no sockets (LISTEN_FDS is unset, or LISTEN_PID is not this \
             process); start the app with `systemctl start nodeapp@NAME.socket`, or use \
             `nodeapp run FILE` outside systemd",
        ));
    }
    let mut out = Vec::with_capacity(fds.len());
    for idx in 0..fds.len() {
        let raw = fds.take_raw_fd(idx)?.expect("each index is taken once");
        // SAFETY: systemd passed this fd to us and listenfd hands each index out once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        check_listening(&fd)
            .map_err(|why| io::Error::other(format!("fd {} from systemd {why}", fd.as_raw_fd())))?;
        out.push(fd);
    }
    Ok(Listeners {
        fds: out,
        bound_paths: Vec::new(),
    })
}

fn check_listening(fd: &OwnedFd) -> Result<(), String> {
    match getsockopt(fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return Err(format!("is a {other:?} socket, not a stream socket")),
        Err(e) => return Err(format!("is not a socket ({e})")),
    }
    match getsockopt(fd, sockopt::AcceptConn) {
        Ok(true) => Ok(()),
        _ => Err("is not listening".into()),
    }
}

/// Binds every address itself, as systemd would for the socket unit.
pub fn bind(addrs: &[ListenAddr]) -> io::Result<Listeners> {
    let mut listeners = Listeners {
        fds: Vec::new(),
        bound_paths: Vec::new(),
    };
    for addr in addrs {
        let fd = bind_one(addr, &mut listeners.bound_paths)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        listeners.fds.push(fd);
    }
    Ok(listeners)
}

fn bind_one(addr: &ListenAddr, bound_paths: &mut Vec<PathBuf>) -> io::Result<OwnedFd> {
    let family = match addr {
        ListenAddr::Tcp(SocketAddr::V4(_)) => AddressFamily::Inet,
        ListenAddr::Tcp(SocketAddr::V6(_)) => AddressFamily::Inet6,
        ListenAddr::Unix(_) => AddressFamily::Unix,
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    let raw = fd.as_raw_fd();
    match addr {
        ListenAddr::Tcp(a) => {
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            match a {
                SocketAddr::V4(v4) => socket::bind(raw, &SockaddrIn::from(*v4))?,
                SocketAddr::V6(v6) => socket::bind(raw, &SockaddrIn6::from(*v6))?,
            }
        }
        ListenAddr::Unix(path) => {
            // A socket file left by an earlier run would make bind fail; anything else
            // at that path is not ours to remove.
            use std::os::unix::fs::FileTypeExt;
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
                std::fs::remove_file(path)?;
            }
            socket::bind(raw, &UnixAddr::new(path.as_path())?)?;
            bound_paths.push(path.clone());
        }
    }
    socket::listen(&fd, Backlog::new(4096).unwrap_or(Backlog::MAXCONN))?;
    Ok(fd)
}
