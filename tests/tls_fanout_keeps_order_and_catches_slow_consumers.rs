//! Fan-out over TLS, where a round of the hub puts every frame it has for a
//! member into that member's TLS session together (`tls_session.rs`): frames
//! from broadcasts, direct sends, the writer's batches, pongs and the close
//! keep each connection's order and arrive whole, a frame larger than one
//! TLS record among small ones included; and a subscriber that stops reading
//! is closed with 1013 while another keeps receiving. Real rustls clients
//! (tungstenite over `rustls::StreamOwned`) on loopback.

mod common;
mod tls_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tls_common::{client_config, wss_connect, Pki};
use tungstenite::Message as WsMessage;
use wshub::{Config, ConnId, Handler, Message, PemSource, RequestInfo, Server, ServerHandle};

fn tls_config(pki: &Pki) -> Config {
    Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .tls_cert(Some(PemSource::File(pki.path("server.pem"))))
        .tls_key(Some(PemSource::File(pki.path("server.key"))))
}

/// The bytes of numbered frame `i`: its number, then a pattern that shows a
/// frame cut or mixed with another. Every 500th is larger than one TLS
/// record (16 KiB).
fn payload(i: u32) -> Vec<u8> {
    let len = if i % 500 == 250 { 40_000 } else { 100 };
    let mut bytes = i.to_be_bytes().to_vec();
    bytes.extend((0..len).map(|k| (i as usize + k) as u8));
    bytes
}

fn check(bytes: &[u8]) -> u32 {
    let i = u32::from_be_bytes(bytes[..4].try_into().unwrap());
    assert_eq!(bytes, payload(i), "frame {i} arrived whole");
    i
}

/// Every member joins "all". A text "go" from a member: `n` numbered frames,
/// every third straight to that member (a direct send from the callback's
/// thread), the others broadcast to "all" (through the hub's rounds). A
/// text "bye": a close with 4000 for everyone. A text "more": `batch` more
/// numbered frames broadcast to "all".
struct Fanout {
    n: u32,
    batch: u32,
    next: AtomicU32,
}

impl Handler for Fanout {
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, _: &RequestInfo) {
        server.join(conn, "all").unwrap();
    }
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "go" => {
                for i in 0..self.n {
                    let frame = Message::Binary(payload(i));
                    let _ = if i % 3 == 0 {
                        server.send(conn, frame)
                    } else {
                        server.broadcast("all", frame, None)
                    };
                }
            }
            Message::Text(t) if t == "bye" => {
                for member in server.connections() {
                    let _ = server.close(member, 4000, "done");
                }
            }
            Message::Text(t) if t == "more" => {
                for _ in 0..self.batch {
                    let i = self.next.fetch_add(1, Ordering::Relaxed);
                    let _ = server.broadcast("all", Message::Binary(payload(i)), None);
                }
            }
            _ => {}
        }
    }
}

/// Reads until the close: (numbers in arrival order, pongs' payloads, close
/// code). With `ping_every`, sends ten pings among the frames, then "bye"
/// once `last` has come.
fn read_all(
    ws: &mut tungstenite::WebSocket<tls_common::TlsStream>,
    ping_every: usize,
    last: u32,
) -> (Vec<u32>, Vec<Vec<u8>>, Option<u16>) {
    let (mut numbers, mut pongs, mut pings) = (Vec::new(), Vec::new(), 0u8);
    loop {
        match ws.read() {
            Ok(WsMessage::Binary(b)) => {
                numbers.push(check(&b));
                if ping_every > 0 && numbers.last() == Some(&last) {
                    ws.send(WsMessage::text("bye")).expect("bye");
                }
                if ping_every > 0 && numbers.len() % ping_every == 0 && pings < 10 {
                    ws.send(WsMessage::Ping(vec![pings].into())).expect("a ping");
                    pings += 1;
                }
            }
            Ok(WsMessage::Pong(p)) => pongs.push(p.to_vec()),
            Ok(WsMessage::Close(frame)) => return (numbers, pongs, frame.map(|f| u16::from(f.code))),
            Ok(_) => {}
            Err(e) => panic!("no close frame after {} frames: {e}", numbers.len()),
        }
    }
}

