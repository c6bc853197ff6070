//! Where an imported app listens.

use super::{scalar, Given};
use serde_json::{Map, Value};

/// Where the app listens: `--listen` for it; else what the file says (env.PORT, which
/// PM2's `port` key sets; another *PORT variable; `-p`/`--port` in args); else the shell's
/// PORT, which PM2 passes on; else `--listen` for every app without a port.
pub fn listen_address(
    pm2_name: &str,
    env: &Map<String, Value>,
    given: &Given,
    args: &[String],
    notes: &mut Vec<String>,
) -> Result<String, String> {
    if let Some((_, addr)) = given
        .listen
        .iter()
        .find(|(n, _)| n.as_deref() == Some(pm2_name))
    {
        return Ok(addr.clone());
    }
    let host = host(env, notes);
    let at = |port: &str| {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    if let Some(port) = env.get("PORT").and_then(scalar) {
        return Ok(at(&port));
    }
    let named = env
        .iter()
        .filter(|(k, _)| k.ends_with("PORT") && !k.contains("DB") && !k.contains("REDIS"))
        .find_map(|(k, v)| {
            scalar(v)
                .filter(|p| p.parse::<u16>().is_ok())
                .map(|p| (k, p))
        });
    if let Some((key, port)) = named {
        notes.push(format!(
            "listens on port {port} from env.{key}; the app must read that variable"
        ));
        return Ok(at(&port));
    }
    let from_args = args.windows(2).find_map(|w| {
        matches!(w[0].as_str(), "-p" | "--port" | "--http-port")
            .then(|| w[1].clone())
            .filter(|p| p.parse::<u16>().is_ok())
    });
    let from_args = from_args.or_else(|| {
        args.iter()
            .find_map(|a| a.strip_prefix("--port=").map(str::to_owned))
            .filter(|p| p.parse::<u16>().is_ok())
    });
    if let Some(port) = from_args {
        notes.push(format!("listens on port {port} given in args"));
        return Ok(at(&port));
    }
    if let Some((_, addr)) = given.listen.iter().find(|(n, _)| n.is_none()) {
        return Ok(addr.clone());
    }
    if let Some(port) = &given.shell_port {
        notes.push(format!(
            "listens on port {port}: the file gives none, and PM2 would pass this shell's PORT \
             to the app; --listen picks another"
        ));
        return Ok(at(port));
    }
    Err(format!(
        "the file does not say where the app listens (no PORT, port, other *PORT variable or \
         --port argument); give it with --listen {}=0.0.0.0:3000 (or --listen ADDR for every \
         such app)",
        shell_word(pm2_name)
    ))
}

/// The address the app binds, from `HOST` (or `HOSTNAME`, which Next.js reads): an IP
/// address as is, `localhost` as 127.0.0.1, so that an app PM2 kept on loopback stays
/// there; anything else, or nothing, is every IPv4 address.
fn host(env: &Map<String, Value>, notes: &mut Vec<String>) -> String {
    let Some((key, host)) = ["HOST", "HOSTNAME"]
        .iter()
        .find_map(|k| env.get(*k).and_then(scalar).map(|h| (*k, h)))
    else {
        return "0.0.0.0".into();
    };
    if host.parse::<std::net::IpAddr>().is_ok() {
        return host;
    }
    if host == "localhost" {
        return "127.0.0.1".into();
    }
    notes.push(format!(
        "env.{key} is {host:?}, a name: listening on every IPv4 address; give --listen with \
         the address it stands for to bind only that"
    ));
    "0.0.0.0".into()
}

/// `s`, quoted for a shell when it needs to be.
fn shell_word(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}
