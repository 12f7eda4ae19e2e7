//! Every row of PROTOCOL.md's client → server and server → client tables,
//! against the real binary: the `connected` frame, joins with presence,
//! publishes with seq and echo, binary frames, typing, presence:get, leave,
//! ping, and exactly one reply per request with an id.

mod protocol_common;
use protocol_common as common;

use common::{Client, Frame, Wshub};
use serde_json::json;

#[test]
fn connected_is_the_first_frame_and_describes_the_server() {
    let server = Wshub::start(&["--heartbeat-ms", "12000", "--max-message-size", "5000"]);
    let mut c = Client::connect_raw(server.addr, &[]);
    let first = c.json();
    assert_eq!(first["type"], "connected");
    assert!(first["ts"].as_u64().is_some());
    let p = &first["payload"];
    assert!(p["clientId"].as_str().is_some_and(|id| !id.is_empty()), "{p}");
    assert_eq!(
        (p["protocol"].clone(), p["heartbeatMs"].clone(), p["maxMessageBytes"].clone()),
        (json!(1), json!(12000), json!(5000))
    );
}

#[test]
fn the_server_echoes_the_first_subprotocol_it_speaks() {
    let server = Wshub::start(&[]);
    let offered: [(&[&str], Option<&str>); 3] = [
        (&["wshub.v1.json"], Some("wshub.v1.json")),
        (&["other", "wshub.v1.bin", "wshub.v1.json"], Some("wshub.v1.bin")),
        (&[], None),
    ];
    for (offer, chosen) in offered {
        let c = Client::connect(server.addr, offer);
        assert_eq!(c.subprotocol.as_deref(), chosen, "offer {offer:?}");
    }
    // Nothing wshub speaks on offer: it still upgrades, without the header
    // (tungstenite's client refuses that answer, so this one is raw HTTP).
    let (status, head) = common::head_only(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: other\r\n\r\n",
    );
    assert_eq!(status, 101, "{head}");
    assert!(!head.to_ascii_lowercase().contains("sec-websocket-protocol"), "{head}");
}

#[test]
fn join_acks_with_seq_members_and_epoch_and_tells_the_others() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    let ack = a.join("lobby");
    assert_eq!(ack["room"], "lobby");
    assert_eq!(ack["seq"], 0);
    assert_eq!(ack["members"], 1);
    assert!(ack["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(ack.get("recovered").is_none(), "no since, no recovered: {ack}");
    let ack_b = b.join("lobby");
    assert_eq!((ack_b["members"].clone(), ack_b["epoch"].clone()), (json!(2), ack["epoch"].clone()));
    let event = a.json();
    assert_eq!(event["type"], "presence:join");
    let listed = b.ok("presence:get", json!({"room": "lobby"}))["members"].as_array().map(Vec::len);
    assert_eq!(listed, Some(2));
    assert_eq!(event["payload"]["room"], "lobby");
    assert!(event["payload"]["clientId"].as_str().is_some());
    b.assert_nothing_pending();
}

#[test]
fn publish_reaches_the_others_with_seq_and_from_and_the_sender_only_with_echo() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    // Presence is for members (PROTOCOL.md 1.1): not of a room not joined.
    let refused = a.request("presence:get", json!({"room": "x"}));
    assert_eq!(
        (refused["type"].clone(), refused["payload"]["code"].clone()),
        (json!("error"), json!("forbidden"))
    );
    a.join("r");
    b.join("r");
    let joined = a.json();
    let b_id = joined["payload"]["clientId"].clone();

    let ack = b.ok("room:publish", json!({"room": "r", "data": {"text": "hi"}}));
    assert_eq!(ack, json!({"room": "r", "seq": 1}));
    let m = a.json();
    assert_eq!(m["type"], "room:message");
    assert!(m["ts"].as_u64().is_some());
    assert_eq!(m["payload"], json!({"room": "r", "seq": 1, "from": b_id, "data": {"text": "hi"}}));
    b.assert_nothing_pending(); // no copy without echo

    let id = b.send_request("room:publish", json!({"room": "r", "data": [1, 2], "echo": true}));
    let own = b.json();
    assert_eq!((own["type"].clone(), own["payload"]["seq"].clone()), (json!("room:message"), json!(2)));
    let ack = b.json();
    assert_eq!(
        (ack["type"].clone(), ack["id"].clone(), ack["payload"]["seq"].clone()),
        (json!("ack"), json!(id), json!(2))
    );
    assert_eq!(a.json()["payload"]["data"], json!([1, 2]));
}

