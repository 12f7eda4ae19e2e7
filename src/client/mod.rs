//! A blocking Rust client for wire protocol v1 (`docs/protocol.md`) that
//! survives the network: it reconnects with full-jitter exponential backoff,
//! rejoins every room with `since` and `epoch`, buffers publishes while offline
//! and resends unacknowledged ones with the same idempotency `key`. The policy
//! is written once for this client and `client.js` in `docs/clients.md`.
//!
//! Threads: one per client that connects, reads and runs the reconnect loop
//! (`session`), and one per connection that writes (`conn`). Events go to the
//! application through a bounded crossbeam channel ([`Client::events`]).
//! This module owns no server code and reaches the server only over a socket.
//!
//! ```no_run
//! use wshub::client::{Client, Event, Options};
//! let client = Client::connect("ws://127.0.0.1:9001/ws", Options::default()).unwrap();
//! client.join("lobby").unwrap();
//! client.publish("lobby", &serde_json::json!({"text": "hi"})).unwrap();
//! for event in client.events().iter() {
//!     if let Event::Message { room, seq, data, .. } = event {
//!         println!("{room} #{seq}: {data}");
//!     }
//! }
//! ```

mod backoff;
mod conn;
mod deflate;
mod session;
mod tls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use serde_json::{json, Value};

pub use backoff::Backoff;

/// Room for a message's envelope over the server's `maxMessageBytes`: data
/// published at the server's limit reaches the members wrapped in `room`,
/// `seq`, `from` and `ts`.
pub const ENVELOPE_ROOM: usize = 64 << 10;

/// How a [`Client`] connects and behaves; `Options::default()` gives the
/// defaults `docs/clients.md` lists. Its `Debug` output never shows the token.
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// A token sent as `Authorization: Bearer <token>` on every (re)connection.
    pub token: Option<String>,
    /// The reconnect delay bounds (default 1 s doubling up to 30 s, full jitter).
    pub backoff: Backoff,
    /// Publishes that may wait while offline (unacknowledged ones carried
    /// over from a cut included); past it `publish` fails with
    /// [`Error::BufferFull`]. Default 100.
    pub max_buffered: usize,
    /// How long a request (or a sent publish) waits for its reply, and the one
    /// deadline of a connection attempt: TCP connect, TLS, the upgrade and the
    /// server's `connected` frame together. Default 5 s.
    pub request_timeout: Duration,
    /// Events that may wait unread in [`Client::events`]; when it is full the
    /// reading thread waits (and the server eventually sees a slow consumer).
    /// Default 4096.
    pub event_capacity: usize,
    /// Bytes of messages that may wait unread in [`Client::events`] (and, as
    /// much again over all rooms, be held while rooms resynchronise); past it
    /// the reading thread waits as for [`Options::event_capacity`]. A message
    /// counts for what its parsed data holds in memory (at least its frame's
    /// length). One event is always let through. Default 16 MiB.
    pub event_capacity_bytes: usize,
    /// The largest message (and frame) accepted from the server; the server's
    /// `maxMessageBytes` from `connected` plus [`ENVELOPE_ROOM`] lowers it (a
    /// room message published at the server's limit arrives longer, in its
    /// envelope). A larger one closes the connection with 1009 before it is
    /// read. Default 1 MiB + [`ENVELOPE_ROOM`]: the server's default limit.
    pub max_message_bytes: usize,
    /// The local address to bind before connecting (e.g. one of `127.0.0.x`
    /// to spread test clients over source addresses); `None` lets the system pick.
    pub local_addr: Option<IpAddr>,
    /// For `wss://`: trust only the CA certificates in this PEM file instead
    /// of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// For `wss://`: accept any certificate for any name (the traffic is
    /// encrypted, but to whoever answered). Off by default; for tests only.
    pub insecure: bool,
    /// Offer permessage-deflate (RFC 7692, no context takeover either way)
    /// in the upgrade request, and when the server takes it, inflate what it
    /// sends compressed (within [`Options::max_message_bytes`]) and compress
    /// what is sent to it. Default on.
    pub compression: bool,
    /// With [`Options::compression`] agreed: messages shorter than this are
    /// sent uncompressed. Default 128 (the server's default too).
    pub compression_min_bytes: usize,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("backoff", &self.backoff)
            .field("max_buffered", &self.max_buffered)
            .field("request_timeout", &self.request_timeout)
            .field("event_capacity", &self.event_capacity)
            .field("event_capacity_bytes", &self.event_capacity_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("local_addr", &self.local_addr)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("compression", &self.compression)
            .field("compression_min_bytes", &self.compression_min_bytes)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            token: None,
            backoff: Backoff::default(),
            max_buffered: 100,
            request_timeout: Duration::from_secs(5),
            event_capacity: 4096,
            event_capacity_bytes: 16 << 20,
            max_message_bytes: (1 << 20) + ENVELOPE_ROOM,
            local_addr: None,
            ca_file: None,
            insecure: false,
            compression: true,
            compression_min_bytes: 128,
        }
    }
}

