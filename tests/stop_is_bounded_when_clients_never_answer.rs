//! `stop()` returns within shutdown_timeout + close_timeout + 1 s even when no
//! client answers its 1001 and one is stuck half-way through its handshake.

mod common;

use std::time::{Duration, Instant};

use common::{connect, Recorder};
use wshub::{Config, Server};

#[test]
fn stop_is_bounded_even_when_clients_never_answer() {
    let config = Config::default()
        .bind("127.0.0.1:0".parse().unwrap())
        .shutdown_timeout(Duration::from_millis(300))
        .close_timeout(Duration::from_millis(300));
    let (handler, events) = Recorder::new();
    let server = Server::start(config, handler).unwrap();
    // Clients that read nothing: they never answer the 1001.
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let ws = connect(server.local_addr(), "/ws");
            events.connected();
            ws
        })
        .collect();
    // A half-done handshake too.
    let half = std::net::TcpStream::connect(server.local_addr()).unwrap();
    let started = Instant::now();
    server.stop();
    // shutdown_timeout + close_timeout + 1 s of grace is the documented worst case.
    assert!(started.elapsed() < Duration::from_millis(300 + 300 + 1000 + 500));
    assert!(server.connections().is_empty());
    drop((clients, half));
}
