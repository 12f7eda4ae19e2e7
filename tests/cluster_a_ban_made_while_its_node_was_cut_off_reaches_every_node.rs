//! A ban (and an unban) made through a node that cannot reach Redis holds
//! there at once, and is written to Redis once the node reaches it again
//! (`Cluster::sync_bans`). The other nodes, which never lost Redis, read
//! the recorded bans only when they themselves reconnect: the node writing
//! it must tell them then, or the banned user stays connected on every
//! other node (and may connect there again) until the ban ends.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const KEY: &str = "cluster-node-cut-ban-key";
const SECRET: &str = "cluster-node-cut-ban-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

fn api(addr: std::net::SocketAddr, target: &str, body: &str) -> u16 {
    api_post(addr, KEY, target, body)
}

/// The close code `client` gets within `limit` (None: still open).
fn close_code_within(client: &mut Client, limit: Duration) -> Option<u16> {
    use tungstenite::Message;
    client.ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match client.ws.read() {
            Ok(Message::Close(f)) => return Some(f.map_or(1005, |f| u16::from(f.code))),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return Some(1006),
        }
    }
    None
}

#[test]
fn a_ban_and_an_unban_made_while_their_node_was_cut_off_reach_the_other_nodes() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let a = node_at(&proxy.url(), &flags);
    let b = node(&redis, &flags);
    wait_health(a.addr, 200, WAIT);
    let mut mallory = connect_as(b.addr, "mallory").expect("mallory connects to B");
    ok(&mut mallory, "room:join", json!({"room": "r"}));

    proxy.set_down(true);
    wait_health(a.addr, 503, Duration::from_secs(10));
    assert_eq!(api(a.addr, "/api/ban", r#"{"user":"mallory","seconds":600}"#), 200);
    assert!(connect_as(a.addr, "mallory").is_err(), "A holds the ban at once");
    proxy.set_down(false);
    wait_health(a.addr, 200, Duration::from_secs(10));

    // B's connection of mallory closes as banned, and B refuses mallory.
    assert_eq!(close_code_within(&mut mallory, Duration::from_secs(8)), Some(4003), "closed as banned on B");
    assert!(connect_as(b.addr, "mallory").is_err(), "B refuses mallory");

    // The same for an unban made while A is cut off.
    proxy.set_down(true);
    wait_health(a.addr, 503, Duration::from_secs(10));
    assert_eq!(api(a.addr, "/api/unban", r#"{"user":"mallory"}"#), 200);
    assert!(connect_as(a.addr, "mallory").is_ok(), "A lifted it at once");
    proxy.set_down(false);
    wait_health(a.addr, 200, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(8);
    while connect_as(b.addr, "mallory").is_err() {
        assert!(Instant::now() < deadline, "B still refuses mallory after A's unban was written");
        std::thread::sleep(Duration::from_millis(200));
    }
}
