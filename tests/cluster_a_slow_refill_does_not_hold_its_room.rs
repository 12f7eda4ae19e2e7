//! A node's subscriber reads back from a room's stream what its channel
//! skipped (a refill) without holding the room's lock: while that read
//! waits for a slow Redis, what needs only the room on this node (here the
//! backend API's room list) goes on, and once Redis answers the members get
//! the skipped message and the one after it, once each, in order. The refill
//! used to read Redis under the room's lock, holding everything that takes
//! it for up to the call timeout.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "refill-key";

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

/// Nothing but presence events before a ping's ack: no message was doubled.
fn no_more_messages(c: &mut Client) {
    let id = c.send_request("ping", json!(null));
    let v = until(c, 100, |v| v["id"] == id.as_str() || is_message(v));
    assert_eq!(v["type"], "ack", "a message after the last one: {v}");
}

fn seq_and_data(v: &Value) -> (Value, Value) {
    (v["payload"]["seq"].clone(), v["payload"]["data"].clone())
}

#[test]
fn a_refill_waiting_for_redis_holds_up_nothing_else_in_its_room_and_misses_nothing() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    // The call timeout far longer than the wait below: a request that waits
    // for the held read shows as a missed bound, not as a timeout.
    let a = node_at(&proxy.url(), &["--redis-timeout-ms", "30000", "--api-key", KEY]);
    let b = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    let mut m = a.client();
    ok(&mut m, "room:join", json!({"room": "x"}));
    let mut publisher = b.client();
    ok(&mut publisher, "room:join", json!({"room": "x"}));
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "x", "data": "x1"}))["seq"], 1);
    let got = until(&mut m, 100, is_message);
    assert_eq!(seq_and_data(&got), (json!(1), json!("x1")));

    // Message 2 goes into the room's stream but not its channel (a copy of
    // message 1's stored body at seq 2): A's subscriber sees a gap at 3.
    let redis::Value::Array(entries) = redis.query(&["XRANGE", "wshub:h:x", "1-0", "1-0"]).expect("XRANGE")
    else {
        panic!("XRANGE is an array");
    };
    let redis::Value::Array(entry) = &entries[0] else { panic!("an entry") };
    let redis::Value::Array(fields) = &entry[1] else { panic!("its fields") };
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8(b.clone()).expect("utf-8"),
        other => panic!("a bulk string: {other:?}"),
    };
    let fields: Vec<String> = fields.iter().map(text).collect();
    redis.query(&["HINCRBY", "wshub:m:x", "s", "1"]).expect("HINCRBY");
    let mut xadd = vec!["XADD", "wshub:h:x", "2-0"];
    xadd.extend(fields.iter().map(String::as_str));
    redis.query(&xadd).expect("XADD");

    proxy.freeze_calls(true);
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "x", "data": "x3"}))["seq"], 3);
    // A's refill of room x reached the proxy and waits there.
    let deadline = Instant::now() + WAIT;
    while !proxy.held_contains(b"wshub:h:x") {
        assert!(Instant::now() < deadline, "A never read room x's stream back");
        std::thread::sleep(Duration::from_millis(10));
    }
    let request =
        format!("GET /api/rooms HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = protocol_common::http(a.addr, &request);
    if status != 200 {
        proxy.freeze_calls(false);
        panic!("A's room list was not answered within {WAIT:?} while a refill of room x waited for Redis");
    }
    assert!(body.contains("\"x\""), "{body}");
    proxy.freeze_calls(false);

    for (seq, data) in [(2, "x1"), (3, "x3")] {
        let got = until(&mut m, 100, is_message);
        assert_eq!(seq_and_data(&got), (json!(seq), json!(data)), "{got}");
    }
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "x", "data": "x4"}))["seq"], 4);
    let got = until(&mut m, 100, is_message);
    assert_eq!(seq_and_data(&got), (json!(4), json!("x4")));
    no_more_messages(&mut m);
}