#[test]
fn requests_without_an_id_get_no_ack_but_still_act() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    a.send(json!({"type": "room:join", "payload": {"room": "q"}}));
    a.assert_nothing_pending();
    b.join("q");
    b.send(json!({"type": "room:publish", "payload": {"room": "q", "data": "no id"}}));
    b.assert_nothing_pending();
    assert_eq!(a.json()["type"], "presence:join");
    assert_eq!(a.json()["payload"]["data"], "no id");
}

#[test]
fn binary_publishes_share_the_rooms_seq() {
    let server = Wshub::start(&[]);
    let mut a = Client::connect(server.addr, &["wshub.v1.bin"]);
    let mut b = server.client();
    a.join("bin");
    b.join("bin");
    assert_eq!(a.json()["type"], "presence:join");
    b.ok("room:publish", json!({"room": "bin", "data": "text first"}));
    assert_eq!(a.json()["payload"]["seq"], 1);
    b.send_binary(&[&[0x01, 0, 3][..], b"bin", &[0, 0xff, 7]].concat());
    let got = a.binary();
    assert_eq!(got, [&[0x02, 0, 3][..], b"bin", &2u64.to_be_bytes(), &[0, 0xff, 7]].concat());
    b.assert_nothing_pending(); // binary publishes are not echoed
    assert_eq!(b.ok("room:publish", json!({"room": "bin", "data": 3}))["seq"], 3);
}

#[test]
fn typing_is_ephemeral_and_goes_to_the_others() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    a.join("t");
    b.join("t");
    a.json();
    assert_eq!(b.ok("typing:start", json!({"room": "t"})), json!({"room": "t"}));
    let t = a.json();
    assert_eq!(t["type"], "typing");
    assert_eq!(t["payload"]["active"], true);
    assert_eq!(t["payload"]["room"], "t");
    b.ok("typing:stop", json!({"room": "t"}));
    assert_eq!(a.json()["payload"]["active"], false);
    b.assert_nothing_pending();
    // Not in history: a recovering joiner gets nothing, and seq did not move.
    let mut c = server.client();
    let ack = c.ok("room:join", json!({"room": "t", "since": 0}));
    assert_eq!((ack["seq"].clone(), ack["recovered"].clone()), (json!(0), json!(true)));
}

#[test]
fn leave_acks_and_tells_the_others_and_so_does_disconnecting() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    let mut b = server.client();
    let mut c = server.client();
    for client in [&mut a, &mut b, &mut c] {
        client.join("l");
    }
    assert_eq!(a.json()["type"], "presence:join");
    assert_eq!(a.json()["type"], "presence:join");
    assert_eq!(b.json()["type"], "presence:join");
    assert_eq!(b.ok("room:leave", json!({"room": "l"})), json!({"room": "l"}));
    let left = a.json();
    assert_eq!(left["type"], "presence:leave");
    assert_eq!(left["payload"]["room"], "l");
    assert_eq!(c.json()["type"], "presence:leave");
    let members = a.ok("presence:get", json!({"room": "l"}))["members"].clone();
    assert_eq!(members.as_array().map(Vec::len), Some(2));
    assert!(members[0]["clientId"].is_string() && members[0]["meta"].is_object(), "{members}");
    b.assert_nothing_pending();

    c.ws.close(None).expect("close");
    assert_eq!(a.json()["type"], "presence:leave");
    assert_eq!(a.ok("presence:get", json!({"room": "l"}))["members"].as_array().map(Vec::len), Some(1));
}

#[test]
fn ping_acks_with_its_payload() {
    let server = Wshub::start(&[]);
    let mut a = server.client();
    for payload in [json!({"t": 123}), json!("s"), json!(null), json!([1, {"x": null}])] {
        assert_eq!(a.ok("ping", payload.clone()), payload);
    }
}

#[test]
fn concurrent_publishers_are_seen_in_one_gapless_seq_order() {
    let server = Wshub::start(&["--rate-limit", "0"]);
    let mut watcher = server.client();
    watcher.join("c");
    let per_publisher = 200;
    let publishers: Vec<_> = (0..3)
        .map(|_| {
            let addr = server.addr;
            std::thread::spawn(move || {
                let mut p = Client::connect(addr, &[]);
                p.join("c");
                for i in 0..per_publisher {
                    p.send(json!({"type": "room:publish", "payload": {"room": "c", "data": i}}));
                }
                p.sync(10_000);
                p
            })
        })
        .collect();
    let mut seqs = Vec::new();
    while seqs.len() < 3 * per_publisher {
        match watcher.frame() {
            Frame::Json(v) if v["type"] == "room:message" => {
                seqs.push(v["payload"]["seq"].as_u64().unwrap_or(0))
            }
            Frame::Json(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: Vec<u64> = (1..=3 * per_publisher as u64).collect();
    assert_eq!(seqs, expected);
    for p in publishers {
        p.join().expect("publisher thread");
    }
}
