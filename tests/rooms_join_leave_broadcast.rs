//! Room semantics through the Rust API: join, leave, broadcast with `except`,
//! room_size, rooms_of, and a room vanishing with its last member.

mod common;

use std::time::Duration;

use common::{connect, next_data, wait_until, Event, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Error, Message, Server};

fn config() -> Config {
    Config::default().bind("127.0.0.1:0".parse().unwrap())
}

#[test]
fn broadcast_reaches_members_but_the_excepted_one() {
    let (handler, events) = Recorder::new();
    let server = Server::start(config(), handler).unwrap();
    let mut a = connect(server.local_addr(), "/ws");
    let ida = events.connected();
    let mut b = connect(server.local_addr(), "/ws");
    let idb = events.connected();
    let mut c = connect(server.local_addr(), "/ws");
    let idc = events.connected();

    server.join(ida, "r").unwrap();
    server.join(idb, "r").unwrap();
    server.join(idb, "s").unwrap();
    assert_eq!(server.room_size("r").unwrap(), 2);
    assert_eq!(server.rooms_of(idb).unwrap(), vec!["r", "s"]);
    assert_eq!(server.room_count().unwrap(), 2);

    server.broadcast("r", "to r but a", Some(ida)).unwrap();
    server.broadcast("r", Message::Binary(vec![1, 2]), None).unwrap();
    server.send(idc, "only c").unwrap();
    assert_eq!(next_data(&mut b), WsMessage::text("to r but a"));
    assert_eq!(next_data(&mut b), WsMessage::binary(vec![1, 2]));
    assert_eq!(next_data(&mut a), WsMessage::binary(vec![1, 2]), "a was excepted from the first");
    assert_eq!(next_data(&mut c), WsMessage::text("only c"), "c is in no room");

    // Leaving: a room goes away with its last member.
    server.leave(idb, "s").unwrap();
    assert_eq!(server.room_size("s").unwrap(), 0);
    assert_eq!(server.room_count().unwrap(), 1);
    server.leave(ida, "r").unwrap();
    server.broadcast("r", "after a left", None).unwrap();
    assert_eq!(next_data(&mut b), WsMessage::text("after a left"));
    a.send(WsMessage::text("marker")).unwrap();
    assert_eq!(events.next(), Event::Message(ida, Message::Text("marker".into())));
    server.send(ida, "direct").unwrap();
    assert_eq!(next_data(&mut a), WsMessage::text("direct"), "nothing from r after leaving");

    // Disconnecting: the last member's close removes the room too.
    drop(b);
    assert_eq!(events.closed(idb), 1006);
    assert_eq!(server.room_size("r").unwrap(), 0);
    assert_eq!(server.room_count().unwrap(), 0);
    assert!(server.rooms_of(idb).unwrap().is_empty());
    assert!(matches!(server.join(idb, "r"), Err(Error::NoSuchConnection)));
    assert!(matches!(server.send(idb, "x"), Err(Error::NoSuchConnection)));

    drop((a, c));
    server.stop();
}

#[test]
fn bad_arguments_are_refused_with_clear_errors() {
    let (handler, events) = Recorder::new();
    // The client below never answers the stop's 1001: cut it quickly.
    let quick = Duration::from_millis(200);
    let server = Server::start(config().close_timeout(quick).shutdown_timeout(quick), handler).unwrap();
    let _ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    assert!(matches!(server.join(id, ""), Err(Error::InvalidRoom)));
    assert!(matches!(server.join(id, &"x".repeat(129)), Err(Error::InvalidRoom)));
    assert!(matches!(server.broadcast("a\u{7}", "x", None), Err(Error::InvalidRoom)));
    assert!(matches!(server.close(id, 1005, ""), Err(Error::InvalidCloseCode)));
    assert!(matches!(server.close(id, 1000, &"r".repeat(124)), Err(Error::InvalidCloseCode)));
    assert!(matches!(server.send(999_999, "x"), Err(Error::NoSuchConnection)));
    assert!(matches!(
        Server::start(config().outbound_queue(0), Recorder::new().0),
        Err(Error::InvalidConfig(_))
    ));
    server.stop();
    assert!(matches!(server.send(id, "x"), Err(Error::Stopped)));
    assert!(matches!(server.room_size("r"), Err(Error::Stopped)));
}

#[test]
fn close_sends_the_code_after_queued_frames_and_metadata_is_kept() {
    let (handler, events) = Recorder::new();
    let server = Server::start(config(), handler).unwrap();
    let mut ws = connect(server.local_addr(), "/ws?user=ann");
    let id = events.connected();
    let info = server.conn_info(id).unwrap();
    assert_eq!(info.query, "user=ann");
    assert_eq!(info.remote_addr, ws.get_ref().local_addr().unwrap());
    server.set_conn_value(id, "name", "ann").unwrap();
    assert_eq!(server.conn_value(id, "name").as_deref(), Some("ann"));
    assert_eq!(server.connections(), vec![id]);

    server.send(id, "last words").unwrap();
    server.close(id, 4000, "bye").unwrap();
    assert_eq!(next_data(&mut ws), WsMessage::text("last words"));
    match ws.read().unwrap() {
        WsMessage::Close(Some(f)) => assert_eq!((u16::from(f.code), f.reason.as_str()), (4000, "bye")),
        other => panic!("expected the close, got {other:?}"),
    }
    while ws.read().is_ok() {} // flushes the client's close reply
    assert_eq!(events.closed(id), 4000);
    wait_until("the connection to leave the registry", || server.connections().is_empty());
    assert_eq!(server.conn_info(id), None);
    server.stop();
}
