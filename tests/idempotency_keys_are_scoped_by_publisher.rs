//! Idempotency keys are scoped by publisher (PROTOCOL.md 1.2, "Door and
//! identity"): the backend's keys (`/api/publish`) live apart from clients'
//! keys, so a member that publishes first with the backend's key cannot turn
//! the backend's publish into a silent duplicate; a client's key is scoped to
//! its user (any of its connections), or to its clientId without a user.
//! The same on a single node and with `--redis` (the Lua publish script).

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use std::net::{SocketAddr, TcpStream};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

const KEY: &str = "scoped-keys-api-key";
const SECRET: &str = "scoped-keys-secret";

fn api_publish(addr: SocketAddr, room: &str, key: &str) -> Value {
    let body = json!({"room": room, "data": "from the backend", "key": key}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, answer) = http(addr, &request);
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str(&answer).expect("JSON")
}

/// A client of `user` (a token in `access_token`), past its `connected`.
fn user_client(addr: SocketAddr, user: &str) -> Client {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let token = encode(
        &Header::default(),
        &json!({"sub": user, "exp": exp}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(WAIT)).expect("timeout");
    let url = format!("ws://{addr}/ws?access_token={token}");
    let (ws, _) = tungstenite::client::client(url, stream).expect("upgrade");
    let mut client = Client::from_parts(ws, None);
    assert_eq!(client.json()["type"], "connected");
    client
}

fn keyed(client: &mut Client, room: &str, key: &str) -> Value {
    client.ok("room:publish", json!({"room": room, "data": "from a client", "key": key}))
}

/// The checks, against one server or two nodes of one cluster (`a`, `b`).
fn keys_are_per_publisher(a: SocketAddr, b: SocketAddr) {
    let room = "orders";
    let mut alice = user_client(a, "alice");
    alice.join(room);
    // A member takes the backend's key first: the backend still publishes.
    assert_eq!(keyed(&mut alice, room, "order-42-status"), json!({"room": room, "seq": 1}));
    assert_eq!(api_publish(b, room, "order-42-status"), json!({"room": room, "seq": 2}));
    assert_eq!(api_publish(a, room, "order-42-status")["duplicate"], true, "the backend's own resend");
    // Another user with the same key publishes; the same user on another
    // connection (another node) is a resend.
    let mut bob = user_client(b, "bob");
    bob.join(room);
    assert_eq!(keyed(&mut bob, room, "order-42-status"), json!({"room": room, "seq": 3}));
    let mut alice_again = user_client(b, "alice");
    alice_again.join(room);
    assert_eq!(
        keyed(&mut alice_again, room, "order-42-status"),
        json!({"room": room, "seq": 1, "duplicate": true})
    );
}

#[test]
fn a_client_cannot_take_the_backends_key_and_users_are_apart() {
    let server = Wshub::start(&["--api-key", KEY, "--jwt-secret", SECRET]);
    keys_are_per_publisher(server.addr, server.addr);
}

#[test]
fn without_a_user_a_key_is_the_clients_own() {
    let server = Wshub::start(&["--api-key", KEY]);
    let (mut one, mut two) = (server.client(), server.client());
    one.join("r");
    two.join("r");
    assert_eq!(one.json()["type"], "presence:join");
    assert_eq!(keyed(&mut one, "r", "k"), json!({"room": "r", "seq": 1}));
    assert_eq!(two.json()["payload"]["seq"], 1);
    assert_eq!(keyed(&mut two, "r", "k"), json!({"room": "r", "seq": 2}), "another client");
    assert_eq!(one.json()["payload"]["seq"], 2);
    assert_eq!(keyed(&mut one, "r", "k")["duplicate"], true, "its own resend");
    assert_eq!(api_publish(server.addr, "r", "k")["seq"], 3);
}

#[test]
fn with_redis_keys_are_scoped_by_publisher_too() {
    let redis = Redis::start();
    let extra = ["--api-key", KEY, "--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &extra), node(&redis, &extra));
    keys_are_per_publisher(a.addr, b.addr);
}
