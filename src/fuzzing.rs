//! Entry points for the fuzz targets in `fuzz/` and the property tests: every
//! parser a peer's bytes reach, driven the way the server drives it. Not API:
//! hidden from the docs and free to change.

use std::net::SocketAddr;

use crate::connection::handshake::{self, ReadError};

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
                let _ = handshake::switching_protocols(
                    &key,
                    info.subprotocols().first().map(String::as_str),
                    None,
                );
            }
            for name in ["room", "access_token", "since", ""] {
                let _ = info.query_param(name);
            }
            for name in ["authorization", "origin", "sec-websocket-protocol"] {
                let _ = info.header(name);
            }
            token_path(info);
            let _ = handshake::body_length(info);
            assert!(request.leftover.len() <= data.len());
        }
        Ok(None) | Err(ReadError::Malformed | ReadError::TooLarge) => {}
        Err(ReadError::Gone | ReadError::Timeout | ReadError::BodyTooLarge | ReadError::LengthRequired) => {
            unreachable!("no I/O or body reading happens here")
        }
    }
}

/// What the protocol does with a request's token and Origin at the upgrade:
/// find the token (header, query, subprotocol), verify it (signature,
/// algorithm, claims), parse the Origin. Must never panic.
fn token_path(info: &crate::types::RequestInfo) {
    use std::sync::OnceLock;
    static VERIFIER: OnceLock<Option<crate::protocol::auth::Verifier>> = OnceLock::new();
    let verifier = VERIFIER.get_or_init(|| {
        crate::protocol::auth::Verifier::new(Some("fuzz-secret"), None, Some("aud"), None).ok().flatten()
    });
    if let (Some(token), Some(verifier)) = (crate::protocol::auth::token_of(info), verifier) {
        let _ = verifier.verify(&token, std::time::SystemTime::now());
    }
    if let Some(origin) = info.header("origin") {
        let _ = crate::protocol::origin::Origin::parse(origin);
    }
}

/// A text frame's JSON envelope, as the protocol reads every client message:
/// the id is peeked first (so an error can carry it), then the whole request
/// is parsed and checked. Must never panic.
pub fn envelope(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let id = crate::protocol::envelope::peek_id(text);
        if let Some(id) = &id {
            assert!(id.len() <= 64, "an id longer than the limit was accepted");
        }
        let _ = crate::protocol::envelope::parse_text(text);
    }
}

/// A binary frame (`[0x01][u16 room length][room][body]`), and the member
/// frame built from what it yields. Must never panic.
pub fn binary_frame(data: &[u8]) {
    if let Ok(publish) = crate::protocol::binary::parse_binary(data) {
        let out = crate::protocol::binary::encode_message(&publish.room, 1, publish.body);
        assert!(out.len() >= 11 + publish.room.len() + publish.body.len());
    }
}

/// The binary's TOML config file. Must never panic.
pub fn config_file(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::ConfigFile::parse(text);
    }
}

/// A backend API call's JSON body (`POST /api/...`): the first byte picks
/// the call, the rest is the body; parsed and checked as `/api/*` does
/// before it acts, and turned into SSE and stored-message forms. Must never
/// panic.
pub fn api_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let call = ["publish", "broadcast", "disconnect", "ban", "unban"][usize::from(which) % 5];
    let _ = crate::protocol::api::check_body(call, body);
    if let Ok(text) = std::str::from_utf8(body) {
        let event = crate::protocol::sse::event(Some(1), "room:message", text);
        assert!(event.ends_with(b"\n\n"));
    }
    // As if Redis held it: the one decoder of a stored message, and its forms.
    let stored = crate::protocol::record::Record::from_redis("r", 1, body);
    let _ = (stored.api_entry(), stored.sse_event("r", None));
    let _ = crate::protocol::sse::base64(body);
}

/// A client's bytes after the upgrade, through the inbound message assembly
/// (frames, fragments, RSV bits, masks, control frames, deflate streams). The
/// first byte sets the case: bit 0 whether permessage-deflate was agreed, bits
/// 1-3 the message size limit (64 bytes to 8 KiB), bits 4-7 how many bytes
/// each read returns (1 to 16, or a whole buffer), so frames split anywhere.
/// Must never panic, nor hand over a message past the limit.
pub fn inbound_frames(data: &[u8]) {
    use crate::connection::assembly::{Assembly, Inbound};
    let Some((&case, stream)) = data.split_first() else { return };
    let deflate = case & 1 != 0;
    let limit = 64usize << ((case >> 1) & 7);
    let step = match usize::from(case >> 4) {
        0 => usize::MAX,
        n => n,
    };
    /// Returns at most `step` bytes per read.
    struct Trickle<'a> {
        rest: &'a [u8],
        step: usize,
    }
    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.rest.len().min(buf.len()).min(self.step);
            buf[..n].copy_from_slice(&self.rest[..n]);
            self.rest = &self.rest[n..];
            Ok(n)
        }
    }
    let mut io = Trickle { rest: stream, step };
    let mut assembly = Assembly::new(Vec::new(), 64, limit, deflate);
    // Each message or control frame takes at least two bytes.
    for _ in 0..=stream.len() / 2 {
        match assembly.next(&mut io) {
            Ok(Inbound::Text(text)) => assert!(text.len() <= limit, "a text past the limit"),
            Ok(Inbound::Binary(bytes)) => assert!(bytes.len() <= limit, "a binary past the limit"),
            Ok(Inbound::Ping(payload)) => assert!(payload.len() <= 125),
            Ok(Inbound::Pong) => {}
            Ok(Inbound::Close(_)) | Err(_) => return,
        }
    }
}
