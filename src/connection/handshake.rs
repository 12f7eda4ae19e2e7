//! The HTTP/1.1 side of a connection: reading the request, deciding between an
//! upgrade and a plain HTTP answer, and writing the response.
//!
//! Runs on the connection's reader thread before the writer exists, so writing
//! to the socket here is safe. The overflow thread (`overflow.rs`) uses the
//! same parser and response writer for the sockets it answers. It parses with `httparse` rather than through
//! tungstenite's handshake so that plain HTTP routes, refusals with any status
//! and the handler's upgrade decision all share one path.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use super::ConnShared;
use crate::types::{status_reason, HttpResponse, RequestInfo};

/// Largest request head (request line and headers) accepted.
pub(crate) const MAX_REQUEST_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 64;

/// A request head that was read and parsed.
#[derive(Debug)]
pub(crate) struct Request {
    pub method: String,
    pub info: RequestInfo,
    /// Bytes read past the head (a client may send its first frame at once).
    pub leftover: Vec<u8>,
}

/// Why no request came out of the socket.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer closed or reset before sending a whole head: answer nothing.
    Gone,
    /// The head did not arrive within the handshake timeout.
    Timeout,
    /// Not HTTP/1.x: answer 400.
    Malformed,
    /// The head is larger than [`MAX_REQUEST_HEAD`]: answer 431.
    TooLarge,
    /// The body (`Content-Length`) is larger than the max message size: answer 413.
    BodyTooLarge,
    /// A body without a usable `Content-Length` (chunked, or a length that
    /// does not parse): answer 411.
    LengthRequired,
}

impl ReadError {
    /// The status a request that failed this way is answered with (`None`:
    /// the peer is gone, answer nothing).
    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            ReadError::Gone => None,
            ReadError::Timeout => Some(408),
            ReadError::TooLarge => Some(431),
            ReadError::Malformed => Some(400),
            ReadError::BodyTooLarge => Some(413),
            ReadError::LengthRequired => Some(411),
        }
    }
}

/// Reads one request head from `stream` (the socket's bytes, decrypted when
/// TLS is on), all of it before `deadline` (however slowly it trickles in; a
/// per-read timeout would let a client that sends a byte a second hold its
/// thread forever). `stream` must end every read at `deadline` (the
/// reader's `SockReader` sets the socket's timeout before each raw read, so
/// this sets none of its own). A body is read only once the head has been
/// judged ([`read_body`]).
///
/// Buffers live on the heap and are freed before the connection's life
/// begins: the reader thread's stack pages, once touched, stay resident for
/// as long as the connection is open.
pub(crate) fn read_request(
    mut stream: impl Read,
    remote: SocketAddr,
    deadline: Instant,
) -> Result<Request, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        read_more(&mut stream, &mut buf, 1024, deadline)?;
        if let Some(request) = parse_request(&buf, remote)? {
            return Ok(request);
        }
        if buf.len() > MAX_REQUEST_HEAD {
            return Err(ReadError::TooLarge);
        }
    }
}

/// Reads the `length` bytes of `request`'s body (what came with the head
/// first) into `request.info.body`, before `deadline` (which `stream`
/// enforces, as for [`read_request`]).
pub(crate) fn read_body(
    mut stream: impl Read,
    request: &mut Request,
    length: usize,
    deadline: Instant,
) -> Result<(), ReadError> {
    let mut body = std::mem::take(&mut request.leftover);
    while body.len() < length {
        let want = (length - body.len()).min(64 * 1024);
        read_more(&mut stream, &mut body, want, deadline)?;
    }
    // Bytes past the body (a pipelined request) are not served: the
    // connection closes after its one response.
    body.truncate(length);
    request.info.body = body;
    Ok(())
}

