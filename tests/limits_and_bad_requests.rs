//! The limits and refusals: an oversized message closes with 1009, a client over
//! max_connections gets HTTP 503, malformed or wrong requests get their HTTP
//! status, a panicking handler closes only its own connection with 1011 — and
//! every other client keeps working throughout.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{close_client, connect, next_data, Recorder, WAIT};
use tungstenite::Message as WsMessage;
use wshub::{Config, EchoHandler, Server};

/// Short close timeouts: several clients here are left mid-close on purpose.
fn config() -> Config {
    let quick = std::time::Duration::from_millis(300);
    Config::default().bind("127.0.0.1:0".parse().unwrap()).close_timeout(quick).shutdown_timeout(quick)
}

fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(request).unwrap();
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response).into_owned()
}

#[test]
fn an_oversized_message_closes_with_1009_and_others_carry_on() {
    let server = Server::start(config().max_message_size(1000), EchoHandler).unwrap();
    let mut bystander = connect(server.local_addr(), "/ws");
    let mut big = connect(server.local_addr(), "/ws");
    big.send(WsMessage::text("x".repeat(1000))).unwrap();
    assert_eq!(next_data(&mut big), WsMessage::text("x".repeat(1000)), "exactly the limit is fine");
    big.send(WsMessage::binary(vec![0u8; 1001])).unwrap();
    assert_eq!(common::read_until_close(&mut big), Some(1009));

    // Over the limit in fragments counts the whole message.
    let mut frag = connect(server.local_addr(), "/ws");
    use tungstenite::protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    };
    frag.send(WsMessage::Frame(Frame::message(vec![1u8; 600], OpCode::Data(Data::Binary), false))).unwrap();
    frag.send(WsMessage::Frame(Frame::message(vec![1u8; 600], OpCode::Data(Data::Continue), true))).unwrap();
    assert_eq!(common::read_until_close(&mut frag), Some(1009));

    bystander.send(WsMessage::text("still fine")).unwrap();
    assert_eq!(next_data(&mut bystander), WsMessage::text("still fine"));
    close_client(bystander);
    server.stop();
}

#[test]
fn a_frame_header_promising_2_pow_63_bytes_closes_with_1009() {
    let server = Server::start(config(), EchoHandler).unwrap();
    let ws = connect(server.local_addr(), "/ws");
    let mut stream = ws.into_inner();
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 63).to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    stream.write_all(&header).unwrap();
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(reply[0], 0x88, "a close frame");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1009);
    server.stop();
}

#[test]
fn over_max_connections_the_upgrade_is_refused_with_503() {
    let server = Server::start(config().max_connections(2), EchoHandler).unwrap();
    let addr = server.local_addr();
    let a = connect(addr, "/ws");
    let b = connect(addr, "/ws");
    let refused = TcpStream::connect(addr).unwrap();
    match tungstenite::client(format!("ws://{addr}/ws"), refused) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(server.stats().connections, 2);
    close_client(a);
    common::wait_until("a slot to free up", || server.stats().connections == 1);
    let mut c = connect(addr, "/ws");
    c.send(WsMessage::text("in")).unwrap();
    assert_eq!(next_data(&mut c), WsMessage::text("in"));
    drop((b, c));
    server.stop();
}

#[test]
fn bad_http_requests_get_their_status_codes() {
    let server = Server::start(config(), EchoHandler).unwrap();
    let addr = server.local_addr();
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let upgrade = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases: Vec<(String, &str)> = vec![
        ("GET /other HTTP/1.1\r\nHost: x\r\n\r\n".into(), "HTTP/1.1 404 "),
        (
            format!("GET /elsewhere HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n{key}\r\n"),
            "HTTP/1.1 404 ",
        ),
        ("\x16\x03\x01\x02\x00\x01\x00 garbage \r\n\r\n".into(), "HTTP/1.1 400 "),
        (format!("GET /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 8\r\n{key}\r\n"), "HTTP/1.1 426 "),
        (format!("GET /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n\r\n"), "HTTP/1.1 400 "),
        (format!("POST /ws HTTP/1.1\r\n{upgrade}Sec-WebSocket-Version: 13\r\n{key}\r\n"), "HTTP/1.1 400 "),
        (format!("GET /ws HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000)), "HTTP/1.1 431 "),
    ];
    for (request, status) in cases {
        let response = http(addr, request.as_bytes());
        assert!(response.starts_with(status), "{request:?} got {response:?}");
    }
    // The server is fine afterwards.
    let mut ws = connect(addr, "/ws");
    ws.send(WsMessage::text("ok")).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text("ok"));
    assert!(server.stats().handshake_rejects >= 6);
    close_client(ws);
    server.stop();
}

#[test]
fn a_panicking_handler_closes_only_its_connection_with_1011() {
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(|server, conn, message| {
        if message.as_bytes() == b"panic" {
            panic!("handler bug triggered on purpose");
        }
        server.send(conn, message.clone()).unwrap();
    });
    let server = Server::start(config(), handler).unwrap();
    let mut good = connect(server.local_addr(), "/ws");
    events.connected();
    let mut bad = connect(server.local_addr(), "/ws");
    let bad_id = events.connected();
    bad.send(WsMessage::text("panic")).unwrap();
    assert_eq!(common::read_until_close(&mut bad), Some(1011));
    while bad.read().is_ok() {}
    assert_eq!(events.closed(bad_id), 1011);
    good.send(WsMessage::text("alive")).unwrap();
    assert_eq!(next_data(&mut good), WsMessage::text("alive"));
    close_client(good);
    server.stop();
}

#[test]
fn a_reply_sent_before_a_protocol_error_arrives_before_the_close() {
    let server = Server::start(config(), EchoHandler).unwrap();
    for round in 0..20 {
        let ws = connect(server.local_addr(), "/ws");
        let mut stream = ws.into_inner();
        // A masked text frame "hello", then a frame with reserved opcode 0x7, in one write.
        let mut bytes = vec![0x81, 0x80 | 5, 0, 0, 0, 0];
        bytes.extend_from_slice(b"hello");
        bytes.extend_from_slice(&[0x87, 0x80, 0, 0, 0, 0]);
        stream.write_all(&bytes).unwrap();
        let mut reply = Vec::new();
        let _ = stream.read_to_end(&mut reply);
        assert_eq!(&reply[..7], b"\x81\x05hello", "round {round}: the echo comes first");
        assert_eq!(reply[7], 0x88, "round {round}: then the close");
        assert_eq!(u16::from_be_bytes([reply[9], reply[10]]), 1002);
    }
    server.stop();
}
