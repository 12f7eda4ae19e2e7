//! PROTOCOL.md "Liveness": the server pings every heartbeat, a client that
//! answers stays, a silent one is terminated after the idle timeout.

mod admission_common;
mod protocol_common;
use protocol_common as common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use admission_common::{ip, upgrade};

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

#[test]
fn after_the_peers_close_a_backlog_is_given_up_within_the_close_timeout() {
    let server = Wshub::start(&[
        "--close-timeout-ms",
        "2000",
        "--idle-timeout-ms",
        "30000",
        "--max-connections-per-ip",
        "1",
        "--outbound-max-bytes",
        "200000000",
        "--outbound-queue",
        "100000",
        "--rate-limit",
        "0",
    ]);
    // A member that never reads, from an address allowed one connection.
    let (mut member, _) = upgrade(ip("127.0.0.5"), server.addr, "", &[], &[]).open();
    member.join("backlog");
    let (mut publisher, _) = upgrade(ip("127.0.0.6"), server.addr, "", &[], &[]).open();
    publisher.join("backlog");
    for i in 0..300 {
        publisher.send_text(&common::big_publish("backlog", 100_000, Some(&format!("p{i}"))));
    }
    publisher.sync(400);
    assert!(common::metric(server.addr, "wshub_outbound_queue_depth") > 10, "a backlog for the member");
    // Far more is queued for the member than its socket holds; now it closes.
    let close = [0x88, 0x82, 1, 2, 3, 4, 0x03 ^ 1, 0xe8 ^ 2];
    std::io::Write::write_all(member.ws.get_mut(), &close).expect("send a close frame");
    let started = Instant::now();
    // Its address gets its one connection back once the close is over.
    loop {
        let next = upgrade(ip("127.0.0.5"), server.addr, "", &[], &[]);
        if next.status() == 101 {
            break;
        }
        assert_eq!(next.status(), 503, "{next:?}");
        assert!(started.elapsed() < Duration::from_secs(20), "the closed member is still held");
        std::thread::sleep(Duration::from_millis(100));
    }
    let took = started.elapsed();
    // Generous for a loaded machine; the idle timeout (30 s) is what held it before.
    assert!(took < Duration::from_secs(9), "the close took {took:?} (close timeout 2 s)");
    drop(member);
}
