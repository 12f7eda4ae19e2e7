//! The stop rules of wshub::client against the real server: a 401 at the
//! handshake stops the retries (an `Error` event says why, then `Closed`);
//! a 503 with `Retry-After` makes the next delay at least that long.

mod client_common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use client_common::{wait_for, Proxy, Server};
use serde_json::json;
use wshub::client::{Client, Event, Options};

fn token(secret: &str) -> String {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ann", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[test]
fn a_401_stops_the_retries() {
    let server = Server::start(&["--jwt-secret", "first-secret"]);
    let addr = server.addr;
    let url = format!("ws://{addr}/ws");
    let refused = Client::connect(&url, Options::default()).unwrap_err();
    assert_eq!(refused, wshub::client::Error::Refused { status: 401, retry_after: None });

    let options = Options::default().backoff(Duration::from_millis(20), Duration::from_millis(100));
    let a = Client::connect(&url, options.token(token("first-secret"))).expect("a valid token");
    a.join("r").unwrap();
    // The server comes back with another secret: the token is no longer valid.
    server.stop();
    let _server = Server::start_at(addr, &["--jwt-secret", "second-secret"]).expect("restart");
    let mut seen = Vec::new();
    let code = wait_for(&a, &mut seen, |e| match e {
        Event::Error { code, .. } => Some(code.clone()),
        _ => None,
    });
    assert_eq!(code, "http_401");
    wait_for(&a, &mut seen, |e| matches!(e, Event::Closed { .. }).then_some(()));
    assert!(a.events().recv_timeout(Duration::from_millis(500)).is_err(), "no retry after 401: {seen:?}");
    assert_eq!(a.request("ping", json!(1)).unwrap_err(), wshub::client::Error::Closed);
}

#[test]
fn a_503_with_retry_after_is_honoured() {
    // One connection per address: the proxy's upstream and the blocker share 127.0.0.1.
    let server = Server::start(&["--max-connections-per-ip", "1"]);
    let proxy = Proxy::start(server.addr);
    let options = Options::default().backoff(Duration::from_millis(20), Duration::from_millis(200));
    let a = Client::connect(&format!("ws://{}/ws", proxy.addr), options).expect("a via the proxy");
    let mut seen = Vec::new();
    proxy.set_refuse(true);
    proxy.cut();
    wait_for(&a, &mut seen, |e| matches!(e, Event::Reconnecting { .. }).then_some(()));
    // Take the address's one slot once the server has let a's go.
    let deadline = std::time::Instant::now() + client_common::WAIT;
    let blocker = loop {
        let stream = std::net::TcpStream::connect(server.addr).unwrap();
        if let Ok((ws, _)) = tungstenite::client(format!("ws://{}/ws", server.addr), stream) {
            break ws;
        }
        assert!(std::time::Instant::now() < deadline, "the slot never freed");
        std::thread::sleep(Duration::from_millis(20));
    };
    proxy.set_refuse(false);
    // The next attempt gets 503 with Retry-After: 5; the delay after it is at least 5 s
    // (the backoff alone never exceeds 200 ms).
    let delay = wait_for(&a, &mut seen, |e| match e {
        Event::Reconnecting { delay, .. } if *delay >= Duration::from_millis(300) => Some(*delay),
        _ => None,
    });
    assert!(delay >= Duration::from_secs(5), "{delay:?}");
    assert!(delay <= Duration::from_secs(5) + Duration::from_millis(200), "{delay:?}");
    drop(blocker);
    wait_for(&a, &mut seen, |e| matches!(e, Event::Connected { .. }).then_some(()));
}
