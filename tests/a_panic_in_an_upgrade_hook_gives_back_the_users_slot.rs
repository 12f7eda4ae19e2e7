//! A panic in the application's hooks run inside the upgrade (its
//! `on_upgrade`, or its join hook asked for an event stream) answers `500`
//! and, like any upgrade that did not become a connection, gives back what
//! the protocol reserved for it: the user's slot under
//! `max_connections_per_user` is free again for the user's next connection.

mod protocol_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use protocol_common::WAIT;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, ServerHandle};

const SECRET: &str = "panicking-hook-secret-of-some-length";

fn token(user: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": user, "exp": exp});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// Panics on a join of `boom`.
struct Boom;

impl Handler for Boom {
    fn on_join(&self, _: &ServerHandle, _: ConnId, _: Option<&str>, room: &str) -> bool {
        assert_ne!(room, "boom", "the join hook fails");
        true
    }
}

/// The status of `GET {target}` (its head only).
fn status(addr: std::net::SocketAddr, target: &str, upgrade: bool) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    let extra = if upgrade {
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    } else {
        ""
    };
    write!(s, "GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n").unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).expect("a status line");
    String::from_utf8_lossy(&head[9..12]).parse().unwrap_or(0)
}

#[test]
fn a_stream_whose_join_hook_panics_frees_the_users_slot() {
    let config = ProtocolConfig::default().jwt_secret(SECRET).max_connections_per_user(1);
    let handler = ProtocolHandler::with_app(config, Boom);
    let server_config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(server_config, handler).unwrap();
    let addr = server.local_addr();
    let t = token("ann");
    assert_eq!(status(addr, &format!("/sse?room=boom&access_token={t}"), false), 500);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(addr, &format!("/ws?access_token={t}"), true), 101, "ann's one slot is free");
    server.stop();
}
