//! Redis restarted from an older snapshot (or an async failover) comes back
//! with a room's seq behind what was acked. The room must move to a new
//! epoch, members be told, and nothing acked afterwards be dropped as a
//! duplicate by any node.

mod cluster_common;
use cluster_common::*;

use serde_json::{json, Value};

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

fn is_reset(v: &Value) -> bool {
    v["type"] == "error" && v["payload"]["room"] == "r"
}

/// Publishes, again while the node has yet to see that Redis restarted (a
/// pooled connection broke): with a key, a resend is never a second message.
fn publish_retrying(client: &mut Client, payload: Value) -> Value {
    for _ in 0..50 {
        let id = client.send_request("room:publish", payload.clone());
        let reply = until(client, 100, |v| v["id"] == id.as_str());
        if reply["type"] == "ack" {
            return reply["payload"].clone();
        }
        assert_eq!(reply["payload"]["code"], "unavailable", "{reply}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("no ack for {payload}");
}

#[test]
fn a_redis_that_lost_its_latest_writes_moves_the_room_to_a_new_epoch() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut publisher = a.client();
    let first = ok(&mut publisher, "room:join", json!({"room": "r"}));
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "r"}));
    for i in 1..=6 {
        if i == 4 {
            redis.query(&["SAVE"]).expect("SAVE");
        }
        ok(&mut publisher, "room:publish", json!({"room": "r", "data": i}));
        assert_eq!(until(&mut reader, 50, is_message)["payload"]["seq"], i);
    }
    // Loses 4..=6: SIGKILL, then back from the snapshot taken after 3.
    redis.kill();
    redis.spawn();
    wait_health(a.addr, 200, std::time::Duration::from_secs(10));
    wait_health(b.addr, 200, std::time::Duration::from_secs(10));

    let mut acked = Vec::new();
    for i in 7..=9 {
        let ack = publish_retrying(&mut publisher, json!({"room": "r", "data": i, "key": format!("k{i}")}));
        acked.push(ack["seq"].as_u64().expect("a seq"));
    }
    // The reader is told of the reset, then gets every message acked since.
    let mut told = false;
    let mut got = Vec::new();
    while got.len() < 3 {
        let v = until(&mut reader, 50, |v| is_message(v) || is_reset(v));
        if is_reset(&v) {
            assert!(got.is_empty(), "the notice comes before the new messages: {v}");
            told = true;
            continue;
        }
        got.push((v["payload"]["seq"].as_u64().unwrap(), v["payload"]["data"].as_u64().unwrap()));
    }
    assert!(told, "members are told that the room's history was reset");
    assert_eq!(got.iter().map(|(_, d)| *d).collect::<Vec<_>>(), vec![7, 8, 9]);
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), acked);

    // A rejoin from seq 6 of the old epoch does not claim to have recovered.
    let mut late = b.client();
    let ack = ok(&mut late, "room:join", json!({"room": "r", "since": 6, "epoch": first["epoch"]}));
    assert_ne!(ack["epoch"], first["epoch"], "{ack}");
    assert_eq!(ack["recovered"], false, "{ack}");
}
