//! wshub::client and permessage-deflate (RFC 7692): against the real `wshub`
//! binary it offers the extension and messages cross compressed both ways,
//! intact; against a server that does not take it, it works as before; and
//! against a hand-framed server (every bit the test's to choose, compressed
//! with flate2) it compresses what it sends over its minimum, inflates what
//! it gets, and refuses RSV1 without the extension (1002), bad DEFLATE data
//! (1007) and a compression bomb (1009, within `max_message_bytes`).

mod client_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use client_common::fake::{self, Fake};
use client_common::{metric, metric_reaching, wait_for, Server, WAIT};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use serde_json::{json, Value};
use wshub::client::{Client, Event, Options};

/// What the client must offer.
const OFFER: &str =
    "permessage-deflate; client_no_context_takeover; server_no_context_takeover; client_max_window_bits";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// About 10 KB of chat-like JSON.
fn chat_json() -> Value {
    let lines: Vec<Value> = (0..180)
        .map(|i| json!({"user": format!("user{}", i % 7), "text": format!("message number {i} about the weather")}))
        .collect();
    json!({"lines": lines})
}

fn message_data(client: &Client, seen: &mut Vec<Event>) -> Value {
    wait_for(client, seen, |e| match e {
        Event::Message { data, .. } => Some(data.clone()),
        _ => None,
    })
}

#[test]
fn the_client_and_wshub_agree_and_messages_cross_compressed_both_ways() {
    let server = Server::start(&["--compression", "on", "--compression-min-bytes", "128"]);
    let url = format!("ws://{}/ws", server.addr);
    let sender = Client::connect(&url, Options::default()).expect("connect");
    let receiver = Client::connect(&url, Options::default()).expect("connect");
    let plain = Client::connect(&url, Options::default().compression(false)).expect("connect");
    for c in [&sender, &receiver, &plain] {
        c.join("r").expect("join");
    }
    let before = metric(server.addr, "wshub_compressed_frames_total");
    let big = chat_json();
    assert!(big.to_string().len() > 10_000);
    // The publish goes compressed (the server inflates it); the room
    // message goes compressed to the receiver and plain to the other.
    sender.publish("r", &big).expect("publish");
    let small = json!("hi");
    sender.publish("r", &small).expect("publish");
    let (mut seen, mut seen_plain) = (Vec::new(), Vec::new());
    assert_eq!(message_data(&receiver, &mut seen), big);
    assert_eq!(message_data(&receiver, &mut seen), small);
    assert_eq!(message_data(&plain, &mut seen_plain), big);
    assert_eq!(message_data(&plain, &mut seen_plain), small);
    let frames = metric_reaching(server.addr, "wshub_compressed_frames_total", before + 1) - before;
    assert_eq!(frames, 1, "the big message, to the one member that agreed");
    let packed = metric(server.addr, "wshub_compressed_bytes_total");
    let unpacked = metric(server.addr, "wshub_compressed_plain_bytes_total");
    assert!(packed * 3 < unpacked, "{packed} bytes for {unpacked}");
    // A reply over the minimum (the server compresses it on the writer's side).
    let pong = sender.request("ping", json!("x".repeat(3000))).expect("ping");
    assert_eq!(pong, json!("x".repeat(3000)));
    assert_eq!(metric_reaching(server.addr, "wshub_compressed_frames_total", before + 2) - before, 2);
}

#[test]
fn a_server_that_does_not_take_the_extension_gets_plain_frames() {
    // tungstenite's server: no extensions, and any RSV1 frame fails it.
    let big = chat_json();
    let expected = big.clone();
    let server = Fake::start(move |stream, ctx| {
        let Some(mut ws) = fake::upgrade(stream) else { return };
        fake::connected(&mut ws, "p", 30_000, 1 << 20);
        let Some(_) = fake::ack_join(&mut ws, "e") else { return };
        let Some(publish) = fake::request(&mut ws) else {
            let _ = ctx.notes.send("no publish (a compressed frame?)".into());
            return;
        };
        let intact = publish["payload"]["data"] == expected;
        fake::ack(&mut ws, &publish, json!({"seq": 1}));
        let message = json!({"type": "room:message", "payload": {"room": "r", "seq": 1, "from": "x", "data": expected}});
        fake::send(&mut ws, &message);
        let _ = ctx.notes.send(format!("intact {intact}"));
        std::thread::sleep(Duration::from_secs(2));
    });
    let options = Options::default().backoff(Duration::from_secs(5), Duration::from_secs(10));
    let client = Client::connect(&server.url(), options).expect("connect");
    client.join("r").expect("join");
    client.publish_nowait("r", &big).expect("publish");
    assert_eq!(server.note(WAIT).as_deref(), Some("intact true"));
    assert_eq!(message_data(&client, &mut Vec::new()), big);
}