impl Options {
    /// Sets [`Options::token`].
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }
    /// Sets [`Options::backoff`].
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = Backoff { min, max };
        self
    }
    /// Sets [`Options::max_buffered`].
    pub fn max_buffered(mut self, n: usize) -> Self {
        self.max_buffered = n;
        self
    }
    /// Sets [`Options::request_timeout`].
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.request_timeout = t;
        self
    }
    /// Sets [`Options::event_capacity`].
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n;
        self
    }
    /// Sets [`Options::event_capacity_bytes`].
    pub fn event_capacity_bytes(mut self, n: usize) -> Self {
        self.event_capacity_bytes = n;
        self
    }
    /// Sets [`Options::max_message_bytes`].
    pub fn max_message_bytes(mut self, n: usize) -> Self {
        self.max_message_bytes = n;
        self
    }
    /// Sets [`Options::local_addr`].
    pub fn local_addr(mut self, ip: IpAddr) -> Self {
        self.local_addr = Some(ip);
        self
    }
    /// Sets [`Options::ca_file`].
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }
    /// Sets [`Options::insecure`].
    pub fn insecure(mut self, on: bool) -> Self {
        self.insecure = on;
        self
    }
    /// Sets [`Options::compression`].
    pub fn compression(mut self, on: bool) -> Self {
        self.compression = on;
        self
    }
    /// Sets [`Options::compression_min_bytes`].
    pub fn compression_min_bytes(mut self, n: usize) -> Self {
        self.compression_min_bytes = n;
        self
    }
}

/// What the client tells the application, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A connection is up and every room is rejoined (sent on every
    /// (re)connection, before buffered publishes are acknowledged).
    Connected {
        /// This connection's `clientId` (new on each connection).
        client_id: String,
    },
    /// The connection was lost or closed; `code` is the close code (1006 when
    /// none came). A reconnect follows unless [`Event::Closed`] does.
    Disconnected {
        /// The close code.
        code: u16,
        /// The close reason, or what failed.
        reason: String,
    },
    /// The next connection attempt waits `delay` (`attempt` counts from 1; it
    /// starts again at 1 only after a connection stayed up for
    /// [`Backoff::max`]).
    Reconnecting {
        /// 1 for the first attempt after a cut.
        attempt: u32,
        /// The wait before it.
        delay: Duration,
    },
    /// A rejoin could not recover everything: `recovered: false`, or a new
    /// `epoch` (the room's history was reset). The application should refetch.
    Recovery {
        /// The room.
        room: String,
        /// Whether every missed message was replayed.
        recovered: bool,
        /// The room's epoch now.
        epoch: String,
        /// The epoch the client knew before, if any.
        previous_epoch: Option<String>,
    },
    /// A `room:message` (each seq once per room and epoch).
    Message {
        /// The room.
        room: String,
        /// Its seq in the room.
        seq: u64,
        /// The publisher's clientId (`"api"` for the backend API).
        from: String,
        /// The published JSON.
        data: Value,
    },
    /// A binary message `[0x02][room][seq][body]`.
    Binary {
        /// The room.
        room: String,
        /// Its seq in the room.
        seq: u64,
        /// The opaque body.
        body: Vec<u8>,
    },
    /// `presence:join` (`joined: true`) or `presence:leave`.
    Presence {
        /// The room.
        room: String,
        /// The member's clientId.
        client_id: String,
        /// The member's user, with auth on.
        user: Option<String>,
        /// Joined or left.
        joined: bool,
    },
    /// `typing` from another member.
    Typing {
        /// The room.
        room: String,
        /// Who.
        client_id: String,
        /// Started or stopped.
        active: bool,
    },
    /// The server removed this client from `room` (`room:left`); it is not
    /// rejoined on reconnection.
    Left {
        /// The room.
        room: String,
        /// Why: `forbidden` (an `auth:refresh` whose claim no longer allows
        /// it), `kicked`.
        reason: String,
    },
    /// Something failed that answers no call of the application: an `error`
    /// frame without a pending request, a rejoin refused for good (the room
    /// is left; the message starts with `rejoining`), a refused handshake. A
    /// rejoin refused for now (`unavailable`, `rate_limited`, `internal`)
    /// ends the connection instead, and the room is rejoined on the next.
    Error {
        /// A protocol error code, `http_401`, `http_403`, ... for a refused
        /// handshake, or `tls` for a certificate not accepted on a reconnect.
        code: String,
        /// What happened.
        message: String,
    },
    /// The client stopped for good: `close()` was called, the server closed
    /// with 1000, the handshake was refused with 401/403, or the server's
    /// certificate was not accepted. No event follows.
    Closed {
        /// Why.
        reason: String,
    },
}

