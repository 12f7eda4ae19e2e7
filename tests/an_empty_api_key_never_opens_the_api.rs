//! An API key set to the empty string through the Rust API (which does not
//! run `ProtocolConfig::validate`) means the backend API is off, and an empty
//! `X-API-Key:` (or `Authorization: apikey`) header never matches a key.

mod api_common;
mod protocol_common;

use api_common::raw_http;
use wshub::protocol::{ProtocolConfig, ProtocolHandler};

fn rooms_with(addr: std::net::SocketAddr, header: &str) -> u16 {
    raw_http(
        addr,
        format!("GET /api/rooms HTTP/1.1\r\nHost: x\r\n{header}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .0
}

#[test]
fn an_empty_configured_key_turns_the_api_off() {
    let handler = ProtocolHandler::new(ProtocolConfig::default().api_key(""));
    let server =
        wshub::Server::start(wshub::Config::default().bind("127.0.0.1:0".parse().unwrap()), handler).unwrap();
    let addr = server.local_addr();
    assert_eq!(rooms_with(addr, "X-API-Key:"), 404);
    assert_eq!(rooms_with(addr, "X-API-Key: "), 404);
    assert_eq!(rooms_with(addr, "Authorization: apikey "), 404);
    server.stop();
}

#[test]
fn an_empty_presented_key_never_matches() {
    let handler = ProtocolHandler::new(ProtocolConfig::default().api_key("real-key"));
    let server =
        wshub::Server::start(wshub::Config::default().bind("127.0.0.1:0".parse().unwrap()), handler).unwrap();
    let addr = server.local_addr();
    assert_eq!(rooms_with(addr, "X-API-Key:"), 401);
    assert_eq!(rooms_with(addr, "Authorization: apikey"), 401);
    assert_eq!(rooms_with(addr, "X-API-Key: real-key"), 200);
    server.stop();
}
