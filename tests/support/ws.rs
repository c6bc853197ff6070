//! A WebSocket client (tungstenite, over plain TCP) for drain tests: connect, read the
//! server's greeting (`pid=N`), and wait for the server to close.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;

pub type Ws = tungstenite::WebSocket<TcpStream>;

/// A WebSocket client connected to `addr`, and the pid its server greeted it with.
pub fn connect(addr: SocketAddr) -> Result<(Ws, u32), String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), stream)
        .map_err(|e| format!("handshake: {e}"))?;
    match ws.read() {
        Ok(Message::Text(t)) => Ok((ws, super::served_by(&t))),
        other => Err(format!("no greeting: {other:?}")),
    }
}

/// Reads until the server closes: the close code (None: no close frame, like 1006) and
/// when the close came.
pub fn await_close(ws: &mut Ws) -> (Option<CloseCode>, Instant) {
    loop {
        match ws.read() {
            Ok(Message::Close(frame)) => {
                let code = frame.map(|f| f.code);
                // Complete the closing handshake, then see the connection end.
                while ws.read().is_ok() {}
                return (code, Instant::now());
            }
            Ok(_) => continue,
            Err(_) => return (None, Instant::now()),
        }
    }
}
