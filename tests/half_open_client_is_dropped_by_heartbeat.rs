//! A client whose TCP connection stays open but which never answers (no pong,
//! no frame) is terminated after the idle timeout and cleaned up; a client that
//! answers the pings stays.

mod common;

use std::time::Duration;

use common::{connect, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

#[test]
fn the_silent_client_is_terminated_and_the_live_one_stays() {
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .heartbeat_interval(Duration::from_millis(200))
        .idle_timeout(Duration::from_millis(600));
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();

    let mut silent = connect(server.local_addr(), "/ws");
    let silent_id = events.connected();
    server.join(silent_id, "r").unwrap();
    let mut live = connect(server.local_addr(), "/ws");
    let live_id = events.connected();

    // The live client keeps reading, which answers the server's pings.
    let mut pings = 0;
    while pings < 5 {
        if let WsMessage::Ping(_) = live.read().unwrap() {
            pings += 1;
        }
    }
    // By now the silent one has been quiet for > 4 heartbeats.
    assert_eq!(events.closed(silent_id), 1006);
    assert_eq!(server.connections(), vec![live_id]);
    assert_eq!(server.room_size("r").unwrap(), 0);
    // Its socket is closed: reading the pings that were sent, then the end.
    let mut saw_end = false;
    for _ in 0..100 {
        match silent.read() {
            Ok(WsMessage::Ping(_)) => continue,
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {
                saw_end = true;
                break;
            }
        }
    }
    assert!(saw_end);
    live.send(WsMessage::text("still here")).unwrap();
    assert!(matches!(events.next(), common::Event::Message(id, _) if id == live_id));
    server.stop();
}
