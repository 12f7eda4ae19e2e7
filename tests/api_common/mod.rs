//! Test plumbing for the backend API and Server-Sent Events tests: HTTP
//! calls with a key and a JSON body over a real socket, and an event-stream
//! reader (what an `EventSource` does: `id`, `event`, `data` lines, comments).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::protocol_common::WAIT;

/// `METHOD path` with `X-API-Key: key` (when given) and a JSON body: the
/// status and the parsed JSON answer (Null when it is not JSON).
pub fn api(addr: SocketAddr, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let auth = key.map(|k| format!("Authorization: apikey {k}\r\n")).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = raw_http(addr, raw.as_bytes());
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A raw request: the status and the body.
pub fn raw_http(addr: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(raw).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, body.to_owned())
}

/// One event of a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

/// An open `GET /sse` stream.
pub struct Sse {
    pub reader: BufReader<TcpStream>,
    pub status: u16,
    pub head: String,
    /// `: ping` comments seen so far.
    pub pings: usize,
}

impl Sse {
    /// Opens `/sse?{query}` with extra headers; reads the response head.
    pub fn open(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Sse {
        let stream = TcpStream::connect(addr).expect("connect");
        Sse::open_on(stream, addr, query, headers)
    }

    /// [`Sse::open`] over a stream connected elsewhere (another source address).
    pub fn open_on(mut stream: TcpStream, _addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Sse {
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let extra: String = headers.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
        let raw =
            format!("GET /sse?{query} HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n{extra}\r\n");
        stream.write_all(raw.as_bytes()).expect("write");
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Sse { reader, status, head, pings: 0 }
    }

    /// The next event (comments counted and skipped); None at the end of the
    /// stream.
    pub fn next(&mut self) -> Option<Event> {
        let (mut id, mut event, mut data) = (None, String::from("message"), Vec::<String>::new());
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(e) => panic!("reading the stream: {e}"),
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data.join("\n")).expect("event data is JSON");
                return Some(Event { id, event, data });
            }
            if let Some(comment) = line.strip_prefix(':') {
                if comment.trim() == "ping" {
                    self.pings += 1;
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
            match field {
                "id" => id = Some(value),
                "event" => event = value,
                "data" => data.push(value),
                _ => {}
            }
        }
    }

    /// The next event, which must be of this kind.
    pub fn expect(&mut self, kind: &str) -> Event {
        let e = self.next().unwrap_or_else(|| panic!("the stream ended before a {kind} event"));
        assert_eq!(e.event, kind, "{e:?}");
        e
    }

    /// Reads until the stream ends (bounded by `limit`); true when it did.
    pub fn ends_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 1024];
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e)
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// The number of threads of process `pid`.
pub fn threads_of(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads line")
}

/// Waits (bounded by [`WAIT`]) until `cond` holds.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("not within {WAIT:?}: {what}");
}
