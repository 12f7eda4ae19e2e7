//! Caps before the upgrade, against the real binary: the per-IP connection
//! cap (503 with Retry-After, a socket still in its handshake counts), the
//! per-IP connect rate (429) while another loopback address is still
//! accepted, the rejects counted in /metrics, and an honest client that
//! chats after all of it; and the client address a trusted proxy forwards
//! (`X-Forwarded-For`) in the request the handler sees.

mod admission_common;
mod protocol_common;

use std::time::Duration;

use admission_common::{get_from, ip, metric, tcp_from, upgrade, Outcome};
use protocol_common::Wshub;
use serde_json::json;

#[test]
fn per_ip_connection_cap_counts_handshakes_and_answers_503() {
    let server = Wshub::start(&["--max-connections-per-ip", "3"]);
    let (_a, _) = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]).open();
    let (_b, _) = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]).open();
    // Still in its handshake (sent nothing): it holds the third place.
    let idle = tcp_from(ip("127.0.0.1"), server.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let refused = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]);
    assert_eq!(refused.status(), 503, "{refused:?}");
    assert!(refused.header("retry-after").is_some());
    let (_c, _) = upgrade(ip("127.0.0.2"), server.addr, "", &[], &[]).open();
    drop(idle);
    let (_, metrics) = get_from(ip("127.0.0.3"), server.addr, "/metrics");
    assert!(metric(&metrics, "wshub_handshake_rejects_total{status=\"503\"}") >= 1, "{metrics}");
    assert!(
        metric(&metrics, "wshub_handshake_overflow_total{reason=\"connections_per_ip\"}") >= 1,
        "{metrics}"
    );
}

#[test]
fn a_connect_flood_from_one_ip_gets_429_while_another_ip_is_accepted() {
    let server = Wshub::start(&["--connect-rate-per-ip", "10/s"]);
    let mut statuses = Vec::new();
    let mut open = Vec::new();
    for _ in 0..60 {
        match upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]) {
            Outcome::Open(c) => {
                statuses.push(101);
                open.push(c);
            }
            other => statuses.push(other.status()),
        }
    }
    let limited = statuses.iter().filter(|s| **s == 429).count();
    let opened = statuses.iter().filter(|s| **s == 101).count();
    assert!(limited >= 30, "only {limited} of 60 got 429: {statuses:?}");
    assert!(opened >= 10, "the first burst must pass: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 101 || *s == 429), "{statuses:?}");
    let (mut other, _) = upgrade(ip("127.0.0.2"), server.addr, "", &[], &[]).open();
    other.join("lobby");
    let (_, metrics) = get_from(ip("127.0.0.3"), server.addr, "/metrics");
    assert_eq!(
        metric(&metrics, "wshub_handshake_rejects_total{status=\"429\"}"),
        limited as u64,
        "{metrics}"
    );

    // After the flood (and a second of refill), an honest client from the
    // flooded address connects and chats.
    std::thread::sleep(Duration::from_millis(1100));
    let (mut honest, _) = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]).open();
    honest.join("lobby");
    honest.ok("room:publish", json!({"room": "lobby", "data": "hello after the flood"}));
    let message = other.json();
    assert!(message["type"] == "presence:join" || message["type"] == "room:message", "{message}");
}

/// Answers every plain request with the address the server saw it from.
struct EchoAddr;

impl wshub::Handler for EchoAddr {
    fn on_http(&self, _: &wshub::ServerHandle, request: &wshub::RequestInfo) -> wshub::HttpResponse {
        wshub::HttpResponse::new(200, "text/plain", request.remote_addr.ip().to_string())
    }
}

#[test]
fn the_request_names_the_client_a_trusted_proxy_forwards() {
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap()).trusted_proxy("127.0.0.1/32");
    let server = wshub::Server::start(config, EchoAddr).expect("start");
    let from = |peer: &str, xff: &str| {
        let raw =
            format!("GET /who HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: {xff}\r\nConnection: close\r\n\r\n");
        let (status, text) = admission_common::http_from(ip(peer), server.local_addr(), &raw);
        assert_eq!(status, 200, "{text}");
        text.rsplit("\r\n\r\n").next().unwrap_or_default().to_owned()
    };
    assert_eq!(from("127.0.0.1", "203.0.113.9, 10.0.0.1"), "10.0.0.1", "the rightmost untrusted entry");
    assert_eq!(from("127.0.0.1", "203.0.113.9, 127.0.0.1"), "203.0.113.9", "trusted hops are skipped");
    assert_eq!(from("127.0.0.2", "203.0.113.9"), "127.0.0.2", "an untrusted peer's header is ignored");
    server.stop();
}
