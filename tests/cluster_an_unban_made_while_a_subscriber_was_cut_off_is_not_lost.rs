//! An unban made through one node while another node's subscriber
//! connection was silently cut (a NAT or load balancer forgot it) never
//! reaches that subscriber on the `ctl` channel. Once it is connected again,
//! the node must read the bans Redis records and lift the ones Redis no
//! longer holds: the user may connect there again.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const KEY: &str = "cluster-cut-unban-key";
const SECRET: &str = "cluster-cut-unban-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> u16 {
    api_post(addr, KEY, target, body)
}

#[test]
fn an_unban_missed_by_a_cut_off_subscriber_is_applied_once_it_reconnects() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let a = node(&redis, &flags);
    let b = node_at(&proxy.url(), &flags);
    let mut bystander = connect_as(b.addr, "alice").expect("alice connects");
    ok(&mut bystander, "room:join", json!({"room": "r"}));
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#), 200);
    let deadline = Instant::now() + WAIT;
    while connect_as(b.addr, "mallory").is_ok() {
        assert!(Instant::now() < deadline, "the ban did not reach B");
        std::thread::sleep(Duration::from_millis(50));
    }

    proxy.cut_silently();
    assert_eq!(api(a.addr, "/api/unban", r#"{"user":"mallory"}"#), 200);
    // The subscriber notices the cut within about 2 s and connects again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while connect_as(b.addr, "mallory").is_err() {
        assert!(Instant::now() < deadline, "B still refuses mallory after its subscriber reconnected");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(connect_as(a.addr, "mallory").is_ok(), "A lifted it at once");
}
