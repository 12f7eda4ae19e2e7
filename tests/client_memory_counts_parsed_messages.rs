//! The byte bound of unread events is about memory: a message counts for what
//! its parsed JSON holds, not only its frame's length. `[[],[],…]` is 3 bytes
//! an element on the wire and a `serde_json::Value` (32 bytes) each in memory,
//! so 16 MiB of such frames held ~200 MiB when only the frames were counted.
//! Alone in its file: it measures its own process's peak memory.

mod client_common;

use std::time::Duration;

use client_common::fake::{self, Fake};
use serde_json::json;
use wshub::client::{Client, Options};

fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with("VmHWM")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a number")
}

#[test]
fn unread_messages_are_counted_by_what_they_hold_in_memory() {
    let server = Fake::start(|stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "a", 30_000, 1 << 20);
        if ctx.n > 0 || fake::ack_join(&mut ws, "e").is_none() {
            return;
        }
        // About 1 MiB on the wire each, about 10 MiB once parsed.
        let data = vec![json!([]); 330_000];
        for seq in 1..=40 {
            let env = json!({"type": "room:message", "payload": {"room": "r", "seq": seq, "from": "7", "data": data}});
            if !fake::send(&mut ws, &env) {
                return;
            }
        }
        std::thread::sleep(Duration::from_secs(15));
    });
    let before = peak_kib();
    let client = Client::connect(&server.url(), Options::default()).expect("connect");
    client.join("r").expect("join");
    // Nothing is read: the client fills its 16 MiB and waits.
    std::thread::sleep(Duration::from_secs(6));
    let grew = (peak_kib() - before) / 1024;
    // The server's side here takes ~20 MiB; 40 MiB of slack for the rest.
    assert!(grew < 80, "the process grew by {grew} MiB with {} events unread", client.events().len());
    assert!(!client.events().is_empty(), "one event is always let through");
}
