//! The hub's two lanes (`hub/order.rs`) against threads that hand work to
//! each other: a command a thread sends after another thread's call returned
//! must not overtake it, and a stop must end while threads still broadcast.

mod common;

use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{connect, Recorder, WAIT};
use tungstenite::Message as WsMessage;

/// Members of `room` that read nothing, so that each broadcast keeps the
/// hub busy a while: a backlog builds behind the broadcasting thread.
fn members(server: &wshub::ServerHandle, events: &common::Events, room: &str) -> Vec<common::Client> {
    (0..8)
        .map(|_| {
            let ws = connect(server.local_addr(), "/ws");
            server.join(events.connected(), room).unwrap();
            ws
        })
        .collect()
}

/// Thread A broadcasts to a room, then hands over to thread B, which closes
/// a member: the member gets every broadcast A made before the close, as
/// `close` promises ("after the frames already queued for it") and as one
/// hub queue gave on main.
#[test]
fn a_close_from_another_thread_comes_after_broadcasts_that_returned_before_it() {
    const SENT: usize = 3000;
    let (recorder, events) = Recorder::new();
    let config = wshub::Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .outbound_queue(4 * SENT)
        .outbound_max_bytes(64 << 20);
    let server = wshub::Server::start(config, recorder).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    server.join(id, "r").unwrap();
    let bystanders = members(&server, &events, "r");
    let a = {
        let server = server.clone();
        std::thread::spawn(move || {
            for i in 0..SENT {
                server.broadcast("r", format!("m{i}"), None).unwrap();
            }
        })
    };
    a.join().unwrap();
    let b = {
        let server = server.clone();
        std::thread::spawn(move || server.close(id, 4000, "kicked").unwrap())
    };
    b.join().unwrap();
    let mut got = 0;
    let code = loop {
        match ws.read().expect("read") {
            WsMessage::Text(_) => got += 1,
            WsMessage::Close(f) => break f.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    while ws.read().is_ok() {} // answers the close
    drop(bystanders);
    assert_eq!((got, code), (SENT, Some(4000)), "the close overtook broadcasts made before it");
    server.stop();
}

/// Threads broadcast until the server tells them it has stopped; the stop
/// still returns, and so do they.
#[test]
fn a_stop_returns_while_threads_broadcast_until_refused() {
    let (recorder, events) = Recorder::new();
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap()).hub_queue(64);
    let server = wshub::Server::start(config, recorder).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    server.join(id, "r").unwrap();
    let give_up = Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..6)
        .map(|_| {
            let (server, give_up) = (server.clone(), give_up.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while server.broadcast("r", "x", None).is_ok() && !give_up.load(Relaxed) {
                    n += 1;
                }
                n
            })
        })
        .collect();
    let reader = std::thread::spawn(move || common::read_until_close(&mut ws));
    std::thread::sleep(Duration::from_millis(200));
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let stopper = {
        let server = server.clone();
        std::thread::spawn(move || {
            let t = Instant::now();
            server.stop();
            let _ = done_tx.send(t.elapsed());
        })
    };
    let took = done_rx.recv_timeout(Duration::from_secs(10));
    give_up.store(true, Relaxed);
    for f in floods {
        f.join().unwrap();
    }
    stopper.join().unwrap();
    assert_eq!(reader.join().unwrap(), Some(1001), "the member still gets its 1001");
    let took = took.expect("the stop did not return while threads kept broadcasting");
    assert!(took < WAIT, "{took:?}");
}

/// Thread A joins a member to a room behind a backlog of broadcasts, then
/// hands over to thread B, which asks how many the room holds: B sees A's
/// join, as with one hub queue on main.
#[test]
fn a_room_query_from_another_thread_sees_a_join_that_returned_before_it() {
    const SENT: usize = 3000;
    let (recorder, events) = Recorder::new();
    let config = wshub::Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .outbound_queue(4 * SENT)
        .outbound_max_bytes(64 << 20);
    let server = wshub::Server::start(config, recorder).unwrap();
    let mut first_ws = connect(server.local_addr(), "/ws");
    let first = events.connected();
    let second_ws = connect(server.local_addr(), "/ws");
    let second = events.connected();
    server.join(first, "busy").unwrap();
    let bystanders = members(&server, &events, "busy");
    let a = {
        let server = server.clone();
        std::thread::spawn(move || {
            for i in 0..SENT {
                server.broadcast("busy", format!("m{i}"), None).unwrap();
            }
            server.join(second, "r").unwrap();
        })
    };
    a.join().unwrap();
    let b = {
        let server = server.clone();
        std::thread::spawn(move || server.room_size("r").unwrap())
    };
    assert_eq!(b.join().unwrap(), 1, "the query overtook a join made before it");
    for _ in 0..SENT {
        common::next_data(&mut first_ws);
    }
    common::close_client(first_ws);
    common::close_client(second_ws);
    drop(bystanders);
    server.stop();
}

/// A callback broadcasts, then stops the server (the stop runs on the
/// stopper thread): the members get those broadcasts before their 1001,
/// as `stop` promises for what "the calling thread sent before".
#[test]
fn a_stop_from_a_callback_comes_after_that_callbacks_broadcasts() {
    const SENT: usize = 3000;
    let (recorder, events) = Recorder::new();
    let recorder = recorder.on_message(|server, _, _| {
        for i in 0..SENT {
            server.broadcast("r", format!("m{i}"), None).unwrap();
        }
        server.stop();
    });
    let config = wshub::Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .outbound_queue(4 * SENT)
        .outbound_max_bytes(64 << 20);
    let server = wshub::Server::start(config, recorder).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    server.join(id, "r").unwrap();
    let bystanders = members(&server, &events, "r");
    ws.send(WsMessage::text("stop")).unwrap();
    let mut got = 0;
    let code = loop {
        match ws.read().expect("read") {
            WsMessage::Text(_) => got += 1,
            WsMessage::Close(f) => break f.map(|f| u16::from(f.code)),
            _ => {}
        }
    };
    while ws.read().is_ok() {} // answers the close
    drop(bystanders);
    server.stop();
    assert_eq!((got, code), (SENT, Some(1001)), "the stop overtook the callback's broadcasts");
}
