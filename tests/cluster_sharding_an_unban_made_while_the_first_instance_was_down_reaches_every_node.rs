//! With shards (`--redis` repeated), bans live on the first instance. An
//! unban made through node A while that instance is down cannot be recorded
//! nor told: A writes it once the instance answers again. Node B, whose
//! subscriber may have read the recorded bans before A's write (here A is
//! paused until B has), must still learn of it: the user may connect to B
//! again.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const KEY: &str = "cluster-shard-unban-key";
const SECRET: &str = "cluster-shard-unban-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> u16 {
    api_post(addr, KEY, target, body)
}

/// Waits (bounded) until `node` counts `up` Redis instances answering.
fn shards_up(node: &Wshub, up: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while protocol_common::metric(node.addr, "wshub_redis_shards_up") != up {
        assert!(Instant::now() < deadline, "wshub_redis_shards_up did not become {up}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_unban_written_after_the_first_instance_came_back_reaches_a_node_that_synced_before() {
    let (mut first, second) = (Redis::start(), Redis::start());
    let (u1, u2) = (first.url(), second.url());
    let flags = ["--redis", u1.as_str(), "--redis", u2.as_str(), "--api-key", KEY, "--jwt-secret", SECRET];
    let (a, b) = (Wshub::start(&flags), Wshub::start(&flags));
    // Both nodes' subscribers of the first instance listen before the ban.
    let mut bystander = connect_as(b.addr, "alice").expect("alice connects");
    ok(&mut bystander, "room:join", json!({"room": "r"}));
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#), 200);
    let deadline = Instant::now() + WAIT;
    while connect_as(b.addr, "mallory").is_ok() {
        assert!(Instant::now() < deadline, "the ban did not reach B");
        std::thread::sleep(Duration::from_millis(50));
    }

    first.stop_keeping_data();
    shards_up(&a, 1);
    shards_up(&b, 1);
    assert_eq!(api(a.addr, "/api/unban", r#"{"user":"mallory"}"#), 200);
    assert!(connect_as(a.addr, "mallory").is_ok(), "A lifted it at once");

    // B reads the recorded bans (the ban still there) before A can write.
    a.signal("STOP");
    first.spawn();
    shards_up(&b, 2);
    // Past B's heartbeat's reading and its subscriber's reconnect backoff.
    std::thread::sleep(Duration::from_secs(3));
    assert!(connect_as(b.addr, "mallory").is_err(), "B lifted the ban before A wrote the unban");
    a.signal("CONT");

    let deadline = Instant::now() + Duration::from_secs(20);
    while connect_as(b.addr, "mallory").is_err() {
        assert!(Instant::now() < deadline, "B still refuses mallory after A wrote the unban");
        std::thread::sleep(Duration::from_millis(200));
    }
}
