//! A join whose Redis call is slow holds up only itself: the node's
//! subscriber goes on delivering every room of the shard, that room's too,
//! and once Redis answers the join gets what it missed exactly once. A join
//! used to read Redis under its room's lock, which the subscriber takes for
//! each delivery, so one slow join stalled the whole shard's deliveries for
//! up to the call timeout.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Node A's call timeout: far longer than any wait below, so a delivery
/// that waits for the stuck call shows as a missed bound, not a timeout.
const CALL_TIMEOUT_MS: &str = "30000";
/// How long a delivery may take on a loaded machine.
const DELIVERY: Duration = Duration::from_secs(10);

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

/// The next room message of `c` within `limit` (other frames skipped), or None.
fn message_within(c: &mut Client, limit: Duration) -> Option<Value> {
    let deadline = Instant::now() + limit;
    for _ in 0..1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        c.ws.get_mut().set_read_timeout(Some(left)).expect("timeout");
        match c.ws.read() {
            Ok(tungstenite::Message::Text(t)) => {
                let v: Value = serde_json::from_str(t.as_str()).expect("server sent JSON");
                if is_message(&v) {
                    c.ws.get_mut().set_read_timeout(Some(WAIT)).expect("timeout");
                    return Some(v);
                }
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                return None;
            }
            Err(e) => panic!("reading a frame: {e}"),
        }
    }
    panic!("more than 1000 frames without a room message");
}

/// Whether `c` has nothing to read within `limit`.
fn silent_for(c: &mut Client, limit: Duration) -> bool {
    c.ws.get_mut().set_read_timeout(Some(limit)).expect("timeout");
    let silent = match c.ws.read() {
        Err(tungstenite::Error::Io(e)) => {
            matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
        _ => false,
    };
    c.ws.get_mut().set_read_timeout(Some(WAIT)).expect("timeout");
    silent
}

/// Nothing but presence events before a ping's ack: no message was doubled.
fn no_more_messages(c: &mut Client) {
    let id = c.send_request("ping", json!(null));
    let v = until(c, 100, |v| v["id"] == id.as_str() || is_message(v));
    assert_eq!(v["type"], "ack", "a message after the last one: {v}");
}

#[test]
fn deliveries_go_on_while_a_join_waits_for_redis_and_the_join_misses_nothing() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let a = node_at(&proxy.url(), &["--redis-timeout-ms", CALL_TIMEOUT_MS]);
    let b = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    // One Redis: rooms x and y are on the same shard, so one subscriber
    // thread of A delivers both.
    let mut m = a.client();
    ok(&mut m, "room:join", json!({"room": "x"}));
    let mut n = a.client();
    ok(&mut n, "room:join", json!({"room": "y"}));
    let mut publisher = b.client();
    ok(&mut publisher, "room:join", json!({"room": "x"}));
    ok(&mut publisher, "room:join", json!({"room": "y"}));

    let mut j = Client::connect_raw(a.addr, &[]);
    let connected = j.json();
    let j_id = connected["payload"]["clientId"].as_str().expect("a clientId").to_owned();

    proxy.freeze_calls(true);
    let join = j.send_request("room:join", json!({"room": "x", "since": 0}));
    // The join's call (it carries J's clientId) reached the proxy and waits there.
    let deadline = Instant::now() + WAIT;
    while !proxy.held_contains(j_id.as_bytes()) {
        assert!(Instant::now() < deadline, "J's join never called Redis");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "x", "data": "x1"}))["seq"], 1);
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "y", "data": "y1"}))["seq"], 1);

    let got = message_within(&mut n, DELIVERY);
    let got = got.unwrap_or_else(|| {
        proxy.freeze_calls(false);
        panic!("room y's message did not arrive within {DELIVERY:?} while a join of room x waited for Redis")
    });
    assert_eq!(got["payload"]["data"], "y1", "{got}");
    let got = message_within(&mut m, DELIVERY).expect("room x's message reaches its member meanwhile");
    assert_eq!((got["payload"]["seq"].clone(), got["payload"]["data"].clone()), (json!(1), json!("x1")));
    assert!(silent_for(&mut j, Duration::from_millis(200)), "J's join was answered while its call was held");

    proxy.freeze_calls(false);
    // J gets message 1 once (the replay from its `since`), then its ack.
    let mut replayed = Vec::new();
    let ack = loop {
        let v = j.json();
        if is_message(&v) {
            replayed.push(v["payload"]["seq"].clone());
        } else if v["id"] == join.as_str() {
            break v;
        }
        assert!(replayed.len() < 100, "no answer to J's join");
    };
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(replayed, vec![json!(1)], "J's replay");
    assert_eq!(ack["payload"]["seq"], 1, "{ack}");
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");

    // From now on J and M get room x's messages live, once each, in order.
    assert_eq!(ok(&mut publisher, "room:publish", json!({"room": "x", "data": "x2"}))["seq"], 2);
    for (who, c) in [("J", &mut j), ("M", &mut m)] {
        let got = message_within(c, DELIVERY).unwrap_or_else(|| panic!("{who}: no message 2"));
        assert_eq!((got["payload"]["seq"].clone(), got["payload"]["data"].clone()), (json!(2), json!("x2")));
        no_more_messages(c);
    }
    no_more_messages(&mut n);
}
