//! A client ping sent while the server floods it with a broadcast gets its pong,
//! and every frame around it parses: the reader's pong goes through the
//! writer's queue instead of being written into the middle of a frame.

mod common;

use common::{connect, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const MESSAGES: usize = 5_000;

#[test]
fn pongs_arrive_whole_between_broadcast_frames() {
    let config = Config::default().bind("127.0.0.1:0".parse().unwrap()).outbound_queue(MESSAGES + 10);
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
    while next < MESSAGES || pongs.len() < pings_sent as usize {
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
    assert_eq!(pongs, (0..pings_sent).collect::<Vec<_>>(), "one pong per ping, in order");
    assert_eq!(server.stats().dropped_slow_consumer, 0);
    common::close_client(ws);
    server.stop();
}
