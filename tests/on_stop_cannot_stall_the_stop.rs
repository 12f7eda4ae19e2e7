//! `Handler::on_stop` runs on the thread performing the stop, before the
//! connections are closed. Neither a panic in it, like one in any other
//! callback, nor a call of the handle's `stop` from it (callbacks may call
//! the handle) may leave the server half stopped: the stop goes on
//! (connections get their 1001) and returns, and a second `stop` returns too.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use wshub::{Config, Handler, Server, ServerHandle};

struct PanicsOnStop;

impl Handler for PanicsOnStop {
    fn on_stop(&self, _: &ServerHandle) {
        panic!("on_stop fails");
    }
}

/// Runs `f` on a thread; true when it returned (a panic included) within `limit`.
fn returns_within(limit: Duration, f: impl FnOnce() + Send + 'static) -> bool {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}

#[test]
fn the_stop_goes_on_and_clients_get_1001() {
    let config =
        Config::default().bind("127.0.0.1:0".parse().unwrap()).shutdown_timeout(Duration::from_millis(500));
    let server = Server::start(config, PanicsOnStop).unwrap();
    let mut client = common::connect(server.local_addr(), "/ws");
    client.get_mut().set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let first = server.clone();
    assert!(returns_within(Duration::from_secs(20), move || first.stop()), "the stop did not return");
    let close = loop {
        match client.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("no close frame: {e}"),
        }
    };
    assert_eq!(close, Some(1001));
    let second = server.clone();
    assert!(returns_within(Duration::from_secs(20), move || second.stop()), "a second stop hangs");
}

/// Calls the handle's stop from inside on_stop, as any other callback may.
struct StopsAgainOnStop;

impl Handler for StopsAgainOnStop {
    fn on_stop(&self, server: &ServerHandle) {
        server.stop();
    }
}

#[test]
fn a_stop_called_from_on_stop_returns() {
    let config =
        Config::default().bind("127.0.0.1:0".parse().unwrap()).shutdown_timeout(Duration::from_millis(500));
    let server = Server::start(config, StopsAgainOnStop).unwrap();
    assert!(returns_within(Duration::from_secs(20), move || server.stop()), "the stop did not return");
}