/// What a client call can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The URL is not `ws://` or `wss://` `host[:port]/path`.
    BadUrl(String),
    /// The first connection failed (later ones are retried, not reported here).
    Connect(String),
    /// TLS could not be set up (no system roots), the server's certificate
    /// was not accepted (see [`Options::ca_file`]), or the server shares no
    /// TLS version or cipher with the client; retrying cannot help. (Other
    /// failures during the TLS handshake are [`Error::Connect`], and retried.)
    Tls(String),
    /// An option cannot be used: the CA file cannot be read or holds no
    /// certificate, or the token cannot go in an HTTP header.
    Options(String),
    /// The handshake was refused with this HTTP status (401, 403, 503, ...).
    Refused {
        /// The HTTP status.
        status: u16,
        /// Seconds of `Retry-After`, if the server sent one.
        retry_after: Option<u64>,
    },
    /// The server answered `error {code, message}`.
    Server {
        /// e.g. `forbidden`, `bad_request`, `rate_limited`.
        code: String,
        /// The server's text.
        message: String,
    },
    /// No reply within [`Options::request_timeout`] (for a publish: after it was sent).
    Timeout,
    /// [`Options::max_buffered`] publishes already wait: this one was not taken.
    BufferFull,
    /// The connection dropped before the reply came (not said of publishes,
    /// which are resent); the request may or may not have been carried out.
    Disconnected,
    /// The client is closed.
    Closed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadUrl(u) => write!(f, "not a ws:// or wss:// URL: {u}"),
            Error::Connect(why) => write!(f, "could not connect: {why}"),
            Error::Tls(why) => write!(f, "TLS: {why}"),
            Error::Options(why) => write!(f, "bad option: {why}"),
            Error::Refused { status, retry_after: Some(s) } => {
                write!(f, "handshake refused with {status} (retry after {s} s)")
            }
            Error::Refused { status, retry_after: None } => write!(f, "handshake refused with {status}"),
            Error::Server { code, message } => write!(f, "server error {code}: {message}"),
            Error::Timeout => f.write_str("no reply in time"),
            Error::BufferFull => f.write_str("too many publishes wait already (buffer_full)"),
            Error::Disconnected => f.write_str("the connection dropped before the reply"),
            Error::Closed => f.write_str("the client is closed"),
        }
    }
}

impl std::error::Error for Error {}

/// `Result` with the client's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A reply that will come: the ack's payload, or why there is none.
#[derive(Debug)]
pub struct Receipt(Receiver<Result<Value>>);

impl Receipt {
    /// Waits for the reply. A publish's receipt is always answered: by its ack,
    /// its error, [`Error::Timeout`] once sent, or [`Error::Closed`].
    pub fn wait(self) -> Result<Value> {
        self.0.recv().unwrap_or(Err(Error::Closed))
    }

    /// Waits at most `limit`; `None` if nothing came yet.
    pub fn wait_timeout(&self, limit: Duration) -> Option<Result<Value>> {
        self.0.recv_timeout(limit).ok()
    }
}

/// Last seq and epoch seen in a joined room.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomPos {
    pub(crate) seq: u64,
    pub(crate) epoch: Option<String>,
}

/// A publish not yet acknowledged: buffered (`deadline: None`) or sent.
pub(crate) struct Outgoing {
    /// The request id, or for a binary publish its key (the id of its ack).
    pub(crate) id: String,
    pub(crate) frame: conn::Out,
    pub(crate) reply: Sender<Result<Value>>,
    pub(crate) deadline: Option<Instant>,
}

