//! wshub::client against servers written to misbehave (`client_common::fake`):
//! a 101 trickled a byte at a time, a server that accepts, acks the join and
//! closes 1011 at once, one that closes and waits for the reply, one that
//! sends a 10 MiB message, one that goes silent after the join, and one that
//! never answers the client's close.

mod client_common;

use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use client_common::{wait_for, WAIT};
use serde_json::json;
use wshub::client::{Client, Event, Options};

/// A 101 whose header does not end for a long time: 128 bytes every
/// `TRICKLE`, which keeps each read of a per-read timeout alive.
fn endless_101() -> Vec<u8> {
    let mut head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n".to_vec();
    for n in 0..40 {
        head.extend_from_slice(format!("X-Pad-{n:02}: {}\r\n", "a".repeat(116)).as_bytes());
    }
    head
}

/// The pause between two pieces of the trickled 101.
const TRICKLE: Duration = Duration::from_millis(700);

#[test]
fn a_trickled_101_fails_within_one_attempt_deadline() {
    let server = Fake::start(|stream, _| {
        fake::trickle(stream, &endless_101(), 128, TRICKLE);
    });
    let started = Instant::now();
    // Each piece comes within the timeout; the attempt as a whole does not.
    let options = Options::default().request_timeout(Duration::from_secs(2));
    let err = Client::connect(&server.url(), options).expect_err("a 101 that never ends");
    let took = started.elapsed();
    assert!(matches!(err, wshub::client::Error::Connect(_)), "{err:?}");
    // One deadline of 2 s for the whole attempt (the 101 takes 28 s); the
    // slack is for a loaded machine.
    assert!(took < Duration::from_secs(8), "the attempt took {took:?}");
}

#[test]
fn close_ends_a_reconnect_attempt_in_progress() {
    // The first connection is served and cut; every later one trickles its 101.
    let server = Fake::start(|stream, ctx| {
        if ctx.n == 0 {
            let Some(mut ws) = fake::upgrade(stream) else { return };
            fake::connected(&mut ws, "a", 30_000, 1 << 20);
            std::thread::sleep(Duration::from_millis(200));
            fake::close(&mut ws, 1011, "bye");
            let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
        } else {
            let _ = ctx.notes.send("attempt".into());
            fake::trickle(stream, &endless_101(), 128, TRICKLE);
        }
    });
    let options = Options::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .request_timeout(Duration::from_secs(60));
    let client = Client::connect(&server.url(), options).expect("the first connection");
    assert_eq!(server.note(WAIT).as_deref(), Some("attempt"), "no reconnect attempt came");
    std::thread::sleep(Duration::from_millis(300)); // well inside the trickled 101
    let started = Instant::now();
    client.close();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "close() took {took:?} during an attempt");
}

#[test]
fn a_flapping_server_sees_the_backoff_grow() {
    let server = Fake::start(fake::flap);
    let options = Options::default().backoff(Duration::from_millis(10), Duration::from_secs(10));
    let client = Client::connect(&server.url(), options).expect("connect");
    client.join("r").expect("join");
    let mut seen = Vec::new();
    let mut attempts = Vec::new();
    while attempts.len() < 5 {
        attempts.push(wait_for(&client, &mut seen, |e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        }));
    }
    // Every connection was accepted and its join acked, yet none stayed up:
    // the count goes on instead of starting again at 1.
    assert_eq!(attempts, [1, 2, 3, 4, 5], "{seen:#?}");
    assert!(seen.iter().any(|e| matches!(e, Event::Connected { .. })), "{seen:#?}");
}

#[test]
fn server_initiated_closes_are_answered_every_time() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("k{}", ctx.n), 30_000, 1 << 20);
        std::thread::sleep(Duration::from_millis(50));
        fake::close(&mut ws, 4000, "kicked");
        let reply = fake::close_reply(&mut ws, Duration::from_secs(5));
        let _ = ctx.notes.send(format!("{reply:?}"));
    });
    let options = Options::default().backoff(Duration::from_millis(10), Duration::from_millis(20));
    let _client = Client::connect(&server.url(), options).expect("connect");
    let replies: Vec<String> = (0..6).map(|_| server.note(WAIT).expect("a connection")).collect();
    assert_eq!(replies, vec!["Some(4000)"; 6], "the client's replies to six closes");
}

