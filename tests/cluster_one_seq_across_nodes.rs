//! Scale-out over a real `redis-server`: members on every node see one
//! gap-free seq order per room, whoever publishes on whichever node, and a
//! resend with the same key by the same user on another node is still a duplicate.

mod cluster_common;
use cluster_common::*;

use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Nothing but presence events before a ping's ack: no message was doubled.
fn no_more_messages(c: &mut Client) {
    let id = c.send_request("ping", json!(null));
    let v = until(c, 100, |v| v["id"] == id.as_str() || is_message(v));
    assert_eq!(v["type"], "ack", "a message after the last one: {v}");
}

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

#[test]
fn a_message_published_on_one_node_reaches_members_on_another_in_order() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut on_b = b.client();
    let first = ok(&mut on_b, "room:join", json!({"room": "r"}));
    assert_eq!(first["seq"], 0);
    let mut on_a = a.client();
    let joined = ok(&mut on_a, "room:join", json!({"room": "r"}));
    assert_eq!(joined["members"], 2, "members count across nodes: {joined}");
    assert_eq!(joined["epoch"], first["epoch"], "one epoch per room");
    for i in 1..=20u64 {
        let ack = ok(&mut on_a, "room:publish", json!({"room": "r", "data": {"i": i}}));
        assert_eq!(ack["seq"], i);
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let v = until(&mut on_b, 50, is_message);
        assert_eq!(v["payload"]["data"]["i"], v["payload"]["seq"], "{v}");
        assert_eq!(v["payload"]["room"], "r");
        seen.push(v["payload"]["seq"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    // A binary publish crosses too, with its seq.
    let mut publish = vec![0x01, 0x00, 0x01, b'r'];
    publish.extend_from_slice(b"hello");
    on_a.send_binary(&publish);
    let got = loop {
        if let Frame::Binary(bytes) = on_b.frame() {
            break bytes;
        }
    };
    assert_eq!(got, [&[0x02, 0x00, 0x01, b'r'][..], &21u64.to_be_bytes(), b"hello"].concat());
}

#[test]
fn publishers_alternating_nodes_under_load_give_one_gap_free_order_to_all() {
    const PUBLISHERS: usize = 4;
    const EACH: u64 = 50;
    let redis = Redis::start();
    let nodes = [node(&redis, &[]), node(&redis, &[]), node(&redis, &[])];
    let mut subscribers: Vec<Client> = nodes.iter().map(|n| n.client()).collect();
    for s in &mut subscribers {
        ok(s, "room:join", json!({"room": "load"}));
    }
    let addrs: Vec<_> = nodes.iter().map(|n| n.addr).collect();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let addr = addrs[p % 2];
            std::thread::spawn(move || {
                let mut c = Client::connect(addr, &[]);
                ok(&mut c, "room:join", json!({"room": "load"}));
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    let id =
                        c.send_request("room:publish", json!({"room": "load", "data": {"p": p, "i": i}}));
                    let ack = until(&mut c, 1000, |v| v["id"] == id.as_str());
                    assert_eq!(ack["type"], "ack", "{ack}");
                    seqs.push((ack["payload"]["seq"].as_u64().unwrap(), (p, i)));
                }
                seqs
            })
        })
        .collect();
    let mut acked = BTreeMap::new();
    for p in publishers {
        for (seq, who) in p.join().unwrap() {
            assert!(acked.insert(seq, who).is_none(), "seq {seq} acked twice");
        }
    }
    let total = PUBLISHERS as u64 * EACH;
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), (1..=total).collect::<Vec<_>>(), "no gap");
    for s in &mut subscribers {
        for expected in 1..=total {
            let v = until(s, 100, is_message);
            let seq = v["payload"]["seq"].as_u64().unwrap();
            assert_eq!(seq, expected, "every node sees the same order: {v}");
            let (p, i) = acked[&seq];
            assert_eq!(v["payload"]["data"], json!({"p": p, "i": i}));
        }
        no_more_messages(s);
    }
}

/// A client of `user` on `node` (keys are scoped to their user, so a resend
/// over another connection is recognised for a user).
fn user_client(node: &Wshub, user: &str) -> Client {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(b"resend-secret"),
    )
    .unwrap();
    let stream = std::net::TcpStream::connect(node.addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{}/ws?access_token={token}", node.addr);
    let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
    let mut client = Client::from_parts(ws, None);
    assert_eq!(client.json()["type"], "connected");
    client
}

