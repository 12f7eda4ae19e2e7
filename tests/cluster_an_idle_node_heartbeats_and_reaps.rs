//! A node that no client has reached yet still takes part in the cluster:
//! its Redis threads start with the server (the binary's and a C host's
//! alike), so it heartbeats and reaps a dead node's members instead of
//! waiting for its first request.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

fn hlen(redis: &Redis, key: &str) -> i64 {
    match redis.query(&["HLEN", key]).expect("HLEN") {
        redis::Value::Int(n) => n,
        other => panic!("HLEN {key}: {other:?}"),
    }
}

#[test]
fn a_node_no_client_has_reached_reaps_a_dead_nodes_members() {
    let redis = Redis::start();
    // A node that died with one member (its heartbeat key is gone).
    let fill = r#"
redis.call('hset', 'wshub:nm:deadbeef0001', 'lobby\ndeadbeef0001-1', '{"room":"lobby","clientId":"deadbeef0001-1"}')
redis.call('hset', 'wshub:p:lobby', 'deadbeef0001-1', '')
redis.call('sadd', 'wshub:nodes', 'deadbeef0001')
return 1"#;
    redis.query(&["EVAL", fill, "0"]).expect("fill");
    // No client and no HTTP request ever reaches this node.
    let _idle = node(&redis, &[]);
    // The reap bound docs/scaling.md gives, with room for a busy machine.
    let deadline = Instant::now() + Duration::from_secs(12 + 8);
    while hlen(&redis, "wshub:nm:deadbeef0001") != 0 || hlen(&redis, "wshub:p:lobby") != 0 {
        assert!(Instant::now() < deadline, "the idle node never reaped the dead node's member");
        std::thread::sleep(Duration::from_millis(200));
    }
}
