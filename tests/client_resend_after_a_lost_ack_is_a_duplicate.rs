//! wshub::client through a TCP proxy that the test cuts: (1) the connection
//! of a user dies after the server stored a publish but before its ack
//! reached the client; the resend (same key, same user) is acked `duplicate: true` and the other
//! member sees the message once. (2) a cut while the server lives on: the
//! client rejoins with `since` and recovers, in order, what it missed
//! (`recovered: true`, so no Recovery event), and its offline publishes arrive
//! once each, in order.

mod client_common;

use std::time::Duration;

use client_common::{messages, wait_for, Proxy, Server};
use serde_json::json;
use wshub::client::{Client, Event, Options};

fn options() -> Options {
    Options::default().backoff(Duration::from_millis(20), Duration::from_millis(200))
}

const SECRET: &str = "resend-secret";

/// A token for `user`: a key is its publisher's, so a resend over a new
/// connection is recognised when the publisher is a user (docs/protocol.md,
/// "Idempotent publish").
fn token(user: &str) -> String {
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[test]
fn a_publish_whose_ack_was_lost_is_resent_and_acked_as_a_duplicate() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let proxy = Proxy::start(server.addr);
    let a = Client::connect(&format!("ws://{}/ws", proxy.addr), options().token(token("a")))
        .expect("a via the proxy");
    let b =
        Client::connect(&format!("ws://{}/ws", server.addr), options().token(token("b"))).expect("b direct");
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    a.join("r").unwrap();
    b.join("r").unwrap();

    // From now on nothing the server sends reaches a: the ack will be lost.
    proxy.set_swallow_down(true);
    let receipt = a.publish_nowait("r", &json!({"text": "once"})).unwrap();
    // The server stored and broadcast it: b has it.
    let seq = wait_for(&b, &mut seen_b, |e| match e {
        Event::Message { seq, data, .. } if data["text"] == "once" => Some(*seq),
        _ => None,
    });
    assert!(receipt.wait_timeout(Duration::from_millis(200)).is_none(), "a cannot have seen the ack");
    proxy.set_swallow_down(false);
    proxy.cut();

    // a reconnects and resends with the same key: a duplicate, same seq.
    let ack = receipt.wait().expect("the resend is acked");
    assert_eq!(ack["duplicate"], true, "{ack}");
    assert_eq!(ack["seq"], seq);
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Connected { .. }).then_some(()));
    // b saw it once: nothing else is queued for b.
    b.request("ping", json!("sync")).unwrap();
    while let Ok(e) = b.events().try_recv() {
        seen_b.push(e);
    }
    let copies = messages(&seen_b, "r").iter().filter(|(_, d)| d["text"] == "once").count();
    assert_eq!(copies, 1, "{seen_b:#?}");
    let rooms = a.request("presence:get", json!({"room": "r"})).unwrap();
    assert_eq!(rooms["members"].as_array().unwrap().len(), 2, "a rejoined: {rooms}");
}

#[test]
fn a_cut_client_recovers_what_it_missed_and_sends_what_it_buffered() {
    let server = Server::start(&[]);
    let proxy = Proxy::start(server.addr);
    let a = Client::connect(&format!("ws://{}/ws", proxy.addr), options()).expect("a via the proxy");
    let b = Client::connect(&format!("ws://{}/ws", server.addr), options()).expect("b direct");
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    a.join("r").unwrap();
    b.join("r").unwrap();
    b.publish("r", &json!({"b": 0})).unwrap();
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Message { seq: 1, .. }).then_some(()));

    proxy.set_refuse(true);
    proxy.cut();
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Reconnecting { attempt: 2, .. }).then_some(()));
    for i in 1..=3 {
        b.publish("r", &json!({ "b": i })).unwrap(); // missed by a
    }
    let receipts: Vec<_> = (0..4).map(|i| a.publish_nowait("r", &json!({ "a": i })).unwrap()).collect();
    proxy.set_refuse(false);

    let seqs: Vec<u64> = receipts.into_iter().map(|r| r.wait().unwrap()["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [5, 6, 7, 8], "sent after the rejoin, in order");
    wait_for(&b, &mut seen_b, |e| matches!(e, Event::Message { seq: 8, .. }).then_some(()));
    let got: Vec<_> = messages(&seen_b, "r").into_iter().map(|(s, d)| (s, d["a"].clone())).collect();
    assert_eq!(got, (5..=8).zip(0..4).map(|(s, i)| (s, json!(i))).collect::<Vec<_>>());

    a.request("ping", json!(1)).unwrap();
    while let Ok(e) = a.events().try_recv() {
        seen_a.push(e);
    }
    let recovered: Vec<_> = messages(&seen_a, "r").into_iter().map(|(s, d)| (s, d["b"].clone())).collect();
    assert_eq!(recovered, (1..=4).zip(0..4).map(|(s, i)| (s, json!(i))).collect::<Vec<_>>());
    assert!(!seen_a.iter().any(|e| matches!(e, Event::Recovery { .. })), "recovered: {seen_a:#?}");
}
