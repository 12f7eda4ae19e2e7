//! A callback that blocks holds up only its own connection: other clients are
//! served meanwhile, and the blocked one's messages are handled in order once
//! it returns.

mod common;

use common::{close_client, connect, next_data, Recorder};
use crossbeam_channel::bounded;
use parking_lot::Mutex;
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

#[test]
fn other_clients_are_served_while_one_callback_blocks() {
    let (release_tx, release_rx) = bounded::<()>(1);
    let (blocked_tx, blocked_rx) = bounded::<()>(1);
    let gate = Mutex::new((release_rx, blocked_tx));
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(move |server, conn, message| {
        if message.as_bytes() == b"block" {
            let gate = gate.lock();
            gate.1.send(()).unwrap();
            gate.0.recv_timeout(common::WAIT).expect("released by the test");
        }
        server.send(conn, message.clone()).unwrap();
    });
    let server = Server::start(Config::default().bind("127.0.0.1:0".parse().unwrap()), handler).unwrap();
    let mut slow = connect(server.local_addr(), "/ws");
    events.connected();
    let mut other = connect(server.local_addr(), "/ws");
    events.connected();

    slow.send(WsMessage::text("block")).unwrap();
    slow.send(WsMessage::text("after")).unwrap();
    blocked_rx.recv_timeout(common::WAIT).expect("the callback to block");
    for i in 0..50 {
        other.send(WsMessage::text(format!("m{i}"))).unwrap();
        assert_eq!(next_data(&mut other), WsMessage::text(format!("m{i}")));
    }
    release_tx.send(()).unwrap();
    assert_eq!(next_data(&mut slow), WsMessage::text("block"));
    assert_eq!(next_data(&mut slow), WsMessage::text("after"));
    close_client(slow);
    close_client(other);
    server.stop();
}
