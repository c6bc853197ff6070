//! Listen addresses: what a config may name, in the form systemd's `ListenStream=` takes.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// The longest path a `sockaddr_un` holds, less the terminating NUL.
const UNIX_PATH_MAX: usize = 107;

impl ListenAddr {
    pub fn parse(s: &str) -> Result<ListenAddr, String> {
        const VALID: &str = "expected \"host:port\" with an IP address (\"0.0.0.0:3000\", \
                             \"127.0.0.1:3000\"), \"[v6]:port\" (\"[::]:3000\"), or an absolute \
                             unix socket path (\"/run/api.sock\")";
        if s.starts_with('/') {
            if s.len() > UNIX_PATH_MAX {
                return Err(format!(
                    "unix socket path is {} bytes; the limit is {UNIX_PATH_MAX}",
                    s.len()
                ));
            }
            if s.contains(['\n', '\0']) || s.ends_with('/') {
                return Err(format!("{s:?} is not a usable socket path; {VALID}"));
            }
            return Ok(ListenAddr::Unix(PathBuf::from(s)));
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port; {VALID}"));
        };
        let port: u16 = match port.parse() {
            Ok(0) | Err(_) => {
                return Err(format!(
                    "port {port:?} in {s:?} is not a port from 1 to 65535"
                ))
            }
            Ok(p) => p,
        };
        let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            Some(v6) => v6,
            None if host.contains(':') => {
                return Err(format!(
                    "write IPv6 addresses in brackets: \"[{host}]:{port}\""
                ))
            }
            None => host,
        };
        match host.parse() {
            Ok(ip) => Ok(ListenAddr::Tcp(SocketAddr::new(ip, port))),
            Err(_) => Err(format!(
                "host {host:?} in {s:?} is not an IP address; {VALID}"
            )),
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr prints v6 as [addr]:port, as ListenStream= wants it.
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_three_forms() {
        assert_eq!(
            ListenAddr::parse("0.0.0.0:3000").unwrap().to_string(),
            "0.0.0.0:3000"
        );
        assert_eq!(ListenAddr::parse("[::]:80").unwrap().to_string(), "[::]:80");
        assert_eq!(
            ListenAddr::parse("[::1]:8080").unwrap().to_string(),
            "[::1]:8080"
        );
        assert_eq!(
            ListenAddr::parse("/run/api.sock").unwrap(),
            ListenAddr::Unix("/run/api.sock".into())
        );
    }

    #[test]
    fn refuses_what_systemd_would_not_bind() {
        for bad in [
            "3000",
            "localhost:3000",
            "0.0.0.0:0",
            "0.0.0.0:65536",
            "::1:80",
            "run/x",
            "",
        ] {
            let err = ListenAddr::parse(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(ListenAddr::parse("0.0.0.0:99999")
            .unwrap_err()
            .contains("1 to 65535"));
        assert!(ListenAddr::parse(&format!("/{}", "x".repeat(200)))
            .unwrap_err()
            .contains("107"));
    }
}
