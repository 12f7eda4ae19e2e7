//! The backend HTTP API on cluster nodes: a publish through one node's API
//! reaches members on another node in the room's one seq order, and
//! `/api/history` and `/api/presence` on any node read the room's Redis state
//! (not only that node's).

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use serde_json::{json, Value};

const KEY: &str = "cluster-api-key";

fn api(addr: std::net::SocketAddr, method: &str, target: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(addr, &request);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn api_publish_history_and_presence_span_the_nodes() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &["--api-key", KEY]), node(&redis, &["--api-key", KEY]));
    let mut on_b = b.client();
    ok(&mut on_b, "room:join", json!({"room": "orders"}));
    let mut on_a = a.client();
    ok(&mut on_a, "room:join", json!({"room": "orders"}));
    ok(&mut on_a, "room:publish", json!({"room": "orders", "data": "from a client"}));

    // A publish through node A's API: seq 2, delivered on node B.
    let (status, ack) =
        api(a.addr, "POST", "/api/publish", r#"{"room":"orders","data":{"status":"shipped"}}"#);
    assert_eq!((status, ack["seq"].clone()), (200, json!(2)), "{ack}");
    let m = until(&mut on_b, 50, |v| v["type"] == "room:message" && v["payload"]["seq"] == 2);
    assert_eq!(
        (m["payload"]["from"].clone(), m["payload"]["data"]["status"].clone()),
        (json!("api"), json!("shipped"))
    );

    // History and presence through node B's API hold what went through A.
    let (status, history) = api(b.addr, "GET", "/api/history?room=orders&since=0&limit=10", "");
    assert_eq!(status, 200, "{history}");
    let seqs: Vec<_> = history["messages"].as_array().unwrap().iter().map(|m| m["seq"].clone()).collect();
    assert_eq!(seqs, [json!(1), json!(2)], "{history}");
    assert_eq!(history["messages"][1]["from"], "api");
    assert_eq!(history["messages"][0]["data"], "from a client");
    let (_, since) = api(b.addr, "GET", "/api/history?room=orders&since=1", "");
    assert_eq!(since["messages"].as_array().map(Vec::len), Some(1), "{since}");
    let (status, presence) = api(b.addr, "GET", "/api/presence?room=orders", "");
    assert_eq!(status, 200, "{presence}");
    assert_eq!(presence["members"].as_array().map(Vec::len), Some(2), "members on both nodes: {presence}");
}
