//! One client must not be able to take the server's memory or CPU through its
//! outbound queue or with frames below the message level (issue 14, items 1,
//! 4 and 7), against the real binary with its default limits:
//!
//! - a ping flood from a client that never reads holds one pong, not one per
//!   ping, and past the frame-rate limit the client is closed with 1008;
//! - replies to a client that never reads stop at the outbound byte budget
//!   (closed with 1013, counted as `outbound_bytes`), not at 1024 frames;
//! - a message that never ends (empty continuation frames) is closed with 1009
//!   at the fragment limit;
//! - and an honest client keeps chatting throughout.
//!
//! RSS is read from /proc with generous margins; every loop is bounded.

mod common;
mod protocol_common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use protocol_common::{get, Wshub, WAIT};
use serde_json::json;
use tungstenite::Message as WsMessage;

fn rss_mb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb / 1024
}

/// A masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    let mask = [0x11, 0x22, 0x33, 0x44];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// A client that upgrades and then only writes raw bytes (it never reads
/// unless asked to).
fn raw_client(addr: SocketAddr, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let ws = common::connect(addr, path);
    ws.get_ref().set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    ws
}

/// Writes `chunk` over and over for `secs` or until the server stops taking
/// it (a full socket buffer counts as taken: the flood goes on); returns how
/// many times the whole chunk went out, and whether the server cut us off.
fn flood(stream: &mut TcpStream, chunk: &[u8], secs: u64) -> (u64, bool) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut sent = 0;
    while Instant::now() < until {
        match stream.write_all(chunk) {
            Ok(()) => sent += 1,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (sent, true),
        }
    }
    (sent, false)
}

/// An honest client: joins a room, publishes and gets its message back.
fn honest_round_trip(addr: SocketAddr) {
    let mut c = protocol_common::Client::connect(addr, &[]);
    c.join("honest");
    c.ok("room:publish", json!({"room": "honest", "data": "still here"}));
    c.assert_nothing_pending();
}

/// The value of `wshub_dropped_total{reason="R"}` in /metrics.
fn dropped(addr: SocketAddr, reason: &str) -> u64 {
    let (_, _, body) = get(addr, "/metrics");
    let key = format!("wshub_dropped_total{{reason=\"{reason}\"}} ");
    body.lines().find_map(|l| l.strip_prefix(&key)).map_or(0, |v| v.trim().parse().unwrap())
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_ping_flood_from_a_client_that_never_reads_holds_one_pong() {
    // The frame-rate limit off: this is about the pongs alone.
    let server = Wshub::start(&["--echo", "--frame-rate-limit", "0"]);
    let pid = server.child.id();
    let before = rss_mb(pid);
    let mut ws = raw_client(server.addr, "/ws");
    // Pings with the largest payload a control frame may carry, so that the
    // pongs fill the socket buffers (which are not the server's memory) fast.
    let pings: Vec<u8> = (0..1024).flat_map(|_| frame(0x89, &[7u8; 125])).collect();
    let (sent, _) = flood(ws.get_mut(), &pings, 4);
    let grown = rss_mb(pid).saturating_sub(before);
    eprintln!("{} pings sent in 4 s; server RSS grew {grown} MB", sent * 1024);
    assert!(sent * 1024 > 100_000, "the flood did not get going ({sent} chunks)");
    // Before: one queued pong per ping once the socket buffers were full,
    // hundreds of MB. Now: one pong at a time.
    assert!(grown < 16, "server RSS grew {grown} MB under a ping flood");
    let mut echo = common::connect(server.addr, "/ws");
    echo.send(WsMessage::text("hi")).unwrap();
    assert_eq!(common::next_data(&mut echo), WsMessage::text("hi"));
}

#[test]
fn past_the_frame_rate_limit_a_ping_flood_is_closed_with_1008() {
    let server = Wshub::start(&[]);
    let mut ws = raw_client(server.addr, "/ws");
    let pings: Vec<u8> = (0..512).flat_map(|_| frame(0x89, b"")).collect();
    // The default allows a burst of 2,000 frames, then 1,000 a second.
    let (_, cut) = flood(ws.get_mut(), &pings, 5);
    assert!(cut || dropped(server.addr, "frame_rate") == 1, "the flooder was not cut off");
    wait_for("the frame_rate drop", || dropped(server.addr, "frame_rate") == 1);
    honest_round_trip(server.addr);
}

#[test]
fn replies_to_a_client_that_never_reads_stop_at_the_byte_budget() {
    // The protocol's own check on big replies (`--max-reply-backlog`) off:
    // this is about the engine's byte budget, which any reply counts against.
    let server = Wshub::start(&["--rate-limit", "0", "--max-reply-backlog", "1000000"]);
    let pid = server.child.id();
    let before = rss_mb(pid);
    let mut c = protocol_common::Client::connect(server.addr, &[]);
    let big = "x".repeat(900 * 1024);
    // Each ping's ack carries its ~900 KB payload back. Before: queued until
    // 1024 frames (~900 MB). Now: closed once ~8 MiB wait for this client.
    let deadline = Instant::now() + WAIT;
    let mut sent = 0;
    c.ws.get_ref().set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    while dropped(server.addr, "outbound_bytes") == 0 {
        assert!(Instant::now() < deadline, "no 1013 after {sent} pings of 900 KB");
        let text = json!({"type": "ping", "id": sent.to_string(), "payload": {"big": big}}).to_string();
        match c.ws.send(WsMessage::text(text)) {
            Ok(()) => sent += 1,
            Err(_) => break, // the server closed us: the counter says why
        }
    }
    wait_for("the outbound_bytes drop", || dropped(server.addr, "outbound_bytes") == 1);
    let grown = rss_mb(pid).saturating_sub(before);
    eprintln!("{sent} pings of 900 KB sent; server RSS grew {grown} MB");
    assert!(grown < 200, "server RSS grew {grown} MB for one client that never reads");
    assert_eq!(dropped(server.addr, "slow_consumer"), 0, "the frame bound was not what bit");
    honest_round_trip(server.addr);
}

#[test]
fn a_message_that_never_ends_is_closed_with_1009_at_the_fragment_limit() {
    let server = Wshub::start(&["--frame-rate-limit", "0"]);
    let mut ws = raw_client(server.addr, "/ws");
    ws.get_ref().set_read_timeout(Some(WAIT)).unwrap();
    // A text message opened and never finished: empty continuations.
    let mut bytes = frame(0x01, b"a");
    for _ in 0..2000 {
        bytes.extend(frame(0x00, b""));
    }
    let _ = ws.get_mut().write_all(&bytes);
    let code = loop {
        match ws.read() {
            Ok(WsMessage::Close(Some(f))) => break u16::from(f.code),
            Ok(_) => continue, // `connected`
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, 1009);
    wait_for("the fragments drop", || dropped(server.addr, "fragments") == 1);
    honest_round_trip(server.addr);
}
