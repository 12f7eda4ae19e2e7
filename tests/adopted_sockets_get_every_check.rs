//! A socket a host accepted itself and hands over with `ServerHandle::adopt`
//! (after reading part or all of its request) is served like one wshub
//! accepted: upgraded, echoed, and refused by the same checks: path,
//! Origin, the per-address cap (answered by the overflow thread, from the bytes
//! the host read), the handshake deadline. A server may have no listener
//! at all.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use common::*;
use tungstenite::Message as WsMessage;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{Config, EchoHandler, Error, Server, ServerHandle};

/// The host: its own listener; each accepted socket is read up to the end
/// of the request head (or `read_limit` bytes), then adopted.
struct Host {
    listener: TcpListener,
}

impl Host {
    fn new() -> Host {
        Host { listener: TcpListener::bind("127.0.0.1:0").unwrap() }
    }

    fn addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap()
    }

    /// Accepts one socket, reads at most `read_limit` bytes of it (stopping at
    /// the end of the head), and adopts it.
    fn adopt_next(&self, server: &ServerHandle, read_limit: usize) {
        let (mut stream, _) = self.listener.accept().unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while head.len() < read_limit && !head.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
        server.adopt(stream, &head).unwrap();
    }
}

fn no_listener() -> Config {
    Config::default().listen(false)
}

/// Sends `request` raw and returns the status line of the answer.
fn status_of(
    addr: SocketAddr,
    host: &Host,
    server: &ServerHandle,
    request: &str,
    read_limit: usize,
) -> String {
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.write_all(request.as_bytes()).unwrap();
    host.adopt_next(server, read_limit);
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

fn upgrade_request(path: &str, origin: Option<&str>) -> String {
    let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
}

#[test]
fn an_adopted_socket_upgrades_and_echoes_whether_the_host_read_all_part_or_none_of_it() {
    init_log();
    let server = Server::start(no_listener(), EchoHandler).unwrap();
    assert_eq!(server.local_addr().port(), 0, "no listener");
    let host = Host::new();
    for read_limit in [usize::MAX, 10, 0] {
        let addr = host.addr();
        let client = std::thread::spawn(move || {
            let mut ws = connect(addr, "/ws");
            ws.send(WsMessage::text("hello")).unwrap();
            let echoed = next_data(&mut ws);
            close_client(ws);
            echoed
        });
        host.adopt_next(&server, read_limit);
        assert_eq!(client.join().unwrap(), WsMessage::text("hello"), "read_limit {read_limit}");
    }
    assert_eq!(server.stats().connections_total, 3);
    server.stop();
}

#[test]
fn an_adopted_socket_gets_the_path_origin_and_deadline_checks() {
    init_log();
    let config = no_listener().handshake_timeout(Duration::from_millis(300));
    let protocol = ProtocolHandler::new(ProtocolConfig::default().allow_origin("https://good.example"));
    let server = Server::start(config, protocol).unwrap();
    let host = Host::new();
    let addr = host.addr();
    let limit = usize::MAX;
    assert!(status_of(addr, &host, &server, &upgrade_request("/elsewhere", None), limit).contains(" 404 "));
    let evil = upgrade_request("/ws", Some("https://evil.example"));
    let status = status_of(addr, &host, &server, &evil, limit);
    assert!(status.contains(" 403 "), "{status}");
    // Only the start of a request, never the rest: 408 at the deadline.
    let partial = "GET /ws HTTP/1.1\r\n";
    assert!(status_of(addr, &host, &server, partial, partial.len()).contains(" 408 "));
    server.stop();
}

#[test]
fn an_adopted_socket_over_the_per_address_cap_is_answered_from_what_the_host_read() {
    init_log();
    let server = Server::start(no_listener().max_connections_per_ip(1), EchoHandler).unwrap();
    let host = Host::new();
    let addr = host.addr();
    let limit = usize::MAX;

    // One connection per address: a second adopted one is over the cap and
    // answered by the overflow thread from the bytes the host read.
    let first = {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let request = tungstenite::http::Request::builder()
            .uri(format!("ws://{addr}/ws"))
            .header("Host", addr.to_string())
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", tungstenite::handshake::client::generate_key())
            .body(())
            .unwrap();
        let client = std::thread::spawn(move || tungstenite::client(request, stream).ok().map(|(ws, _)| ws));
        host.adopt_next(&server, limit);
        client.join().unwrap().expect("the first one upgrades")
    };
    let second = status_of(addr, &host, &server, &upgrade_request("/ws", None), limit);
    assert!(second.contains(" 503 "), "{second}");
    let s = server.stats();
    assert_eq!(s.handshake_overflow_by_reason.iter().find(|(r, _)| *r == "connections_per_ip").unwrap().1, 1);
    close_client(first);
    server.stop();
}

#[test]
fn adopt_refuses_too_many_bytes_and_a_stopped_server() {
    let server = Server::start(no_listener(), EchoHandler).unwrap();
    let host = Host::new();
    let _client = TcpStream::connect(host.addr()).unwrap();
    let (stream, _) = host.listener.accept().unwrap();
    let err = server.adopt(stream.try_clone().unwrap(), &[b'x'; 8 * 1024 + 1]).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    server.stop();
    assert!(matches!(server.adopt(stream, b"").unwrap_err(), Error::Stopped));
}
