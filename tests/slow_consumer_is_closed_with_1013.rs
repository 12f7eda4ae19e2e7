//! A member that stops reading while 10,000 messages are broadcast is closed
//! with 1013 once its queue is full; every other member receives all 10,000 in
//! order, and the hub never waits for the slow one.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{wait_until, Recorder, WAIT};
use socket2::{Domain, Socket, Type};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const MESSAGES: usize = 10_000;
const MESSAGE_BYTES: usize = 1024;

/// A client whose receive buffer is small, so that the kernel cannot absorb
/// the whole broadcast for it.
fn connect_with_small_rcvbuf(addr: std::net::SocketAddr) -> common::Client {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), stream).unwrap();
    ws
}

fn payload(i: usize) -> String {
    let mut s = format!("{i:08}");
    s.push_str(&"x".repeat(MESSAGE_BYTES - s.len()));
    s
}

#[test]
fn the_one_that_stops_reading_is_closed_and_the_others_get_everything() {
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap()).outbound_queue(256);
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    let addr = server.local_addr();

    let mut slow = connect_with_small_rcvbuf(addr);
    let slow_id = events.connected();
    server.join(slow_id, "room").unwrap();

    // Healthy members read everything and count it.
    let progress: Vec<Arc<AtomicUsize>> = (0..3).map(|_| Arc::new(AtomicUsize::new(0))).collect();
    let mut readers = Vec::new();
    for counter in &progress {
        let mut ws = common::connect(addr, "/ws");
        let id = events.connected();
        server.join(id, "room").unwrap();
        let counter = counter.clone();
        readers.push(std::thread::spawn(move || {
            for i in 0..MESSAGES {
                match common::next_data(&mut ws) {
                    WsMessage::Text(t) => assert_eq!(t.as_str(), payload(i), "message {i} out of order"),
                    other => panic!("unexpected {other:?}"),
                }
                counter.store(i + 1, Ordering::Release);
            }
            ws
        }));
    }

    // Publish in steps the healthy readers can keep up with (a fair publisher);
    // the slow member reads nothing meanwhile.
    for i in 0..MESSAGES {
        server.broadcast("room", payload(i), None).unwrap();
        if i % 100 == 99 {
            wait_until("healthy members to keep up", || {
                progress.iter().all(|p| p.load(Ordering::Acquire) + 150 >= i)
            });
        }
    }
    for r in readers {
        let mut ws = r.join().expect("a healthy member lost or reordered a message");
        ws.close(None).unwrap();
    }
    assert_eq!(server.stats().dropped_slow_consumer, 1, "exactly the slow member was dropped");

    // The slow member now reads: an in-order prefix, then the 1013 close.
    let mut next = 0;
    let code = loop {
        match slow.read() {
            Ok(WsMessage::Text(t)) => {
                assert_eq!(t.as_str(), payload(next));
                next += 1;
            }
            Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => {}
            Err(e) => panic!("slow member: {e} after {next} messages"),
        }
    };
    while slow.read().is_ok() {} // flushes the close reply
    assert_eq!(code, Some(1013));
    assert!(next < MESSAGES, "the slow member cannot have received everything");
    assert_eq!(events.closed(slow_id), 1013);
    server.stop();
}
