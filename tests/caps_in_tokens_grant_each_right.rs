//! The `caps` claim (PROTOCOL.md 1.2, "Namespaces and rights") against the
//! real binary: each right (`join`, `publish`, `presence`, `history`) on its
//! own; a member without `publish` is read-only (publish, binary publish and
//! typing get `error forbidden`) while the backend API still reaches it;
//! `caps` replaces `rooms`; a malformed `caps` claim is refused at the upgrade.

mod admission_common;
mod api_common;
mod protocol_common;

use std::time::{SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade};
use api_common::api;
use protocol_common::{Client, Wshub};
use serde_json::{json, Value};

const SECRET: &str = "caps-test-secret";
const KEY: &str = "caps-test-key";

fn token(claims: Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let mut claims = claims;
    claims["exp"] = json!(exp);
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn client(server: &Wshub, claims: Value) -> Client {
    let query = format!("?access_token={}", token(claims));
    upgrade(ip("127.0.0.1"), server.addr, &query, &[], &["wshub.v1.json"]).open().0
}

fn start() -> Wshub {
    Wshub::start(&["--jwt-secret", SECRET, "--api-key", KEY, "--rate-limit", "0"])
}

fn error_code(reply: &Value) -> String {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().expect("code").to_owned()
}

fn caps() -> Value {
    json!({"sub": "carol", "caps": [
        {"rooms": ["news:*"], "allow": ["join"]},
        {"rooms": ["chat"], "allow": ["join", "publish"]},
        {"rooms": ["lobby"], "allow": ["join", "publish", "presence", "history"]},
        {"rooms": ["peek"], "allow": ["presence"]},
    ]})
}

#[test]
fn join_alone_makes_a_read_only_member_the_api_still_reaches() {
    let server = start();
    let mut c = client(&server, caps());
    assert_eq!(error_code(&c.request("room:join", json!({"room": "elsewhere"}))), "forbidden");
    c.join("news:1");
    assert_eq!(error_code(&c.request("room:publish", json!({"room": "news:1", "data": 1}))), "forbidden");
    assert_eq!(error_code(&c.request("typing:start", json!({"room": "news:1"}))), "forbidden");
    let mut bin = vec![0x01, 0, 6];
    bin.extend_from_slice(b"news:1body");
    c.send_binary(&bin);
    assert_eq!(error_code(&c.json()), "forbidden");
    // No presence right: not even a member may read the member list.
    assert_eq!(error_code(&c.request("presence:get", json!({"room": "news:1"}))), "forbidden");
    let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"news:1","data":"n"}"#);
    assert_eq!(status, 200);
    let msg = c.json();
    assert_eq!((msg["type"].as_str(), msg["payload"]["data"].as_str()), (Some("room:message"), Some("n")));
}

#[test]
fn publish_and_history_are_rights_of_their_own() {
    let server = start();
    let mut c = client(&server, caps());
    c.join("chat");
    c.join("lobby");
    c.ok("room:publish", json!({"room": "chat", "data": 1}));
    c.ok("room:publish", json!({"room": "lobby", "data": 1}));
    c.ok("typing:start", json!({"room": "chat"}));

    // Without `history`: a since gets no replay and recovered: false.
    let mut again = client(&server, caps());
    let chat = again.ok("room:join", json!({"room": "chat", "since": 0}));
    assert_eq!(chat["recovered"], false, "{chat}");
    again.assert_nothing_pending();
    // With it: the missed message is replayed, then the ack.
    again.send_request("room:join", json!({"room": "lobby", "since": 0}));
    assert_eq!(again.json()["type"], "room:message");
    assert_eq!(again.json()["payload"]["recovered"], true);
}

#[test]
fn presence_is_a_right_of_its_own() {
    let server = start();
    let mut member = client(&server, json!({"sub": "dave"}));
    member.join("peek");
    member.join("lobby");
    let mut c = client(&server, caps());
    // `presence` without `join`: the member list, but no membership.
    let peek = c.ok("presence:get", json!({"room": "peek"}));
    assert_eq!(peek["members"].as_array().map(Vec::len), Some(1), "{peek}");
    assert_eq!(error_code(&c.request("room:join", json!({"room": "peek"}))), "forbidden");
    // A member with the right sees the list.
    c.join("lobby");
    let lobby = c.ok("presence:get", json!({"room": "lobby"}));
    assert_eq!(lobby["members"].as_array().map(Vec::len), Some(2), "{lobby}");
}

