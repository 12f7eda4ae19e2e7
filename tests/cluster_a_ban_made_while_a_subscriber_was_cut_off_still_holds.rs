//! A ban made through one node while another node's subscriber connection
//! was silently cut (a NAT or load balancer forgot it) never reaches that
//! subscriber on the `ctl` channel. Once it is connected again, the node must
//! read the bans Redis recorded meanwhile: close the banned user's
//! connections and refuse new ones.

mod cluster_common;
use cluster_common::protocol_common::http;
use cluster_common::*;

use std::time::Duration;

use serde_json::json;

const KEY: &str = "cluster-cut-ban-key";
const SECRET: &str = "cluster-cut-ban-secret-of-some-length";

fn connect_as(addr: std::net::SocketAddr, user: &str) -> Result<Client, String> {
    connect_as_user(addr, user, SECRET)
}

#[test]
fn a_ban_missed_by_a_cut_off_subscriber_is_applied_once_it_reconnects() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let flags = ["--api-key", KEY, "--jwt-secret", SECRET];
    let a = node(&redis, &flags);
    let b = node_at(&proxy.url(), &flags);
    let mut on_b = connect_as(b.addr, "mallory").expect("mallory connects");
    ok(&mut on_b, "room:join", json!({"room": "r"}));

    proxy.cut_silently();
    let body = r#"{"user":"mallory","seconds":600}"#;
    let request = format!(
        "POST /api/ban HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    assert_eq!(http(a.addr, &request).0, 200);

    // The subscriber notices the cut within about 2 s and connects again;
    // each frame read waits up to WAIT (10 s).
    let mut closed = None;
    for _ in 0..100 {
        if let Frame::Close(code) = on_b.frame() {
            closed = Some(code);
            break;
        }
    }
    assert_eq!(closed, Some(4003), "the banned user is closed on the node that missed the ban");
    assert!(connect_as(b.addr, "mallory").is_err(), "and refused there");
}
