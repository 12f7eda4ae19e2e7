//! Messages held while rooms resynchronise (a new epoch: the client reads the
//! room again from seq 1) are bounded by `event_capacity_bytes` over all
//! rooms together, not per room: with a bound per room, a server that reset
//! N rooms and sent into each while they resynchronised made the client hold
//! N times the bound.

mod client_common;

use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use client_common::WAIT;
use serde_json::{json, Value};
use wshub::client::{Client, Event, Options};

const ROOMS: [&str; 3] = ["r1", "r2", "r3"];

/// Reads `n` requests with an `id`; `None` when the connection ends first.
fn requests(ws: &mut tungstenite::WebSocket<std::net::TcpStream>, n: usize) -> Option<Vec<Value>> {
    (0..n).map(|_| fake::request(ws)).collect()
}

#[test]
fn held_messages_are_bounded_over_all_resyncing_rooms() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, &format!("c{}", ctx.n), 30_000, 1 << 20);
        if ctx.n == 0 {
            // The first life: every room joined in epoch e1, then a restart.
            for _ in ROOMS {
                if fake::ack_join(&mut ws, "e1").is_none() {
                    return;
                }
            }
            let _ = ctx.notes.send("joined".into());
            let _ = fake::request(&mut ws); // the test's go-ahead ping
            fake::close(&mut ws, 1011, "restarting");
            let _ = fake::close_reply(&mut ws, Duration::from_secs(2));
            return;
        }
        // The rejoins find epoch e2: the client joins each again with since 0.
        let Some(rejoins) = requests(&mut ws, ROOMS.len()) else { return };
        for join in &rejoins {
            fake::ack(
                &mut ws,
                join,
                json!({"room": join["payload"]["room"], "seq": 0, "epoch": "e2", "recovered": false}),
            );
        }
        let Some(resyncs) = requests(&mut ws, ROOMS.len()) else { return };
        // While they resynchronise: ten messages of ~100 KB into each room.
        let pad = "p".repeat(100_000);
        for room in ROOMS {
            for seq in 1..=10 {
                let env = json!({"type": "room:message", "payload": {"room": room, "seq": seq, "from": "7", "data": pad}});
                fake::send(&mut ws, &env);
            }
        }
        for join in &resyncs {
            fake::ack(&mut ws, join, json!({"room": join["payload"]["room"], "seq": 0, "epoch": "e2"}));
        }
        let _ = fake::close_reply(&mut ws, Duration::from_secs(10));
    });
    // A bound of 1 MiB: about ten such messages in all.
    let options = Options::default()
        .event_capacity_bytes(1 << 20)
        .backoff(Duration::from_millis(10), Duration::from_secs(5));
    let client = Client::connect(&server.url(), options).expect("connect");
    for room in ROOMS {
        client.join(room).expect("join");
    }
    assert_eq!(server.note(WAIT).as_deref(), Some("joined"));
    let _ = client.request("ping", json!({}));
    let mut held = 0;
    let mut recoveries = 0;
    let until = Instant::now() + WAIT;
    loop {
        match client.events().recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Recovery { .. }) => recoveries += 1,
            Ok(Event::Message { .. }) => held += 1,
            Ok(_) => {}
            Err(_) if recoveries == ROOMS.len() => break,
            Err(_) => assert!(Instant::now() < until, "only {recoveries} recoveries came"),
        }
    }
    // Thirty were sent while resynchronising; the bound lets about ten
    // through. With a bound per room it let all thirty through.
    assert!(held <= 11, "{held} messages of ~100 KB were held under a 1 MiB bound");
    assert!(held > 0, "nothing was held");
}
