//! Kicks and bans made through [`ProtocolHandler`] (what the C API's
//! `wshub_disconnect_user`, `wshub_ban` and `wshub_unban` call) on a cluster
//! node act on every node, as `/api/disconnect`, `/api/ban` and `/api/unban`
//! do: node A runs in this process, node B is the `wshub` binary on the same
//! Redis.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};

const SECRET: &str = "cluster-rust-kick-secret-of-some-length";

/// An upgrade as `user` (an HS256 token in the query), or `None` when refused.
fn upgrade_as(node: &Wshub, user: &str) -> Option<Client> {
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
    let (ws, _) = tungstenite::client::client(url, stream).ok()?;
    let mut c = Client::from_parts(ws, None);
    assert_eq!(c.json()["type"], "connected");
    Some(c)
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

/// Waits (bounded) until `nodes` subscribers listen on the `ctl` channel.
fn wait_ctl_subscribers(redis: &Redis, nodes: i64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let reply = redis.query(&["PUBSUB", "NUMSUB", "wshub:ctl"]).expect("PUBSUB");
        if let redis::Value::Array(v) = &reply {
            if v.get(1) == Some(&redis::Value::Int(nodes)) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "ctl subscribers: {reply:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kicks_bans_and_unbans_from_rust_reach_the_other_node() {
    let redis = Redis::start();
    let handler = ProtocolHandler::new(ProtocolConfig::default().jwt_secret(SECRET).redis(redis.url()));
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let a = wshub::Server::start(config, handler.clone()).expect("start node A");
    let b = node(&redis, &["--jwt-secret", SECRET]);
    wait_ctl_subscribers(&redis, 2);

    let mut on_b = upgrade_as(&b, "mallory").expect("mallory connects to B");
    let mut bystander = upgrade_as(&b, "alice").expect("alice connects to B");
    let here = handler.disconnect_user(&a, "mallory", 4001, "bye").expect("disconnect_user");
    assert_eq!(here, 0, "A has no connection of mallory's");
    assert_eq!(closed_with(&mut on_b), 4001, "the kick reached B");

    let mut on_b = upgrade_as(&b, "mallory").expect("mallory connects to B again");
    handler.ban(&a, "mallory", Duration::from_secs(600)).expect("ban");
    assert_eq!(closed_with(&mut on_b), 4003, "the ban closed mallory on B");
    assert!(upgrade_as(&b, "mallory").is_none(), "and B refuses mallory");

    assert!(handler.unban("mallory"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upgrade_as(&b, "mallory").is_none() {
        assert!(Instant::now() < deadline, "the unban did not reach B");
        std::thread::sleep(Duration::from_millis(100));
    }
    ok(&mut bystander, "ping", json!(null));
    a.stop();
}

#[test]
fn a_node_prefixed_client_id_is_kicked_from_rust_on_whichever_node_holds_it() {
    let redis = Redis::start();
    let handler = ProtocolHandler::new(ProtocolConfig::default().redis(redis.url()));
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let a = wshub::Server::start(config, handler.clone()).expect("start node A");
    let b = node(&redis, &[]);
    wait_ctl_subscribers(&redis, 2);
    let mut on_b = Client::connect_raw(b.addr, &[]);
    let id = on_b.json()["payload"]["clientId"].as_str().expect("a clientId").to_owned();
    let mut bystander = b.client();
    assert_eq!(handler.disconnect_client_id(&a, &id, 4002, "").expect("disconnect_client_id"), 0);
    assert_eq!(closed_with(&mut on_b), 4002, "closed on B, asked of A");
    assert_eq!(handler.disconnect_client_id(&a, "nonode-1", 4002, "").expect("an id of no node"), 0);
    ok(&mut bystander, "ping", json!(null));
    a.stop();
}
