//! Presence across nodes is not lost to a Redis outage or a paused node:
//! heartbeat keys expire meanwhile, yet no member still connected gets a
//! `presence:leave`, and `presence:get` stays complete. A node paused long
//! enough to be taken for dead puts its members back when it resumes.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn signal(node: &Wshub, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Watches `client` for `within`, asking for the room's presence every
/// half second; returns the `presence:leave` and `presence:join` events seen
/// and the last member count.
fn watch(client: &mut Client, room: &str, within: Duration, stop_at: Option<usize>) -> (Vec<Value>, usize) {
    let deadline = Instant::now() + within;
    let mut events = Vec::new();
    let mut count = 0;
    while Instant::now() < deadline {
        let id = client.send_request("presence:get", json!({"room": room}));
        let reply = loop {
            let v = until(client, 1000, |v| {
                v["id"] == id.as_str() || v["type"].as_str().is_some_and(|t| t.starts_with("presence:"))
            });
            if v["id"] == id.as_str() {
                break v;
            }
            events.push(v);
        };
        if reply["type"] == "ack" {
            count = reply["payload"]["members"].as_array().map_or(0, Vec::len);
            if stop_at == Some(count) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    (events, count)
}

fn members_on_two_nodes(redis: &Redis) -> (Wshub, Wshub, Client, Client) {
    let (a, b) = (node(redis, &[]), node(redis, &[]));
    let mut on_a = a.client();
    ok(&mut on_a, "room:join", json!({"room": "p"}));
    let mut on_b = b.client();
    ok(&mut on_b, "room:join", json!({"room": "p"}));
    let members = ok(&mut on_b, "presence:get", json!({"room": "p"}))["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 2, "{members}");
    (a, b, on_a, on_b)
}

#[test]
fn a_redis_outage_longer_than_the_node_ttl_removes_no_member() {
    let mut redis = Redis::start();
    let (a, b, mut on_a, mut on_b) = members_on_two_nodes(&redis);
    redis.stop_keeping_data();
    std::thread::sleep(Duration::from_secs(7));
    redis.spawn();
    wait_health(a.addr, 200, Duration::from_secs(10));
    wait_health(b.addr, 200, Duration::from_secs(10));
    // Longer than a dead node takes to be reaped once Redis is back.
    let (events_b, count) = watch(&mut on_b, "p", Duration::from_secs(13), None);
    let leaves: Vec<_> = events_b.iter().filter(|v| v["type"] == "presence:leave").collect();
    assert!(leaves.is_empty(), "no false leave: {leaves:?}");
    assert_eq!(count, 2, "presence:get is complete");
    let (events_a, count) = watch(&mut on_a, "p", Duration::from_secs(1), None);
    assert!(events_a.iter().all(|v| v["type"] != "presence:leave"), "{events_a:?}");
    assert_eq!(count, 2);
}

#[test]
fn a_node_paused_past_the_node_ttl_keeps_its_members() {
    let redis = Redis::start();
    let (a, _b, _on_a, mut on_b) = members_on_two_nodes(&redis);
    signal(&a, "STOP");
    // Watched while the node is paused: its heartbeat key expires meanwhile.
    // (After the pause its connections may end on their own account: a
    // paused process's timed socket reads end with EINTR.)
    let (events, count) = watch(&mut on_b, "p", Duration::from_secs(7), None);
    signal(&a, "CONT");
    let leaves: Vec<_> = events.iter().filter(|v| v["type"] == "presence:leave").collect();
    assert!(leaves.is_empty(), "no false leave: {leaves:?}");
    assert_eq!(count, 2, "presence:get is complete");
}

#[test]
fn members_a_restarted_redis_lost_are_put_back_by_their_node() {
    let mut redis = Redis::start();
    // The snapshot Redis comes back from predates every member.
    redis.query(&["SAVE"]).expect("SAVE");
    let (_a, _b, mut on_a, mut on_b) = members_on_two_nodes(&redis);
    redis.kill();
    redis.spawn();
    let (_, count) = watch(&mut on_b, "p", Duration::from_secs(15), Some(2));
    assert_eq!(count, 2, "both members are back in presence");
    let (_, count) = watch(&mut on_a, "p", Duration::from_secs(1), Some(2));
    assert_eq!(count, 2);
}
