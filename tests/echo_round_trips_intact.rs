//! `wshub --echo` (the real binary) returns every message intact: 200 concurrent
//! clients × 20 messages, text and binary, a 300 KB message and a fragmented one.

mod common;
mod protocol_common;

use common::{connect, next_data};
use protocol_common::{Wshub, WAIT};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message as WsMessage;

#[test]
fn two_hundred_clients_each_get_their_own_twenty_messages_back() {
    // 200 handshakes at once from one address: past the default bound per
    // address (16), which would answer most of them 503.
    let mut server = Wshub::start(&["--echo", "--max-handshakes-per-ip", "256"]);
    let addr = server.addr;
    let clients: Vec<_> = (0..200)
        .map(|c| {
            std::thread::spawn(move || {
                let mut ws = connect(addr, "/ws");
                for i in 0..20 {
                    let sent = if i % 2 == 0 {
                        WsMessage::text(format!("client {c} message {i}"))
                    } else {
                        WsMessage::binary(vec![c as u8, i as u8, 0xff, 0])
                    };
                    ws.send(sent.clone()).unwrap();
                    assert_eq!(next_data(&mut ws), sent, "client {c} message {i}");
                }
                ws.close(None).unwrap();
                // Drain to the end of the close handshake.
                while ws.read().is_ok() {}
            })
        })
        .collect();
    for c in clients {
        c.join().expect("a client thread failed");
    }
    server.signal("INT");
    assert_eq!(server.wait_exit(WAIT), Some(0));
}

#[test]
fn large_and_fragmented_messages_come_back_whole() {
    let mut server = Wshub::start(&["--echo"]);
    let mut ws = connect(server.addr, "/ws");

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    ws.send(WsMessage::binary(big.clone())).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::binary(big));

    let big_text = "wshub ✓ ".repeat(40_000);
    ws.send(WsMessage::text(big_text.clone())).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text(big_text));

    // One text message in three frames, a ping between two of them.
    let parts = ["fragmented ", "message ", "reassembled ✓"];
    ws.write(WsMessage::Frame(Frame::message(parts[0], OpCode::Data(Data::Text), false))).unwrap();
    ws.write(WsMessage::Frame(Frame::message(parts[1], OpCode::Data(Data::Continue), false))).unwrap();
    ws.write(WsMessage::Ping("mid".into())).unwrap();
    ws.write(WsMessage::Frame(Frame::message(parts[2], OpCode::Data(Data::Continue), true))).unwrap();
    ws.flush().unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text(parts.concat()));

    ws.send(WsMessage::text("")).unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text(""));
    ws.close(None).unwrap();
    while ws.read().is_ok() {}
    server.signal("INT");
    assert_eq!(server.wait_exit(WAIT), Some(0));
}
