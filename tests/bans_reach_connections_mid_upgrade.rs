//! A ban reaches every connection of its user, including one in the middle
//! of its upgrade when the ban is made (checked again once the user is
//! registered); and `/api/ban` with auth off, where no user can ever match,
//! is a `400` that says so.

mod api_common;
mod protocol_common;

use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api_common::api;
use crossbeam_channel::{bounded, Receiver, Sender};
use protocol_common::{Wshub, WAIT};
use tungstenite::Message;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};
use wshub::{ConnId, Handler, RequestInfo, ServerHandle, Upgrade};

const SECRET: &str = "ban-race-secret";

/// Holds every upgrade in the application's `on_upgrade` (after the
/// protocol's own checks, bans included, passed) until the test lets it go.
struct Gate {
    entered: Sender<()>,
    go: Receiver<()>,
}

impl Handler for Gate {
    fn on_upgrade(&self, _: &ServerHandle, _: ConnId, _: &RequestInfo) -> Upgrade {
        let _ = self.entered.send(());
        let _ = self.go.recv_timeout(WAIT);
        Upgrade::Accept { subprotocol: None }
    }
}

#[test]
fn a_ban_made_while_the_user_upgrades_closes_the_connection_once_it_opens() {
    let (entered_tx, entered) = bounded(1);
    let (go, go_rx) = bounded(1);
    let handler = ProtocolHandler::with_app(
        ProtocolConfig::default().jwt_secret(SECRET),
        Gate { entered: entered_tx, go: go_rx },
    );
    let config = wshub::Config::default().bind("127.0.0.1:0".parse().unwrap());
    let server = wshub::Server::start(config, handler.clone()).expect("start");
    let addr = server.local_addr();

    let client = std::thread::spawn(move || {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 300;
        let claims = serde_json::json!({"sub": "mallory", "exp": exp});
        let token =
            encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (mut ws, _) =
            tungstenite::client::client(format!("ws://{addr}/ws?access_token={token}"), stream).expect("101");
        // Its frames until the close (or until reads time out: still open).
        for _ in 0..16 {
            match ws.read() {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    });
    entered.recv_timeout(WAIT).expect("the upgrade reached the application");
    handler.ban(&server, "mallory", Duration::from_secs(60)).expect("ban");
    go.send(()).unwrap();
    assert_eq!(client.join().unwrap(), Some(4003), "the banned user must not stay connected");
    server.stop();
}

#[test]
fn api_ban_with_auth_off_is_400_and_says_why() {
    let server = Wshub::start(&["--api-key", "k"]);
    let (status, answer) = api(server.addr, "POST", "/api/ban", Some("k"), r#"{"user":"u","seconds":60}"#);
    assert_eq!(status, 400, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("auth"), "{answer}");
    // With auth on, a ban is made.
    let server = Wshub::start(&["--api-key", "k", "--jwt-secret", SECRET]);
    let (status, answer) = api(server.addr, "POST", "/api/ban", Some("k"), r#"{"user":"u","seconds":60}"#);
    assert_eq!((status, &answer["user"]), (200, &serde_json::json!("u")), "{answer}");
}
