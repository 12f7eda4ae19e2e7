//! With Redis, an idempotency key is remembered for `--idempotency-ttl-ms`,
//! however few messages the room's history keeps; past that window the same
//! key publishes again.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn a_resend_within_the_window_is_a_duplicate_though_history_dropped_it() {
    let redis = Redis::start();
    let a = node(&redis, &["--history-size", "2"]);
    let mut c = a.client();
    ok(&mut c, "room:join", json!({"room": "i"}));
    let first = ok(&mut c, "room:publish", json!({"room": "i", "data": 0, "key": "k1"}));
    for n in 1..=3 {
        ok(&mut c, "room:publish", json!({"room": "i", "data": n}));
    }
    let again = ok(&mut c, "room:publish", json!({"room": "i", "data": 0, "key": "k1"}));
    assert_eq!(again, json!({"room": "i", "seq": first["seq"], "duplicate": true}));
}

#[test]
fn past_the_window_the_same_key_publishes_again() {
    let redis = Redis::start();
    let a = node(&redis, &["--idempotency-ttl-ms", "500"]);
    let mut c = a.client();
    ok(&mut c, "room:join", json!({"room": "w"}));
    let first = ok(&mut c, "room:publish", json!({"room": "w", "data": 0, "key": "k"}));
    let again = ok(&mut c, "room:publish", json!({"room": "w", "data": 0, "key": "k"}));
    assert_eq!(again["duplicate"], true, "{again}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let later = ok(&mut c, "room:publish", json!({"room": "w", "data": 0, "key": "k"}));
        if later.get("duplicate").is_none() {
            assert!(later["seq"].as_u64() > first["seq"].as_u64(), "{later}");
            break;
        }
        assert!(Instant::now() < deadline, "the key is still remembered after 10 s");
    }
}
