//! Peers that misbehave at the TCP and framing level: each fault ends only the
//! faulty connection, with the right close code or none, and a bystander keeps
//! being served. (Never-reading and never-writing peers, a 2^63-byte frame
//! header and a panicking handler have their own tests.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{close_client, connect, next_data, Recorder};
use socket2::Socket;
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

fn start() -> (wshub::ServerHandle, common::Events) {
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(|server, conn, message| {
        let _ = server.send(conn, message.clone());
    });
    let quick = Duration::from_millis(500);
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap()).close_timeout(quick);
    (Server::start(config, handler).unwrap(), events)
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn bystander_still_served(bystander: &mut common::Client) {
    bystander.send(WsMessage::text("still here")).unwrap();
    assert_eq!(next_data(bystander), WsMessage::text("still here"));
}

#[test]
fn a_reset_in_the_middle_of_a_frame_ends_only_that_connection() {
    let (server, events) = start();
    let mut bystander = connect(server.local_addr(), "/ws");
    events.connected();
    for cut in [1usize, 2, 6, 9] {
        let ws = connect(server.local_addr(), "/ws");
        let id = events.connected();
        let mut stream = ws.into_inner();
        let frame = client_frame(0x1, b"abcdefghij");
        stream.write_all(&frame[..cut]).unwrap();
        let socket = Socket::from(stream);
        socket.set_linger(Some(Duration::ZERO)).unwrap();
        drop(socket);
        assert_eq!(events.closed(id), 1006, "cut after {cut} bytes");
    }
    bystander_still_served(&mut bystander);
    assert_eq!(server.connections().len(), 1);
    close_client(bystander);
    server.stop();
}

#[test]
fn a_peer_that_closes_and_keeps_sending_gets_one_close_reply_and_nothing_else() {
    let (server, events) = start();
    let mut bystander = connect(server.local_addr(), "/ws");
    events.connected();
    let ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    let mut stream = ws.into_inner();
    stream.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut bytes = client_frame(0x8, &[0x0f, 0xa0, b'b', b'y', b'e']); // close 4000 "bye"
    for i in 0..10 {
        bytes.extend(client_frame(0x1, format!("after close {i}").as_bytes()));
    }
    stream.write_all(&bytes).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    // Exactly one frame back, the close reply echoing the code; no echo of the rest.
    assert_eq!(reply.first(), Some(&0x88), "{reply:?}");
    let len = (reply[1] & 0x7f) as usize;
    assert_eq!(reply.len(), 2 + len, "nothing after the close: {reply:?}");
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 4000);
    assert_eq!(events.closed(id), 4000);
    bystander_still_served(&mut bystander);
    close_client(bystander);
    server.stop();
}

#[test]
fn garbage_instead_of_frames_closes_with_1002() {
    let (server, events) = start();
    let ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    let mut stream: TcpStream = ws.into_inner();
    // An unmasked client frame is a protocol error (RFC 6455 section 5.1).
    stream.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert_eq!(reply[0], 0x88);
    assert_eq!(u16::from_be_bytes([reply[2], reply[3]]), 1002);
    assert_eq!(events.closed(id), 1002);
    server.stop();
}
