//! A client ping sent while the server floods it with a broadcast gets its pong,
//! and every frame around it parses: the reader's pong goes through the
//! writer's queue instead of being written into the middle of a frame. A pong
//! still queued when the next ping arrives answers that newer ping instead
//! (RFC 6455 5.5.3 allows it; it keeps a ping flood from piling up pongs), so
//! the pongs are the pings in order with some skipped, ending with the last.

mod common;

use common::{connect, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const MESSAGES: usize = 5_000;

#[test]
fn pongs_arrive_whole_between_broadcast_frames() {
    // Queue bounds above the whole flood: this test is about framing, not limits.
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .outbound_queue(MESSAGES + 10)
        .outbound_max_bytes(64 << 20);
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    server.join(id, "flood").unwrap();

    let publisher = {
        let server = server.clone();
        std::thread::spawn(move || {
            for i in 0..MESSAGES {
                // Frames of varied sizes so that a torn frame could not go unnoticed.
                let body = format!("{i}:{}", "y".repeat(i % 3000));
                server.broadcast("flood", body, None).unwrap();
            }
        })
    };
    let mut next = 0;
    let mut pongs = Vec::new();
    let mut pings_sent = 0u32;
    while next < MESSAGES || pongs.last() != Some(&(pings_sent - 1)) {
        if pings_sent < 20 && next >= pings_sent as usize * 200 {
            ws.send(WsMessage::Ping(pings_sent.to_be_bytes().to_vec().into())).unwrap();
            pings_sent += 1;
        }
        match ws.read().expect("every frame parses") {
            WsMessage::Text(t) => {
                let (n, body) = t.split_once(':').unwrap();
                assert_eq!(n.parse::<usize>().unwrap(), next, "in order");
                assert_eq!(body.len(), next % 3000);
                next += 1;
            }
            WsMessage::Pong(p) => pongs.push(u32::from_be_bytes(p[..].try_into().unwrap())),
            WsMessage::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.join().unwrap();
    eprintln!("read {next} messages and {} pongs", pongs.len());
    assert!(pongs.windows(2).all(|w| w[0] < w[1]), "pongs in ping order, none twice: {pongs:?}");
    assert_eq!(pongs.last(), Some(&(pings_sent - 1)), "the last ping is answered");
    assert_eq!(server.stats().dropped_slow_consumer + server.stats().dropped_outbound_bytes, 0);
    common::close_client(ws);
    server.stop();
}