#[test]
fn caps_replace_the_rooms_claim() {
    let server = start();
    let mut c = client(
        &server,
        json!({"sub": "erin", "rooms": ["x"], "caps": [{"rooms": ["y"], "allow": ["join", "publish"]}]}),
    );
    assert_eq!(error_code(&c.request("room:join", json!({"room": "x"}))), "forbidden");
    c.join("y");
    c.ok("room:publish", json!({"room": "y", "data": 1}));
    // An auth:refresh with caps that drop `join` for y leaves it.
    let narrower = token(json!({"sub": "erin", "caps": [{"rooms": ["z"], "allow": ["join"]}]}));
    c.send_request("auth:refresh", json!({"token": narrower}));
    let left = c.json();
    assert_eq!((left["type"].as_str(), left["payload"]["room"].as_str()), (Some("room:left"), Some("y")));
    assert_eq!(c.json()["type"], "ack");
}

#[test]
fn malformed_caps_are_refused_at_the_upgrade() {
    let server = start();
    for caps in [
        json!("everything"),
        json!([{"rooms": ["a"], "allow": ["fly"]}]),
        json!([{"rooms": "a", "allow": ["join"]}]),
        json!([{"allow": ["join"]}]),
        json!(null),
    ] {
        let query = format!("?access_token={}", token(json!({"sub": "f", "caps": caps})));
        let outcome = upgrade(ip("127.0.0.1"), server.addr, &query, &[], &["wshub.v1.json"]);
        assert_eq!(outcome.status(), 401, "caps {caps}");
    }
}

/// The next frame's type and room, skipping nothing.
fn kind_and_room(c: &mut Client) -> (String, String) {
    let f = c.json();
    (f["type"].as_str().unwrap_or("").to_owned(), f["payload"]["room"].as_str().unwrap_or("").to_owned())
}

#[test]
fn a_member_without_presence_hears_no_joins_or_leaves() {
    let server = start();
    let mut quiet =
        client(&server, json!({"sub": "quiet", "caps": [{"rooms": ["chat"], "allow": ["join"]}]}));
    quiet.join("chat");
    let mut watcher = client(&server, json!({"sub": "w"}));
    watcher.join("chat");
    // dave comes and goes; only the watcher, with the right, hears it.
    let mut dave = client(&server, json!({"sub": "dave"}));
    dave.join("chat");
    dave.ok("room:publish", json!({"room": "chat", "data": "hi"}));
    drop(dave);
    assert_eq!(kind_and_room(&mut watcher), ("presence:join".into(), "chat".into()));
    assert_eq!(kind_and_room(&mut watcher), ("room:message".into(), "chat".into()));
    assert_eq!(kind_and_room(&mut watcher), ("presence:leave".into(), "chat".into()));
    let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"chat","data":"end"}"#);
    assert_eq!(status, 200);
    // The quiet member gets the messages, in order, with no presence event between.
    assert_eq!(quiet.json()["payload"]["data"], "hi");
    assert_eq!(quiet.json()["payload"]["data"], "end");
    quiet.assert_nothing_pending();
    assert_eq!(watcher.json()["payload"]["data"], "end");
    assert_eq!(error_code(&quiet.request("presence:get", json!({"room": "chat"}))), "forbidden");

    // An auth:refresh that grants `presence` makes it hear them from then on.
    let wider = token(json!({"sub": "quiet", "caps": [{"rooms": ["chat"], "allow": ["join", "presence"]}]}));
    quiet.ok("auth:refresh", json!({"token": wider}));
    let mut erin = client(&server, json!({"sub": "erin"}));
    erin.join("chat");
    assert_eq!(kind_and_room(&mut quiet), ("presence:join".into(), "chat".into()));
    assert_eq!(kind_and_room(&mut watcher), ("presence:join".into(), "chat".into()));
    // And one that takes it away again silences them.
    let narrower = token(json!({"sub": "quiet", "caps": [{"rooms": ["chat"], "allow": ["join"]}]}));
    quiet.ok("auth:refresh", json!({"token": narrower}));
    drop(erin);
    assert_eq!(kind_and_room(&mut watcher), ("presence:leave".into(), "chat".into()));
    let (status, _) = api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"chat","data":"last"}"#);
    assert_eq!(status, 200);
    assert_eq!(quiet.json()["payload"]["data"], "last");
    quiet.assert_nothing_pending();
}
