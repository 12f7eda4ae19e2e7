//! Every bad input gets its documented `error` (with the `id` when one could
//! be read) and the connection lives on; the limits close with their codes.

mod protocol_common;
use protocol_common as common;

use common::{Client, Frame, Wshub};
use serde_json::{json, Value};

/// Sends `text`, expects an error with `code` and `id`, then proves the
/// connection still works.
fn expect_error(c: &mut Client, text: &str, code: &str, id: Option<&str>) {
    c.send_text(text);
    let e = c.json();
    assert_eq!(e["type"], "error", "{text} -> {e}");
    assert_eq!(e["payload"]["code"], code, "{text} -> {e}");
    assert!(e["payload"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["ts"].as_u64().is_some());
    match id {
        Some(id) => assert_eq!(e["id"], id, "{text} -> {e}"),
        None => assert!(e.get("id").is_none(), "{text} -> {e}"),
    }
    c.assert_nothing_pending();
}

#[test]
fn malformed_envelopes_get_bad_request_and_the_connection_lives_on() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    let long_id = format!(r#"{{"type":"ping","id":"{}"}}"#, "i".repeat(65));
    let cases: &[(&str, &str, Option<&str>)] = &[
        ("not json", "bad_request", None),
        ("{\"type\":", "bad_request", None),
        ("", "bad_request", None),
        ("[1,2]", "bad_request", None),
        ("\"room:join\"", "bad_request", None),
        (r#"{"id":"m1","payload":{}}"#, "bad_request", Some("m1")),
        (r#"{"id":"m2","type":null}"#, "bad_request", Some("m2")),
        (r#"{"id":"m3","type":42}"#, "bad_request", Some("m3")),
        (r#"{"id":7,"type":"ping"}"#, "bad_request", None),
        (&long_id, "too_large", None),
        (r#"{"id":"u1","type":"room:explode","payload":{}}"#, "unknown_type", Some("u1")),
        (r#"{"type":"nope"}"#, "unknown_type", None),
    ];
    for (text, code, id) in cases {
        expect_error(&mut c, text, code, *id);
    }
}

#[test]
fn wrong_payloads_get_bad_request_with_the_id() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    let bad: &[Value] = &[
        json!({"type": "room:join", "id": "p1"}),
        json!({"type": "room:join", "id": "p1", "payload": "lobby"}),
        json!({"type": "room:join", "id": "p1", "payload": {}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": 5}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": ""}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": "a\u{7}b"}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": "a", "since": "3"}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": "a", "since": -1}}),
        json!({"type": "room:join", "id": "p1", "payload": {"room": "a", "since": 1.5}}),
        json!({"type": "room:leave", "id": "p1", "payload": {"room": ["a"]}}),
        json!({"type": "room:publish", "id": "p1", "payload": {"room": "a"}}),
        json!({"type": "room:publish", "id": "p1", "payload": {"room": "a", "data": 1, "echo": "yes"}}),
        json!({"type": "typing:start", "id": "p1", "payload": null}),
        json!({"type": "presence:get", "id": "p1", "payload": [1]}),
    ];
    for text in bad {
        expect_error(&mut c, &text.to_string(), "bad_request", Some("p1"));
    }
}

#[test]
fn an_over_long_room_name_is_too_large() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    let room = "r".repeat(129);
    let text = json!({"type": "room:join", "id": "big", "payload": {"room": room}}).to_string();
    expect_error(&mut c, &text, "too_large", Some("big"));
    // 128 bytes (of multi-byte UTF-8) is fine.
    assert_eq!(c.join(&"é".repeat(64))["members"], 1);
}

#[test]
fn acting_in_a_room_not_joined_is_forbidden_and_leaving_it_is_not_found() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    let cases = [
        (json!({"type": "room:publish", "id": "f1", "payload": {"room": "z", "data": 1}}), "forbidden"),
        (json!({"type": "typing:start", "id": "f2", "payload": {"room": "z"}}), "forbidden"),
        (json!({"type": "room:leave", "id": "f3", "payload": {"room": "z"}}), "not_found"),
    ];
    for (text, code) in cases {
        let id = text["id"].as_str().map(str::to_owned);
        expect_error(&mut c, &text.to_string(), code, id.as_deref());
    }
    let mut frame = vec![0x01, 0, 1, b'z'];
    frame.extend_from_slice(b"body");
    c.send_binary(&frame);
    assert_eq!(c.json()["payload"]["code"], "forbidden");
    c.assert_nothing_pending();
}

#[test]
fn malformed_binary_frames_get_bad_request_and_the_connection_lives_on() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    c.join("b");
    let mut too_long_room = vec![0x01, 0, 129];
    too_long_room.extend(std::iter::repeat_n(b'r', 129));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![], "bad_request"),
        (vec![0x02, 0, 1, b'b'], "bad_request"),
        (vec![0xff; 20], "bad_request"),
        (vec![0x01], "bad_request"),
        (vec![0x01, 0], "bad_request"),
        (vec![0x01, 0, 9, b'b'], "bad_request"),
        (vec![0x01, 0, 0, 1, 2], "bad_request"),
        (vec![0x01, 0, 2, 0xc3, 0x28], "bad_request"),
        (too_long_room, "too_large"),
    ];
    for (bytes, code) in cases {
        c.send_binary(&bytes);
        let e = c.json();
        assert_eq!(
            (e["type"].clone(), e["payload"]["code"].clone()),
            (json!("error"), json!(code)),
            "{bytes:?}"
        );
        c.assert_nothing_pending();
    }
}

#[test]
fn over_the_rate_limit_gets_rate_limited_and_a_flood_closes_1008() {
    // 1 msg/s: no token comes back while the test runs, however slow the machine.
    let server = Wshub::start(&["--rate-limit", "1", "--rate-burst", "3"]);
    let mut c = server.client();
    // The burst of 3 is served, the rest are refused.
    for i in 0..6 {
        c.send(json!({"type": "ping", "id": format!("r{i}"), "payload": i}));
    }
    let mut codes = Vec::new();
    for i in 0..6 {
        let reply = c.json();
        assert_eq!(reply["id"], format!("r{i}"));
        codes.push(if reply["type"] == "ack" {
            "ack".to_owned()
        } else {
            reply["payload"]["code"].as_str().unwrap_or("?").to_owned()
        });
    }
    assert_eq!(&codes[..3], ["ack", "ack", "ack"]);
    assert!(codes[3..].iter().all(|c| c == "rate_limited"), "{codes:?}");

    // Abuse: beyond 10x the rate (past 10 + 3 messages at once) closes with 1008.
    let mut abuser = server.client();
    let mut sent = 0;
    for _ in 0..200 {
        if abuser.ws.send(tungstenite::Message::text(r#"{"type":"ping"}"#)).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent >= 14, "sent {sent}");
    let mut closed = None;
    for _ in 0..500 {
        match abuser.frame() {
            Frame::Close(code) => {
                closed = Some(code);
                break;
            }
            Frame::Json(v) => assert!(v["type"] == "ack" || v["payload"]["code"] == "rate_limited", "{v}"),
            Frame::Binary(b) => panic!("binary {b:?}"),
        }
    }
    assert_eq!(closed, Some(1008));
    let metrics = common::get(server.addr, "/metrics").2;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("wshub_dropped_total{reason=\"rate_limited\"}") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[test]
fn rate_limit_zero_turns_it_off() {
    let server = Wshub::start(&["--rate-limit", "0"]);
    let mut c = server.client();
    for i in 0..1000 {
        c.send(json!({"type": "ping", "id": format!("z{i}")}));
    }
    for i in 0..1000 {
        let reply = c.json();
        assert_eq!((reply["type"].clone(), reply["id"].clone()), (json!("ack"), json!(format!("z{i}"))));
    }
}

#[test]
fn a_message_over_the_size_limit_closes_1009() {
    let server = Wshub::start(&["--max-message-size", "1000"]);
    let mut c = server.client();
    c.ok("ping", json!("x".repeat(900)));
    c.send_text(&"x".repeat(1001));
    assert_eq!(c.frame(), Frame::Close(1009));
}

/// `{"type":"room:join","id":ID,"payload":{"room":"deep","a":{"a":...}}}`
/// with the envelope at depth 1, so `depth` objects are open at the deepest point.
fn nested_join(id: &str, depth: usize) -> String {
    let inner = depth - 2; // the envelope and the payload
    format!(
        r#"{{"type":"room:join","id":"{id}","payload":{{"room":"deep"{}{}}}}}"#,
        r#","a":{"a":0"#.repeat(inner),
        "}".repeat(inner)
    )
}

/// With the smallest reader stack the server accepts, the deepest envelope
/// the protocol accepts is served, and deeper ones (126 levels, under
/// serde_json's own limit of 128, once enough to overflow that stack) get
/// `bad_request` instead of taking the process down.
#[test]
fn deep_nesting_gets_bad_request_even_on_the_smallest_reader_stack() {
    const MAX_DEPTH: usize = 32; // docs/protocol.md, "Liveness and limits"
    let mut server = Wshub::start(&["--reader-stack-size", "65536"]);
    let mut c = server.client();
    c.send_text(&nested_join("deepest", MAX_DEPTH));
    let ack = c.json();
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!("deepest")), "{ack}");
    expect_error(&mut c, &nested_join("one-more", MAX_DEPTH + 1), "bad_request", None);
    expect_error(&mut c, &nested_join("deep", 126), "bad_request", None);
    // Arrays count too; brackets inside strings do not.
    let arrays =
        format!(r#"{{"type":"ping","id":"arr","payload":{{"x":{}{}}}}}"#, "[".repeat(40), "]".repeat(40));
    expect_error(&mut c, &arrays, "bad_request", None);
    c.send_text(&format!(r#"{{"type":"ping","id":"str","payload":{{"x":"{}\\\"[{{"}}}}"#, "[{".repeat(200)));
    let ack = c.json();
    assert_eq!((&ack["type"], &ack["id"]), (&json!("ack"), &json!("str")), "{ack}");
    assert!(server.child.try_wait().unwrap().is_none(), "the server died");
}
