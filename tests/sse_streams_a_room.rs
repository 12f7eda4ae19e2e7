//! Server-Sent Events against the real binary (PROTOCOL.md 1.1): every
//! message carries `id` = seq; a reconnect with `Last-Event-ID` (or `since`)
//! gets exactly the missed ones, and nothing from another epoch (given as
//! `<epoch>:<seq>`, or a bare seq past the room's); a binary publish arrives
//! base64; `: ping`
//! keeps the stream alive; a stream whose client left is closed and its
//! threads are gone; streams count against the per-IP cap and in
//! `/metrics`; Origin applies; a stop ends every stream.

mod admission_common;
mod api_common;
mod protocol_common;

use std::time::Duration;

use admission_common::{ip, tcp_from};
use api_common::{api, eventually, threads_of, Sse};
use protocol_common::{get, metric, Wshub};
use serde_json::json;

const KEY: &str = "k";

fn publish(server: &Wshub, room: &str, data: serde_json::Value) -> u64 {
    let body = json!({"room": room, "data": data}).to_string();
    let (status, answer) = api(server.addr, "POST", "/api/publish", Some(KEY), &body);
    assert_eq!(status, 200, "{answer}");
    answer["seq"].as_u64().unwrap()
}

#[test]
fn messages_carry_their_seq_as_id_and_a_reconnect_gets_exactly_the_missed_ones() {
    let server = Wshub::start(&["--api-key", KEY]);
    let mut stream = Sse::open(server.addr, "room=feed", &[]);
    let connected = stream.expect("connected");
    assert_eq!(connected.data["seq"], 0);
    assert!(connected.data["clientId"].is_string() && connected.data["epoch"].is_string());
    let epoch = connected.data["epoch"].as_str().unwrap().to_owned();
    let id = |seq: u64| Some(seq.to_string());
    for i in 1..=3 {
        assert_eq!(publish(&server, "feed", json!({"n": i})), i);
        let e = stream.expect("room:message");
        assert_eq!(e.id, id(i));
        assert_eq!(e.data, json!({"room": "feed", "seq": i, "from": "api", "data": {"n": i}}));
    }
    drop(stream);
    for i in 4..=6 {
        publish(&server, "feed", json!({"n": i}));
    }
    // What an EventSource sends when it reconnects.
    let mut again = Sse::open(server.addr, "room=feed", &[("Last-Event-ID", "4")]);
    let connected = again.expect("connected");
    assert_eq!((&connected.data["recovered"], &connected.data["seq"]), (&json!(true), &json!(6)));
    for i in 5..=6 {
        assert_eq!(again.expect("room:message").id, id(i));
    }
    publish(&server, "feed", json!("live"));
    let live = again.expect("room:message");
    assert_eq!((live.id, &live.data["data"]), (id(7), &json!("live")), "exactly once, in order");
    // A client that kept the epoch of `connected` may give it with the seq.
    let mut with_epoch = Sse::open(server.addr, "room=feed", &[("Last-Event-ID", &format!("{epoch}:6"))]);
    assert_eq!(with_epoch.expect("connected").data["recovered"], true);
    assert_eq!(with_epoch.expect("room:message").id, id(7));
    // Another epoch's seq (the room was made again since) recovers nothing.
    let mut stale = Sse::open(server.addr, "room=feed", &[("Last-Event-ID", "0123456789abcdef:4")]);
    let connected = stale.expect("connected");
    assert_eq!(connected.data["recovered"], false, "{connected:?}");
    // Nor does a bare seq past the room's: only a lost epoch had it.
    let mut ahead = Sse::open(server.addr, "room=feed", &[("Last-Event-ID", "8")]);
    let connected = ahead.expect("connected");
    assert_eq!((&connected.data["recovered"], &connected.data["seq"]), (&json!(false), &json!(7)));
    publish(&server, "feed", json!("next"));
    let next = ahead.expect("room:message");
    assert_eq!((next.id, &next.data["data"]), (id(8), &json!("next")), "live only, no replay");

    // `since` for clients that are not browsers.
    let mut by_query = Sse::open(server.addr, "room=feed&since=6", &[]);
    assert_eq!(by_query.expect("connected").data["recovered"], true);
    assert_eq!(by_query.expect("room:message").id, id(7));
    // A bad recovery point or room is a 400, not a stream.
    assert_eq!(Sse::open(server.addr, "room=feed&since=x", &[]).status, 400);
    assert_eq!(Sse::open(server.addr, "since=1", &[]).status, 400);
}

