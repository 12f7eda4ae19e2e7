//! Keepalive pings under load, with a heartbeat of a millisecond: a
//! connection busy with an echo (its write lock often held by a reply being
//! sent) starts no writer thread for a ping that finds it busy, while a
//! peer that reads its pings and never answers them is still dropped at its
//! idle timeout.

mod common;

use std::io::Read;
use std::time::{Duration, Instant};

use common::{connect, next_data, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const CLIENTS: usize = 16;
const ROUND_TRIPS: usize = 1500;

#[test]
fn pings_under_a_steady_echo_start_no_writer_threads_and_a_silent_peer_is_still_dropped() {
    let idle = Duration::from_secs(2);
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .heartbeat_interval(Duration::from_millis(1))
        .idle_timeout(idle);
    let (handler, events) = Recorder::new();
    let handler = handler.on_message(|server, conn, message| {
        let _ = server.send(conn, message.clone());
    });
    let server = Server::start(config, handler).unwrap();
    let addr = server.local_addr();

    // The silent peer: it reads what comes (pings) and never writes a byte.
    let silent = connect(addr, "/ws");
    let silent_id = events.connected();
    let mut raw = silent.into_inner();
    let opened = Instant::now();
    let silent_reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = raw.read_to_end(&mut got); // until the server drops it
        got
    });

    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let ws = connect(addr, "/ws");
            events.connected();
            ws
        })
        .collect();
    let echoes: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut ws)| {
            std::thread::spawn(move || {
                for i in 0..ROUND_TRIPS {
                    let text = format!("{c}:{i}");
                    ws.send(WsMessage::text(text.clone())).unwrap();
                    assert_eq!(next_data(&mut ws), WsMessage::text(text), "client {c}");
                }
                ws
            })
        })
        .collect();
    let clients: Vec<_> = echoes.into_iter().map(|e| e.join().unwrap()).collect();
    let started = server.stats().writer_threads_started;
    println!("writer threads started under the echo: {started}");
    // The echo's replies go straight to idle sockets; a ping that finds a
    // reply being written waits for its next turn instead of a thread. (A
    // reply that finds a ping being written goes through the hub, which may
    // rarely have to queue it: a few threads, not one per client.)
    assert!(
        started <= CLIENTS as u64 / 4,
        "{started} writer threads started for {CLIENTS} clients doing plain round trips"
    );
    clients.into_iter().for_each(common::close_client);

    let pings = silent_reader.join().unwrap();
    assert!(opened.elapsed() >= idle, "the silent peer was dropped before its idle timeout");
    assert!(pings.len() >= 2 && pings.chunks(2).all(|p| p == [0x89, 0x00]), "it got pings, and only pings");
    assert_eq!(events.closed(silent_id), 1006, "dropped without a close handshake");
    server.stop();
}
