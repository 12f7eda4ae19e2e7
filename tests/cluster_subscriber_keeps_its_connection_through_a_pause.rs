//! A node stopped and continued (`kill -STOP`, `kill -CONT`: a debugger, a
//! frozen container) keeps its Redis subscriber connection: the read the
//! signal cut short (EINTR) is not a broken connection, so the node neither
//! reconnects nor refills, and delivery goes on.

mod cluster_common;
use cluster_common::*;

use std::process::Command;
use std::time::Duration;

use serde_json::json;

fn signal(node: &Wshub, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(node.child.id().to_string()).status();
    assert!(status.expect("kill").success(), "kill -{name}");
}

#[test]
fn a_paused_node_keeps_its_subscriber_connection() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "lobby"}));
    let mut writer = a.client();
    ok(&mut writer, "room:join", json!({"room": "lobby"}));
    ok(&mut writer, "room:publish", json!({"room": "lobby", "data": "before"}));
    until(&mut reader, 20, |v| v["type"] == "room:message" && v["payload"]["data"] == "before");
    let before = protocol_common::metric(b.addr, "wshub_redis_reconnects_total");

    // Shorter than the presence bounds, longer than the subscriber's poll.
    signal(&b, "STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal(&b, "CONT");

    ok(&mut writer, "room:publish", json!({"room": "lobby", "data": "after"}));
    until(&mut reader, 20, |v| v["type"] == "room:message" && v["payload"]["data"] == "after");
    // Past the subscriber's next poll and ping, had it failed.
    std::thread::sleep(Duration::from_secs(3));
    let after = protocol_common::metric(b.addr, "wshub_redis_reconnects_total");
    assert_eq!(after, before, "the pause made the subscriber reconnect");
}
