//! An `auth:refresh` whose new `rooms` claim no longer allows a joined room
//! leaves that room at once: the client gets `room:left {room, reason:
//! "forbidden"}` (PROTOCOL.md 1.2), the other members `presence:leave`, and
//! nothing more of the room (messages or typing) reaches it.

mod admission_common;
mod protocol_common;

use std::time::{SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade};
use protocol_common::{Client, Wshub};
use serde_json::{json, Value};

const SECRET: &str = "narrowing-secret";

fn token(user: &str, rooms: Option<Value>) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let mut claims = json!({"sub": user, "exp": exp});
    if let Some(rooms) = rooms {
        claims["rooms"] = rooms;
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn client(server: &Wshub, token: &str) -> Client {
    upgrade(ip("127.0.0.1"), server.addr, &format!("?access_token={token}"), &[], &["wshub.v1.json"]).open().0
}

#[test]
fn a_refresh_that_no_longer_allows_a_room_leaves_it_with_room_left() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let mut alice = client(&server, &token("alice", Some(json!(["a", "b"]))));
    alice.join("a");
    alice.join("b");
    let mut bob = client(&server, &token("bob", None));
    bob.join("a");
    bob.join("b");
    for _ in 0..2 {
        assert_eq!(alice.json()["type"], "presence:join");
    }

    let id = alice.send_request("auth:refresh", json!({"token": token("alice", Some(json!(["a"])))}));
    let left = alice.json();
    assert_eq!(left["type"], "room:left", "{left}");
    assert_eq!(left["payload"], json!({"room": "b", "reason": "forbidden"}));
    let ack = alice.json();
    assert_eq!((ack["type"].as_str(), ack["id"].as_str()), (Some("ack"), Some(id.as_str())), "{ack}");

    // The others see alice go; nothing of b reaches her any more.
    let gone = bob.json();
    assert_eq!((gone["type"].as_str(), &gone["payload"]["room"]), (Some("presence:leave"), &json!("b")));
    bob.ok("typing:start", json!({"room": "b"}));
    bob.ok("room:publish", json!({"room": "b", "data": "secret"}));
    bob.ok("room:publish", json!({"room": "a", "data": "still yours"}));
    let next = alice.json();
    assert_eq!(
        (next["type"].as_str(), &next["payload"]["room"]),
        (Some("room:message"), &json!("a")),
        "{next}"
    );
    alice.assert_nothing_pending();
    let refused = alice.request("room:publish", json!({"room": "b", "data": 1}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    // A refresh that allows every joined room leaves none.
    alice.ok("auth:refresh", json!({"token": token("alice", Some(json!(["a", "c"])))}));
    alice.assert_nothing_pending();
}
