//! Under `--redis`, as on one node: a member without the `presence` right
//! hears no `presence:join`/`leave`, neither of members on its own node nor
//! of members on another node (those arrive through the room's channel).

mod cluster_common;
use cluster_common::*;

use serde_json::{json, Value};

const SECRET: &str = "cluster-presence-right-secret-of-some-length";
const KEY: &str = "cluster-presence-right-key";

/// Connects to `node` with a token of `claims`.
/// Connects to `node` with a token of `claims`.
fn member(node: &Wshub, claims: Value) -> Client {
    connect_with_claims(node.addr, claims, SECRET).expect("connected")
}

fn kind(c: &mut Client) -> String {
    c.json()["type"].as_str().unwrap_or("").to_owned()
}

#[test]
fn presence_events_reach_only_members_with_the_presence_right_on_every_node() {
    let redis = Redis::start();
    let flags = ["--jwt-secret", SECRET, "--api-key", KEY];
    let (a, b) = (node(&redis, &flags), node(&redis, &flags));
    let no_presence = json!({"sub": "q", "caps": [{"rooms": ["chat"], "allow": ["join"]}]});
    let mut quiet_a = member(&a, no_presence.clone());
    let mut quiet_b = member(&b, no_presence);
    ok(&mut quiet_a, "room:join", json!({"room": "chat"}));
    ok(&mut quiet_b, "room:join", json!({"room": "chat"}));
    let mut watcher_a = member(&a, json!({"sub": "w"}));
    ok(&mut watcher_a, "room:join", json!({"room": "chat"}));
    let mut watcher_b = member(&b, json!({"sub": "w2"}));
    ok(&mut watcher_b, "room:join", json!({"room": "chat"}));
    assert_eq!(kind(&mut watcher_a), "presence:join", "w2 joined on the other node");

    // A member comes and goes on node a: both watchers hear it, nobody else.
    let mut dave = member(&a, json!({"sub": "dave"}));
    ok(&mut dave, "room:join", json!({"room": "chat"}));
    drop(dave);
    for w in [&mut watcher_a, &mut watcher_b] {
        assert_eq!(kind(w), "presence:join");
        assert_eq!(kind(w), "presence:leave");
    }
    assert_eq!(api_post(a.addr, KEY, "/api/publish", r#"{"room":"chat","data":"end"}"#), 200);
    for q in [&mut quiet_a, &mut quiet_b] {
        let next = q.json();
        assert_eq!(
            (next["type"].as_str(), next["payload"]["data"].as_str()),
            (Some("room:message"), Some("end"))
        );
        q.assert_nothing_pending();
    }
}