#[test]
fn a_resend_with_the_same_key_on_another_node_is_a_duplicate() {
    let redis = Redis::start();
    let auth = ["--jwt-secret", "resend-secret"];
    let (a, b) = (node(&redis, &auth), node(&redis, &auth));
    let mut on_a = user_client(&a, "u");
    ok(&mut on_a, "room:join", json!({"room": "k"}));
    let mut on_b = user_client(&b, "u");
    ok(&mut on_b, "room:join", json!({"room": "k"}));
    let first = ok(&mut on_a, "room:publish", json!({"room": "k", "data": 1, "key": "once"}));
    assert_eq!(first, json!({"room": "k", "seq": 1}));
    let again = ok(&mut on_b, "room:publish", json!({"room": "k", "data": 1, "key": "once"}));
    assert_eq!(again, json!({"room": "k", "seq": 1, "duplicate": true}));
    let next = ok(&mut on_b, "room:publish", json!({"room": "k", "data": 2, "key": "twice"}));
    assert_eq!(next["seq"], 2);
}

#[test]
fn clientids_are_unique_across_nodes_and_presence_spans_them() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut ca = Client::connect_raw(a.addr, &[]);
    let id_a = ca.json()["payload"]["clientId"].as_str().unwrap().to_owned();
    let mut cb = Client::connect_raw(b.addr, &[]);
    let id_b = cb.json()["payload"]["clientId"].as_str().unwrap().to_owned();
    assert_ne!(id_a, id_b);
    ok(&mut ca, "room:join", json!({"room": "p"}));
    ok(&mut cb, "room:join", json!({"room": "p"}));
    let join = until(&mut ca, 10, |v| v["type"] == "presence:join");
    assert_eq!(join["payload"]["clientId"], id_b.as_str());
    let members = ok(&mut cb, "presence:get", json!({"room": "p"}))["members"].clone();
    let mut ids: Vec<_> =
        members.as_array().unwrap().iter().map(|m| m["clientId"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    let mut want = vec![id_a.clone(), id_b.clone()];
    want.sort();
    assert_eq!(ids, want);
    // Typing crosses nodes too.
    cb.send(json!({"type": "typing:start", "payload": {"room": "p"}}));
    let typing = until(&mut ca, 10, |v| v["type"] == "typing");
    assert_eq!(typing["payload"]["clientId"], id_b.as_str());
    // A leave reaches the other node, and presence forgets it.
    ok(&mut cb, "room:leave", json!({"room": "p"}));
    let leave = until(&mut ca, 10, |v| v["type"] == "presence:leave");
    assert_eq!(leave["payload"]["clientId"], id_b.as_str());
    let members = ok(&mut ca, "presence:get", json!({"room": "p"}))["members"].clone();
    assert_eq!(members.as_array().unwrap().len(), 1, "{members}");
}

#[test]
fn the_config_file_keys_turn_it_on_too() {
    let redis = Redis::start();
    let dir = TempDir::new("conf");
    let path = dir.0.join("wshub.toml");
    std::fs::write(&path, format!("redis = \"{}\"\nredis_prefix = \"other\"\n", redis.url())).unwrap();
    let a = Wshub::start(&["--config", path.to_str().unwrap()]);
    let b = Wshub::start(&["--config", path.to_str().unwrap()]);
    let c = node(&redis, &[]); // the default prefix: another cluster on the same Redis
    let mut on_a = a.client();
    ok(&mut on_a, "room:join", json!({"room": "x"}));
    let mut on_b = b.client();
    ok(&mut on_b, "room:join", json!({"room": "x"}));
    let mut on_c = c.client();
    ok(&mut on_c, "room:join", json!({"room": "x"}));
    assert_eq!(ok(&mut on_a, "room:publish", json!({"room": "x", "data": "hi"}))["seq"], 1);
    assert_eq!(until(&mut on_b, 10, is_message)["payload"]["data"], "hi");
    assert_eq!(ok(&mut on_c, "room:publish", json!({"room": "x", "data": "apart"}))["seq"], 1, "its own seq");
    no_more_messages(&mut on_b);
}
