//! `GET /sse?room=R` passes every check a `room:join` of R passes (the
//! token's claim, the application's join hook, the room cap, the
//! namespace's `max_members`, bans), else `403`, and its replay follows the
//! `history` right as a join's `since` does; `--no-sse` (config `no_sse`) turns the endpoint off. PROTOCOL.md 1.2,
//! "Door and identity". The C host's side is in
//! `c_examples_run_under_sanitizers.rs` (auth_server.c's `on_join`).

mod admission_common;
mod api_common;
mod protocol_common;

use std::time::{SystemTime, UNIX_EPOCH};

use api_common::Sse;
use protocol_common::{get, Wshub};
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, ServerHandle};

const SECRET: &str = "sse-join-secret";

fn token(user: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": user, "exp": exp});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// Refuses rooms named `private:...` to everyone but `admin`, as auth_server.c does.
struct PrivateRooms;

impl Handler for PrivateRooms {
    fn on_join(&self, _: &ServerHandle, _: ConnId, user: Option<&str>, room: &str) -> bool {
        !room.starts_with("private:") || user == Some("admin")
    }
}

#[test]
fn the_applications_join_hook_decides_a_stream_as_it_decides_a_join() {
    let handler = ProtocolHandler::with_app(ProtocolConfig::default().jwt_secret(SECRET), PrivateRooms);
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler).expect("start");
    let addr = server.local_addr();
    let alice = format!("access_token={}", token("alice"));
    let refused = Sse::open(addr, &format!("room=private:payroll&{alice}"), &[]);
    assert_eq!(refused.status, 403, "{}", refused.head);
    let mut open = Sse::open(addr, &format!("room=lobby&{alice}"), &[]);
    assert_eq!(open.status, 200, "{}", open.head);
    open.expect("connected");
    let admin = format!("access_token={}", token("admin"));
    let mut admitted = Sse::open(addr, &format!("room=private:payroll&{admin}"), &[]);
    assert_eq!(admitted.status, 200, "{}", admitted.head);
    admitted.expect("connected");
    // Without auth the hook still runs (user None).
    drop((open, admitted));
    server.stop();
    let handler = ProtocolHandler::with_app(ProtocolConfig::default(), PrivateRooms);
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler).expect("start");
    assert_eq!(Sse::open(server.local_addr(), "room=private:x", &[]).status, 403);
    assert_eq!(Sse::open(server.local_addr(), "room=public", &[]).status, 200);
    server.stop();
}

#[test]
fn a_stream_that_would_create_a_room_past_the_cap_is_refused_before_it_opens() {
    let server = Wshub::start(&["--max-rooms", "1"]);
    let mut member = server.client();
    member.join("only");
    let refused = Sse::open(server.addr, "room=another", &[]);
    assert_eq!(refused.status, 403, "{}", refused.head);
    let mut existing = Sse::open(server.addr, "room=only", &[]);
    assert_eq!(existing.status, 200, "an existing room is not a new one");
    existing.expect("connected");
}

#[test]
fn no_sse_turns_the_endpoint_off_from_the_flag_and_the_config_file() {
    let server = Wshub::start(&["--no-sse"]);
    assert_eq!(Sse::open(server.addr, "room=r", &[]).status, 404);
    assert_eq!(get(server.addr, "/healthz").0, 200, "the rest is served");
    drop(server);

    let dir = std::env::temp_dir().join(format!("wshub-no-sse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("wshub.toml");
    std::fs::write(&file, "no_sse = true\n").unwrap();
    let server = Wshub::start(&["--config", file.to_str().unwrap()]);
    assert_eq!(Sse::open(server.addr, "room=r", &[]).status, 404);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let on = Wshub::start(&[]);
    let mut stream = Sse::open(on.addr, "room=r", &[]);
    assert_eq!(stream.status, 200);
    stream.expect("connected");
}

fn token_with(claims: serde_json::Value) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let mut claims = claims;
    claims["exp"] = serde_json::json!(exp);
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// A config file with a namespace of one-member rooms.
fn small_rooms_config(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-sse-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, "[[namespace]]\nprefix = \"small:\"\nmax_members = 1\n").unwrap();
    path
}

#[test]
fn a_stream_takes_a_seat_in_a_room_with_max_members() {
    let path = small_rooms_config("seats");
    let server = Wshub::start(&["--config", path.to_str().unwrap()]);
    let mut member = server.client();
    member.join("small:1");
    let refused = Sse::open(server.addr, "room=small:1", &[]);
    assert_eq!(refused.status, 403, "the one seat is taken: {}", refused.head);
    member.ok("room:leave", serde_json::json!({"room": "small:1"}));
    let mut stream = Sse::open(server.addr, "room=small:1", &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    stream.expect("connected");
    // The stream holds the seat now: a join and a second stream are refused.
    let refused = member.request("room:join", serde_json::json!({"room": "small:1"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    assert_eq!(Sse::open(server.addr, "room=small:1", &[]).status, 403);
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_stream_without_the_history_right_is_not_replayed() {
    let server = Wshub::start(&["--jwt-secret", SECRET]);
    let query = format!("?access_token={}", token("pub"));
    let mut publisher = admission_common::upgrade(
        admission_common::ip("127.0.0.1"),
        server.addr,
        &query,
        &[],
        &["wshub.v1.json"],
    )
    .open()
    .0;
    publisher.join("chat");
    publisher.ok("room:publish", serde_json::json!({"room": "chat", "data": 1}));
    let no_history =
        token_with(serde_json::json!({"sub": "r", "caps": [{"rooms": ["chat"], "allow": ["join"]}]}));
    let with_history = token_with(
        serde_json::json!({"sub": "r", "caps": [{"rooms": ["chat"], "allow": ["join", "history"]}]}),
    );
    let mut streams = Vec::new();
    for (query, headers) in [
        (format!("room=chat&since=0&access_token={no_history}"), vec![]),
        (format!("room=chat&access_token={no_history}"), vec![("Last-Event-ID", "0")]),
    ] {
        let mut stream = Sse::open(server.addr, &query, &headers);
        assert_eq!(stream.status, 200, "{}", stream.head);
        let connected = stream.expect("connected");
        assert_eq!(connected.data["recovered"], false, "{:?}", connected.data);
        streams.push(stream);
    }
    // With the right, the same stream is replayed the message.
    let mut replayed = Sse::open(server.addr, &format!("room=chat&since=0&access_token={with_history}"), &[]);
    assert_eq!(replayed.expect("connected").data["recovered"], true);
    assert_eq!(replayed.expect("room:message").data["seq"], 1);
    // What comes next to the others is the next message, not the missed one.
    publisher.ok("room:publish", serde_json::json!({"room": "chat", "data": 2}));
    for stream in &mut streams {
        assert_eq!(stream.expect("room:message").data["seq"], 2);
    }
}
