//! Kicks on a cluster: `/api/disconnect` takes the node-prefixed clientIds a
//! cluster node hands out, and reaches the connection on whichever node it
//! is, whichever node was asked.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use serde_json::{json, Value};

const KEY: &str = "cluster-kick-key";

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> (u16, Value) {
    let request = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(addr, &request);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Connects and returns the client with its clientId (from `connected`).
fn connect(node: &Wshub) -> (Client, String) {
    let mut c = Client::connect_raw(node.addr, &[]);
    let first = c.json();
    let id = first["payload"]["clientId"].as_str().expect("a clientId").to_owned();
    (c, id)
}

/// Reads until the close frame; its code.
fn closed_with(c: &mut Client) -> u16 {
    for _ in 0..100 {
        if let Frame::Close(code) = c.frame() {
            return code;
        }
    }
    panic!("no close frame");
}

#[test]
fn a_node_prefixed_client_id_is_kicked_on_its_own_node() {
    let redis = Redis::start();
    let a = node(&redis, &["--api-key", KEY]);
    let (mut c, id) = connect(&a);
    let (status, reply) = api(a.addr, "/api/disconnect", &json!({"clientId": id, "code": 4001}).to_string());
    assert_eq!((status, reply), (200, json!({"disconnected": 1})));
    assert_eq!(closed_with(&mut c), 4001);
}

#[test]
fn a_kick_asked_of_one_node_closes_the_connection_on_another() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &["--api-key", KEY]), node(&redis, &["--api-key", KEY]));
    let (mut c, id) = connect(&a);
    wait_ctl_subscribers(&redis, 2);
    let (status, _) = api(b.addr, "/api/disconnect", &json!({"clientId": id, "code": 4002}).to_string());
    assert_eq!(status, 200);
    assert_eq!(closed_with(&mut c), 4002);
    // An id of no node closes nothing, and nobody else.
    let (mut other, _) = connect(&a);
    let (status, reply) = api(b.addr, "/api/disconnect", r#"{"clientId":"nonode-1"}"#);
    assert_eq!((status, reply), (200, json!({"disconnected": 0})));
    ok(&mut other, "ping", json!(null));
}

const SECRET: &str = "cluster-kick-secret-of-some-length";

/// An upgrade as `user` (an HS256 token in the query): the socket, or
/// `None` when the handshake is refused.
fn upgrade_as(node: &Wshub, user: &str) -> Option<tungstenite::WebSocket<std::net::TcpStream>> {
    use std::time::{SystemTime, UNIX_EPOCH};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let stream = std::net::TcpStream::connect(node.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{}/ws?access_token={token}", node.addr);
    tungstenite::client::client(url, stream).ok().map(|(ws, _)| ws)
}

/// Connects as `user`.
fn connect_as(node: &Wshub, user: &str) -> Client {
    let ws = upgrade_as(node, user).expect("handshake refused");
    let mut c = Client::from_parts(ws, None);
    assert_eq!(c.json()["type"], "connected");
    c
}

/// Waits (bounded) until `nodes` subscribers listen on the `ctl` channel: a
/// node's subscriber starts with the node but subscribes a moment later, and
/// a kick published before it subscribed does not reach that node.
fn wait_ctl_subscribers(redis: &Redis, nodes: i64) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let reply = redis.query(&["PUBSUB", "NUMSUB", "wshub:ctl"]).expect("PUBSUB");
        if let redis::Value::Array(v) = &reply {
            if v.get(1) == Some(&redis::Value::Int(nodes)) {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "ctl subscribers: {reply:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_user_kicked_through_one_node_is_closed_on_every_node() {
    let redis = Redis::start();
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut on_a = connect_as(&a, "mallory");
    let mut on_b = connect_as(&b, "mallory");
    let mut bystander = connect_as(&a, "alice");
    wait_ctl_subscribers(&redis, 2);
    let (status, reply) = api(b.addr, "/api/disconnect", r#"{"user":"mallory","code":4003}"#);
    assert_eq!((status, reply), (200, json!({"disconnected": 1})), "this node's connections are counted");
    assert_eq!(closed_with(&mut on_b), 4003);
    assert_eq!(closed_with(&mut on_a), 4003);
    ok(&mut bystander, "ping", json!(null));
}

/// Whether an upgrade as `user` is refused.
fn refused_as(node: &Wshub, user: &str) -> bool {
    upgrade_as(node, user).is_none()
}

#[test]
fn a_ban_through_one_node_holds_on_every_node_and_on_nodes_started_later() {
    let redis = Redis::start();
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut on_b = connect_as(&b, "mallory");
    let (status, reply) = api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#);
    assert_eq!(status, 200, "{reply}");
    assert_eq!(closed_with(&mut on_b), 4003);
    assert!(refused_as(&b, "mallory"), "banned on the other node");
    let c = node(&redis, &flags);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !refused_as(&c, "mallory") {
        assert!(std::time::Instant::now() < deadline, "a node started after the ban does not know it");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, _) = api(b.addr, "/api/unban", r#"{"user":"mallory"}"#);
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refused_as(&a, "mallory") || refused_as(&c, "mallory") {
        assert!(std::time::Instant::now() < deadline, "the unban did not reach every node");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = connect_as(&b, "alice");
}
