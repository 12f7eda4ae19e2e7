//! Namespaces (PROTOCOL.md 1.2, "Namespaces and rights") against the real
//! binary, from a config file's `[[namespace]]` blocks: a feed room clients
//! cannot publish to while `/api/publish` reaches it; the longest prefix
//! winning; a room without history; a room without presence or typing; a
//! room without join/leave events that still tracks members; `max_members`.

mod api_common;
mod protocol_common;

use std::path::PathBuf;

use api_common::api;
use protocol_common::{Client, Wshub};
use serde_json::{json, Value};

const KEY: &str = "namespace-test-key";

fn config_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-ns-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    path
}

/// A server with one namespace of each kind (top-level keys before the blocks).
fn server(name: &str) -> Wshub {
    let path = config_file(
        name,
        &format!(
            r#"
rate_limit = 0
api_key = "{KEY}"

[[namespace]]
prefix = "feed:"
client_publish = false

[[namespace]]
prefix = "feed:open:"

[[namespace]]
prefix = "quiet:"
history_size = 0
presence = false
typing = false

[[namespace]]
prefix = "big:"
join_leave = false
max_members = 2
"#
        ),
    );
    Wshub::start(&["--config", path.to_str().expect("utf-8 path")])
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().expect("code")
}

#[test]
fn a_feed_room_is_read_only_for_clients_while_the_api_publishes() {
    let server = server("feed");
    let mut c = server.client();
    c.join("feed:news");
    let refused = c.request("room:publish", json!({"room": "feed:news", "data": "hi"}));
    assert_eq!(error_code(&refused), "forbidden");

    // A binary publish is refused too (its error is a text frame).
    let room = b"feed:news";
    let mut bin = vec![0x01, 0, room.len() as u8];
    bin.extend_from_slice(room);
    bin.extend_from_slice(b"body");
    c.send_binary(&bin);
    assert_eq!(error_code(&c.json()), "forbidden");

    let (status, answer) =
        api(server.addr, "POST", "/api/publish", Some(KEY), r#"{"room":"feed:news","data":{"n":1}}"#);
    assert_eq!(status, 200, "{answer}");
    let msg = c.json();
    assert_eq!(msg["type"], "room:message", "{msg}");
    assert_eq!(
        (msg["payload"]["from"].as_str(), msg["payload"]["data"]["n"].as_u64()),
        (Some("api"), Some(1))
    );

    // The longest prefix wins: feed:open: lets clients publish.
    c.join("feed:open:talk");
    c.ok("room:publish", json!({"room": "feed:open:talk", "data": "hi"}));
    // A room outside every namespace follows the top-level settings.
    c.join("lobby");
    c.ok("room:publish", json!({"room": "lobby", "data": "hi"}));
    c.assert_nothing_pending();
}

#[test]
fn a_room_without_history_never_recovers() {
    let server = server("history");
    let mut a = server.client();
    a.join("quiet:1");
    a.join("lobby");
    for room in ["quiet:1", "lobby"] {
        a.ok("room:publish", json!({"room": room, "data": 1}));
        a.ok("room:publish", json!({"room": room, "data": 2}));
    }
    let mut b = server.client();
    // Missed one message in a room with history: replayed (before the ack), recovered.
    b.send_request("room:join", json!({"room": "lobby", "since": 1}));
    assert_eq!(b.json()["type"], "room:message");
    let lobby = b.json();
    assert_eq!(lobby["payload"]["recovered"], true, "{lobby}");
    let mut b2 = server.client();
    // Without history: nothing replayed, never recovered, even for a client that missed nothing.
    let quiet = b2.ok("room:join", json!({"room": "quiet:1", "since": 1}));
    assert_eq!((quiet["recovered"].as_bool(), quiet["seq"].as_u64()), (Some(false), Some(2)), "{quiet}");
    let up_to_date = b2.ok("room:join", json!({"room": "quiet:1", "since": 2}));
    assert_eq!(up_to_date["recovered"], false, "{up_to_date}");
    b2.assert_nothing_pending();
    let (status, history) = api(server.addr, "GET", "/api/history?room=quiet:1", Some(KEY), "");
    assert_eq!(status, 200);
    assert_eq!(history["messages"], json!([]), "{history}");
}

#[test]
fn a_room_without_presence_has_no_member_list_events_or_typing() {
    let server = server("presence");
    let mut a = server.client();
    a.join("quiet:1");
    let mut b = server.client();
    b.join("quiet:1");
    assert_eq!(error_code(&a.request("presence:get", json!({"room": "quiet:1"}))), "forbidden");
    assert_eq!(error_code(&a.request("typing:start", json!({"room": "quiet:1"}))), "forbidden");
    b.ok("room:leave", json!({"room": "quiet:1"}));
    // Neither b's join nor its leave reached a; messages still do.
    a.assert_nothing_pending();
    let mut c = server.client();
    c.join("quiet:1");
    c.ok("room:publish", json!({"room": "quiet:1", "data": "m"}));
    assert_eq!(a.json()["type"], "room:message");
}

#[test]
fn join_leave_off_sends_no_events_but_members_are_tracked_and_capped() {
    let server = server("members");
    let mut a = server.client();
    let mut b = server.client();
    let mut c = server.client();
    a.join("big:stage");
    let joined = b.join("big:stage");
    assert_eq!(joined["members"], 2, "{joined}");
    // a got no presence:join, but presence:get lists both.
    let members = a.ok("presence:get", json!({"room": "big:stage"}));
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");
    a.assert_nothing_pending();

    // A third member is one past max_members.
    let refused = c.request("room:join", json!({"room": "big:stage"}));
    assert_eq!(error_code(&refused), "forbidden");
    // b leaves (no presence:leave to a): there is room for c now.
    b.ok("room:leave", json!({"room": "big:stage"}));
    c.join("big:stage");
    a.assert_nothing_pending();
    // Typing still works here.
    c.ok("typing:start", json!({"room": "big:stage"}));
    assert_eq!(a.json()["type"], "typing");
    // Closing a connection sends no presence:leave either.
    drop(c);
    let mut d = Client::connect(server.addr, &[]);
    // c's place goes once the server has seen its connection end.
    let joined = (0..100)
        .find_map(|_| {
            let reply = d.request("room:join", json!({"room": "big:stage"}));
            if reply["type"] == "ack" {
                return Some(reply);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            None
        })
        .expect("c's place was never given back");
    assert_eq!(joined["payload"]["members"], 2, "{joined}");
    a.assert_nothing_pending();
}

#[test]
fn a_namespace_block_with_an_unknown_key_is_refused() {
    let path = config_file("typo", "[[namespace]]\nprefix = \"a:\"\nclient_publsh = false\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--config", path.to_str().expect("utf-8")])
        .output()
        .expect("run wshub");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client_publsh"), "{err}");
}
