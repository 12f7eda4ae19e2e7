//! Redis comes back from an older snapshot, and a node that does not follow
//! the room (it has no member there: a backend publishing through its API)
//! publishes past the seq a following node last delivered before that node
//! reconnects. The seq the follower saw is then not ahead of Redis, yet the
//! messages at and before it are new ones: they must reach its members, or the
//! room move to a new epoch with its members told.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use std::time::Duration;

use serde_json::{json, Value};

const KEY: &str = "lost-writes-key";

fn publish(addr: std::net::SocketAddr, data: u64) -> (u16, Value) {
    let body = format!(r#"{{"room":"r","data":{data}}}"#);
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(addr, &request);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn signal(node: &Wshub, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &node.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[test]
fn messages_published_over_lost_seqs_by_another_node_are_delivered_or_told() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, &["--api-key", KEY]), node(&redis, &[]));
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "r"}));
    for i in 1..=6 {
        if i == 4 {
            redis.query(&["SAVE"]).expect("SAVE");
        }
        assert_eq!(publish(a.addr, i).0, 200);
        let v = until(&mut reader, 50, |v| v["type"] == "room:message");
        assert_eq!(v["payload"]["seq"], i);
    }
    // B is paused while Redis loses 4..=6 and A publishes four more: Redis
    // hands out 4..=7 again, past the 6 that B delivered.
    signal(&b, "STOP");
    redis.kill();
    redis.spawn();
    wait_health(a.addr, 200, Duration::from_secs(10));
    let mut acked = Vec::new();
    for i in 7..=10 {
        let mut tries = 0;
        let ack = loop {
            let (status, ack) = publish(a.addr, i);
            if status == 200 {
                break ack;
            }
            tries += 1;
            assert!(tries < 50, "no ack for {i}: {status} {ack}");
            std::thread::sleep(Duration::from_millis(100));
        };
        acked.push((ack["seq"].as_u64().expect("a seq"), i));
    }
    signal(&b, "CONT");
    // Each message acked since is delivered to the reader, unless it was
    // told the room moved to a new epoch.
    let mut got = Vec::new();
    let mut told = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !told && got.len() < acked.len() && std::time::Instant::now() < deadline {
        let id = reader.send_request("presence:get", json!({"room": "r"}));
        loop {
            let v = until(&mut reader, 100, |_| true);
            if v["id"] == id.as_str() {
                break;
            }
            if v["type"] == "room:message" {
                got.push((v["payload"]["seq"].as_u64().unwrap(), v["payload"]["data"].as_u64().unwrap()));
            } else if v["type"] == "error" && v["payload"]["room"] == "r" {
                told = true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(told || got == acked, "acked {acked:?}, the reader got {got:?} and was not told of a reset");
}
