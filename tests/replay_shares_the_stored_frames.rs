//! Issue 14, item 3 (replay copies): recovery sends the frames history already
//! holds (shared, reference-counted), so clients that rejoin with `since: 0`
//! and never read cost the server almost nothing per replay.

mod protocol_common;

use std::time::Duration;

use protocol_common::*;
use serde_json::json;

#[test]
fn replays_to_clients_that_never_read_do_not_copy_history() {
    // History, replays and outbound queues large enough to hold everything
    // (a replay is capped at half the outbound budget), so only sharing keeps
    // RSS flat.
    let big = (256 * MIB).to_string();
    let queue = (512 * MIB).to_string();
    let server = Wshub::start(&[
        "--history-max-bytes",
        &big,
        "--history-total-max-bytes",
        &big,
        "--replay-max-bytes",
        &big,
        "--outbound-max-bytes",
        &queue,
    ]);
    let pid = server.child.id();
    let mut publisher = server.client();
    publisher.join("r");
    let n = 60;
    for i in 0..n {
        publisher.send_text(&big_publish("r", 1_000_000, Some(&format!("p{i}"))));
    }
    for _ in 0..n {
        assert_eq!(publisher.json()["type"], "ack");
    }
    let before = peak_rss_over(pid, Duration::from_millis(300));
    // 4 clients rejoin from the start twice each and never read: 8 replays of 60 MB.
    let mut idle: Vec<Client> = (0..4).map(|_| server.client()).collect();
    for c in &mut idle {
        for k in 0..2 {
            c.send(json!({"type": "room:join", "id": format!("j{k}"), "payload": {"room": "r", "since": 0}}));
        }
    }
    let peak = peak_rss_over(pid, Duration::from_secs(3));
    eprintln!("RSS before the replays {} MiB, peak during {} MiB", before / MIB, peak / MIB);
    assert!(
        peak < before + 160 * MIB,
        "8 replays of 60 MB grew RSS by {} MiB",
        peak.saturating_sub(before) / MIB
    );
    // The replay really happened: the first client gets all 60, in order, then the ack.
    let c = &mut idle[0];
    for seq in 1..=n {
        let m = c.json();
        assert_eq!(
            (m["type"].as_str(), m["payload"]["seq"].as_u64()),
            (Some("room:message"), Some(seq as u64))
        );
    }
    let ack = c.json();
    assert_eq!((ack["id"].as_str(), &ack["payload"]["recovered"]), (Some("j0"), &json!(true)), "{ack}");
}
