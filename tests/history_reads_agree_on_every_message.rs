//! One stored message reads the same through every door: a WebSocket join's
//! replay, an event stream's replay and `GET /api/history` give the same
//! seq, publisher and body, for bodies that look like the end of a frame
//! (`0}}`), quotes, escapes, unicode, and a binary body, on one node and
//! through Redis (published on one node, read on another).

mod api_common;
mod cluster_common;

use std::net::SocketAddr;

use api_common::{api, Sse};
use cluster_common::*;
use serde_json::{json, Value};

const KEY: &str = "history-reads-key";
const ROOM: &str = "rec\"✓";

/// JSON bodies whose text ends the way a frame's does, or holds quotes,
/// escapes and characters past ASCII.
fn awkward_bodies() -> Vec<Value> {
    vec![
        json!({"t": "0}}", "q": "\"é✓ \\ \u{1} \u{2028}", "n": [1, 2, {"x": "}}"}]}),
        json!("ends like a frame 0}}"),
        json!(0),
    ]
}

/// A binary body with a frame-like tail, a quote and bytes that are no UTF-8.
const BINARY: &[u8] = b"0}}\"\xff\x00\xe2\x9c";

/// A binary publish of `body` to `room` (docs/protocol.md, binary frames).
fn binary_publish(room: &str, body: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x01];
    frame.extend_from_slice(&u16::try_from(room.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(room.as_bytes());
    frame.extend_from_slice(body);
    frame
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            out.push(if i <= chunk.len() {
                char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63])
            } else {
                '='
            });
        }
    }
    out
}

/// Publishes the awkward bodies and the binary one into `ROOM` from a
/// member of `publisher`; returns the member's clientId.
fn publish_all(publisher: SocketAddr) -> String {
    let mut member = Client::connect_raw(publisher, &[]);
    let Frame::Json(connected) = member.frame() else { panic!("expected connected") };
    let id = connected["payload"]["clientId"].as_str().unwrap().to_owned();
    member.join(ROOM);
    for body in awkward_bodies() {
        member.ok("room:publish", json!({"room": ROOM, "data": body}));
    }
    member.send_binary(&binary_publish(ROOM, BINARY));
    // A text publish after the binary one: its ack says the binary one is in.
    member.ok("room:publish", json!({"room": ROOM, "data": "last"}));
    id
}

/// What each door says of every message: `(seq, from, data or base64 body)`.
type Seen = Vec<(u64, Option<String>, Value)>;

fn via_websocket(reader: SocketAddr) -> Seen {
    let mut c = Client::connect(reader, &[]);
    let id = c.send_request("room:join", json!({"room": ROOM, "since": 0}));
    let mut seen = Vec::new();
    for _ in 0..20 {
        match c.frame() {
            Frame::Json(m) if m["type"] == "room:message" => {
                let p = &m["payload"];
                assert_eq!(p["room"], ROOM);
                seen.push((
                    p["seq"].as_u64().unwrap(),
                    Some(p["from"].as_str().unwrap().to_owned()),
                    p["data"].clone(),
                ));
            }
            Frame::Json(m) if m["type"] == "ack" && m["id"] == id.as_str() => {
                assert_eq!(m["payload"]["recovered"], true, "{m}");
                return seen;
            }
            Frame::Binary(b) => {
                // kind, room length, room, seq (8 bytes), body
                let room_len = usize::from(u16::from_be_bytes([b[1], b[2]]));
                assert_eq!(&b[3..3 + room_len], ROOM.as_bytes());
                let seq = u64::from_be_bytes(b[3 + room_len..11 + room_len].try_into().unwrap());
                seen.push((seq, None, json!(base64(&b[11 + room_len..]))));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no ack after the replay");
}

fn via_event_stream(reader: SocketAddr) -> Seen {
    let mut stream = Sse::open(reader, &format!("room={}&since=0", "rec%22%E2%9C%93"), &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert_eq!(stream.expect("connected").data["recovered"], true);
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let e = stream.expect("room:message");
        let d = e.data;
        assert_eq!(d["room"], ROOM);
        let seq = d["seq"].as_u64().unwrap();
        assert_eq!(e.id, Some(seq.to_string()));
        match d.get("binary") {
            Some(b) => seen.push((seq, None, b.clone())),
            None => seen.push((seq, Some(d["from"].as_str().unwrap().to_owned()), d["data"].clone())),
        }
    }
    seen
}

fn via_api(reader: SocketAddr) -> Seen {
    let (status, body) = api(reader, "GET", "/api/history?room=rec%22%E2%9C%93", Some(KEY), "");
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m.get("binary") {
            Some(b) => (m["seq"].as_u64().unwrap(), None, b.clone()),
            None => {
                (m["seq"].as_u64().unwrap(), Some(m["from"].as_str().unwrap().to_owned()), m["data"].clone())
            }
        })
        .collect()
}

fn expected(from: &str) -> Seen {
    let mut want: Seen = awkward_bodies()
        .into_iter()
        .enumerate()
        .map(|(i, body)| (i as u64 + 1, Some(from.to_owned()), body))
        .collect();
    want.push((4, None, json!(base64(BINARY))));
    want.push((5, Some(from.to_owned()), json!("last")));
    want
}

fn every_door_agrees(publisher: SocketAddr, reader: SocketAddr) {
    let from = publish_all(publisher);
    let want = expected(&from);
    assert_eq!(via_websocket(reader), want, "a WebSocket replay");
    assert_eq!(via_event_stream(reader), want, "an event stream's replay");
    assert_eq!(via_api(reader), want, "/api/history");
}

#[test]
fn one_node_reads_each_message_alike_through_every_door() {
    let server = Wshub::start(&["--api-key", KEY, "--rate-limit", "0"]);
    every_door_agrees(server.addr, server.addr);
}

#[test]
fn a_cluster_node_reads_each_message_alike_through_every_door() {
    let redis = Redis::start();
    let a = node(&redis, &["--api-key", KEY]);
    let b = node(&redis, &["--api-key", KEY]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    every_door_agrees(a.addr, b.addr);
}
