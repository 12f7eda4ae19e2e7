//! The backend HTTP API against the real binary (PROTOCOL.md 1.1, "Backend
//! HTTP API"): a publish reaches WebSocket members and SSE streams with the
//! room's next seq and is in history (a client rejoining with `since`
//! recovers it); broadcast to several rooms; 401 without or with a wrong key;
//! 400 for bad bodies; 413 past the max message size and 411 for chunked
//! bodies; 404 with the API off; the key from WSHUB_API_KEY.

mod api_common;
mod protocol_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use api_common::{api, raw_http, Sse};
use protocol_common::{Frame, Wshub};
use serde_json::json;

const KEY: &str = "backend-key-123";

#[test]
fn a_publish_reaches_members_and_streams_with_the_next_seq_and_is_recovered_from_history() {
    let server = Wshub::start(&["--api-key", KEY]);
    let mut member = server.client();
    member.join("orders");
    let ack = member.ok("room:publish", json!({"room": "orders", "data": "from a client"}));
    assert_eq!(ack["seq"], 1);
    let mut stream = Sse::open(server.addr, "room=orders", &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    assert!(stream.head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{}", stream.head);
    let connected = stream.expect("connected");
    assert_eq!(connected.data["seq"], 1);
    assert_eq!(connected.data["room"], "orders");

    let (status, body) = api(
        server.addr,
        "POST",
        "/api/publish",
        Some(KEY),
        r#"{"room":"orders","data":{"status":"shipped"}}"#,
    );
    assert_eq!((status, &body), (200, &json!({"room": "orders", "seq": 2})));

    let Frame::Json(m) = member.frame() else { panic!("expected the message") };
    assert_eq!(m["type"], "room:message");
    assert_eq!(
        m["payload"],
        json!({"room": "orders", "seq": 2, "from": "api", "data": {"status": "shipped"}})
    );
    let e = stream.expect("room:message");
    assert_eq!(e.id.as_deref(), Some("2"));
    assert_eq!(e.data, json!({"room": "orders", "seq": 2, "from": "api", "data": {"status": "shipped"}}));

    // In history: the API reads it, and a client that last saw seq 1 recovers it.
    let (status, history) = api(server.addr, "GET", "/api/history?room=orders&since=1", Some(KEY), "");
    assert_eq!(status, 200);
    assert_eq!(history["messages"], json!([{"seq": 2, "from": "api", "data": {"status": "shipped"}}]));
    let mut late = server.client();
    let id = late.send_request("room:join", json!({"room": "orders", "since": 1}));
    let Frame::Json(replayed) = late.frame() else { panic!() };
    assert_eq!(replayed["payload"]["seq"], 2);
    assert_eq!(replayed["payload"]["from"], "api");
    let Frame::Json(ack) = late.frame() else { panic!() };
    assert_eq!((ack["id"].as_str(), &ack["payload"]["recovered"]), (Some(id.as_str()), &json!(true)));

    // An idempotent key: the second publish sends nothing and answers the first seq.
    let body = r#"{"room":"orders","data":1,"key":"order-77"}"#;
    let first = api(server.addr, "POST", "/api/publish", Some(KEY), body);
    assert_eq!(first.1["seq"], 3, "{first:?}");
    assert_eq!(
        api(server.addr, "POST", "/api/publish", Some(KEY), body).1,
        json!({"room": "orders", "seq": 3, "duplicate": true})
    );
    let Frame::Json(joined) = member.frame() else { panic!() };
    assert_eq!(joined["type"], "presence:join", "the late client's join comes first");
    let Frame::Json(m) = member.frame() else { panic!() };
    assert_eq!(m["payload"]["seq"], 3);
    member.assert_nothing_pending();

    // Presence and the room list.
    let (_, presence) = api(server.addr, "GET", "/api/presence?room=orders", Some(KEY), "");
    assert_eq!(presence["members"].as_array().map(Vec::len), Some(2), "{presence}");
    let (_, rooms) = api(server.addr, "GET", "/api/rooms", Some(KEY), "");
    assert_eq!(rooms["rooms"], json!([{"room": "orders", "members": 2, "seq": 3}]));
}

#[test]
fn a_broadcast_publishes_into_several_rooms_each_with_its_own_seq() {
    let server = Wshub::start(&["--api-key", KEY]);
    let mut a = server.client();
    a.join("a");
    let mut b = server.client();
    b.join("b");
    a.ok("room:publish", json!({"room": "a", "data": 0}));
    let (status, body) =
        api(server.addr, "POST", "/api/broadcast", Some(KEY), r#"{"rooms":["a","b","c"],"data":"hello"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"results": [{"room": "a", "seq": 2}, {"room": "b", "seq": 1}, {"room": "c", "seq": 1}]})
    );
    let Frame::Json(m) = a.frame() else { panic!() };
    assert_eq!(m["payload"], json!({"room": "a", "seq": 2, "from": "api", "data": "hello"}));
    let Frame::Json(m) = b.frame() else { panic!() };
    assert_eq!(m["payload"], json!({"room": "b", "seq": 1, "from": "api", "data": "hello"}));
}

#[test]
fn a_missing_or_wrong_key_is_401_and_bad_bodies_are_400() {
    let server = Wshub::start(&["--api-key", KEY]);
    let publish = r#"{"room":"r","data":1}"#;
    for key in [None, Some("wrong"), Some("backend-key-12"), Some("backend-key-1234")] {
        let (status, body) = api(server.addr, "POST", "/api/publish", key, publish);
        assert_eq!(status, 401, "{key:?}");
        assert!(body["error"]["code"].is_string(), "{body}");
    }
    // X-API-Key works as well as Authorization.
    let raw = format!(
        "POST /api/publish HTTP/1.1\r\nX-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n{publish}",
        publish.len()
    );
    assert_eq!(raw_http(server.addr, raw.as_bytes()).0, 200);

    let bad = [
        ("/api/publish", ""),
        ("/api/publish", "not json"),
        ("/api/publish", "[1,2]"),
        ("/api/publish", r#"{"room":"r"}"#),
        ("/api/publish", r#"{"room":"","data":1}"#),
        ("/api/publish", r#"{"room":"a\u0001b","data":1}"#),
        ("/api/publish", r#"{"room":"r","data":1,"key":""}"#),
        ("/api/publish", r#"{"room":"r","data":1,"surprise":true}"#),
        ("/api/broadcast", r#"{"rooms":[],"data":1}"#),
        ("/api/broadcast", r#"{"rooms":"r","data":1}"#),
        ("/api/disconnect", r#"{}"#),
        ("/api/disconnect", r#"{"user":"u","clientId":"1"}"#),
        ("/api/disconnect", r#"{"user":"u","code":1005}"#),
        ("/api/ban", r#"{"user":"u","seconds":0}"#),
        ("/api/ban", r#"{"user":"u","seconds":-5}"#),
        ("/api/unban", r#"{"name":"u"}"#),
    ];
    for (path, body) in bad {
        let (status, answer) = api(server.addr, "POST", path, Some(KEY), body);
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_request", "{path} {body}: {answer}");
        assert!(answer["error"]["message"].is_string());
    }
    let (status, _) = api(server.addr, "GET", "/api/history?room=r&since=x", Some(KEY), "");
    assert_eq!(status, 400);
    assert_eq!(api(server.addr, "GET", "/api/publish", Some(KEY), "").0, 405);
    assert_eq!(api(server.addr, "POST", "/api/nothing", Some(KEY), "{}").0, 404);
    // The server is fine after all of it.
    assert_eq!(api(server.addr, "POST", "/api/publish", Some(KEY), publish).1["seq"], 2);
}

#[test]
fn bodies_are_bounded_by_the_max_message_size_and_read_by_length_only() {
    let server = Wshub::start(&["--api-key", KEY, "--max-message-size", "1000"]);
    let big = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(1000));
    assert_eq!(api(server.addr, "POST", "/api/publish", Some(KEY), &big).0, 413);
    let chunked = format!(
        "POST /api/publish HTTP/1.1\r\nAuthorization: apikey {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n"
    );
    assert_eq!(raw_http(server.addr, chunked.as_bytes()).0, 411);
    let fits = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(900));
    assert_eq!(api(server.addr, "POST", "/api/publish", Some(KEY), &fits).0, 200);
}

#[test]
fn the_api_is_404_without_a_key_and_the_key_may_come_from_the_environment() {
    let off = Wshub::start(&[]);
    for (method, path) in [("POST", "/api/publish"), ("GET", "/api/rooms"), ("POST", "/api/ban")] {
        assert_eq!(api(off.addr, method, path, Some(KEY), r#"{"room":"r","data":1}"#).0, 404, "{path}");
    }
    let from_env = Wshub::start_with_env(&[], &[("WSHUB_API_KEY", KEY)]);
    assert_eq!(api(from_env.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"r","data":1}"#).0, 200);
    assert_eq!(api(from_env.addr, "POST", "/api/publish", Some("other"), r#"{"room":"r","data":1}"#).0, 401);
}

#[test]
fn a_body_that_never_finishes_arriving_gets_408_at_the_handshake_deadline() {
    use std::io::{Read, Write};
    let server = Wshub::start(&["--api-key", KEY, "--handshake-timeout-ms", "300"]);
    let mut s = std::net::TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(protocol_common::WAIT)).unwrap();
    let started = std::time::Instant::now();
    s.write_all(
        format!("POST /api/publish HTTP/1.1\r\nX-API-Key: {KEY}\r\nContent-Length: 100\r\n\r\n{{\"room\"")
            .as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// A request head with `Content-Length: length` and no body yet.
fn head_only(addr: std::net::SocketAddr, method_path: &str, key: Option<&str>, length: usize) -> TcpStream {
    let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{method_path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: {length}\r\n\r\n").unwrap();
    s
}

/// What the server answered on `s`: (status, whole response).
fn answer(mut s: TcpStream) -> (u16, String) {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    (text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

#[test]
fn bodies_are_refused_on_the_head_where_none_is_taken() {
    // A long deadline: an answer must come from the head, not from a timeout.
    let server = Wshub::start(&["--api-key", KEY, "--handshake-timeout-ms", "30000"]);
    let started = Instant::now();
    let (status, text) = answer(head_only(server.addr, "POST /healthz", None, 1_048_575));
    assert_eq!(status, 413, "{text}");
    let (status, text) = answer(head_only(server.addr, "POST /api/publish", Some("wrong"), 1000));
    assert_eq!(status, 401, "{text}");
    let (status, text) = answer(head_only(server.addr, "POST /api/publish", None, 1000));
    assert_eq!(status, 401, "{text}");
    let (status, text) = answer(head_only(server.addr, "GET /", None, 10));
    assert_eq!(status, 413, "{text}");
    assert!(started.elapsed() < Duration::from_secs(15), "answered after {:?}", started.elapsed());
    let off = Wshub::start(&["--handshake-timeout-ms", "30000"]);
    assert_eq!(answer(head_only(off.addr, "POST /api/publish", Some(KEY), 1000)).0, 404, "the API is off");
}

#[test]
fn bodies_in_flight_share_one_budget() {
    let server = Wshub::start(&["--api-key", KEY, "--request-body-budget", "100000"]);
    let body = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(59_000));
    let mut first = head_only(server.addr, "POST /api/publish", Some(KEY), body.len());
    let deadline = Instant::now() + Duration::from_secs(10);
    while protocol_common::metric(server.addr, "wshub_request_body_bytes") < body.len() as u64 {
        assert!(Instant::now() < deadline, "the first body was never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, text) = answer(head_only(server.addr, "POST /api/publish", Some(KEY), body.len()));
    assert_eq!(status, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    first.write_all(body.as_bytes()).unwrap();
    let (status, text) = answer(first);
    assert_eq!(status, 200, "{text}");
    assert_eq!(api(server.addr, "POST", "/api/publish", Some(KEY), &body).0, 200, "the budget is back");
    assert_eq!(protocol_common::metric(server.addr, "wshub_request_body_bytes"), 0);
}

#[test]
fn a_body_larger_than_the_whole_budget_is_413_not_a_retry_that_never_helps() {
    let server = Wshub::start(&["--api-key", KEY, "--request-body-budget", "1000"]);
    let body = format!(r#"{{"room":"r","data":"{}"}}"#, "x".repeat(2000));
    // Nothing else in flight: it can never fit, so Retry-After would be a lie.
    let (status, text) = answer(head_only(server.addr, "POST /api/publish", Some(KEY), body.len()));
    assert_eq!(status, 413, "{text}");
    assert_eq!(api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"r","data":"x"}"#).0, 200);
}
