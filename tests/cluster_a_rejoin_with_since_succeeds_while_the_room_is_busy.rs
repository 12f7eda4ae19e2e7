//! A rejoin with `since` on one node while another node publishes into the
//! room without pause is acked, and replays exactly what the member missed.
//! A join reads Redis without the room's lock and applied the read only if
//! the subscriber had delivered nothing meanwhile: in a room taking a
//! message every millisecond or so, all its reads were overtaken and the
//! join failed `unavailable` (about one in eight rejoins at 1,000 msg/s,
//! most at 3,000), so anyone allowed to publish could keep members out.

mod cluster_common;
use cluster_common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const PUBLISHERS: usize = 4;
const REJOINS: usize = 60;

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

#[test]
fn rejoins_with_since_are_acked_and_exact_while_another_node_publishes_at_full_rate() {
    let redis = Redis::start();
    let a = node(&redis, &["--frame-rate-limit", "0"]);
    let b = node(&redis, &["--frame-rate-limit", "0"]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);

    let stop = Arc::new(AtomicBool::new(false));
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|_| {
            let mut p = a.client();
            ok(&mut p, "room:join", json!({"room": "busy"}));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    ok(&mut p, "room:publish", json!({"room": "busy", "data": 0}));
                }
            })
        })
        .collect();

    let mut m = b.client();
    let mut last = ok(&mut m, "room:join", json!({"room": "busy"}))["seq"].as_u64().expect("seq");
    let mut failed = Vec::new();
    for _ in 0..REJOINS {
        // Hear a few messages live, then leave and come back with `since`.
        for _ in 0..3 {
            let v = until(&mut m, 1000, is_message);
            let seq = v["payload"]["seq"].as_u64().expect("seq");
            assert_eq!(seq, last + 1, "live: a gap or a duplicate after {last}: {v}");
            last = seq;
        }
        let id = m.send_request("room:leave", json!({"room": "busy"}));
        loop {
            let v = until(&mut m, 10_000, |v| v["id"] == id.as_str() || is_message(v));
            if v["id"] == id.as_str() {
                break;
            }
            let seq = v["payload"]["seq"].as_u64().expect("seq");
            assert_eq!(seq, last + 1, "before the leave's ack: {v}");
            last = seq;
        }
        std::thread::sleep(Duration::from_millis(5));
        let id = m.send_request("room:join", json!({"room": "busy", "since": last}));
        loop {
            let v = until(&mut m, 10_000, |v| v["id"] == id.as_str() || is_message(v));
            if is_message(&v) {
                let seq = v["payload"]["seq"].as_u64().expect("seq");
                assert_eq!(seq, last + 1, "replay: a gap or a duplicate after {last}: {v}");
                last = seq;
                continue;
            }
            if v["type"] == "ack" {
                assert_eq!(v["payload"]["recovered"], true, "{v}");
                assert_eq!(
                    v["payload"]["seq"].as_u64(),
                    Some(last),
                    "the ack's seq is the replay's last: {v}"
                );
            } else {
                failed.push(v);
                // Not a member: join afresh and go on from its seq.
                last = ok(&mut m, "room:join", json!({"room": "busy"}))["seq"].as_u64().expect("seq");
            }
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in publishers {
        p.join().expect("publisher");
    }
    assert!(last > 500, "the room was not busy: {last} messages");
    assert!(failed.is_empty(), "{} of {REJOINS} rejoins failed, e.g. {}", failed.len(), failed[0]);
}
