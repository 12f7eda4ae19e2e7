//! Namespaces under `--redis` (PROTOCOL.md 1.2): two nodes on one real
//! redis-server with the same `[[namespace]]` blocks. A feed room refuses
//! client publishes on either node while one node's `/api/publish` reaches
//! members on the other; a room without presence refuses `presence:get` and
//! typing; a room without join/leave events sends none across nodes either
//! (the other node's `presence:join`/`leave` is not delivered), while its
//! members are still listed and its messages still cross; `max_members`
//! counts the members of both nodes.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use serde_json::{json, Value};

const KEY: &str = "cluster-ns-key";

fn config() -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-cluster-ns-{}.toml", std::process::id()));
    let text = "[[namespace]]\nprefix = \"feed:\"\nclient_publish = false\n\n\
                [[namespace]]\nprefix = \"quiet:\"\npresence = false\ntyping = false\nhistory_size = 0\n\n\
                [[namespace]]\nprefix = \"stage:\"\njoin_leave = false\n\n\
                [[namespace]]\nprefix = \"pair:\"\nmax_members = 2\n";
    std::fs::write(&path, text).expect("write config");
    path
}

fn code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().expect("code")
}

#[test]
fn namespace_rules_hold_on_every_node() {
    let redis = Redis::start();
    let path = config();
    let file = path.to_str().expect("utf-8");
    let (a, b) = (node(&redis, &["--config", file, "--api-key", KEY]), node(&redis, &["--config", file]));
    let mut on_a = a.client();
    let mut on_b = b.client();

    // Feed: read-only for clients on both nodes; the API on a reaches b.
    ok(&mut on_b, "room:join", json!({"room": "feed:news"}));
    assert_eq!(code(&on_b.request("room:publish", json!({"room": "feed:news", "data": 1}))), "forbidden");
    let body = r#"{"room":"feed:news","data":"from the backend"}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(a.addr, &request).0, 200);
    let msg = on_b.json();
    assert_eq!(
        (msg["type"].as_str(), msg["payload"]["data"].as_str()),
        (Some("room:message"), Some("from the backend"))
    );

    // Quiet: no presence, no typing, no history (on either node).
    ok(&mut on_a, "room:join", json!({"room": "quiet:1"}));
    assert_eq!(code(&on_a.request("presence:get", json!({"room": "quiet:1"}))), "forbidden");
    assert_eq!(code(&on_a.request("typing:start", json!({"room": "quiet:1"}))), "forbidden");
    ok(&mut on_a, "room:publish", json!({"room": "quiet:1", "data": 1}));
    let late = ok(&mut on_b, "room:join", json!({"room": "quiet:1", "since": 0}));
    assert_eq!((late["recovered"].as_bool(), late["seq"].as_u64()), (Some(false), Some(1)), "{late}");
    // The feed room (top-level history) still recovers across nodes.
    let mut late_feed = a.client();
    late_feed.send_request("room:join", json!({"room": "feed:news", "since": 0}));
    assert_eq!(late_feed.json()["type"], "room:message");
    assert_eq!(late_feed.json()["payload"]["recovered"], true);

    // Stage: b's join and leave reach a from neither node; messages do.
    ok(&mut on_a, "room:join", json!({"room": "stage:1"}));
    ok(&mut on_b, "room:join", json!({"room": "stage:1"}));
    let members = ok(&mut on_a, "presence:get", json!({"room": "stage:1"}));
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");
    ok(&mut on_b, "room:leave", json!({"room": "stage:1"}));
    ok(&mut on_b, "room:join", json!({"room": "stage:1"}));
    ok(&mut on_b, "room:publish", json!({"room": "stage:1", "data": "after"}));
    // The first frame a gets is the message: no presence event came before it.
    let first = on_a.json();
    assert_eq!(
        (first["type"].as_str(), first["payload"]["data"].as_str()),
        (Some("room:message"), Some("after")),
        "{first}"
    );
    on_a.assert_nothing_pending();

    // max_members counts the members of every node.
    ok(&mut on_a, "room:join", json!({"room": "pair:1"}));
    ok(&mut on_b, "room:join", json!({"room": "pair:1"}));
    let mut third = a.client();
    assert_eq!(code(&third.request("room:join", json!({"room": "pair:1"}))), "forbidden");
    ok(&mut on_b, "room:leave", json!({"room": "pair:1"}));
    ok(&mut third, "room:join", json!({"room": "pair:1"}));
}