#[test]
fn a_binary_publish_arrives_base64_and_keep_alives_flow() {
    let server = Wshub::start(&["--api-key", KEY, "--heartbeat-ms", "200"]);
    let mut stream = Sse::open(server.addr, "room=bin", &[]);
    stream.expect("connected");
    let mut member = server.client();
    member.join("bin");
    let mut frame = vec![0x01, 0, 3];
    frame.extend_from_slice(b"bin");
    frame.extend_from_slice(&[0xff, 0xfe, 0x00, b'h', b'i']);
    member.send_binary(&frame);
    let e = stream.expect("room:message");
    assert_eq!(e.id.as_deref(), Some("1"));
    assert_eq!(e.data["binary"], "//4AaGk=");
    assert_eq!(e.data["seq"], 1);
    assert_eq!(e.data["from"], member_id(&server, "bin"));
    // A replay from history carries it base64 too.
    let mut replay = Sse::open(server.addr, "room=bin&since=0", &[]);
    replay.expect("connected");
    assert_eq!(replay.expect("room:message").data["binary"], "//4AaGk=");
    // Heartbeats: comments the stream reader skips.
    std::thread::sleep(Duration::from_millis(700));
    publish(&server, "bin", json!(1));
    stream.expect("room:message");
    assert!(stream.pings >= 2, "only {} pings", stream.pings);
}

/// The clientId of the one WebSocket member of `room`.
fn member_id(server: &Wshub, room: &str) -> String {
    let (_, presence) = api(server.addr, "GET", &format!("/api/presence?room={room}"), Some(KEY), "");
    presence["members"][0]["clientId"].as_str().unwrap().to_owned()
}

#[test]
fn a_stream_whose_client_left_is_closed_and_its_threads_are_gone() {
    let server = Wshub::start(&["--api-key", KEY]);
    let pid = server.child.id();
    let idle = threads_of(pid);
    let mut streams: Vec<Sse> = (0..5).map(|_| Sse::open(server.addr, "room=gone", &[])).collect();
    for s in &mut streams {
        s.expect("connected");
    }
    assert_eq!(metric(server.addr, "wshub_sse_streams"), 5);
    assert_eq!(metric(server.addr, "wshub_connections"), 5);
    assert_eq!(metric(server.addr, "wshub_rooms"), 0, "the streams' hub room is not a room of its own");
    // What went to them went straight to their sockets: no writer threads.
    eventually("a reader per stream", || threads_of(pid) == idle + 5);
    drop(streams);
    eventually("every stream's threads exit", || threads_of(pid) == idle);
    assert_eq!(metric(server.addr, "wshub_sse_streams"), 0);
    assert_eq!(metric(server.addr, "wshub_connections"), 0);
    // The room kept its history, nothing else.
    assert_eq!(publish(&server, "gone", json!(1)), 1);
}

#[test]
fn streams_count_against_the_per_ip_cap_and_origin_applies() {
    let server = Wshub::start(&[
        "--api-key",
        KEY,
        "--max-connections-per-ip",
        "2",
        "--allow-origin",
        "https://app.example.com",
    ]);
    let from = ip("127.0.0.3");
    let open = |headers: &[(&str, &str)]| {
        Sse::open_on(tcp_from(from, server.addr).unwrap(), server.addr, "room=c", headers)
    };
    // From another address: a refused socket holds its address's count
    // until the client has read the refusal and closed.
    let other = Sse::open_on(
        tcp_from(ip("127.0.0.4"), server.addr).unwrap(),
        server.addr,
        "room=c",
        &[("Origin", "https://evil.example.com")],
    );
    assert_eq!(other.status, 403);
    let mut first = open(&[("Origin", "https://app.example.com")]);
    let mut second = open(&[]);
    first.expect("connected");
    second.expect("connected");
    let third = open(&[]);
    assert_eq!(third.status, 503, "{}", third.head);
    // Another address is not affected.
    assert_eq!(Sse::open(server.addr, "room=c", &[]).status, 200);
}

#[test]
fn a_stop_ends_every_stream() {
    let mut server = Wshub::start(&["--api-key", KEY]);
    let mut streams: Vec<Sse> = (0..3).map(|_| Sse::open(server.addr, "room=s", &[])).collect();
    for s in &mut streams {
        s.expect("connected");
    }
    assert_eq!(get(server.addr, "/healthz").0, 200);
    server.sigterm();
    for s in &mut streams {
        assert!(s.ends_within(Duration::from_secs(10)), "a stream outlived the stop");
    }
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}
