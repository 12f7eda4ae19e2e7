//! Every handle method called from inside the handler's callbacks works and
//! does not deadlock, including stop().

mod common;

use std::time::Duration;

use common::{connect, next_data, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Message, Server};

#[test]
fn join_broadcast_send_and_queries_from_on_message() {
    let (handler, events) = Recorder::new();
    let handler = handler
        .on_connect(|server, conn, _| {
            server.send(conn, format!("welcome {conn}")).unwrap();
            server.join(conn, "lobby").unwrap();
        })
        .on_message(|server, conn, message| {
            let Message::Text(text) = message else { return };
            match text.as_str() {
                "who" => {
                    let size = server.room_size("lobby").unwrap();
                    let rooms = server.rooms_of(conn).unwrap();
                    let count = server.connections().len();
                    server.send(conn, format!("size={size} rooms={rooms:?} conns={count}")).unwrap();
                }
                "move" => {
                    server.leave(conn, "lobby").unwrap();
                    server.join(conn, "other").unwrap();
                    server.broadcast("other", "moved", None).unwrap();
                }
                other => server.broadcast("lobby", format!("{conn}: {other}"), Some(conn)).unwrap(),
            }
        });
    let server = Server::start(Config::default().bind("127.0.0.1:0".parse().unwrap()), handler).unwrap();
    let mut a = connect(server.local_addr(), "/ws");
    let ida = events.connected();
    assert_eq!(next_data(&mut a), WsMessage::text(format!("welcome {ida}")));
    let mut b = connect(server.local_addr(), "/ws");
    let idb = events.connected();
    assert_eq!(next_data(&mut b), WsMessage::text(format!("welcome {idb}")));

    // Many messages from both at once: callbacks on two threads, all calling in.
    for i in 0..200 {
        a.send(WsMessage::text(format!("a{i}"))).unwrap();
        b.send(WsMessage::text(format!("b{i}"))).unwrap();
    }
    for i in 0..200 {
        assert_eq!(next_data(&mut b), WsMessage::text(format!("{ida}: a{i}")));
        assert_eq!(next_data(&mut a), WsMessage::text(format!("{idb}: b{i}")));
    }
    a.send(WsMessage::text("who")).unwrap();
    assert_eq!(next_data(&mut a), WsMessage::text(r#"size=2 rooms=["lobby"] conns=2"#));
    b.send(WsMessage::text("move")).unwrap();
    assert_eq!(next_data(&mut b), WsMessage::text("moved"));
    a.send(WsMessage::text("who")).unwrap();
    assert_eq!(next_data(&mut a), WsMessage::text(r#"size=1 rooms=["lobby"] conns=2"#));
    common::close_client(a);
    common::close_client(b);
    server.stop();
}

#[test]
fn stop_from_inside_a_callback_returns_and_stops_the_server() {
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(|server, _, _| server.stop());
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .close_timeout(Duration::from_secs(2))
        .shutdown_timeout(Duration::from_secs(2));
    let server = Server::start(config, handler).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    ws.send(WsMessage::text("stop please")).unwrap();
    assert_eq!(common::read_until_close(&mut ws), Some(1001));
    while ws.read().is_ok() {}
    assert_eq!(events.closed(id), 1001);
    server.stop(); // waits for the stop the callback started
    assert!(std::net::TcpStream::connect(server.local_addr()).is_err(), "listener closed");
}
