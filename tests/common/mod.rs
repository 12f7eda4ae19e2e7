//! Test support shared by the integration tests: real sockets on loopback, the
//! tungstenite client, an event-recording handler, and bounded waits.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message as WsMessage, WebSocket};
use wshub::{ConnId, Handler, Message, RequestInfo, ServerHandle};

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub type Client = WebSocket<TcpStream>;

/// Sends the server's log to stderr when `WSHUB_TEST_LOG` names a level
/// (e.g. `WSHUB_TEST_LOG=debug cargo test --test NAME -- --nocapture`).
pub fn init_log() {
    if let Some(level) = std::env::var("WSHUB_TEST_LOG").ok().and_then(|l| l.parse().ok()) {
        let _ = simplelog::TermLogger::init(
            level,
            simplelog::Config::default(),
            simplelog::TerminalMode::Stderr,
            simplelog::ColorChoice::Never,
        );
    }
}

/// Opens a WebSocket to `addr` at `path` (e.g. `/ws?room=a`) with the
/// tungstenite client; every read is bounded by [`WAIT`].
pub fn connect(addr: SocketAddr, path: &str) -> Client {
    let stream = TcpStream::connect(addr).expect("tcp connect");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).expect("ws handshake");
    ws
}

/// Closes from the client side and reads until the server has answered.
pub fn close_client(mut ws: Client) {
    let _ = ws.close(None);
    while ws.read().is_ok() {}
}

/// Reads the next data message, skipping pings and pongs.
pub fn next_data(ws: &mut Client) -> WsMessage {
    loop {
        match ws.read().expect("read a message") {
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
            m => return m,
        }
    }
}

/// Reads until the server's close frame and returns its code; data is skipped.
pub fn read_until_close(ws: &mut Client) -> Option<u16> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(WsMessage::Close(frame)) => return frame.map(|f: CloseFrame| u16::from(f.code)),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Polls `cond` every 5 ms until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the recording handler saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connect(ConnId, String),
    Message(ConnId, Message),
    Close(ConnId, u16),
}

type OnMessage = dyn Fn(&ServerHandle, ConnId, &Message) + Send + Sync;
type OnConnect = dyn Fn(&ServerHandle, ConnId, &RequestInfo) + Send + Sync;

/// A handler that reports every callback on a channel, and optionally acts on
/// each message.
pub struct Recorder {
    tx: Sender<Event>,
    on_message: Option<Arc<OnMessage>>,
    on_connect: Option<Arc<OnConnect>>,
}

impl Recorder {
    pub fn new() -> (Self, Events) {
        init_log();
        let (tx, rx) = crossbeam_channel::unbounded();
        (Recorder { tx, on_message: None, on_connect: None }, Events(rx))
    }

    pub fn on_message(mut self, f: impl Fn(&ServerHandle, ConnId, &Message) + Send + Sync + 'static) -> Self {
        self.on_message = Some(Arc::new(f));
        self
    }

    pub fn on_connect(
        mut self,
        f: impl Fn(&ServerHandle, ConnId, &RequestInfo) + Send + Sync + 'static,
    ) -> Self {
        self.on_connect = Some(Arc::new(f));
        self
    }
}

impl Handler for Recorder {
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) {
        if let Some(f) = &self.on_connect {
            f(server, conn, request);
        }
        let _ = self.tx.send(Event::Connect(conn, request.query.clone()));
    }
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        if let Some(f) = &self.on_message {
            f(server, conn, &message);
        }
        let _ = self.tx.send(Event::Message(conn, message));
    }
    fn on_close(&self, _: &ServerHandle, conn: ConnId, code: u16, _: &str) {
        let _ = self.tx.send(Event::Close(conn, code));
    }
}

/// The receiving end of a [`Recorder`].
pub struct Events(pub Receiver<Event>);

impl Events {
    pub fn next(&self) -> Event {
        self.0.recv_timeout(WAIT).expect("an event from the handler")
    }

    /// Waits for the next connect and returns the connection id.
    pub fn connected(&self) -> ConnId {
        loop {
            if let Event::Connect(id, _) = self.next() {
                return id;
            }
        }
    }

    /// Waits for the close of `conn` and returns its code.
    pub fn closed(&self, conn: ConnId) -> u16 {
        loop {
            if let Event::Close(id, code) = self.next() {
                if id == conn {
                    return code;
                }
            }
        }
    }
}

/// Threads of this process, from /proc.
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Open file descriptors of this process, from /proc.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
