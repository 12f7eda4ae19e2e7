//! Test plumbing for the admission tests (caps, deadlines, tokens, Origin):
//! clients that connect from a chosen loopback address (127.0.0.2 is as much
//! loopback as 127.0.0.1 on Linux), upgrades that may be refused, and raw
//! HTTP from a chosen address.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;

use crate::protocol_common::{Client, WAIT};

/// A TCP connection to `addr` from `from` (port chosen by the kernel).
pub fn tcp_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&addr.into(), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("an IP address")
}

/// How an upgrade attempt ended.
// A test helper held one at a time: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// Upgraded: the client (its `connected` frame not read yet).
    Open(Client),
    /// Refused with this HTTP status and these response headers.
    Refused(u16, Vec<(String, String)>),
    /// No HTTP answer at all (reset or closed).
    NoAnswer(String),
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Open(_) => write!(f, "Open"),
            Outcome::Refused(s, h) => write!(f, "Refused({s}, {h:?})"),
            Outcome::NoAnswer(e) => write!(f, "NoAnswer({e})"),
        }
    }
}

impl Outcome {
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Open(_) => 101,
            Outcome::Refused(s, _) => *s,
            Outcome::NoAnswer(_) => 0,
        }
    }

    /// The open client, reading its `connected` frame first; panics otherwise.
    pub fn open(self) -> (Client, serde_json::Value) {
        match self {
            Outcome::Open(mut c) => {
                let first = c.json();
                assert_eq!(first["type"], "connected", "{first}");
                (c, first)
            }
            other => panic!("expected an upgrade, got {other:?}"),
        }
    }

    pub fn header(&self, name: &str) -> Option<String> {
        match self {
            Outcome::Refused(_, h) => {
                h.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
            }
            _ => None,
        }
    }
}

/// Opens `/ws{query}` from `from`, with extra request headers and offered
/// subprotocols.
pub fn upgrade(
    from: IpAddr,
    addr: SocketAddr,
    query: &str,
    headers: &[(&str, &str)],
    subprotocols: &[&str],
) -> Outcome {
    let stream = match tcp_from(from, addr) {
        Ok(s) => s,
        Err(e) => return Outcome::NoAnswer(e.to_string()),
    };
    let mut request = format!("ws://{addr}/ws{query}").into_client_request().expect("request");
    for (name, value) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("header name");
        request.headers_mut().append(name, HeaderValue::from_str(value).expect("header value"));
    }
    if !subprotocols.is_empty() {
        let offer = HeaderValue::from_str(&subprotocols.join(", ")).expect("header");
        request.headers_mut().insert("Sec-WebSocket-Protocol", offer);
    }
    match tungstenite::client::client(request, stream) {
        Ok((ws, response)) => {
            let subprotocol = response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().expect("ascii").to_owned());
            Outcome::Open(Client::from_parts(ws, subprotocol))
        }
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response))) => {
            let headers = response
                .headers()
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect();
            Outcome::Refused(response.status().as_u16(), headers)
        }
        Err(e) => Outcome::NoAnswer(e.to_string()),
    }
}

/// A raw HTTP exchange from `from`: (status, whole response); status 0 when
/// no response came.
pub fn http_from(from: IpAddr, addr: SocketAddr, raw: &str) -> (u16, String) {
    let Ok(mut s) = tcp_from(from, addr) else { return (0, String::new()) };
    if s.write_all(raw.as_bytes()).is_err() {
        return (0, String::new());
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// `GET path` from `from`.
pub fn get_from(from: IpAddr, addr: SocketAddr, path: &str) -> (u16, String) {
    http_from(from, addr, &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"))
}

/// A metric's value from `/metrics` text (the first sample whose name and
/// labels start with `prefix`), or 0.
pub fn metric(text: &str, prefix: &str) -> u64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub const SHORT: Duration = Duration::from_millis(200);
