//! Over TLS, the reader feeds the session under the write lock while the
//! hub and the callbacks write through it: a client that asks for TLS 1.3
//! key updates (the server answers with its own) and sends messages of
//! several 16 KiB records while frames stream to it still gets every frame
//! whole and in order, and the server reads every message it sent. Real
//! rustls clients (tungstenite over `rustls::StreamOwned`) on loopback.

mod common;
mod tls_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tls_common::{client_config, wss_connect, Pki};
use tungstenite::Message as WsMessage;
use wshub::{Config, ConnId, Handler, Message, PemSource, RequestInfo, Server, ServerHandle};

const N: u32 = 4000;

fn payload(i: u32) -> Vec<u8> {
    let len = if i % 400 == 200 { 40_000 } else { 120 };
    let mut bytes = i.to_be_bytes().to_vec();
    bytes.extend((0..len).map(|k| (i as usize + k) as u8));
    bytes
}

/// A text "go": N numbered frames to the sender, every third sent directly,
/// the others broadcast. Binary messages are counted (their bytes checked).
struct Stream {
    big_bytes: Arc<AtomicUsize>,
}

impl Handler for Stream {
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, _: &RequestInfo) {
        server.join(conn, "all").unwrap();
    }
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        match message {
            Message::Text(t) if t == "go" => {
                for i in 0..N {
                    let frame = Message::Binary(payload(i));
                    let _ = if i % 3 == 0 {
                        server.send(conn, frame)
                    } else {
                        server.broadcast("all", frame, None)
                    };
                }
            }
            Message::Binary(b) => {
                assert!(b.iter().enumerate().all(|(k, x)| *x == (k % 249) as u8), "a big message whole");
                self.big_bytes.fetch_add(b.len(), Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[test]
fn key_updates_and_big_records_from_the_client_mid_fanout_lose_nothing() {
    common::init_log();
    let pki = Pki::make();
    let big_bytes = Arc::new(AtomicUsize::new(0));
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .tls_cert(Some(PemSource::File(pki.path("server.pem"))))
        .tls_key(Some(PemSource::File(pki.path("server.key"))))
        .outbound_queue(1 << 20)
        .outbound_max_bytes(1 << 30);
    let server = Server::start(config, Stream { big_bytes: big_bytes.clone() }).unwrap();
    let mut ws = wss_connect(server.local_addr(), client_config(&pki.path("ca.pem"), None), "/ws");
    common::wait_until("joined", || server.room_size("all").unwrap() == 1);
    ws.send(WsMessage::text("go")).unwrap();
    let big: Vec<u8> = (0..70_000).map(|k| (k % 249) as u8).collect();
    let (mut next, mut updates, mut sent_big) = (0u32, 0, 0);
    while next < N {
        match ws.read() {
            Ok(WsMessage::Binary(b)) => {
                assert_eq!(b, payload(next), "frame {next} whole and in order");
                next += 1;
                if next % 100 == 0 {
                    // A key update (update_requested: the server answers with
                    // its own), then a message of five records behind it.
                    ws.get_mut().conn.refresh_traffic_keys().expect("a key update");
                    updates += 1;
                    ws.send(WsMessage::Binary(big.clone().into())).expect("a big message");
                    sent_big += 1;
                }
            }
            Ok(_) => {}
            Err(e) => panic!("the connection failed after {next} frames, {updates} key updates: {e}"),
        }
    }
    common::wait_until("every big message read", || {
        big_bytes.load(Ordering::Relaxed) == sent_big * big.len()
    });
    ws.close(None).unwrap();
    server.stop();
}
