//! A node killed with SIGKILL: its clients reconnect to another node and
//! recover from the room's Redis stream with nothing lost, and the other
//! nodes see `presence:leave` for its members once its heartbeat key has
//! been missing long enough.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

#[test]
fn clients_of_a_killed_node_recover_on_another_with_no_loss() {
    let redis = Redis::start();
    let (mut a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut reader = a.client();
    let joined = ok(&mut reader, "room:join", json!({"room": "news"}));
    let epoch = joined["epoch"].as_str().unwrap().to_owned();
    let mut publisher = b.client();
    ok(&mut publisher, "room:join", json!({"room": "news"}));
    for i in 1..=5 {
        ok(&mut publisher, "room:publish", json!({"room": "news", "data": i}));
    }
    let mut last = 0;
    while last < 5 {
        last = until(&mut reader, 50, is_message)["payload"]["seq"].as_u64().unwrap();
    }
    kill_node(&mut a);
    // Published while the reader has no node: acked, so in Redis.
    for i in 6..=12 {
        ok(&mut publisher, "room:publish", json!({"room": "news", "data": i}));
    }
    let mut again = b.client();
    let id = again.send_request("room:join", json!({"room": "news", "since": last, "epoch": epoch}));
    let mut replayed = Vec::new();
    let ack = loop {
        let v = until(&mut again, 100, |v| is_message(v) || v["id"] == id.as_str());
        if is_message(&v) {
            assert_eq!(v["payload"]["data"], v["payload"]["seq"]);
            replayed.push(v["payload"]["seq"].as_u64().unwrap());
        } else {
            break v;
        }
    };
    assert_eq!(replayed, (6..=12).collect::<Vec<_>>(), "exactly what it missed, in order");
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    assert_eq!(ack["payload"]["seq"], 12);
    // And live again.
    ok(&mut publisher, "room:publish", json!({"room": "news", "data": 13}));
    assert_eq!(until(&mut again, 50, is_message)["payload"]["seq"], 13);
}

#[test]
fn a_killed_nodes_members_expire_and_the_others_see_them_leave() {
    let redis = Redis::start();
    let (mut a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut doomed = Client::connect_raw(a.addr, &[]);
    let doomed_id = doomed.json()["payload"]["clientId"].as_str().unwrap().to_owned();
    ok(&mut doomed, "room:join", json!({"room": "lobby"}));
    let mut watcher = b.client();
    ok(&mut watcher, "room:join", json!({"room": "lobby"}));
    let members = ok(&mut watcher, "presence:get", json!({"room": "lobby"}))["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    let killed = Instant::now();
    kill_node(&mut a);
    // Documented bound: the heartbeat key's TTL (5 s), as long again seen
    // missing (so a pause or a Redis outage reaps no one), two heartbeats (2 s).
    let leave = loop {
        let id = watcher.send_request("ping", json!(null));
        let v = until(&mut watcher, 50, |v| v["id"] == id.as_str() || v["type"] == "presence:leave");
        if v["type"] == "presence:leave" {
            break v;
        }
        assert!(killed.elapsed() < Duration::from_secs(20), "no presence:leave after {:?}", killed.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    };
    let took = killed.elapsed();
    assert_eq!(leave["payload"]["clientId"], doomed_id.as_str());
    assert!(took < Duration::from_secs(15), "expired after {took:?}");
    let members = ok(&mut watcher, "presence:get", json!({"room": "lobby"}))["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
}
