//! `Event::Closed` is the last event and is always delivered: `close()` from
//! another thread while the application's reader is behind (the channel
//! full) used to drop it, and a reader waiting for it waited forever (the
//! channel's sender lives as long as the `Client`).

mod client_common;

use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use serde_json::json;
use wshub::client::{Client, Event, Options};

#[test]
fn closed_reaches_a_reader_that_is_behind_when_close_is_called() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "a", 30_000, 1 << 20);
        if ctx.n > 0 || fake::ack_join(&mut ws, "e").is_none() {
            return;
        }
        for seq in 1..=100 {
            if !fake::send(
                &mut ws,
                &json!({"type": "room:message", "payload": {"room": "r", "seq": seq, "from": "7", "data": seq}}),
            ) {
                return;
            }
        }
        let _ = fake::close_reply(&mut ws, Duration::from_secs(20));
    });
    let client = Client::connect(&server.url(), Options::default().event_capacity(4)).expect("connect");
    client.join("r").expect("join");
    // Let the four places fill (the server sends 100 messages).
    std::thread::sleep(Duration::from_millis(300));
    let events = client.events().clone();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let mut n = 0;
        loop {
            match events.recv_timeout(Duration::from_secs(5)) {
                Ok(Event::Closed { .. }) => {
                    let _ = tx.send(format!("closed after {n}"));
                    return;
                }
                Ok(_) => n += 1,
                Err(_) => {
                    let _ = tx.send(format!("nothing for 5 s after {n} events: no Closed"));
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let started = Instant::now();
    client.close();
    assert!(started.elapsed() < Duration::from_secs(5), "close() took {:?}", started.elapsed());
    let what = rx.recv_timeout(Duration::from_secs(20)).expect("the reader's verdict");
    assert!(what.starts_with("closed"), "{what}");
}
