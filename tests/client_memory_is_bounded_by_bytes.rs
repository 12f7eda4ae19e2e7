//! Memory bounded by bytes: a message past the server's announced
//! `maxMessageBytes` is refused (1009) before it is read, and the events
//! waiting unread are bounded by `Options::event_capacity_bytes`; `wshub-cli`
//! with its stdout stalled stays small while a server sends 10 MiB messages.

mod client_common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use client_common::fake::{self, Fake};
use client_common::WAIT;
use serde_json::json;
use wshub::client::{Client, Event, Options};

/// Sends `count` room messages of `bytes` each after the join; notes "sent N".
fn sender(count: u64, bytes: usize) -> Fake {
    Fake::start(move |stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "m", 30_000, 1 << 20);
        if ctx.n > 0 || fake::ack_join(&mut ws, "e").is_none() {
            std::thread::sleep(fake::SCRIPT_LIMIT);
            return;
        }
        let body = "x".repeat(bytes);
        let mut sent = 0;
        for seq in 1..=count {
            let env = json!({"type": "room:message", "payload": {"room": "r", "seq": seq, "from": "7", "data": body}});
            if !fake::send(&mut ws, &env) {
                break;
            }
            sent += 1;
        }
        let _ = ctx.notes.send(format!("sent {sent}"));
        std::thread::sleep(fake::SCRIPT_LIMIT);
    })
}

#[test]
fn unread_events_are_bounded_by_bytes() {
    let server = sender(40, 512 << 10);
    let options = Options::default().event_capacity_bytes(4 << 20);
    let client = Client::connect(&server.url(), options).expect("connect");
    client.join("r").expect("join");
    let deadline = Instant::now() + WAIT;
    while client.events().len() < 7 {
        assert!(Instant::now() < deadline, "only {} events came", client.events().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    // Give the reading thread time to pass the bound if it would.
    std::thread::sleep(Duration::from_secs(1));
    let held = client.events().len();
    assert!(held <= 9, "{held} events of 512 KiB wait unread under a 4 MiB bound");
    // Nothing was lost: reading lets the rest through, in order.
    let mut seqs = Vec::new();
    while seqs.len() < 40 {
        let event = client.events().recv_timeout(WAIT).expect("the rest of the messages");
        if let Event::Message { seq, .. } = event {
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
}

/// The peak resident set of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_cli_with_stdout_stalled_stays_small_under_10_mib_messages() {
    let server = sender(30, 10 << 20);
    // stdout is a pipe nobody reads.
    let mut child = Command::new(env!("CARGO_BIN_EXE_wshub-cli"))
        .args(["--url", &server.url(), "--room", "r", "--read-only"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn wshub-cli");
    // The server's sends end one way or the other: refused by the client, or all taken.
    let note = server.note(Duration::from_secs(60));
    let peak = peak_kib(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(note.is_some(), "the server never finished sending");
    assert!(peak < 100 * 1024, "wshub-cli peaked at {peak} KiB ({note:?})");
}
