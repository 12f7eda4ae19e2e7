//! Server-Sent Events on cluster nodes: a stream on node B gets the
//! messages published through node A (fed by B's subscriber, with the room's
//! one seq as `id`), a stream reopened with `Last-Event-ID` on either node
//! gets what it missed from the room's Redis history, and a stream with a
//! token whose claim does not allow the room is refused (`403`), as on one
//! node.

mod api_common;
mod cluster_common;
use api_common::Sse;
use cluster_common::*;

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

const SECRET: &str = "cluster-sse-secret-of-some-length";

fn token(user: &str, rooms: &[&str]) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp, "rooms": rooms}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// Connects to `node` as `user` allowed every room.
fn member(node: &Wshub, user: &str) -> Client {
    let stream = std::net::TcpStream::connect(node.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{}/ws?access_token={}", node.addr, token(user, &["*"]));
    let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
    let mut c = Client::from_parts(ws, None);
    assert_eq!(c.json()["type"], "connected");
    c
}

#[test]
fn a_stream_on_one_node_gets_what_another_node_published_and_recovers_from_redis() {
    let redis = Redis::start();
    let flags = ["--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut publisher = member(&a, "pub");
    ok(&mut publisher, "room:join", json!({"room": "feed"}));
    let q = format!("room=feed&access_token={}", token("reader", &["feed"]));

    let mut stream = Sse::open(b.addr, &q, &[]);
    assert_eq!(stream.status, 200, "an event stream on a cluster node");
    let connected = stream.expect("connected");
    assert_eq!(connected.data["seq"], 0);
    let epoch = connected.data["epoch"].as_str().expect("epoch").to_owned();
    for i in 1..=3u64 {
        let ack = ok(&mut publisher, "room:publish", json!({"room": "feed", "data": {"n": i}}));
        assert_eq!(ack["seq"], i);
        let e = stream.expect("room:message");
        assert_eq!(e.id, Some(i.to_string()));
        assert_eq!(e.data["seq"], i);
        assert_eq!(e.data["data"], json!({"n": i}));
    }
    drop(stream);
    for i in 4..=6u64 {
        ok(&mut publisher, "room:publish", json!({"room": "feed", "data": {"n": i}}));
    }
    // What an EventSource sends (the id), and `<epoch>:<seq>` from a client
    // that kept the epoch of `connected`.
    for (node, last) in [(&b, "4".to_owned()), (&a, format!("{epoch}:4"))] {
        let mut again = Sse::open(node.addr, &q, &[("Last-Event-ID", &last)]);
        let connected = again.expect("connected");
        assert_eq!((&connected.data["recovered"], &connected.data["seq"]), (&json!(true), &json!(6)));
        for i in 5..=6 {
            assert_eq!(again.expect("room:message").id, Some(i.to_string()));
        }
    }

    let refused = Sse::open(b.addr, &format!("room=feed&access_token={}", token("reader", &["other"])), &[]);
    assert_eq!(refused.status, 403, "the claim is checked as for a room:join");
}
