//! A node reading the bans Redis records lifts those of its own that Redis
//! no longer holds (an unban it missed). A Redis restarted without its data
//! (no persistence, or an older snapshot, or a failover to a replica behind)
//! holds none: every ban must still hold on every node, and be written back
//! for nodes started later, rather than be lifted everywhere at once.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

const KEY: &str = "cluster-bans-lost-key";
const SECRET: &str = "cluster-bans-lost-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> u16 {
    api_post(addr, KEY, target, body)
}

#[test]
fn bans_hold_on_every_node_after_redis_restarts_empty() {
    let mut redis = Redis::start();
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let a = node(&redis, &flags);
    let b = node(&redis, &flags);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#), 200);
    let deadline = Instant::now() + WAIT;
    while connect_as(b.addr, "mallory").is_ok() {
        assert!(Instant::now() < deadline, "the ban did not reach B");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Redis restarts without its data (kill -9, no persistence).
    redis.kill();
    wait_health(a.addr, 503, Duration::from_secs(10));
    redis.spawn();
    wait_health(a.addr, 200, Duration::from_secs(10));
    wait_health(b.addr, 200, Duration::from_secs(10));
    // Time for both heartbeats and subscribers to read the bans again.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        assert!(connect_as(a.addr, "mallory").is_err(), "A lifted mallory's ban after Redis lost it");
        assert!(connect_as(b.addr, "mallory").is_err(), "B lifted mallory's ban after Redis lost it");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Written back: a node started now holds it too.
    let c = node(&redis, &flags);
    wait_health(c.addr, 200, WAIT);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(connect_as(c.addr, "mallory").is_err(), "a node started after the restart lets mallory in");
}
