//! `/healthz` on a node started with `--redis` answers 503 (`redis not
//! reached yet`) until its heartbeat has been tried on every Redis instance
//! and the first instance (which records the bans) answered and its bans
//! were read: before, it said 200 from the start, so a load balancer sent
//! clients to a node that had never reached Redis (and had not read its
//! bans). An instance other than the first that is down at the start costs
//! only its rooms, as it would later. A frozen `redis-server` (`kill
//! -STOP`) accepts connections and answers nothing.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

/// Asks `/healthz` until `limit` passes; every answer must be `503` with
/// `body`.
fn stays_503(addr: std::net::SocketAddr, body: &str, limit: Duration) {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        let (status, _, got) = get(addr, "/healthz");
        assert_eq!((status, got.as_str()), (503, body), "/healthz");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_whose_redis_never_answered_is_not_healthy() {
    let redis = Redis::start();
    redis.freeze();
    let a = node(&redis, &[]);
    // Longer than a heartbeat's timeout: the node has tried, and still says why.
    stays_503(a.addr, "redis not reached yet\n", Duration::from_secs(3));
    redis.thaw();
    wait_health(a.addr, 200, WAIT);
    // Down again after that: the usual answer.
    redis.freeze();
    wait_health(a.addr, 503, WAIT);
    assert_eq!(get(a.addr, "/healthz").2, "redis unavailable\n");
    redis.thaw();
    wait_health(a.addr, 200, WAIT);
}

#[test]
fn with_two_instances_the_node_waits_for_the_one_recording_the_bans() {
    let (first, second) = (Redis::start(), Redis::start());
    first.freeze();
    let (u1, u2) = (first.url(), second.url());
    let a = Wshub::start(&["--redis", u1.as_str(), "--redis", u2.as_str()]);
    stays_503(a.addr, "redis not reached yet\n", Duration::from_secs(3));
    first.thaw();
    wait_health(a.addr, 200, WAIT);
}

#[test]
fn a_node_started_while_another_instance_is_down_serves_the_rest() {
    let (first, second) = (Redis::start(), Redis::start());
    second.freeze();
    let (u1, u2) = (first.url(), second.url());
    let a = Wshub::start(&["--redis", u1.as_str(), "--redis", u2.as_str()]);
    // Once its heartbeat was tried on the frozen one, as an older node would.
    wait_health(a.addr, 200, WAIT);
    second.thaw();
    wait_health(a.addr, 200, WAIT);
}