#[test]
fn a_message_past_the_announced_limit_closes_1009_unread() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "big", 30_000, 1 << 20);
        if ctx.n > 0 || fake::ack_join(&mut ws, "e").is_none() {
            return;
        }
        let big = "x".repeat(10 << 20);
        let ok = fake::send(
            &mut ws,
            &json!({"type": "room:message", "payload": {"room": "r", "seq": 1, "from": "7", "data": big}}),
        );
        let reply = if ok { fake::close_reply(&mut ws, Duration::from_secs(10)) } else { None };
        let _ = ctx.notes.send(format!("{reply:?}"));
    });
    // The client's own limit is larger: the server's announced 1 MiB counts.
    let options = Options::default()
        .max_message_bytes(64 << 20)
        .backoff(Duration::from_secs(5), Duration::from_secs(10));
    let client = Client::connect(&server.url(), options).expect("connect");
    client.join("r").expect("join");
    let mut seen = Vec::new();
    let code = wait_for(&client, &mut seen, |e| match e {
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    });
    assert_eq!(code, 1009, "{seen:#?}");
    assert!(!seen.iter().any(|e| matches!(e, Event::Message { .. })), "the message was delivered");
    // The server may see the close frame, or a reset if its write was still going.
    let note = server.note(WAIT).expect("the server's note");
    assert!(note == "Some(1009)" || note == "None", "{note}");
}

#[test]
fn a_server_silent_after_the_join_is_left() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "s", 300, 1 << 20);
        if ctx.n == 0 && fake::ack_join(&mut ws, "e").is_some() {
            // Silent from here: no frame, no ping, and nothing read.
            std::thread::sleep(fake::SCRIPT_LIMIT);
        }
    });
    let options = Options::default()
        .request_timeout(Duration::from_millis(700))
        .backoff(Duration::from_millis(10), Duration::from_millis(20));
    let client = Client::connect(&server.url(), options).expect("connect");
    client.join("r").expect("join");
    let mut seen = Vec::new();
    let reason = wait_for(&client, &mut seen, |e| match e {
        Event::Disconnected { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(reason.contains("silent"), "{reason}");
    wait_for(&client, &mut seen, |e| matches!(e, Event::Reconnecting { .. }).then_some(()));
}

#[test]
fn close_is_bounded_when_the_server_never_answers_it() {
    let server = Fake::start(|stream, _| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "n", 30_000, 1 << 20);
        // Reads nothing, answers nothing, keeps the socket open.
        std::thread::sleep(fake::SCRIPT_LIMIT);
        drop(ws);
    });
    let client = Client::connect(&server.url(), Options::default()).expect("connect");
    let started = Instant::now();
    client.close();
    let took = started.elapsed();
    assert!(took < Duration::from_secs(6), "close() took {took:?}");
}

#[test]
fn a_connection_cut_without_a_close_is_reported_1006_not_a_protocol_error() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}", ctx.n), 30_000, 1 << 20);
        std::thread::sleep(Duration::from_millis(100));
        // As a killed server: the socket ends, no close frame.
        let _ = ws.get_ref().shutdown(std::net::Shutdown::Both);
    });
    let options = Options::default().backoff(Duration::from_secs(5), Duration::from_secs(10));
    let client = Client::connect(&server.url(), options).expect("connect");
    let mut seen = Vec::new();
    let code = wait_for(&client, &mut seen, |e| match e {
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    });
    // It was 1002 ("the server broke the protocol"), and a close frame was
    // written to the dead socket.
    assert_eq!(code, 1006, "{seen:#?}");
}

#[test]
fn text_that_is_not_utf8_is_failed_with_1007() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "u", 30_000, 1 << 20);
        if ctx.n > 0 {
            std::thread::sleep(Duration::from_secs(3));
            return;
        }
        // A text frame that is not UTF-8, written raw.
        let mut stream = ws.into_inner();
        let _ = std::io::Write::write_all(&mut stream, &[0x81, 0x02, 0xff, 0xfe]);
        let mut ws =
            tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Server, None);
        let reply = fake::close_reply(&mut ws, Duration::from_secs(5));
        let _ = ctx.notes.send(format!("{reply:?}"));
    });
    let options = Options::default().backoff(Duration::from_secs(5), Duration::from_secs(10));
    let client = Client::connect(&server.url(), options).expect("connect");
    let mut seen = Vec::new();
    let code = wait_for(&client, &mut seen, |e| match e {
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    });
    assert_eq!(code, 1007, "{seen:#?}");
    // It was a silent 1006: no close frame reached the server.
    assert_eq!(server.note(WAIT).as_deref(), Some("Some(1007)"));
}
