//! wshub::client on `room:left` (an `auth:refresh` whose claim no longer
//! allows a joined room): it emits `Event::Left` and forgets the room, so a
//! reconnection (through a TCP proxy the test cuts) rejoins the others and
//! not that one (no refused rejoin).

mod client_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client_common::{wait_for, Proxy, Server};
use wshub::client::{Client, Event, Options};

const SECRET: &str = "client-left-secret";

fn token(rooms: &[&str]) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": "rs", "exp": exp, "rooms": rooms});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[test]
fn a_room_the_server_removed_is_not_rejoined() {
    let server = Server::start(&["--jwt-secret", SECRET]);
    let proxy = Proxy::start(server.addr);
    let options = Options::default().backoff(Duration::from_millis(20), Duration::from_millis(200));
    let client = Client::connect(&format!("ws://{}/ws", proxy.addr), options.token(token(&["a", "b"])))
        .expect("connect");
    client.join("a").unwrap();
    client.join("b").unwrap();
    let mut seen = Vec::new();
    client.set_token(&token(&["a"])).expect("refreshed");
    let left = wait_for(&client, &mut seen, |e| match e {
        Event::Left { room, reason } => Some((room.clone(), reason.clone())),
        _ => None,
    });
    assert_eq!(left, ("b".to_owned(), "forbidden".to_owned()));

    proxy.cut();
    seen.clear();
    wait_for(&client, &mut seen, |e| matches!(e, Event::Connected { .. }).then_some(()));
    assert!(!seen.iter().any(|e| matches!(e, Event::Error { .. })), "a refused rejoin: {seen:#?}");
    client.close();
}