/// A server that frames by hand. Reads the upgrade request and answers 101
/// with `answer` as its extensions (none when `None`); the request's offer.
fn upgrade(stream: &mut TcpStream, answer: Option<&str>) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).ok()?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let accept = tungstenite::handshake::derive_accept_key(header("sec-websocket-key")?.as_bytes());
    let ext = answer.map(|a| format!("Sec-WebSocket-Extensions: {a}\r\n")).unwrap_or_default();
    write!(
        stream,
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: wshub.v1.json\r\n{ext}\r\n"
    )
    .ok()?;
    Some(header("sec-websocket-extensions").unwrap_or_default())
}

/// One unmasked frame with this first header byte.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend((n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend((n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

fn send_frame(stream: &mut TcpStream, first: u8, payload: &[u8]) {
    let _ = stream.write_all(&frame(first, payload));
}

fn send_json(stream: &mut TcpStream, value: &Value) {
    send_frame(stream, 0x81, value.to_string().as_bytes());
}

fn connected(stream: &mut TcpStream) {
    let payload = json!({"clientId": "h", "protocol": 1, "heartbeatMs": 30_000, "maxMessageBytes": 1 << 20});
    send_json(stream, &json!({"type": "connected", "payload": payload}));
}

/// The client's next frame: (first header byte, unmasked payload).
fn read_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    stream.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut n = [0u8; 2];
            stream.read_exact(&mut n).ok()?;
            u16::from_be_bytes(n) as usize
        }
        127 => {
            let mut n = [0u8; 8];
            stream.read_exact(&mut n).ok()?;
            u64::from_be_bytes(n) as usize
        }
        n => n as usize,
    };
    let mut mask = [0u8; 4];
    stream.read_exact(&mut mask).ok()?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).ok()?;
    payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    Some((head[0], payload))
}

