//! Over TLS, as in plain (`handshakes_cannot_lock_the_server.rs`), a client
//! that completes the TLS handshake and then trickles its request head a
//! byte at a time is cut at the one handshake deadline: the request reads
//! set no timeout of their own, each raw read under the TLS session is
//! armed with what is left of it.

mod common;
mod protocol_common;
mod tls_common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use protocol_common::Wshub;
use tls_common::{client_config, tls_connect, Pki};

#[test]
fn a_tls_client_trickling_its_request_is_cut_at_the_handshake_deadline() {
    let pki = Pki::make();
    let (cert, key) = (pki.path_str("server.pem"), pki.path_str("server.key"));
    let server = Wshub::start(&["--handshake-timeout-ms", "1500", "--tls-cert", &cert, "--tls-key", &key]);
    let mut stream =
        tls_connect(server.addr, client_config(&pki.path("ca.pem"), None)).expect("TLS handshake");
    stream.sock.set_read_timeout(Some(Duration::from_millis(250))).unwrap();
    let request = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let started = Instant::now();
    let mut answer = Vec::new();
    for byte in request.iter().cycle() {
        assert!(started.elapsed() < Duration::from_secs(12), "a TLS trickler was never cut");
        if stream.write_all(&[*byte]).and_then(|()| stream.flush()).is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let after = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(after < Duration::from_millis(3500), "cut after {after:?}, deadline 1.5 s");
}
