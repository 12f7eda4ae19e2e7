//! A node whose Redis connections are cut without being closed (a NAT or
//! load balancer dropping them) while `--redis-timeout-ms` is long: its
//! heartbeat must still refresh its key in time, on a new connection, or
//! the other nodes take it for dead and reap its members, who are still
//! connected (a false `presence:leave`). The heartbeat used to wait out
//! the call timeout (30 s here) on its cut connection, so B reaped A's
//! member after about 10 s.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn a_heartbeat_on_a_silently_cut_connection_gives_up_before_the_node_key_expires() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let a = node_at(&proxy.url(), &["--redis-timeout-ms", "30000"]);
    let b = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    let mut m = a.client();
    ok(&mut m, "room:join", json!({"room": "x"}));
    let mut w = b.client();
    ok(&mut w, "room:join", json!({"room": "x"}));

    proxy.cut_silently();
    // Past two node key lifetimes and two heartbeats, when B would reap A.
    let deadline = Instant::now() + Duration::from_secs(16);
    while Instant::now() < deadline {
        let members = ok(&mut w, "presence:get", json!({"room": "x"}));
        let n = members["members"].as_array().map_or(0, Vec::len);
        assert_eq!(n, 2, "A's member was reaped while connected: {members}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
