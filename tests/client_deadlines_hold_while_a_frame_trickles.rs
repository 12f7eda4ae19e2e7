//! A server that trickles a frame after the upgrade (two bytes every 50 ms):
//! tungstenite reads on until a message is whole, so unless the reading half
//! returns to the session now and then, neither the attempt's deadline (for
//! `connected`) nor `close()` is looked at until the frame ends.

mod client_common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use wshub::client::{Client, Options};

/// A text frame header (server, unmasked) for `len` bytes of payload.
fn text_header(len: usize) -> Vec<u8> {
    let mut h = vec![0x81u8];
    if len < 126 {
        h.push(len as u8);
    } else if len < 65536 {
        h.push(126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h
}

fn trickle_frame(stream: &mut TcpStream, payload: &[u8], chunk: usize, every: Duration, limit: Duration) {
    let until = Instant::now() + limit;
    let _ = stream.write_all(&text_header(payload.len()));
    for piece in payload.chunks(chunk) {
        if Instant::now() > until || stream.write_all(piece).is_err() {
            return;
        }
        std::thread::sleep(every);
    }
}

#[test]
fn a_trickled_connected_frame_fails_within_the_attempt_deadline() {
    let server = Fake::start(|stream, _| {
        let Some(ws) = fake::upgrade(stream) else { return };
        let mut s = ws.into_inner();
        let body = format!(
            r#"{{"type":"connected","payload":{{"clientId":"{}","heartbeatMs":30000}}}}"#,
            "a".repeat(400)
        );
        trickle_frame(&mut s, body.as_bytes(), 2, Duration::from_millis(50), Duration::from_secs(20));
    });
    let started = Instant::now();
    let r = Client::connect(&server.url(), Options::default().request_timeout(Duration::from_secs(1)));
    let took = started.elapsed();
    assert!(r.is_err(), "a `connected` that takes 11 s was accepted");
    // The frame takes 11 s; the attempt's deadline is 1 s (slack for a loaded machine).
    assert!(took < Duration::from_secs(4), "connect took {took:?}");
}

#[test]
fn close_is_prompt_while_a_message_trickles() {
    let server = Fake::start(|stream, _| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "a", 30_000, 1 << 20);
        std::thread::sleep(Duration::from_millis(100));
        let mut s = ws.into_inner();
        let body = format!(r#"{{"type":"typing","payload":{{"room":"{}"}}}}"#, "a".repeat(1000));
        trickle_frame(&mut s, body.as_bytes(), 2, Duration::from_millis(50), Duration::from_secs(25));
    });
    let client = Client::connect(&server.url(), Options::default()).expect("connect");
    std::thread::sleep(Duration::from_millis(600));
    let started = Instant::now();
    client.close();
    let took = started.elapsed();
    // The message takes 25 s; close() waits at most 2 s for a close reply.
    assert!(took < Duration::from_secs(4), "close took {took:?}");
}
