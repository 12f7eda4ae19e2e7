//! PROTOCOL.md "Liveness": the server pings every heartbeat, a client that
//! answers stays, a silent one is terminated after the idle timeout.

mod protocol_common;
use protocol_common as common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Instant;

use common::{Client, Wshub, WAIT};
use serde_json::json;
use tungstenite::Message;

#[test]
fn a_client_that_answers_pings_outlives_the_idle_timeout() {
    let server = Wshub::start(&["--heartbeat-ms", "100", "--idle-timeout-ms", "1000"]);
    let mut c = Client::connect(server.addr, &[]);
    // tungstenite answers each ping with a pong as it reads; 20 pings span
    // about twice the idle timeout.
    let mut pings = 0;
    let deadline = Instant::now() + WAIT;
    while pings < 20 {
        assert!(Instant::now() < deadline, "only {pings} pings");
        match c.ws.read().expect("still connected") {
            Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(c.ok("ping", json!("alive")), json!("alive"));
}

#[test]
fn a_silent_client_is_terminated_after_the_idle_timeout() {
    let server = Wshub::start(&["--heartbeat-ms", "100", "--idle-timeout-ms", "1000"]);
    // A raw upgrade that then never sends a byte (not even a pong).
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    std::io::Write::write_all(
        &mut s,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .expect("write");
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) if started.elapsed() < WAIT => break,
            Ok(0) | Err(_) => panic!("the socket was never closed"),
            Ok(n) => total += n,
        }
    }
    assert!(total > 0, "it got the 101 and frames first");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(800),
        "closed too early: {:?}",
        started.elapsed()
    );
}
