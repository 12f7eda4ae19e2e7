//! Entry points for the fuzz targets in `fuzz/` and the property tests: every
//! parser a peer's bytes reach, driven the way the server drives it. Not API:
//! hidden from the docs and free to change.

use std::net::SocketAddr;

use crate::handshake::{self, ReadError};

/// Runs an HTTP request head through everything the server does with one
/// before an upgrade: parse, classify, validate the upgrade, read the query,
/// headers and subprotocols. Must never panic, whatever the bytes.
pub fn http_request(data: &[u8]) {
    let remote = SocketAddr::from(([127, 0, 0, 1], 1));
    match handshake::parse_request(data, remote) {
        Ok(Some(request)) => {
            let info = &request.info;
            let _ = handshake::wants_upgrade(info);
            if let Ok(key) = handshake::check_upgrade(&request.method, info) {
                let _ = handshake::switching_protocols(&key, info.subprotocols().first().map(String::as_str));
            }
            for name in ["room", "access_token", "since", ""] {
                let _ = info.query_param(name);
            }
            for name in ["authorization", "origin", "sec-websocket-protocol"] {
                let _ = info.header(name);
            }
            assert!(request.leftover.len() <= data.len());
        }
        Ok(None) | Err(ReadError::Malformed | ReadError::TooLarge) => {}
        Err(ReadError::Gone | ReadError::Timeout) => unreachable!("no I/O happens here"),
    }
}
