//! Issue 14, item 4 (replies to a client that never reads), the protocol's
//! part: a reply over 64 KiB (a `ping` echoing a big payload, a `publish`
//! with `echo`) is refused with `rate_limited` while earlier frames still wait
//! for the client, so legal requests cannot pile up replies in the server.

mod protocol_common;

use std::time::Duration;

use protocol_common::*;
use serde_json::json;

#[test]
fn big_pings_from_a_client_that_never_reads_do_not_pile_up() {
    let server = Wshub::start(&[]);
    let pid = server.child.id();
    let mut c = server.client();
    c.join("r");
    let before = rss_bytes(pid);
    let payload = "p".repeat(1_000_000);
    let n = 180; // within the default burst: the rate limit refuses none
    for i in 0..n {
        if i % 2 == 0 {
            c.send(json!({"type": "ping", "id": format!("i{i}"), "payload": payload}));
        } else {
            c.send(json!({"type": "room:publish", "id": format!("i{i}"), "payload": {"room": "r", "data": payload, "echo": true}}));
        }
    }
    let peak = peak_rss_over(pid, Duration::from_secs(2));
    eprintln!("RSS before the requests {} MiB, peak after {} MiB", before / MIB, peak / MIB);
    assert!(
        peak < before + 96 * MIB,
        "{n} big replies to a client that does not read grew RSS by {} MiB",
        peak.saturating_sub(before) / MIB
    );
    // Every request got exactly one reply; some were refused.
    let (mut acks, mut refused) = (0, 0);
    while acks + refused < n {
        let f = c.json();
        match (f["type"].as_str(), f["payload"]["code"].as_str()) {
            (Some("ack"), _) => acks += 1,
            (Some("error"), Some("rate_limited")) => refused += 1,
            (Some("room:message"), _) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(refused > 0 && acks > 0, "acks {acks}, refused {refused}");
    c.assert_nothing_pending();
    assert!(metric(server.addr, r#"wshub_dropped_total{reason="reply_backlog"}"#) > 0);
}

#[test]
fn a_reading_client_gets_every_big_reply() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    let payload = json!("p".repeat(1_000_000));
    for _ in 0..20 {
        assert_eq!(c.ok("ping", payload.clone()), payload);
    }
}
