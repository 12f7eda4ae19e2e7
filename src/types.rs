//! The values the engine and applications pass each other: connection ids,
//! messages, the upgrade request, HTTP responses. Imports nothing from the
//! crate, so every other module can use them without a cycle.

use std::net::SocketAddr;
use std::time::SystemTime;

/// A connection's id: unique for the server's lifetime, never reused, never 0.
pub type ConnId = u64;

/// A complete WebSocket data message (fragments already reassembled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: always valid UTF-8.
    Text(String),
    /// A binary message.
    Binary(Vec<u8>),
}

impl Message {
    /// The payload bytes, whatever the kind.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(s) => s.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// True for [`Message::Text`].
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Self {
        Message::Text(s.to_owned())
    }
}

impl From<String> for Message {
    fn from(s: String) -> Self {
        Message::Text(s)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Self {
        Message::Binary(b)
    }
}

/// The HTTP request that opened a connection, as the handler sees it.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The request method, e.g. `GET`, as sent.
    pub method: String,
    /// The request path without the query string, e.g. `/ws`.
    pub path: String,
    /// The raw query string without the `?` (empty when there is none).
    pub query: String,
    /// Every header in arrival order; names as sent, values lossily decoded as UTF-8.
    pub headers: Vec<(String, String)>,
    /// When the request arrived.
    pub received_at: SystemTime,
    /// The authenticated user (a verified token's `sub`) when the protocol
    /// layer checked a token before the application sees the request
    /// (`ProtocolHandler::with_app`, the C API with the protocol on); `None`
    /// otherwise. Never taken from the request itself.
    pub user: Option<String>,
    /// Over TLS with client certificates (`tls_client_ca`): the subject of
    /// the certificate the client proved it holds, as `CN=...,O=...`.
    pub tls_client_subject: Option<String>,
    /// The request's body: read for plain HTTP requests with a
    /// `Content-Length` (at most the max message size; past it the request
    /// gets 413), empty for upgrades and requests without one.
    pub body: Vec<u8>,
}

impl RequestInfo {
    /// The first header with this name (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The subprotocols the client offered in `Sec-WebSocket-Protocol`, in its
    /// order of preference.
    pub fn subprotocols(&self) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|(_, v)| v.split(',').map(|p| p.trim().to_owned()))
            .filter(|p| !p.is_empty())
            .collect()
    }

    /// The first query parameter with this name, percent-decoded (`+` is a space).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

/// Decodes `%XX` escapes and `+`; an invalid escape is kept as it was written.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The handler's answer to an upgrade request, given before the 101 is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Upgrade {
    /// Open the WebSocket; `subprotocol` is echoed in `Sec-WebSocket-Protocol`
    /// (it must be one the client offered).
    Accept {
        /// The subprotocol chosen from the client's offer, if any.
        subprotocol: Option<String>,
    },
    /// Refuse with this HTTP response; no WebSocket is opened.
    Reject(HttpResponse),
}

impl Upgrade {
    /// Accept without a subprotocol.
    pub fn accept() -> Self {
        Upgrade::Accept { subprotocol: None }
    }

    /// Refuse with a bare status (e.g. 401, 403).
    pub fn reject(status: u16) -> Self {
        Upgrade::Reject(HttpResponse::new(status, "text/plain; charset=utf-8", status_reason(status)))
    }
}

/// A plain HTTP response, for requests that are not upgrades and for refusals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Extra headers (Content-Length, Content-Type and Connection are added).
    pub headers: Vec<(String, String)>,
    /// The `Content-Type` header.
    pub content_type: String,
    /// The body.
    pub body: Vec<u8>,
    /// True for [`HttpResponse::event_stream`]: the engine keeps the
    /// connection open as a stream instead of sending a body and closing.
    pub stream: bool,
}

impl HttpResponse {
    /// A response with this status, content type and body.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            content_type: content_type.to_owned(),
            body: body.into(),
            stream: false,
        }
    }

    /// `200 text/event-stream` that stays open (Server-Sent Events): the
    /// engine then treats the request like an upgrade to a stream. It asks
    /// [`Handler::on_upgrade`](crate::Handler::on_upgrade) (which may still
    /// refuse), takes a connection slot, sends this head (no body, no
    /// `Content-Length`), and runs the connection with a reader that only
    /// waits for the client to go and a writer that writes what is sent to
    /// it as is: a message's bytes must already be in the event-stream
    /// format. Heartbeats are `: ping` comments; a close ends the stream.
    /// `on_connect` and `on_close` follow as for a WebSocket;
    /// [`ServerHandle::is_event_stream`](crate::ServerHandle::is_event_stream)
    /// tells them apart.
    pub fn event_stream() -> Self {
        let mut response = HttpResponse::new(200, "text/event-stream; charset=utf-8", Vec::new())
            .with_header("Cache-Control", "no-cache")
            .with_header("X-Accel-Buffering", "no");
        response.stream = true;
        response
    }

    /// `404 Not Found`, the default for any path the handler does not serve.
    pub fn not_found() -> Self {
        HttpResponse::new(404, "text/plain; charset=utf-8", "not found\n")
    }

    /// The engine's own answer with `status`: its reason phrase as a
    /// plain-text body (what the reader and the overflow thread send when
    /// they refuse or fail a request themselves).
    pub(crate) fn plain(status: u16) -> Self {
        HttpResponse::new(status, "text/plain; charset=utf-8", format!("{}\n", status_reason(status)))
    }

    /// `413 Payload Too Large` for a request whose path takes no body (see
    /// [`Handler::on_body`](crate::Handler::on_body)).
    pub fn no_body_taken() -> Self {
        HttpResponse::new(
            413,
            "text/plain; charset=utf-8",
            "this request takes no body
",
        )
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// The reason phrase for the status codes wshub sends.
pub(crate) fn status_reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_answer_is_the_reason_phrase_as_text() {
        let r = HttpResponse::plain(503);
        assert_eq!((r.status, r.content_type.as_str()), (503, "text/plain; charset=utf-8"));
        assert_eq!(r.body, b"Service Unavailable\n");
        assert!(r.headers.is_empty() && !r.stream);
    }

    fn req(query: &str) -> RequestInfo {
        RequestInfo {
            remote_addr: "127.0.0.1:1".parse().unwrap(),
            method: "GET".into(),
            path: "/ws".into(),
            query: query.into(),
            headers: vec![("X-Token".into(), "abc".into())],
            received_at: SystemTime::now(),
            user: None,
            tls_client_subject: None,
            body: Vec::new(),
        }
    }

    #[test]
    fn query_params_are_percent_decoded() {
        let r = req("room=a%20b&x=1&flag&plus=c+d&bad=%zz&tail=%4");
        assert_eq!(r.query_param("room").as_deref(), Some("a b"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("plus").as_deref(), Some("c d"));
        assert_eq!(r.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(r.query_param("tail").as_deref(), Some("%4"));
        assert_eq!(r.query_param("missing"), None);
    }

    #[test]
    fn headers_are_case_insensitive() {
        assert_eq!(req("").header("x-token"), Some("abc"));
        assert_eq!(req("").header("other"), None);
    }
}