#[test]
fn broadcasts_direct_sends_pongs_and_the_close_keep_their_order_over_tls() {
    common::init_log();
    let pki = Pki::make();
    const N: u32 = 3000;
    let handler = Fanout { n: N, batch: 0, next: AtomicU32::new(0) };
    let config = tls_config(&pki).outbound_queue(1 << 20).outbound_max_bytes(1 << 30);
    let server = Server::start(config, handler).unwrap();
    let addr: SocketAddr = server.local_addr();
    let tls = client_config(&pki.path("ca.pem"), None);
    let mut members: Vec<_> = (0..6).map(|_| wss_connect(addr, tls.clone(), "/ws")).collect();
    common::wait_until("every member has joined", || server.room_size("all").unwrap() == members.len());
    let mut sender = members.remove(0);
    sender.send(WsMessage::text("go")).unwrap();
    let readers: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(k, mut ws)| {
            std::thread::spawn(move || {
                // One member does not read for a while: its socket fills, and
                // its frames go through the writer behind a partial send.
                if k == 0 {
                    std::thread::sleep(Duration::from_millis(300));
                }
                read_all(&mut ws, 0, 0)
            })
        })
        .collect();
    let (numbers, pongs, code) = read_all(&mut sender, 250, N - 1);
    assert_eq!(numbers, (0..N).collect::<Vec<_>>(), "the sender gets every frame in order");
    assert_eq!(pongs, (0..10u8).map(|p| vec![p]).collect::<Vec<_>>(), "every pong, in order");
    assert_eq!(code, Some(4000));
    let broadcast: Vec<u32> = (0..N).filter(|i| i % 3 != 0).collect();
    for reader in readers {
        let (numbers, _, code) = reader.join().unwrap();
        assert_eq!(numbers, broadcast, "each member gets every broadcast in order");
        assert_eq!(code, Some(4000));
    }
    let stats = server.stats();
    assert!(stats.direct_sends > 0, "{stats:?}");
    server.stop();
}

#[test]
fn a_slow_tls_subscriber_gets_1013_while_the_others_keep_receiving() {
    common::init_log();
    let pki = Pki::make();
    const BATCH: u32 = 60;
    let handler = Fanout { n: 0, batch: BATCH, next: AtomicU32::new(0) };
    let server = Server::start(tls_config(&pki).outbound_queue(64), handler).unwrap();
    let addr = server.local_addr();
    let tls = client_config(&pki.path("ca.pem"), None);
    let mut reader = wss_connect(addr, tls.clone(), "/ws");
    // Never reads until it has been caught.
    let mut stalled = wss_connect(addr, tls, "/ws");
    common::wait_until("both members have joined", || server.room_size("all").unwrap() == 2);
    // The reader asks for a batch once it has the last one, so only the
    // member that stopped reading falls behind. Bounded: the stalled
    // member's socket buffers hold a few MB at most.
    let mut expected = 0u32;
    let mut after_catch = 0;
    for _ in 0..20_000 {
        reader.send(WsMessage::text("more")).unwrap();
        for _ in 0..BATCH {
            match reader.read().expect("the reader keeps receiving") {
                WsMessage::Binary(b) => assert_eq!(check(&b), expected, "in order"),
                other => panic!("unexpected {other:?}"),
            }
            expected += 1;
        }
        if server.stats().dropped_slow_consumer == 1 {
            after_catch += 1;
            if after_catch > 5 {
                break;
            }
        }
    }
    assert!(after_catch > 5, "the stalled member was never closed as a slow consumer");
    let code = loop {
        match stalled.read() {
            Ok(WsMessage::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(WsMessage::Binary(b)) => {
                check(&b);
            }
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(code, Some(1013));
    assert_eq!(server.stats().dropped_slow_consumer, 1, "only the stalled member");
    server.stop();
}
