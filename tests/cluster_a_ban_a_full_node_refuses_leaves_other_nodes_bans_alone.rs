//! A node whose ban list is full refuses a ban (`503`). That must not touch
//! what Redis records for the user: another node's ban of the same user
//! stays recorded, so nodes started later (and nodes reading the recorded
//! bans after a reconnect) still hold it.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

const KEY: &str = "cluster-full-ban-key";
const SECRET: &str = "cluster-full-ban-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> u16 {
    api_post(addr, KEY, target, body)
}

#[test]
fn a_ban_refused_by_a_full_node_does_not_remove_another_nodes_record() {
    let redis = Redis::start();
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let a = node(&redis, &[&flags[..], &["--max-bans", "1"]].concat());
    let b = node(&redis, &flags);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    // A's one slot is taken; B bans mallory (A cannot hold it: full).
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"eve","seconds":600}"#), 200);
    assert_eq!(api(b.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#), 200);
    // The same ban asked of A is refused there.
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":900}"#), 503);
    let recorded = redis.query(&["HEXISTS", "wshub:bans", "mallory"]);
    // A node started now reads the recorded bans: B's ban of mallory holds there.
    let c = node(&redis, &flags);
    wait_health(c.addr, 200, WAIT);
    std::thread::sleep(Duration::from_millis(1500)); // its first read of the bans
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        assert!(
            connect_as(c.addr, "mallory").is_err(),
            "a node started later lets mallory in (recorded: {recorded:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(connect_as(b.addr, "mallory").is_err(), "B holds its ban");
}
