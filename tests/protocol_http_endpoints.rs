//! The HTTP side of the port (PROTOCOL.md's endpoint table) and graceful
//! shutdown: `/healthz` turns 503, clients get 1001, the process exits 0.

mod protocol_common;
use protocol_common as common;

use std::time::Duration;

use common::{get, http, Client, Frame, Wshub};
use serde_json::json;

#[test]
fn healthz_answers_ok() {
    let server = Wshub::start(&[]);
    let (status, head, body) = get(server.addr, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"), "{head}");
}

#[test]
fn metrics_lists_every_name_in_the_protocol_in_prometheus_text() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    c.join("m");
    c.ok("room:publish", json!({"room": "m", "data": 1}));
    let (status, head, body) = get(server.addr, "/metrics");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    for name in [
        "wshub_connections",
        "wshub_connections_total",
        "wshub_rooms",
        "wshub_messages_in_total",
        "wshub_messages_out_total",
        "wshub_bytes_in_total",
        "wshub_bytes_out_total",
        "wshub_dropped_total",
        "wshub_disconnects_total",
        "wshub_handshake_rejects_total",
        "wshub_outbound_queue_depth",
    ] {
        assert!(body.contains(&format!("# TYPE {name} ")), "{name} missing:\n{body}");
    }
    let value = |prefix: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {prefix}:\n{body}"))
    };
    assert_eq!(value("wshub_connections "), 1);
    assert_eq!(value("wshub_rooms "), 1);
    assert!(value("wshub_messages_in_total ") >= 2);
    assert!(body.contains("wshub_dropped_total{reason=\"slow_consumer\"} 0"), "{body}");
    // Every sample line is `name{labels} value`, every value a number.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (_, v) = line.rsplit_once(' ').expect("sample");
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
    let normal = tungstenite::protocol::CloseFrame { code: 1000.into(), reason: "".into() };
    c.ws.close(Some(normal)).expect("close");
    assert_eq!(c.frame(), Frame::Close(1000));
    let deadline = std::time::Instant::now() + common::WAIT;
    while !get(server.addr, "/metrics").2.contains("wshub_disconnects_total{code=\"1000\"} 1") {
        assert!(std::time::Instant::now() < deadline, "the disconnect was never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_demo_page_and_its_client_are_served() {
    let server = Wshub::start(&[]);
    let (status, head, page) = get(server.addr, "/");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/html"), "{head}");
    assert!(page.contains("<script src=\"/client.js\"></script>"), "{page}");
    let (status, head, js) = get(server.addr, "/client.js");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: text/javascript"), "{head}");
    assert!(js.contains("WshubClient") && js.contains("room:join"));
}

#[test]
fn other_paths_are_404_and_a_malformed_request_is_400() {
    let server = Wshub::start(&[]);
    assert_eq!(get(server.addr, "/nope").0, 404);
    assert_eq!(get(server.addr, "/healthz/extra").0, 404);
    let (status, _, _) = http(server.addr, "THIS IS NOT HTTP\r\n\r\n");
    assert_eq!(status, 400);
    // The WebSocket path without an upgrade says how to use it.
    assert_eq!(get(server.addr, "/ws").0, 426);
    // An upgrade on another path is refused by the engine: counted by status.
    let (status, _) = common::head_only(
        server.addr,
        "GET /elsewhere HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status, 404);
    let metrics = get(server.addr, "/metrics").2;
    assert!(metrics.contains("wshub_handshake_rejects_total{status=\"400\"} 1"), "{metrics}");
    assert!(metrics.contains("wshub_handshake_rejects_total{status=\"404\"} 1"), "{metrics}");
}

#[test]
fn sigterm_delivers_what_is_queued_then_1001_and_exits_0() {
    // A long shutdown timeout: exiting within the 10 s below proves no
    // connection thread was left behind (the stop would wait out the timeout).
    let mut server = Wshub::start(&["--shutdown-timeout-ms", "30000"]);
    let mut c = server.client();
    c.join("bye");
    let mut p = server.client();
    p.join("bye");
    for i in 0..100 {
        p.ok("room:publish", json!({"room": "bye", "data": i}));
    }
    server.sigterm();
    // Everything published before the signal arrives, in order, then 1001.
    assert_eq!(c.json()["type"], "presence:join");
    for i in 0..100 {
        let m = c.json();
        assert_eq!((m["type"].clone(), m["payload"]["data"].clone()), (json!("room:message"), json!(i)));
    }
    assert_eq!(c.frame(), Frame::Close(1001));
    drop(p); // it never answered its own 1001: the server would wait shutdown_timeout_ms for it
    drop(c);
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn while_draining_healthz_is_503_and_new_upgrades_are_refused() {
    let mut server = Wshub::start(&["--drain-delay-ms", "3000"]);
    let mut c = server.client();
    c.join("d");
    server.sigterm();
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let (status, head, _) = get(server.addr, "/healthz");
        if status == 503 {
            assert!(head.contains("Retry-After"), "{head}");
            break;
        }
        assert_eq!(status, 200);
        assert!(std::time::Instant::now() < deadline, "healthz never turned 503");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, head) = common::head_only(
        server.addr,
        "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    assert_eq!(status, 503, "{head}");
    let metrics = get(server.addr, "/metrics").2;
    assert!(metrics.contains("wshub_handshake_rejects_total{status=\"503\"} 1"), "{metrics}");
    // Open connections still work until the stop, then get 1001.
    c.assert_nothing_pending();
    let mut code = None;
    for _ in 0..10 {
        if let Frame::Close(c) = c.frame() {
            code = Some(c);
            break;
        }
    }
    assert_eq!(code, Some(1001));
    drop(c);
    assert_eq!(server.wait_exit(Duration::from_secs(15)), Some(0));
}

#[test]
fn echo_mode_is_kept() {
    let server = Wshub::start(&["--echo"]);
    let mut c = Client::connect_raw(server.addr, &[]);
    c.send_text("{\"type\":\"ping\"}");
    assert_eq!(c.json(), json!({"type": "ping"}));
}

#[test]
fn admin_bind_serves_metrics_healthz_and_the_api_apart_from_the_public_port() {
    let admin: std::net::SocketAddr = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("addr")
    };
    let server = Wshub::start(&["--api-key", "k", "--admin-bind", &admin.to_string()]);
    let api = |addr, path: &str| {
        http(addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nX-API-Key: k\r\nConnection: close\r\n\r\n")).0
    };
    // The public port: the page, health and WebSockets, no metrics, no API.
    assert_eq!(get(server.addr, "/metrics").0, 404);
    assert_eq!(api(server.addr, "/api/rooms"), 404);
    assert_eq!(get(server.addr, "/healthz").0, 200);
    assert_eq!(get(server.addr, "/").0, 200);
    let mut c = server.client();
    c.join("lobby");
    // The admin port: metrics, health and the API only.
    let (status, _, body) = get(admin, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("wshub_connections 1"), "{body}");
    assert_eq!(get(admin, "/healthz").0, 200);
    assert_eq!(api(admin, "/api/rooms"), 200);
    assert_eq!(get(admin, "/").0, 404);
    assert_eq!(get(admin, "/client.js").0, 404);
    let upgrade = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http(admin, upgrade).0, 404, "no WebSocket on the admin port");
}
