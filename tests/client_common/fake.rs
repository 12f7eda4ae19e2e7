//! A misbehaving wshub written for the client tests: a listener on 127.0.0.1
//! port 0 that runs a script per accepted connection (its own thread), with
//! helpers for the parts of the protocol a script plays: the upgrade,
//! `connected`, acks, closes, and a 101 trickled a byte at a time. Each
//! script bounds its own run; what it saw goes to `notes`. Used by the client
//! tests and by `benches/reconnect_storm.rs` (the flapping server).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde_json::{json, Value};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
use tungstenite::{Message, WebSocket};

/// How long a script may keep any one connection.
pub const SCRIPT_LIMIT: Duration = Duration::from_secs(30);

/// A connection as a script sees it: its number (0 for the first) and a way to note things.
pub struct Ctx {
    pub n: usize,
    pub notes: Sender<String>,
}

/// The server; stops accepting when dropped.
pub struct Fake {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    pub notes: Receiver<String>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    /// Runs `script` on every accepted connection.
    pub fn start(script: impl Fn(TcpStream, Ctx) + Send + Sync + 'static) -> Fake {
        Fake::start_on("127.0.0.1:0", script)
    }

    /// The same on another address (e.g. `[::1]:0`).
    pub fn start_on(bind: &str, script: impl Fn(TcpStream, Ctx) + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind(bind).expect("bind the fake server");
        let addr = listener.local_addr().expect("its address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::unbounded();
        let script = Arc::new(script);
        let (count, stopping) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_read_timeout(Some(SCRIPT_LIMIT));
                let _ = stream.set_write_timeout(Some(SCRIPT_LIMIT));
                let (script, notes) = (script.clone(), tx.clone());
                std::thread::spawn(move || script(stream, Ctx { n, notes }));
            }
        });
        Fake { addr, accepted, notes: rx, stop }
    }

    /// `ws://ADDR/ws`.
    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The next note, within `limit`.
    pub fn note(&self, limit: Duration) -> Option<String> {
        self.notes.recv_timeout(limit).ok()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// Completes the upgrade (choosing `wshub.v1.json` when offered).
pub fn upgrade(stream: TcpStream) -> Option<WebSocket<TcpStream>> {
    tungstenite::accept_hdr(stream, choose_subprotocol).ok()
}

// The error type is tungstenite's callback signature, not ours to shrink.
#[allow(clippy::result_large_err)]
fn choose_subprotocol(req: &Request, mut res: Response) -> Result<Response, ErrorResponse> {
    let offered = req.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
    if offered.is_some_and(|p| p.contains("wshub.v1.json")) {
        res.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("wshub.v1.json"));
    }
    Ok(res)
}

/// Sends `connected`.
pub fn connected(ws: &mut WebSocket<TcpStream>, client_id: &str, heartbeat_ms: u64, max_bytes: u64) -> bool {
    let payload = json!({"clientId": client_id, "protocol": 1, "heartbeatMs": heartbeat_ms,
        "maxMessageBytes": max_bytes});
    send(ws, &json!({"type": "connected", "payload": payload}))
}

/// Sends one envelope.
pub fn send(ws: &mut WebSocket<TcpStream>, env: &Value) -> bool {
    ws.send(Message::text(env.to_string())).is_ok()
}

/// The next client envelope with an `id` (other frames skipped); `None` when the connection ends.
pub fn request(ws: &mut WebSocket<TcpStream>) -> Option<Value> {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let env: Value = serde_json::from_str(t.as_str()).ok()?;
                if env["id"].is_string() {
                    return Some(env);
                }
            }
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Acks request `env` with `payload`.
pub fn ack(ws: &mut WebSocket<TcpStream>, env: &Value, payload: Value) -> bool {
    send(ws, &json!({"type": "ack", "id": env["id"], "payload": payload}))
}

/// Reads the next `room:join` and acks it with seq 0 in `epoch`.
pub fn ack_join(ws: &mut WebSocket<TcpStream>, epoch: &str) -> Option<Value> {
    let join = request(ws)?;
    let room = join["payload"]["room"].clone();
    ack(ws, &join, json!({"room": room, "seq": 0, "members": [], "epoch": epoch})).then_some(join)
}

/// Sends a close frame with `code`.
pub fn close(ws: &mut WebSocket<TcpStream>, code: u16, reason: &str) {
    let frame = CloseFrame { code: CloseCode::from(code), reason: reason.to_owned().into() };
    let _ = ws.close(Some(frame));
    let _ = ws.flush();
}

/// After sending a close: the code of the client's close frame, or `None`
/// when the connection ended (or `limit` passed) without one.
pub fn close_reply(ws: &mut WebSocket<TcpStream>, limit: Duration) -> Option<u16> {
    let _ = ws.get_ref().set_read_timeout(Some(limit));
    let until = Instant::now() + limit;
    while Instant::now() < until {
        match ws.read() {
            Ok(Message::Close(frame)) => return Some(frame.map_or(1005, |f| u16::from(f.code))),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
    None
}

/// Reads the HTTP request head, then sends `head` in `chunk`-byte pieces, one
/// every `every`, until it is all sent or the client leaves; how many bytes
/// went out. (tungstenite itself gives up on a byte at a time; 128 bytes at a
/// time pass its check.)
pub fn trickle(mut stream: TcpStream, head: &[u8], chunk: usize, every: Duration) -> usize {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return 0,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let mut sent = 0;
    for piece in head.chunks(chunk) {
        if stream.write_all(piece).is_err() {
            return sent;
        }
        sent += piece.len();
        std::thread::sleep(every);
    }
    sent
}

/// Reads the HTTP request head and answers with `response` (a refusal), then closes.
pub fn refuse(mut stream: TcpStream, response: &str) {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.read(&mut buf);
}

/// The flapping server's script: accept, `connected`, ack the join, close 1011.
pub fn flap(stream: TcpStream, ctx: Ctx) {
    let Some(mut ws) = upgrade(stream) else { return };
    if !connected(&mut ws, &format!("f{}", ctx.n), 30_000, 1 << 20) {
        return;
    }
    if ack_join(&mut ws, "flap").is_some() {
        close(&mut ws, 1011, "flapping");
        let _ = close_reply(&mut ws, Duration::from_secs(2));
    }
}
