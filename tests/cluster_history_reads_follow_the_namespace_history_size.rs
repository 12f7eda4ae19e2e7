//! Under `--redis`, a room keeps its namespace's `history_size`, and every
//! read of its Redis history follows that size, not the top-level
//! `--history-size`: `/api/history` and the refill a node makes when its
//! subscriber comes back after missing messages.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use std::time::Duration;

use serde_json::{json, Value};

const KEY: &str = "cluster-namespace-history-key";
/// More than the top-level `--history-size`, fewer than the namespace's.
const MESSAGES: u64 = 12;

fn api_get(addr: std::net::SocketAddr, target: &str) -> (u16, Value) {
    let request =
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\r\n");
    let (status, _, body) = http(addr, &request);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn config(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    std::fs::write(
        dir.0.join("wshub.toml"),
        "history_size = 5\n\n[[namespace]]\nprefix = \"long:\"\nhistory_size = 50\n",
    )
    .expect("write config");
    dir
}

#[test]
fn api_history_reads_the_namespaces_history_size() {
    let redis = Redis::start();
    let dir = config("ns-history-api");
    let file = dir.0.join("wshub.toml");
    let flags = ["--config", file.to_str().expect("utf-8"), "--api-key", KEY];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut writer = a.client();
    ok(&mut writer, "room:join", json!({"room": "long:1"}));
    for i in 1..=MESSAGES {
        ok(&mut writer, "room:publish", json!({"room": "long:1", "data": i}));
    }
    let (status, history) = api_get(b.addr, "/api/history?room=long:1&since=0&limit=100");
    assert_eq!(status, 200, "{history}");
    let seqs: Vec<u64> =
        history["messages"].as_array().unwrap().iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=MESSAGES).collect::<Vec<_>>(), "{history}");
}

#[test]
fn a_refill_reads_the_namespaces_history_size() {
    let redis = Redis::start();
    let dir = config("ns-history-refill");
    let file = dir.0.join("wshub.toml");
    let flags = ["--config", file.to_str().expect("utf-8")];
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let a = node(&redis, &flags);
    let b = node_at(&proxy.url(), &flags);
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "long:1"}));
    let mut writer = a.client();
    ok(&mut writer, "room:join", json!({"room": "long:1"}));
    ok(&mut writer, "room:publish", json!({"room": "long:1", "data": 0}));
    until(&mut reader, 20, |v| v["type"] == "room:message" && v["payload"]["seq"] == 1);

    // Node b loses Redis while a publishes; when it is back, its subscriber
    // refills what it missed from the room's stream.
    proxy.set_down(true);
    std::thread::sleep(Duration::from_millis(500));
    for i in 1..=MESSAGES {
        ok(&mut writer, "room:publish", json!({"room": "long:1", "data": i}));
    }
    proxy.set_down(false);
    let mut seqs = Vec::new();
    while seqs.last() != Some(&(MESSAGES + 1)) {
        let v = until(&mut reader, 40, |v| v["type"] == "room:message" || v["type"] == "error");
        assert_eq!(v["type"], "room:message", "a notice of lost messages instead of the refill: {v}");
        seqs.push(v["payload"]["seq"].as_u64().expect("seq"));
    }
    assert_eq!(seqs, (2..=MESSAGES + 1).collect::<Vec<_>>());
}
