//! `stop()` with 100 connected clients: each receives what was queued for it,
//! then a 1001 close; stop returns promptly and no thread is left.
//! (Alone in its file: it counts the process's threads.)

mod common;

use std::time::{Duration, Instant};

use common::{connect, next_data, thread_count, wait_until, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

#[test]
fn every_client_gets_its_queued_frames_then_1001() {
    let threads_before = thread_count();
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .shutdown_timeout(Duration::from_secs(3))
        .close_timeout(Duration::from_secs(2));
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();

    let mut clients = Vec::new();
    for _ in 0..100 {
        let ws = connect(server.local_addr(), "/ws");
        let id = events.connected();
        server.join(id, "all").unwrap();
        clients.push(ws);
    }
    server.broadcast("all", "before the stop", None).unwrap();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            std::thread::spawn(move || {
                assert_eq!(next_data(&mut ws), WsMessage::text("before the stop"));
                let code = common::read_until_close(&mut ws);
                while ws.read().is_ok() {} // answer the close
                code
            })
        })
        .collect();

    let started = Instant::now();
    server.stop();
    let took = started.elapsed();
    for r in readers {
        assert_eq!(r.join().unwrap(), Some(1001));
    }
    // Clients that answer promptly must not wait for the deadlines.
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    assert!(server.is_draining());
    assert!(server.connections().is_empty());
    // Connection threads exit as they finish; the test's reader threads are joined.
    wait_until("every server thread to exit", || thread_count() == threads_before);
}
