//! A room message is the published data in a longer envelope (`room`,
//! `seq`, `from`, `ts`), so one published at the server's
//! `--max-message-size` reaches the members longer than the
//! `maxMessageBytes` the server announces. The Rust client with its default
//! options takes it, compressed or not, instead of closing with 1009 and,
//! rejoining with `since`, being sent it again on every reconnection.

mod client_common;

use client_common::{wait_for, Server, WAIT};
use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::Message;
use wshub::client::{Client, Event, Options};

/// The server's default `--max-message-size`.
const LIMIT: usize = 1 << 20;

/// Joins room `r` and publishes `data` to it in a frame of exactly [`LIMIT`]
/// bytes, from a plain connection; returns the server's reply.
fn publish_exactly_at_the_limit(url: &str, data: &str) -> Value {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("Sec-WebSocket-Protocol", "wshub.v1.json".parse().unwrap());
    let (mut ws, _) = tungstenite::connect(request).expect("connect the sender");
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    let _connected = ws.read().expect("connected");
    let mut reply_to = |frame: String, id: &str| {
        ws.send(Message::text(frame)).expect("send");
        for _ in 0..100 {
            if let Message::Text(t) = ws.read().expect("the reply") {
                let reply: Value = serde_json::from_str(&t).unwrap();
                if reply["id"] == id {
                    return reply;
                }
            }
        }
        panic!("no reply to {id}");
    };
    let joined = reply_to(json!({"type": "room:join", "id": "j", "payload": {"room": "r"}}).to_string(), "j");
    assert_eq!(joined["type"], "ack", "{joined}");
    let frame =
        json!({"type": "room:publish", "id": "1", "payload": {"room": "r", "data": data}}).to_string();
    assert_eq!(frame.len(), LIMIT);
    reply_to(frame, "1")
}

fn a_message_at_the_limit_arrives(compression: &str) {
    let server = Server::start(&["--compression", compression]);
    let url = format!("ws://{}/ws", server.addr);
    let receiver = Client::connect(&url, Options::default()).expect("connect");
    receiver.join("r").expect("join");
    let envelope = json!({"type": "room:publish", "id": "1", "payload": {"room": "r", "data": ""}});
    // Repetitive, so that it goes compressed where compression is agreed.
    let data = "chat ".repeat(LIMIT / 5)[..LIMIT - envelope.to_string().len()].to_owned();
    let reply = publish_exactly_at_the_limit(&url, &data);
    assert_eq!(reply["type"], "ack", "{reply}");
    let mut seen = Vec::new();
    let got = wait_for(&receiver, &mut seen, |e| match e {
        Event::Message { data, .. } => Some(Ok(data.as_str().map(str::len))),
        Event::Disconnected { code, reason } => Some(Err(format!("{code} {reason}"))),
        _ => None,
    });
    assert_eq!(got, Ok(Some(data.len())), "compression {compression}");
}

#[test]
fn a_room_message_published_at_the_limit_arrives_compressed() {
    a_message_at_the_limit_arrives("on");
}

#[test]
fn a_room_message_published_at_the_limit_arrives_plain() {
    a_message_at_the_limit_arrives("off");
}