/// What a reply with some id answers.
pub(crate) enum Waiter {
    /// An application request (not a publish).
    Request { reply: Sender<Result<Value>>, deadline: Instant, join: Option<String> },
    /// The session's own rejoin of a room; `resync` for the second join
    /// (`since: 0` in the new epoch) after the first found the room reset.
    Rejoin { room: String, resync: bool },
}

/// Everything the client threads share, under one lock.
pub(crate) struct State {
    pub(crate) rooms: BTreeMap<String, RoomPos>,
    pub(crate) outbox: VecDeque<Outgoing>,
    pub(crate) waiters: HashMap<String, Waiter>,
    /// The writer's queue while a connection is up.
    pub(crate) conn: Option<Sender<conn::Out>>,
    /// Up and every room rejoined: application requests go out directly.
    pub(crate) online: bool,
    pub(crate) token: Option<String>,
    pub(crate) closed: bool,
}

pub(crate) struct Shared {
    pub(crate) url: String,
    pub(crate) options: Options,
    pub(crate) state: Mutex<State>,
    /// Signalled when `online` or `closed` changes.
    pub(crate) changed: Condvar,
    pub(crate) events: Sender<Event>,
    /// The sizes of the events in `events`, to bound it by bytes.
    event_bytes: Mutex<EventBytes>,
    /// Set by `close()`; an attempt in progress checks it before every read.
    pub(crate) stopping: Arc<AtomicBool>,
    /// For `wss://` URLs.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    next_id: AtomicU64,
    key_prefix: String,
}

