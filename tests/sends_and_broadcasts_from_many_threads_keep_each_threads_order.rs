//! Several application threads each interleave `send` to one client and
//! `broadcast` to a room it is in, with frames of varied sizes (some far
//! larger than a socket buffer, so direct sends and corked rounds end
//! partly written), while the client pings and reads slowly at first: each
//! thread's messages reach the client in that thread's order, none lost or
//! twice, and nothing after the close.

mod common;

use common::{connect, Recorder};
use tungstenite::Message as WsMessage;
use wshub::{Config, Server};

const THREADS: usize = 4;
const PER_THREAD: usize = 1_500;

/// Thread `t`'s `i`th message is a broadcast (else a send to the client).
fn is_broadcast(t: usize, i: usize) -> bool {
    (i / 3 + t).is_multiple_of(2)
}

fn body(t: usize, i: usize) -> String {
    let pad = match i % 97 {
        0 => 300_000,
        n if n % 7 == 0 => 20_000,
        n => n * 13,
    };
    format!("{t}:{i}:{}", "z".repeat(pad))
}

fn run_once(round: usize) {
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .outbound_queue(THREADS * PER_THREAD + 100)
        .outbound_max_bytes(2 << 30);
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    let mut ws = connect(server.local_addr(), "/ws");
    let id = events.connected();
    let mut other = connect(server.local_addr(), "/ws");
    let other_id = events.connected();
    server.join(id, "r").unwrap();
    server.join(other_id, "r").unwrap();
    // The other member reads everything on its own thread.
    let other_reader = std::thread::spawn(move || {
        let broadcasts = (0..THREADS).flat_map(|t| (0..PER_THREAD).map(move |i| is_broadcast(t, i)));
        let want = broadcasts.filter(|b| *b).count();
        let mut n = 0;
        while n < want {
            if let WsMessage::Text(_) = other.read().expect("other reads") {
                n += 1;
            }
        }
        other
    });

    let publishers: Vec<_> = (0..THREADS)
        .map(|t| {
            let server = server.clone();
            std::thread::spawn(move || {
                for i in 0..PER_THREAD {
                    // Mostly sends, runs of broadcasts between them.
                    if is_broadcast(t, i) {
                        server.broadcast("r", body(t, i), None).unwrap();
                    } else {
                        server.send(id, body(t, i)).unwrap();
                    }
                }
            })
        })
        .collect();
    let mut next = [0usize; THREADS];
    let mut got = 0;
    let mut pings = 0u32;
    while got < THREADS * PER_THREAD {
        if got < 200 {
            std::thread::sleep(std::time::Duration::from_micros(300));
        }
        if got % 500 == 0 && pings < 30 {
            ws.send(WsMessage::Ping(pings.to_be_bytes().to_vec().into())).unwrap();
            pings += 1;
        }
        match ws.read().expect("every frame parses") {
            WsMessage::Text(text) => {
                let mut parts = text.splitn(3, ':');
                let t: usize = parts.next().unwrap().parse().unwrap();
                let i: usize = parts.next().unwrap().parse().unwrap();
                assert_eq!(i, next[t], "round {round}: thread {t}'s messages in its order");
                assert_eq!(text.as_str(), body(t, i), "round {round}: intact");
                next[t] += 1;
                got += 1;
            }
            WsMessage::Ping(_) | WsMessage::Pong(_) => {}
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
    for p in publishers {
        p.join().unwrap();
    }
    let other = other_reader.join().unwrap();
    let stats = server.stats();
    assert_eq!(stats.dropped_slow_consumer + stats.dropped_outbound_bytes, 0);
    server.stop();
    let _ = common::read_until_close(&mut ws);
    drop(other);
}

/// `ROUNDS=N` repeats it (one by default).
#[test]
fn each_threads_sends_and_broadcasts_arrive_in_its_order() {
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    for round in 0..rounds {
        run_once(round);
    }
}
