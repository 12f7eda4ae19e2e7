//! Test plumbing for the protocol tests: run the real `wshub` binary on port 0 and talk to it
//! with tungstenite's client over a real TcpStream, or with raw HTTP.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running `wshub` process, killed (by its PID, via `Child::kill`) on drop.
pub struct Wshub {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Wshub {
    /// Starts `wshub --bind 127.0.0.1:0 ARGS...` and reads its address line.
    pub fn start(args: &[&str]) -> Wshub {
        Wshub::start_with_env(args, &[])
    }

    /// [`Wshub::start`] with extra environment variables for the process.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Wshub {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wshub"))
            .envs(env.iter().copied())
            .args(["--bind", "127.0.0.1:0", "--log-level", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn wshub");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read the address line");
        let addr = line
            .trim()
            .strip_prefix("wshub listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("address");
        Wshub { child, addr }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr, &[])
    }

    /// Sends SIGTERM to this process only.
    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Sends the signal `name` (e.g. `INT`) to this process only, by its PID.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("wshub did not exit within {limit:?}");
    }
}

impl Drop for Wshub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client read.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Json(Value),
    Binary(Vec<u8>),
    Close(u16),
}

/// A WebSocket client connected to a test server.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub subprotocol: Option<String>,
    next_id: u64,
}

impl Client {
    /// Connects to `/ws` offering these subprotocols; does not read `connected`.
    pub fn connect_raw(addr: SocketAddr, subprotocols: &[&str]) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut request = format!("ws://{addr}/ws").into_client_request().expect("request");
        if !subprotocols.is_empty() {
            let offer = HeaderValue::from_str(&subprotocols.join(", ")).expect("header");
            request.headers_mut().insert("Sec-WebSocket-Protocol", offer);
        }
        let (ws, response) = tungstenite::client::client(request, stream).expect("handshake");
        let subprotocol =
            response.headers().get("Sec-WebSocket-Protocol").map(|v| v.to_str().expect("ascii").to_owned());
        Client { ws, subprotocol, next_id: 0 }
    }

    /// A client from an upgrade made elsewhere (e.g. from another source address).
    pub fn from_parts(ws: WebSocket<TcpStream>, subprotocol: Option<String>) -> Client {
        Client { ws, subprotocol, next_id: 0 }
    }

    /// Connects and checks the `connected` first frame; returns the client and its clientId.
    pub fn connect(addr: SocketAddr, subprotocols: &[&str]) -> Client {
        let mut c = Client::connect_raw(addr, subprotocols);
        let first = c.json();
        assert_eq!(first["type"], "connected", "{first}");
        c
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).expect("send");
    }

    pub fn send_binary(&mut self, bytes: &[u8]) {
        self.ws.send(Message::binary(bytes.to_vec())).expect("send");
    }

    pub fn send(&mut self, value: Value) {
        self.send_text(&value.to_string());
    }

    /// The next data or close frame (pings and pongs are skipped).
    pub fn frame(&mut self) -> Frame {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    return Frame::Json(serde_json::from_str(t.as_str()).expect("server sent JSON"))
                }
                Ok(Message::Binary(b)) => return Frame::Binary(b.to_vec()),
                Ok(Message::Close(f)) => return Frame::Close(f.map_or(1005, |f| u16::from(f.code))),
                Ok(_) => continue,
                Err(e) => panic!("reading a frame: {e}"),
            }
        }
        panic!("no frame within {WAIT:?}");
    }

    /// The next frame, which must be JSON.
    pub fn json(&mut self) -> Value {
        match self.frame() {
            Frame::Json(v) => v,
            other => panic!("expected JSON, got {other:?}"),
        }
    }

    /// The next frame, which must be binary.
    pub fn binary(&mut self) -> Vec<u8> {
        match self.frame() {
            Frame::Binary(b) => b,
            other => panic!("expected binary, got {other:?}"),
        }
    }

    /// Sends `type` with a fresh id and `payload`; returns the id.
    pub fn send_request(&mut self, kind: &str, payload: Value) -> String {
        self.next_id += 1;
        let id = format!("t-{}", self.next_id);
        self.send(json!({"type": kind, "id": id, "payload": payload}));
        id
    }

    /// Sends a request and returns the next frame, which must be its reply.
    pub fn request(&mut self, kind: &str, payload: Value) -> Value {
        let id = self.send_request(kind, payload);
        let reply = self.json();
        assert_eq!(reply["id"], id.as_str(), "reply to {kind}: {reply}");
        reply
    }

    /// Sends a request that must be acked; returns the ack's payload.
    pub fn ok(&mut self, kind: &str, payload: Value) -> Value {
        let reply = self.request(kind, payload);
        assert_eq!(reply["type"], "ack", "{kind}: {reply}");
        reply["payload"].clone()
    }

    /// Proves nothing else is queued for this client: a ping's ack is the next frame.
    pub fn assert_nothing_pending(&mut self) {
        let ack = self.ok("ping", json!("sync"));
        assert_eq!(ack, json!("sync"));
    }

    /// Skips whatever is queued for this client until a ping's ack comes back
    /// (bounded by [`WAIT`] per frame and by `max_frames`).
    pub fn sync(&mut self, max_frames: usize) {
        let id = self.send_request("ping", json!("sync"));
        for _ in 0..max_frames {
            if let Frame::Json(v) = self.frame() {
                if v["type"] == "ack" && v["id"] == id.as_str() {
                    return;
                }
            }
        }
        panic!("no ping ack within {max_frames} frames");
    }

    pub fn join(&mut self, room: &str) -> Value {
        self.ok("room:join", json!({"room": room}))
    }
}

/// A raw HTTP/1.1 exchange: (status, head, body).
pub fn http(addr: SocketAddr, raw_request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(raw_request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Sends a request and reads only the response head (for a 101, whose
/// connection stays open).
pub fn head_only(addr: SocketAddr, raw_request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    s.write_all(raw_request.as_bytes()).expect("write");
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") && out.len() < 16 * 1024 {
        match s.read(&mut byte) {
            Ok(1) => out.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    http(addr, &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"))
}

/// The resident set size of process `pid`, in bytes (`VmRSS` in `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS line");
    kib * 1024
}

/// The highest RSS of `pid` seen while sampling every 50 ms for `window`.
pub fn peak_rss_over(pid: u32, window: Duration) -> u64 {
    let deadline = Instant::now() + window;
    let mut peak = rss_bytes(pid);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_bytes(pid));
    }
    peak
}

/// One sample of `GET /metrics`, e.g. `metric(addr, r#"wshub_dropped_total{reason="history_bytes"}"#)`;
/// 0 when the line is absent.
pub fn metric(addr: SocketAddr, name_and_labels: &str) -> u64 {
    let (status, _, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub const MIB: u64 = 1024 * 1024;

/// A `room:publish` envelope whose `data` is a string of `len` bytes.
pub fn big_publish(room: &str, len: usize, id: Option<&str>) -> String {
    let data = "x".repeat(len);
    match id {
        Some(id) => json!({"type": "room:publish", "id": id, "payload": {"room": room, "data": data}}),
        None => json!({"type": "room:publish", "payload": {"room": room, "data": data}}),
    }
    .to_string()
}
