//! Redis loses a room's latest writes while every node's subscriber stays
//! connected, and a node that does not follow the room (a backend publishing
//! through its API) publishes over the lost seqs. It happens when Sentinel
//! demotes a primary without killing it (`SENTINEL FAILOVER`, or a
//! partition healing): writes it acked after the replica was promoted are
//! dropped by its resync from the new primary, yet the subscribers connected
//! to it stay (docs/scaling.md: they keep receiving by replication), so no
//! reconnect and no refill ever compares what they delivered with what
//! Redis now holds. Here the resync's effect is made by hand (the room's seq
//! set back, its last stream entries deleted) under connected subscribers.
//!
//! Every message acked after the loss must reach the follower's member, or
//! the member be told the room moved to a new epoch; before the fix the
//! subscriber dropped the reused seqs as duplicates without a word.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const KEY: &str = "rewritten-seqs-key";

fn publish(addr: std::net::SocketAddr, data: u64) -> (u16, Value) {
    let body = format!(r#"{{"room":"r","data":{data}}}"#);
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(addr, &request);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn seqs_reused_while_the_subscriber_stayed_connected_are_delivered_or_told() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &["--api-key", KEY]), node(&redis, &[]));
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "r"}));
    for i in 1..=3 {
        assert_eq!(publish(a.addr, i).0, 200);
        let v = until(&mut reader, 50, |v| v["type"] == "room:message");
        assert_eq!(v["payload"]["seq"], i);
    }
    // What a demoted primary's resync does: the writes of seqs 2 and 3 are
    // gone; no connection breaks.
    redis.query(&["HSET", "wshub:m:r", "s", "1"]).expect("HSET");
    redis.query(&["XDEL", "wshub:h:r", "2-0", "3-0"]).expect("XDEL");
    redis.query(&["XSETID", "wshub:h:r", "1-0"]).expect("XSETID");
    let mut acked = Vec::new();
    for data in 10..=12 {
        let (status, ack) = publish(a.addr, data);
        assert_eq!(status, 200, "{ack}");
        acked.push((ack["seq"].as_u64().expect("a seq"), data));
    }
    assert_eq!(acked[0].0, 2, "the lost seqs are handed out again: {acked:?}");
    let (mut got, mut told) = (Vec::new(), false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !told && got.len() < acked.len() && Instant::now() < deadline {
        let id = reader.send_request("presence:get", json!({"room": "r"}));
        loop {
            let v = until(&mut reader, 100, |_| true);
            if v["id"] == id.as_str() {
                break;
            }
            if v["type"] == "room:message" {
                got.push((
                    v["payload"]["seq"].as_u64().unwrap_or(0),
                    v["payload"]["data"].as_u64().unwrap_or(0),
                ));
            } else if v["type"] == "error" && v["payload"]["room"] == "r" {
                told = true;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(told || got == acked, "acked {acked:?}, the reader got {got:?} and was not told of a new epoch");
}