/// Reads up to `want` more bytes onto the end of `buf`, before `deadline`.
fn read_more(
    stream: &mut impl Read,
    buf: &mut Vec<u8>,
    want: usize,
    deadline: Instant,
) -> Result<(), ReadError> {
    if Instant::now() >= deadline {
        return Err(ReadError::Timeout);
    }
    let len = buf.len();
    buf.resize(len + want, 0);
    let n = match stream.read(&mut buf[len..]) {
        Ok(0) => return Err(ReadError::Gone),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(ReadError::Timeout)
        }
        Err(_) => return Err(ReadError::Gone),
    };
    buf.truncate(len + n);
    Ok(())
}

/// The body length a plain request declares: its `Content-Length`, 0
/// without one. A `Transfer-Encoding` (chunked) or a `Content-Length` that
/// is not one number is refused (411): bodies are read by length only.
pub(crate) fn body_length(info: &RequestInfo) -> Result<usize, ReadError> {
    if info.header("transfer-encoding").is_some() {
        return Err(ReadError::LengthRequired);
    }
    let mut lengths = info.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("content-length"));
    let Some((_, value)) = lengths.next() else { return Ok(0) };
    if lengths.next().is_some() {
        return Err(ReadError::LengthRequired);
    }
    let value = value.trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReadError::LengthRequired);
    }
    // Too many digits for a usize is too large for any bound.
    value.parse().map_err(|_| ReadError::BodyTooLarge)
}

/// Parses a complete head from `buf`, or `Ok(None)` when more bytes are needed.
pub(crate) fn parse_request(buf: &[u8], remote: SocketAddr) -> Result<Option<Request>, ReadError> {
    let mut headers = vec![httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ReadError::TooLarge),
        Err(_) => return Err(ReadError::Malformed),
    };
    if head_len > MAX_REQUEST_HEAD {
        return Err(ReadError::TooLarge);
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Err(ReadError::Malformed);
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    Ok(Some(Request {
        method: method.to_owned(),
        info: RequestInfo {
            remote_addr: remote,
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            received_at: SystemTime::now(),
            user: None,
            tls_client_subject: None,
            body: Vec::new(),
        },
        leftover: buf[head_len..].to_vec(),
    }))
}

/// Whether a comma-separated header value lists `token` (case-insensitive).
fn has_token(value: Option<&str>, token: &str) -> bool {
    value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// Whether the request asks for a WebSocket upgrade at all.
pub(crate) fn wants_upgrade(info: &RequestInfo) -> bool {
    has_token(info.header("upgrade"), "websocket")
}

/// Checks an upgrade request against RFC 6455 section 4.2.1; on success returns
/// the `Sec-WebSocket-Key`, otherwise the response to refuse it with.
pub(crate) fn check_upgrade(method: &str, info: &RequestInfo) -> Result<String, HttpResponse> {
    let bad = |why: &str| HttpResponse::new(400, "text/plain; charset=utf-8", format!("{why}\n"));
    if method != "GET" {
        return Err(bad("a WebSocket upgrade must be a GET"));
    }
    if !has_token(info.header("connection"), "upgrade") {
        return Err(bad("missing 'Connection: Upgrade'"));
    }
    if info.header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(HttpResponse::new(426, "text/plain; charset=utf-8", "WebSocket version 13 only\n")
            .with_header("Sec-WebSocket-Version", "13"));
    }
    match info.header("sec-websocket-key").map(str::trim) {
        Some(key) if key.len() == 24 && key.ends_with("==") => Ok(key.to_owned()),
        _ => Err(bad("missing or malformed Sec-WebSocket-Key")),
    }
}

/// The 101 response that completes the upgrade.
pub(crate) fn switching_protocols(key: &str, subprotocol: Option<&str>, extensions: Option<&str>) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = subprotocol {
        out.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    if let Some(e) = extensions {
        out.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Serializes a plain response; the connection closes after it.
pub(crate) fn render(response: &HttpResponse, head_only: bool) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", response.status, status_reason(response.status));
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!(
        "Content-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.content_type,
        response.body.len()
    ));
    let mut out = out.into_bytes();
    if !head_only {
        out.extend_from_slice(&response.body);
    }
    out
}

