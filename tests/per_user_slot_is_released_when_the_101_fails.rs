//! An upgrade admitted (its user counted under `max_connections_per_user`)
//! whose 101 cannot be sent (the peer reset meanwhile) gives its per-user
//! slot back at once (`on_upgrade_failed`), so the user's next connection
//! is not refused with 503.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, Receiver, Sender};
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, RequestInfo, ServerHandle, Upgrade};

const SECRET: &str = "slot-secret";
const WAIT: Duration = Duration::from_secs(10);

/// Holds the first upgrade in the application's `on_upgrade` (after the
/// protocol counted its user) until the test lets it go; later ones pass.
struct Gate {
    entered: Sender<()>,
    go: Receiver<()>,
    held: AtomicBool,
}

impl Handler for Gate {
    fn on_upgrade(&self, _: &ServerHandle, _: ConnId, _: &RequestInfo) -> Upgrade {
        if !self.held.swap(true, Ordering::SeqCst) {
            let _ = self.entered.send(());
            let _ = self.go.recv_timeout(WAIT);
        }
        Upgrade::Accept { subprotocol: None }
    }
}

fn token() -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = serde_json::json!({"sub": "dana", "exp": exp});
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[test]
fn a_failed_101_gives_the_users_slot_back() {
    let (entered_tx, entered) = bounded(1);
    let (go, go_rx) = bounded(1);
    let config = ProtocolConfig::default().jwt_secret(SECRET).max_connections_per_user(1);
    let handler = ProtocolHandler::with_app(
        config,
        Gate { entered: entered_tx, go: go_rx, held: AtomicBool::new(false) },
    );
    let server =
        wshub::Server::start(wshub::Config::default().bind("127.0.0.1:0".parse().unwrap()), handler).unwrap();
    let addr = server.local_addr();

    // The first upgrade is held; its client resets before the 101 is written.
    let mut doomed = TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /ws?access_token={} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        token()
    );
    doomed.write_all(request.as_bytes()).unwrap();
    entered.recv_timeout(WAIT).expect("the upgrade reached the application");
    socket2::SockRef::from(&doomed).set_linger(Some(Duration::ZERO)).unwrap();
    drop(doomed); // RST
    go.send(()).unwrap();

    // The user's next connection opens (bounded retries while the failed
    // one's thread notices the reset; a held slot would refuse it every time).
    let mut last = None;
    for _ in 0..50 {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let attempt = tungstenite::client::client(format!("ws://{addr}/ws?access_token={}", token()), stream);
        match attempt {
            Ok((mut ws, _)) => {
                let _ = ws.close(None);
                drop(ws);
                server.stop();
                return;
            }
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
                last = Some(r.status().as_u16());
            }
            Err(e) => panic!("{e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the user's slot was never given back (last status {last:?})");
}
