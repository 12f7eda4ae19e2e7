//! The application's join hook may answer a third way (Rust
//! `Handler::on_join_as` → `Membership::ReadOnly`): the client joins and
//! receives, but its publishes, binary publishes and typing get `error
//! forbidden`, in that room only; what others publish still reaches it.

mod admission_common;
mod protocol_common;

use protocol_common::Client;
use serde_json::json;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, Membership, ServerHandle};

/// Rooms named `stage:*` take everyone as a read-only member; `closed` no one.
struct Stage;

impl Handler for Stage {
    fn on_join_as(&self, _: &ServerHandle, _: ConnId, _: Option<&str>, room: &str) -> Membership {
        match room {
            "closed" => Membership::Refused,
            r if r.starts_with("stage:") => Membership::ReadOnly,
            _ => Membership::Member,
        }
    }
}

#[test]
fn a_read_only_member_receives_but_cannot_publish() {
    let handler = ProtocolHandler::with_app(ProtocolConfig::default(), Stage);
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler.clone()).expect("start");
    let addr = server.local_addr();
    let mut viewer = Client::connect(addr, &[]);
    let refused = viewer.request("room:join", json!({"room": "closed"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    viewer.join("stage:1");
    viewer.join("lobby");
    for (kind, payload) in [
        ("room:publish", json!({"room": "stage:1", "data": 1})),
        ("typing:start", json!({"room": "stage:1"})),
    ] {
        let reply = viewer.request(kind, payload);
        assert_eq!(reply["payload"]["code"], "forbidden", "{kind}: {reply}");
    }
    let mut bin = vec![0x01, 0, 7];
    bin.extend_from_slice(b"stage:1body");
    viewer.send_binary(&bin);
    assert_eq!(viewer.json()["payload"]["code"], "forbidden");
    // Read-only in stage:1 only.
    viewer.ok("room:publish", json!({"room": "lobby", "data": 1}));

    // What others publish there (the server side here) still reaches it.
    handler.publish(&server, "stage:1", &json!({"n": 2})).expect("publish");
    let msg = viewer.json();
    assert_eq!((msg["type"].as_str(), msg["payload"]["data"]["n"].as_u64()), (Some("room:message"), Some(2)));
    server.stop();
}

/// A token for `sub` "viewer" with these caps, signed with `secret`.
fn token(secret: &str, caps: serde_json::Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = json!({"sub": "viewer", "exp": exp, "caps": caps});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

#[test]
fn a_read_only_member_keeps_following_its_token_for_the_other_rights() {
    const SECRET: &str = "read-only-refresh-secret";
    let handler = ProtocolHandler::with_app(ProtocolConfig::default().jwt_secret(SECRET), Stage);
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler).expect("start");
    let all = json!([{"rooms": ["stage:*"], "allow": ["join", "publish", "presence", "history"]}]);
    let query = format!("?access_token={}", token(SECRET, all));
    let outcome =
        admission_common::upgrade(admission_common::ip("127.0.0.1"), server.local_addr(), &query, &[], &[]);
    let (mut viewer, _) = outcome.open();
    viewer.join("stage:1");
    viewer.ok("presence:get", json!({"room": "stage:1"}));
    // A refresh that takes presence away takes it away from a read-only member too.
    let fewer = json!([{"rooms": ["stage:*"], "allow": ["join", "publish"]}]);
    viewer.ok("auth:refresh", json!({"token": token(SECRET, fewer)}));
    let reply = viewer.request("presence:get", json!({"room": "stage:1"}));
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    // And it stays read-only whatever the token grants.
    let reply = viewer.request("room:publish", json!({"room": "stage:1", "data": 1}));
    assert_eq!(reply["payload"]["code"], "forbidden", "{reply}");
    server.stop();
}