/// The code of the client's close frame (other frames skipped).
fn close_code(stream: &mut TcpStream) -> Option<u16> {
    for _ in 0..100 {
        let (first, payload) = read_frame(stream)?;
        if first & 0x0f == 0x8 {
            return Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
    }
    None
}

fn compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    out.truncate(out.len() - 4);
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend([0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(1 << 20);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync).unwrap();
    out
}

/// A hand-framed server running `script` after the upgrade (answered with
/// `answer`) and `connected`; the script's note goes to the test.
fn hand_framed(
    answer: Option<&'static str>,
    script: impl Fn(&mut TcpStream) -> String + Send + Sync + 'static,
) -> Fake {
    Fake::start(move |mut stream, ctx| {
        let Some(offer) = upgrade(&mut stream, answer) else { return };
        if ctx.n > 0 {
            return;
        }
        let _ = ctx.notes.send(format!("offer {offer}"));
        connected(&mut stream);
        let _ = ctx.notes.send(script(&mut stream));
    })
}

/// Connects a client that reconnects only after a long while.
fn client_of(server: &Fake) -> Client {
    let options = Options::default().backoff(Duration::from_secs(10), Duration::from_secs(20));
    let client = Client::connect(&server.url(), options).expect("connect");
    assert_eq!(server.note(WAIT), Some(format!("offer {OFFER}")));
    client
}

#[test]
fn over_its_minimum_the_client_compresses_and_it_inflates_what_it_gets() {
    let text = "y".repeat(5000);
    let compressed_message = json!({"type": "room:message",
        "payload": {"room": "r", "seq": 1, "from": "x", "data": {"text": text}}});
    let server = hand_framed(Some(ANSWER), move |stream| {
        let Some((first, join)) = read_frame(stream) else { return "no join".into() };
        let join: Value = serde_json::from_slice(&join).unwrap();
        let ack = json!({"type": "ack", "id": join["id"], "payload": {"room": "r", "seq": 0, "members": [], "epoch": "e"}});
        send_json(stream, &ack);
        let Some((first_publish, publish)) = read_frame(stream) else { return "no publish".into() };
        let publish: Value = serde_json::from_slice(&inflate(&publish)).unwrap();
        send_json(stream, &json!({"type": "ack", "id": publish["id"], "payload": {"seq": 1}}));
        // In two fragments, a ping between them.
        let packed = compress(compressed_message.to_string().as_bytes());
        send_frame(stream, 0x41, &packed[..20]);
        send_frame(stream, 0x89, b"ping");
        send_frame(stream, 0x80, &packed[20..]);
        let intact = publish["payload"]["data"] == chat_json();
        let pong = read_frame(stream).map(|(first, _)| first);
        format!("join {first:#x} publish {first_publish:#x} intact {intact} then {pong:?}")
    });
    let client = client_of(&server);
    client.join("r").expect("join");
    client.publish("r", &chat_json()).expect("publish");
    assert_eq!(
        server.note(WAIT).as_deref(),
        Some("join 0x81 publish 0xc1 intact true then Some(138)"),
        "a short join goes plain, a 10 KB publish compressed (RSV1), and the ping is answered"
    );
    assert_eq!(message_data(&client, &mut Vec::new()), json!({"text": "y".repeat(5000)}));
}

/// A client of a hand-framed server that sends `bad` after `connected`:
/// the code of the close the server gets, and the code the client reports.
fn refused(answer: Option<&'static str>, bad: Vec<u8>) -> (Option<u16>, u16) {
    let server = hand_framed(answer, move |stream| {
        let _ = stream.write_all(&bad);
        format!("{:?}", close_code(stream))
    });
    let client = client_of(&server);
    let code = wait_for(&client, &mut Vec::new(), |e| match e {
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    });
    let sent = server.note(WAIT).and_then(|n| n.strip_prefix("Some(")?.strip_suffix(')')?.parse().ok());
    (sent, code)
}

#[test]
fn rsv1_without_the_extension_is_refused_1002() {
    let (sent, reported) = refused(None, frame(0xC1, &compress(b"{\"type\":\"x\"}")));
    assert_eq!((sent, reported), (Some(1002), 1002));
}

#[test]
fn invalid_deflate_data_is_refused_1007() {
    let (sent, reported) = refused(Some(ANSWER), frame(0xC1, &[0xff; 16]));
    assert_eq!((sent, reported), (Some(1007), 1007));
}

#[test]
fn a_compression_bomb_stops_at_max_message_bytes_1009() {
    // 64 MiB of spaces in a JSON string: some 64 KiB compressed, past the
    // client's 1 MiB limit (and the announced one) once inflated.
    let mut bomb = b"{\"type\":\"x\",\"payload\":\"".to_vec();
    bomb.resize(64 << 20, b' ');
    let packed = compress(&bomb);
    drop(bomb);
    assert!(packed.len() < 1 << 20, "{}", packed.len());
    let (sent, reported) = refused(Some(ANSWER), frame(0xC1, &packed));
    assert_eq!((sent, reported), (Some(1009), 1009));
}

#[test]
fn a_window_bits_value_out_of_the_rfc_fails_the_connect_with_a_clear_error() {
    for answer in [
        "permessage-deflate; server_no_context_takeover; client_max_window_bits=+9",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=09",
    ] {
        let server = hand_framed(Some(answer), |_| String::new());
        let options = Options::default().backoff(Duration::from_secs(10), Duration::from_secs(20));
        let Err(error) = Client::connect(&server.url(), options) else { panic!("the connect did not fail") };
        let param = answer.rsplit("; ").next().unwrap_or_default();
        assert!(error.to_string().contains(param), "{param}: {error}");
    }
}
