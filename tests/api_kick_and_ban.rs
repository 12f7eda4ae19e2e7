//! Kick and ban through the backend API against the real binary (PROTOCOL.md
//! 1.1): disconnect by user closes every connection of that user (WebSocket
//! and SSE) with the code asked for, by clientId just that one; a ban closes
//! the user's connections with 4003, refuses new ones (WebSocket and SSE)
//! with 403 until it expires, then they are accepted again; unban lifts it;
//! the ban list is bounded and counted in `wshub_bans`.

mod admission_common;
mod api_common;
mod protocol_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use admission_common::{ip, upgrade, Outcome};
use api_common::{api, Sse};
use jsonwebtoken::{encode, EncodingKey, Header};
use protocol_common::{metric, Client, Frame, Wshub};
use serde_json::json;

const KEY: &str = "moderator-key";
const SECRET: &str = "test-secret-of-some-length";

fn token(sub: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    encode(&Header::default(), &json!({"sub": sub, "exp": exp}), &EncodingKey::from_secret(SECRET.as_bytes()))
        .unwrap()
}

fn connect_as(server: &Wshub, user: &str) -> Outcome {
    upgrade(ip("127.0.0.1"), server.addr, &format!("?access_token={}", token(user)), &[], &[])
}

fn open_as(server: &Wshub, user: &str) -> (Client, String) {
    let (client, connected) = connect_as(server, user).open();
    let id = connected["payload"]["clientId"].as_str().unwrap().to_owned();
    (client, id)
}

/// Reads until the close frame; its code.
fn close_code(client: &mut Client) -> u16 {
    for _ in 0..100 {
        if let Frame::Close(code) = client.frame() {
            return code;
        }
    }
    panic!("no close within 100 frames");
}

fn server() -> Wshub {
    Wshub::start(&["--api-key", KEY, "--jwt-secret", SECRET])
}

#[test]
fn disconnect_by_user_closes_all_their_connections_and_by_client_id_just_one() {
    let server = server();
    let (mut alice1, _) = open_as(&server, "alice");
    let (mut alice2, _) = open_as(&server, "alice");
    let mut alice_sse = Sse::open(server.addr, &format!("room=r&access_token={}", token("alice")), &[]);
    assert_eq!(alice_sse.status, 200);
    assert_eq!(alice_sse.expect("connected").data["user"], "alice");
    let (mut bob, bob_id) = open_as(&server, "bob");
    let (mut carol, _) = open_as(&server, "carol");

    let (status, body) = api(
        server.addr,
        "POST",
        "/api/disconnect",
        Some(KEY),
        r#"{"user":"alice","code":4001,"reason":"bye"}"#,
    );
    assert_eq!((status, &body), (200, &json!({"disconnected": 3})));
    assert_eq!(close_code(&mut alice1), 4001);
    assert_eq!(close_code(&mut alice2), 4001);
    assert!(alice_sse.ends_within(Duration::from_secs(5)), "the stream ends too");

    let body = format!(r#"{{"clientId":"{bob_id}"}}"#);
    assert_eq!(api(server.addr, "POST", "/api/disconnect", Some(KEY), &body).1, json!({"disconnected": 1}));
    assert_eq!(close_code(&mut bob), 4000, "the default code");
    let none = api(server.addr, "POST", "/api/disconnect", Some(KEY), r#"{"clientId":"999999"}"#);
    assert_eq!(none.1, json!({"disconnected": 0}));
    carol.assert_nothing_pending();
}

#[test]
fn a_ban_closes_the_user_with_4003_and_refuses_them_with_403_until_it_expires() {
    let server = server();
    let (mut mallory, _) = open_as(&server, "mallory");
    let (mut alice, _) = open_as(&server, "alice");
    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let (status, body) = api(server.addr, "POST", "/api/ban", Some(KEY), r#"{"user":"mallory","seconds":2}"#);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"], "mallory");
    let until = body["until"].as_u64().unwrap();
    assert!(until >= before + 1500 && until <= before + 3000, "{until} vs {before}");
    assert_eq!(close_code(&mut mallory), 4003);
    assert_eq!(metric(server.addr, "wshub_bans"), 1);

    let refused_at = Instant::now();
    assert_eq!(connect_as(&server, "mallory").status(), 403);
    let sse = Sse::open(server.addr, &format!("room=r&access_token={}", token("mallory")), &[]);
    assert_eq!(sse.status, 403, "{}", sse.head);
    assert_eq!(Sse::open(server.addr, "room=r", &[]).status, 401, "a stream needs a token like a WebSocket");
    alice.assert_nothing_pending();
    open_as(&server, "alice"); // others are not affected

    // Accepted again once it expires (bounded: 10 s).
    let mut reopened = None;
    while reopened.is_none() && refused_at.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
        match connect_as(&server, "mallory") {
            Outcome::Open(c) => reopened = Some(c),
            refused => assert_eq!(refused.status(), 403),
        }
    }
    assert!(reopened.is_some(), "the ban never expired");
    assert!(refused_at.elapsed() >= Duration::from_millis(1000), "it expired too early");
    assert_eq!(metric(server.addr, "wshub_bans"), 0);
}

#[test]
fn unban_lifts_a_ban_and_the_ban_list_is_bounded() {
    let server = Wshub::start(&["--api-key", KEY, "--jwt-secret", SECRET, "--max-bans", "2"]);
    for user in ["u1", "u2"] {
        let body = format!(r#"{{"user":"{user}","seconds":600}}"#);
        assert_eq!(api(server.addr, "POST", "/api/ban", Some(KEY), &body).0, 200);
    }
    let (status, body) = api(server.addr, "POST", "/api/ban", Some(KEY), r#"{"user":"u3","seconds":600}"#);
    assert_eq!(status, 503, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("2"), "{body}");
    assert_eq!(metric(server.addr, "wshub_bans"), 2);
    assert_eq!(connect_as(&server, "u1").status(), 403);
    assert_eq!(
        api(server.addr, "POST", "/api/unban", Some(KEY), r#"{"user":"u1"}"#).1,
        json!({"user": "u1"})
    );
    connect_as(&server, "u1").open();
    assert_eq!(api(server.addr, "POST", "/api/ban", Some(KEY), r#"{"user":"u3","seconds":600}"#).0, 200);
    assert_eq!(connect_as(&server, "u2").status(), 403);
}