/// The head of an event stream (`HttpResponse::event_stream`): no
/// `Content-Length`, the body runs until the connection closes.
pub(crate) fn stream_head(response: &HttpResponse) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", response.status, status_reason(response.status));
    for (name, value) in &response.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(&format!("Content-Type: {}\r\nConnection: close\r\n\r\n", response.content_type));
    out.into_bytes()
}

/// Writes a plain response and closes the connection without losing it: the
/// write side is shut first and unread input drained (briefly), because closing
/// a socket with unread input sends a reset that can destroy the response
/// before the client reads it. Over TLS the response is encrypted and followed
/// by a close_notify.
pub(crate) fn respond_and_close(conn: &ConnShared, response: &HttpResponse, head_only: bool) {
    let mut stream = &conn.stream;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let written = if conn.is_tls() {
        conn.write_unframed(&render(response, head_only), true, Instant::now() + Duration::from_secs(2))
    } else {
        crate::sys::sock::NoSigPipe(stream).write_all(&render(response, head_only))
    };
    if written.is_err() {
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> SocketAddr {
        "127.0.0.1:5".parse().unwrap()
    }

    const UPGRADE: &str = "GET /ws?room=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: a, b\r\n\r\n";

    #[test]
    fn parses_an_upgrade_with_leftover_bytes() {
        let mut raw = UPGRADE.as_bytes().to_vec();
        raw.extend_from_slice(&[0x81, 0x80]);
        let r = parse_request(&raw, remote()).unwrap().unwrap();
        assert_eq!(r.info.path, "/ws");
        assert_eq!(r.info.query, "room=a");
        assert_eq!(r.leftover, vec![0x81, 0x80]);
        assert!(wants_upgrade(&r.info));
        assert_eq!(check_upgrade(&r.method, &r.info).unwrap(), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(r.info.subprotocols(), vec!["a", "b"]);
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(parse_request(&UPGRADE.as_bytes()[..30], remote()).unwrap().is_none());
        assert!(matches!(parse_request(b"\x16\x03\x01garbage\r\n\r\n", remote()), Err(ReadError::Malformed)));
    }

    #[test]
    fn body_lengths() {
        let with = |headers: &str| {
            let raw = format!("POST /api/publish HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
            body_length(&parse_request(raw.as_bytes(), remote()).unwrap().unwrap().info)
        };
        assert_eq!(with("").unwrap(), 0);
        assert_eq!(with("Content-Length: 12\r\n").unwrap(), 12);
        assert!(matches!(with("Transfer-Encoding: chunked\r\n"), Err(ReadError::LengthRequired)));
        assert!(matches!(with("Content-Length: -1\r\n"), Err(ReadError::LengthRequired)));
        assert!(matches!(with("Content-Length: 1\r\nContent-Length: 2\r\n"), Err(ReadError::LengthRequired)));
        assert!(matches!(with("Content-Length: 99999999999999999999999\r\n"), Err(ReadError::BodyTooLarge)));
    }

    #[test]
    fn rfc_example_accept_key() {
        let resp =
            String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", Some("a"), None)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(resp.contains("Sec-WebSocket-Protocol: a\r\n"));
    }

    #[test]
    fn refusals_carry_their_status() {
        let r = parse_request(UPGRADE.replace("Version: 13", "Version: 8").as_bytes(), remote())
            .unwrap()
            .unwrap();
        let resp = check_upgrade(&r.method, &r.info).unwrap_err();
        assert_eq!(resp.status, 426);
        let r = parse_request(UPGRADE.replace("GET", "POST").as_bytes(), remote()).unwrap().unwrap();
        assert_eq!(check_upgrade(&r.method, &r.info).unwrap_err().status, 400);
        let text = String::from_utf8(render(&HttpResponse::not_found(), false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n") && text.ends_with("not found\n"));
    }
}
