//! Replays under `--redis` follow the room's namespace and the member's
//! rights, as on one node: a join's and an event stream's `since` read the
//! room's Redis history through one path (`Cluster::replay`), which must
//! answer `recovered: false` for a room whose namespace keeps no history
//! (even to a client that missed nothing), drop what is older than the
//! namespace's `history_ttl_ms`, and replay nothing to a member without the
//! `history` right; and an event stream takes a seat under `max_members`.

mod api_common;
mod cluster_common;
use api_common::Sse;
use cluster_common::*;

use std::time::Duration;

use serde_json::{json, Value};

const SECRET: &str = "cluster-replay-rules-secret-of-some-length";

fn token(claims: Value) -> String {
    token_for(claims, SECRET)
}

/// Connects to `node` with a token of `claims`.
fn member(node: &Wshub, claims: Value) -> Client {
    connect_with_claims(node.addr, claims, SECRET).expect("connected")
}

fn config(tag: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("wshub-cluster-replay-rules-{tag}-{}.toml", std::process::id()));
    let text = "[[namespace]]\nprefix = \"quiet:\"\nhistory_size = 0\n\n\
                [[namespace]]\nprefix = \"brief:\"\nhistory_ttl_ms = 200\n\n\
                [[namespace]]\nprefix = \"small:\"\nmax_members = 1\n";
    std::fs::write(&path, text).expect("write config");
    path
}

#[test]
fn replays_on_redis_follow_the_namespace_and_the_history_right() {
    let redis = Redis::start();
    let path = config("replay");
    let file = path.to_str().expect("utf-8");
    let flags = ["--config", file, "--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut publisher = member(&a, json!({"sub": "pub", "rooms": ["*"]}));
    for room in ["quiet:1", "brief:1", "chat"] {
        ok(&mut publisher, "room:join", json!({"room": room}));
        ok(&mut publisher, "room:publish", json!({"room": room, "data": 1}));
    }

    // No history in the namespace: a join that missed nothing is not recovered either.
    let mut late = member(&b, json!({"sub": "late", "rooms": ["*"]}));
    let quiet = ok(&mut late, "room:join", json!({"room": "quiet:1", "since": 1}));
    assert_eq!((quiet["recovered"].as_bool(), quiet["seq"].as_u64()), (Some(false), Some(1)), "{quiet}");

    // An event stream on the other node: the same answer in `connected`.
    let q = format!("room=quiet:1&since=1&access_token={}", token(json!({"sub": "r", "rooms": ["quiet:1"]})));
    let mut stream = Sse::open(b.addr, &q, &[]);
    assert_eq!(stream.status, 200);
    let connected = stream.expect("connected");
    assert_eq!(connected.data["recovered"], false, "{:?}", connected.data);

    // Without the history right: no replay, recovered: false.
    let caps = json!({"sub": "nohist", "caps": [{"rooms": ["chat"], "allow": ["join"]}]});
    let mut no_history = member(&b, caps);
    let chat = ok(&mut no_history, "room:join", json!({"room": "chat", "since": 0}));
    assert_eq!((chat["recovered"].as_bool(), chat["seq"].as_u64()), (Some(false), Some(1)), "{chat}");
    // An event stream without the right: the same answer.
    let q = format!(
        "room=chat&since=0&access_token={}",
        token(json!({"sub": "nohist", "caps": [{"rooms": ["chat"], "allow": ["join"]}]}))
    );
    let mut stream = Sse::open(b.addr, &q, &[]);
    assert_eq!(stream.status, 200);
    let connected = stream.expect("connected");
    assert_eq!(connected.data["recovered"], false, "{:?}", connected.data);
    // With it, the same join replays the message.
    let mut with_history = member(&b, json!({"sub": "hist", "rooms": ["*"]}));
    with_history.send_request("room:join", json!({"room": "chat", "since": 0}));
    assert_eq!(with_history.json()["type"], "room:message");
    assert_eq!(with_history.json()["payload"]["recovered"], true);

    // The namespace's TTL, not the top-level one, bounds what is replayed.
    // A second message keeps the room's stream alive past the first's TTL.
    std::thread::sleep(Duration::from_millis(600));
    ok(&mut publisher, "room:publish", json!({"room": "brief:1", "data": 2}));
    late.send_request("room:join", json!({"room": "brief:1", "since": 0}));
    let replayed = late.json();
    assert_eq!(
        (replayed["type"].as_str(), replayed["payload"]["seq"].as_u64()),
        (Some("room:message"), Some(2))
    );
    let brief = late.json();
    assert_eq!(brief["payload"]["recovered"], false, "{brief}");
    let _ = std::fs::remove_file(path);
}

#[test]
fn a_stream_needs_a_seat_under_max_members_across_nodes() {
    let redis = Redis::start();
    let path = config("seats");
    let file = path.to_str().expect("utf-8");
    let flags = ["--config", file, "--jwt-secret", SECRET];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let mut seated = member(&a, json!({"sub": "seated"}));
    ok(&mut seated, "room:join", json!({"room": "small:1"}));
    let q = format!("room=small:1&access_token={}", token(json!({"sub": "reader"})));
    let refused = Sse::open(b.addr, &q, &[]);
    assert_eq!(refused.status, 403, "the one seat is taken on node a: {}", refused.head);
    ok(&mut seated, "room:leave", json!({"room": "small:1"}));
    let mut stream = Sse::open(b.addr, &q, &[]);
    assert_eq!(stream.status, 200, "{}", stream.head);
    stream.expect("connected");
    let _ = std::fs::remove_file(path);
}
