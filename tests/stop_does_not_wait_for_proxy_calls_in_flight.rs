//! A stop (SIGTERM here, `ServerHandle::stop` and `wshub_stop` underneath)
//! returns promptly while a backend proxy call is in flight: the stop
//! interrupts the call instead of waiting out `--proxy-timeout-ms`, and the
//! waiting client gets 1001 like everyone. The backend is real and hung: a
//! TcpListener that accepts, reads the request and never answers.

mod protocol_common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use protocol_common::{Frame, Wshub};
use serde_json::json;

/// Far longer than the bound the stop is given below.
const PATIENCE_MS: &str = "120000";
/// How long the stop may take (a loaded machine included).
const STOP_BOUND: Duration = Duration::from_secs(40);

/// A backend that takes each request and never answers; `arrived` gets a
/// note once a request's bytes came in. Its sockets stay open while it lives.
struct Hung {
    url: String,
    arrived: mpsc::Receiver<()>,
}

impl Hung {
    fn start() -> Hung {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/decide", listener.local_addr().expect("addr"));
        let (tx, arrived) = mpsc::channel();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().take(16) {
                let Ok(mut stream) = stream else { return };
                let mut buf = [0u8; 4096];
                if matches!(stream.read(&mut buf), Ok(n) if n > 0) {
                    let _ = tx.send(());
                }
                held.push(stream);
            }
        });
        Hung { url, arrived }
    }
}

fn start(flag: &str, backend: &Hung) -> Wshub {
    Wshub::start(&[
        flag,
        &backend.url,
        "--proxy-timeout-ms",
        PATIENCE_MS,
        "--shutdown-timeout-ms",
        PATIENCE_MS,
    ])
}

#[test]
fn a_join_waiting_for_the_backend_gets_1001_and_the_stop_returns() {
    let backend = Hung::start();
    let mut server = start("--proxy-join", &backend);
    let mut client = server.client();
    client.send_request("room:join", json!({"room": "lobby"}));
    backend.arrived.recv_timeout(Duration::from_secs(10)).expect("the join reached the backend");
    server.sigterm();
    let mut close = None;
    for _ in 0..4 {
        if let Frame::Close(code) = client.frame() {
            close = Some(code);
            break;
        }
    }
    assert_eq!(close, Some(1001), "the waiting client is closed like everyone");
    let _ = client.ws.flush(); // its answer to the close
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
}

#[test]
fn an_upgrade_waiting_for_the_backend_does_not_hold_the_stop() {
    let backend = Hung::start();
    let mut server = start("--proxy-connect", &backend);
    let mut upgrade = TcpStream::connect(server.addr).expect("connect");
    upgrade.set_read_timeout(Some(STOP_BOUND)).expect("timeout");
    let request = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    upgrade.write_all(request.as_bytes()).expect("write");
    backend.arrived.recv_timeout(Duration::from_secs(10)).expect("the upgrade reached the backend");
    server.sigterm();
    assert_eq!(server.wait_exit(STOP_BOUND), Some(0));
    // No WebSocket for it: the stop refused or cut the upgrade.
    let mut answer = String::new();
    let _ = upgrade.read_to_string(&mut answer);
    assert!(!answer.contains(" 101 "), "{answer}");
}