impl Shared {
    pub(crate) fn next_id(&self) -> String {
        format!("c-{}", self.next_id.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Sends an event that is not a message (counted as [`SMALL_EVENT`] bytes).
    pub(crate) fn emit(&self, event: Event) {
        self.emit_sized(event, SMALL_EVENT);
    }

    /// Sends an event of about `size` bytes; waits while the channel holds
    /// [`Options::event_capacity`] events or would pass
    /// [`Options::event_capacity_bytes`], unless the client stops. Only the
    /// session thread sends, so the sizes recorded match the channel's order.
    pub(crate) fn emit_sized(&self, event: Event, size: usize) {
        let mut event = event;
        loop {
            {
                let mut eb = self.event_bytes.lock();
                // The application has taken the oldest ones since.
                while eb.sizes.len() > self.events.len() {
                    let taken = eb.sizes.pop_front().unwrap_or(0);
                    eb.total -= taken;
                }
                let room = self.events.len() < self.options.event_capacity.max(1);
                if room && (eb.sizes.is_empty() || eb.total + size <= self.options.event_capacity_bytes) {
                    match self.events.try_send(event) {
                        Ok(()) => {
                            eb.sizes.push_back(size);
                            eb.total += size;
                            return;
                        }
                        Err(crossbeam_channel::TrySendError::Full(e)) => event = e,
                        Err(crossbeam_channel::TrySendError::Disconnected(_)) => return,
                    }
                }
            }
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(EVENT_POLL);
        }
    }

    /// Sends [`Event::Closed`], the last event: it never waits and never
    /// finds the channel full (one place is kept for it), so an application
    /// reading `events()` sees it also when `close()` came while the channel
    /// was full.
    pub(crate) fn emit_closed(&self, reason: String) {
        let _ = self.events.try_send(Event::Closed { reason });
    }
}

/// What the event channel holds, in bytes.
#[derive(Default)]
struct EventBytes {
    sizes: VecDeque<usize>,
    total: usize,
}

/// The size an event other than a message counts for.
pub(crate) const SMALL_EVENT: usize = 128;

/// How often a full event channel is looked at again.
const EVENT_POLL: Duration = Duration::from_millis(5);

/// A connection to a wshub server that reconnects by itself. Dropping it closes it.
pub struct Client {
    shared: Arc<Shared>,
    events: Receiver<Event>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Client {
    /// Connects to `url` (`ws://` or `wss://` `host:port/path`) and starts the
    /// client's threads. The first attempt is made here: its failure is
    /// returned (a refused handshake as [`Error::Refused`], a certificate not
    /// accepted as [`Error::Tls`]); later cuts are retried.
    pub fn connect(url: &str, options: Options) -> Result<Client> {
        let target = conn::Target::parse(url)?;
        if let Some(token) = &options.token {
            check_token(token)?;
        }
        let tls = if target.is_tls() { Some(tls::client_config(&options)?) } else { None };
        // One place more than `event_capacity`: the one `Event::Closed` always has.
        let (tx, rx) = crossbeam_channel::bounded(options.event_capacity.max(1) + 1);
        let mut seed = backoff::Jitter::seeded(&tx as *const _ as u64);
        let shared = Arc::new(Shared {
            url: url.to_owned(),
            state: Mutex::new(State {
                rooms: BTreeMap::new(),
                outbox: VecDeque::new(),
                waiters: HashMap::new(),
                conn: None,
                online: false,
                token: options.token.clone(),
                closed: false,
            }),
            options,
            changed: Condvar::new(),
            events: tx,
            event_bytes: Mutex::new(EventBytes::default()),
            stopping: Arc::new(AtomicBool::new(false)),
            tls,
            next_id: AtomicU64::new(0),
            key_prefix: format!("{:016x}", seed.next_u64()),
        });
        let first = conn::open(&target, &shared, shared.tls.as_ref()).map_err(|e| match e {
            conn::OpenError::Refused { status, retry_after } => Error::Refused { status, retry_after },
            conn::OpenError::Tls(why) => Error::Tls(why),
            conn::OpenError::Failed(why) => Error::Connect(why),
        })?;
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("wshub-client".into())
            .spawn(move || session::run(thread_shared, target, first, seed))
            .map_err(|e| Error::Connect(format!("spawning the client thread: {e}")))?;
        let client = Client { shared, events: rx, thread: Mutex::new(Some(thread)) };
        client.wait_online(client.shared.options.request_timeout)?;
        Ok(client)
    }

    /// The events, in order. Read them: when [`Options::event_capacity`] are
    /// unread, the client stops reading from the server.
    pub fn events(&self) -> &Receiver<Event> {
        &self.events
    }

    /// The URL this client connects to.
    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Whether a connection is up and its rooms rejoined.
    pub fn is_online(&self) -> bool {
        self.shared.state.lock().online
    }

    /// Joins `room` (and rejoins it on every reconnection, recovering what was
    /// missed); the ack's payload `{room, seq, members, epoch}`.
    pub fn join(&self, room: &str) -> Result<Value> {
        self.send_request("room:join", json!({ "room": room }), Some(room.to_owned()))?.wait()
    }

    /// Leaves `room` (it is no longer rejoined); the ack's payload `{room}`.
    pub fn leave(&self, room: &str) -> Result<Value> {
        self.shared.state.lock().rooms.remove(room);
        self.send_request("room:leave", json!({ "room": room }), None)?.wait()
    }

    /// Publishes `data` to `room` and waits for the ack `{room, seq}` (with
    /// `duplicate: true` when a resend was already stored). While offline it is
    /// buffered and sent after the rejoin; see [`Client::publish_nowait`].
    pub fn publish(&self, room: &str, data: &Value) -> Result<Value> {
        self.publish_nowait(room, data)?.wait()
    }

    /// Queues a publish with a fresh idempotency key and returns at once; the
    /// [`Receipt`] gives its ack. Publishes go out in call order, also across
    /// reconnections (then after the rejoin). Fails with
    /// [`Error::BufferFull`] when offline with [`Options::max_buffered`] waiting.
    pub fn publish_nowait(&self, room: &str, data: &Value) -> Result<Receipt> {
        let id = self.shared.next_id();
        let key = format!("{}-{}", self.shared.key_prefix, &id[2..]);
        let frame = json!({"type": "room:publish", "id": id,
            "payload": {"room": room, "data": data, "key": key}})
        .to_string();
        self.enqueue(id, conn::Out::Text(frame))
    }

    fn enqueue(&self, id: String, frame: conn::Out) -> Result<Receipt> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut st = self.shared.state.lock();
        if st.closed {
            return Err(Error::Closed);
        }
        let mut deadline = None;
        if st.online {
            if let Some(conn) = &st.conn {
                let _ = conn.send(frame.clone());
                deadline = Some(Instant::now() + self.shared.options.request_timeout);
            }
        } else if st.outbox.len() >= self.shared.options.max_buffered {
            return Err(Error::BufferFull);
        }
        st.outbox.push_back(Outgoing { id, frame, reply: tx, deadline });
        Ok(Receipt(rx))
    }

    /// Publishes bytes as a keyed binary frame
    /// (`[0x03][u16 room length][room][u8 key length][key][body]`) and waits for
    /// its ack, with the same buffering and resend rules as [`Client::publish`].
    pub fn publish_binary(&self, room: &str, body: &[u8]) -> Result<Value> {
        self.publish_binary_nowait(room, body)?.wait()
    }

    /// Queues a keyed binary publish; see [`Client::publish_nowait`].
    pub fn publish_binary_nowait(&self, room: &str, body: &[u8]) -> Result<Receipt> {
        let n = self.shared.next_id();
        // The server acks a keyed binary publish with the key as the reply's id.
        let key = format!("{}-{}", self.shared.key_prefix, &n[2..]);
        let room_bytes = room.as_bytes();
        let len = u16::try_from(room_bytes.len())
            .map_err(|_| Error::Server { code: "too_large".into(), message: "room name too long".into() })?;
        let mut frame = Vec::with_capacity(4 + room_bytes.len() + key.len() + body.len());
        frame.push(0x03);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(room_bytes);
        frame.push(key.len() as u8);
        frame.extend_from_slice(key.as_bytes());
        frame.extend_from_slice(body);
        self.enqueue(key, conn::Out::Binary(frame))
    }

    /// Sends a request of any type (`ping`, `presence:get`, `typing:start`, ...)
    /// and waits for its ack's payload. While offline it waits for the
    /// connection, within [`Options::request_timeout`].
    pub fn request(&self, kind: &str, payload: Value) -> Result<Value> {
        self.send_request(kind, payload, None)?.wait()
    }

    /// Hands the client a new token: used on every later connection, and sent
    /// now as `auth:refresh` when online (its ack `{exp}` is returned; offline,
    /// `Ok(Value::Null)`). A token no HTTP header can carry is refused with
    /// [`Error::Options`] and the old one kept.
    pub fn set_token(&self, token: &str) -> Result<Value> {
        check_token(token)?;
        let online = {
            let mut st = self.shared.state.lock();
            st.token = Some(token.to_owned());
            st.online
        };
        if !online {
            return Ok(Value::Null);
        }
        self.request("auth:refresh", json!({ "token": token }))
    }

    /// Closes the connection with 1000 and stops reconnecting; buffered
    /// publishes fail with [`Error::Closed`]. A connection attempt in progress
    /// ends at its next read; the server's close reply is awaited at most 2 s.
    /// Waits for the client thread.
    pub fn close(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        {
            let mut st = self.shared.state.lock();
            st.closed = true;
            if let Some(conn) = &st.conn {
                let _ = conn.send_timeout(conn::Out::Close(1000), conn::TICK);
            }
            self.shared.changed.notify_all();
        }
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }

    fn wait_online(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut st = self.shared.state.lock();
        while !st.online {
            if st.closed {
                return Err(Error::Closed);
            }
            if self.shared.changed.wait_until(&mut st, deadline).timed_out() {
                return if st.online { Ok(()) } else { Err(Error::Timeout) };
            }
        }
        Ok(())
    }

    fn send_request(&self, kind: &str, payload: Value, join: Option<String>) -> Result<Receipt> {
        let timeout = self.shared.options.request_timeout;
        let deadline = Instant::now() + timeout;
        let id = self.shared.next_id();
        let frame = json!({"type": kind, "id": id, "payload": payload}).to_string();
        let (tx, rx) = crossbeam_channel::bounded(1);
        let mut st = self.shared.state.lock();
        loop {
            if st.closed {
                return Err(Error::Closed);
            }
            if st.online {
                break;
            }
            if self.shared.changed.wait_until(&mut st, deadline).timed_out() && !st.online {
                return Err(Error::Timeout);
            }
        }
        let conn = st.conn.clone().ok_or(Error::Disconnected)?;
        st.waiters.insert(id.clone(), Waiter::Request { reply: tx, deadline, join });
        let _ = conn.send(conn::Out::Text(frame));
        Ok(Receipt(rx))
    }
}

/// A token that cannot be sent as `Authorization: Bearer <token>` (a control
/// character, a line break) would fail every connection attempt the same way:
/// it is refused up front, without showing it.
fn check_token(token: &str) -> Result<()> {
    tungstenite::http::HeaderValue::from_str(&format!("Bearer {token}"))
        .map(drop)
        .map_err(|_| Error::Options("the token holds a character an HTTP header cannot carry".into()))
}

impl Drop for Client {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("url", &self.shared.url).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_never_shows_the_token() {
        let shown = format!("{:?}", Options::default().token("s3cr3t-t0ken"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert!(format!("{:?}", Options::default()).contains("token: None"));
    }
}
