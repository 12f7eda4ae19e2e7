//! One WebSocket connection: the state its threads (a reader, and a writer
//! while its queue needs one), the hub and the server handle share. A
//! message's path through these files:
//!
//! - [`handshake`]: the HTTP request and the 101 (or a refusal), read and
//!   written by the reader before the WebSocket exists.
//! - [`reader`]: the connection's thread for its whole life. Upgrades, opens
//!   the connection, reads messages and runs the handler's callbacks. It writes no frame to
//!   the socket after the handshake (under TLS it flushes the records its
//!   reads caused, under the write lock: see [`tls_session`]). On the way in, bytes pass through
//!   [`tls_session`] (decryption, with TLS), [`frame_meter`] (frame-rate and
//!   fragment limits), [`assembly`] (frames checked and joined into
//!   messages) and [`inflate`] (compressed messages, bounded).
//! - [`deflate`]: permessage-deflate's negotiation at the upgrade, and
//!   compressing an outbound message (once, shared: see `frame.rs`).
//! - [`outbound`]: the one ordering point for every byte written after the
//!   101: the queue, its bound, direct sends from other threads, and the rule
//!   that keeps frames in order. Its module comment names every thread that
//!   may write.
//! - [`writer`]: the connection's second thread, started when something is
//!   queued and ended once the queue has stayed empty a while. Drains the
//!   queue into the socket, many frames per `writev`. (The heartbeat pings
//!   come from the hub: `hub/heartbeat.rs`.)
//!
//! An event stream (Server-Sent Events, `HttpResponse::event_stream`) is a
//! connection of another kind on the same threads and the same ordering
//! point: its reader only waits for the client to go (`reader.rs`), its
//! writer writes the bytes it is given unframed, `: ping` comments as
//! heartbeats, and ends the stream instead of sending a close frame.

pub(crate) mod assembly;
pub(crate) mod deflate;
pub(crate) mod frame_meter;
pub(crate) mod handshake;
pub(crate) mod inflate;
pub(crate) mod outbound;
pub(crate) mod reader;
pub(crate) mod tls_session;
pub(crate) mod writer;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::*};
#[cfg(test)]
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::types::ConnId;
use outbound::Outbound;
pub(crate) use outbound::PushError;
use tls_session::TlsIn;

/// The state of one connection shared by its reader, its writer, the hub and
/// the server handle.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub id: ConnId,
    /// The peer of the TCP connection (a proxy's, behind a trusted proxy:
    /// see [`ConnShared::addr`]).
    pub remote: SocketAddr,
    /// The client a trusted proxy forwards, once its request head named it
    /// (port 0: `X-Forwarded-For` carries none).
    client: std::sync::OnceLock<SocketAddr>,
    pub accepted_at: SystemTime,
    /// The same moment on the monotonic clock: the handshake deadline counts from it.
    pub accepted: std::time::Instant,
    /// The one socket, shared by both halves (`&TcpStream` is `Read + Write`);
    /// written only through [`outbound`] once the connection is a WebSocket.
    pub stream: TcpStream,
    /// The queue and the write lock: see [`outbound`].
    out: Outbound,
    /// Set once the upgrade completed and the connection is registered.
    open: AtomicBool,
    /// Application key/values attached to the connection.
    pub values: Mutex<HashMap<String, String>>,
    /// Path and query of the upgrade request.
    pub request_path: Mutex<(String, String)>,
    /// Holds a handshake slot (see `ip_table`): from the accept until the
    /// request is answered or upgraded.
    pub handshaking: AtomicBool,
    /// When set, the reader closes the connection at this instant with this
    /// code and reason (see `ServerHandle::close_at`).
    pub close_at: Mutex<Option<(std::time::Instant, u16, String)>>,
    /// Whether `close_at` is set: read before every frame, locked only when set.
    pub has_close_at: AtomicBool,
    /// An event stream (`HttpResponse::event_stream`), not a WebSocket: its
    /// writer writes bytes as given, and its reader only waits for the end.
    event_stream: AtomicBool,
    /// Accepted on the admin listener (`Config::admin_bind`); set before its reader starts.
    on_admin: AtomicBool,
    /// permessage-deflate: the largest payload sent compressed (0: not
    /// agreed) and the smallest; set at the upgrade (see `outbound.rs`).
    deflate_max: AtomicUsize,
    deflate_min: AtomicUsize,
}

impl ConnShared {
    pub(crate) fn new(id: ConnId, remote: SocketAddr, stream: TcpStream) -> Self {
        ConnShared {
            id,
            remote,
            client: std::sync::OnceLock::new(),
            accepted_at: SystemTime::now(),
            accepted: std::time::Instant::now(),
            stream,
            out: Outbound::new(),
            open: AtomicBool::new(false),
            values: Mutex::new(HashMap::new()),
            request_path: Mutex::new(Default::default()),
            handshaking: AtomicBool::new(false),
            close_at: Mutex::new(None),
            has_close_at: AtomicBool::new(false),
            event_stream: AtomicBool::new(false),
            on_admin: AtomicBool::new(false),
            deflate_max: AtomicUsize::new(0),
            deflate_min: AtomicUsize::new(0),
        }
    }

    /// The client's address: the forwarded one behind a trusted proxy,
    /// else the peer's. Every per-address bound and log uses it.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.client.get().copied().unwrap_or(self.remote)
    }

    /// Set once, by the reader, when a trusted proxy's request names its client.
    pub(crate) fn set_client(&self, client: SocketAddr) {
        let _ = self.client.set(client);
    }

    /// Whether it came to the admin listener.
    pub(crate) fn on_admin(&self) -> bool {
        self.on_admin.load(Acquire)
    }

    pub(crate) fn set_on_admin(&self) {
        self.on_admin.store(true, Release);
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Acquire)
    }

    pub(crate) fn set_open(&self, open: bool) {
        self.open.store(open, Release);
    }

    pub(crate) fn is_event_stream(&self) -> bool {
        self.event_stream.load(Acquire)
    }

    /// Set once, before the stream's writer starts.
    pub(crate) fn set_event_stream(&self) {
        self.event_stream.store(true, Release);
    }

    /// Ends the TCP connection in both directions, waking whichever half is
    /// blocked on it. Errors (already shut down, reset) mean the same thing.
    pub(crate) fn kill(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The reader's side of the socket: plain reads, or (TLS) plaintext out of
/// the session, which [`ConnShared::tls_read`] feeds without holding the
/// write lock while it waits for bytes.
pub(crate) struct SockReader<'a> {
    conn: &'a ConnShared,
    tls: Option<TlsIn>,
    /// No raw read waits past this (the handshake deadline), nor past the
    /// connection's `close_at`: see [`arm`].
    pub deadline: Option<std::time::Instant>,
    /// The read timeout the socket keeps otherwise (the idle timeout of an
    /// open WebSocket); `None`: none, so every raw read is armed.
    pub idle: Option<std::time::Duration>,
    /// Bytes a host read from an adopted socket before handing it over
    /// (`ServerHandle::adopt`), read before the socket's own; at most
    /// `handshake::MAX_REQUEST_HEAD`, and never on a TLS connection.
    prefix: std::io::Cursor<Vec<u8>>,
}

impl<'a> SockReader<'a> {
    /// For a plain connection, or a TLS one whose session is started.
    pub(crate) fn new(conn: &'a ConnShared) -> Self {
        SockReader {
            conn,
            tls: conn.is_tls().then(TlsIn::new),
            deadline: None,
            idle: None,
            prefix: Default::default(),
        }
    }

    /// Like [`SockReader::new`], reading `prefix` first.
    pub(crate) fn with_prefix(conn: &'a ConnShared, prefix: Vec<u8>) -> Self {
        SockReader { prefix: std::io::Cursor::new(prefix), ..SockReader::new(conn) }
    }

    /// Whether bytes are waiting here that the socket's readability would
    /// not show: an adopted socket's prefix, or (TLS) input the session
    /// holds.
    pub(crate) fn holds_input(&self) -> bool {
        if (self.prefix.position() as usize) < self.prefix.get_ref().len() {
            return true;
        }
        self.tls.as_ref().is_some_and(|tls_in| self.conn.tls_holds_input(tls_in))
    }

    /// Runs the TLS handshake (a no-op on a plain connection).
    pub(crate) fn tls_handshake(&mut self, deadline: std::time::Instant) -> std::io::Result<()> {
        match &mut self.tls {
            Some(tls_in) => self.conn.tls_handshake(tls_in, deadline),
            None => Ok(()),
        }
    }
}

impl std::io::Read for SockReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if (self.prefix.position() as usize) < self.prefix.get_ref().len() {
            return std::io::Read::read(&mut self.prefix, buf);
        }
        let (conn, deadline, idle) = (self.conn, self.deadline, self.idle);
        match &mut self.tls {
            None => {
                arm(conn, deadline, idle)?;
                crate::sys::sock::recv(&conn.stream, buf)
            }
            Some(tls_in) => conn.tls_read(tls_in, buf, || arm(conn, deadline, idle)),
        }
    }
}

/// Sets the socket's read timeout so that the next raw read cannot wait past
/// `deadline` or the connection's `close_at`, whichever comes first; called
/// before every raw read, because one `read` of the reader's (a TLS record
/// without plaintext, a frame trickling in) may take many. `TimedOut` once
/// that time has come. Without either, or while `idle` (the timeout the
/// socket keeps) ends sooner, the timeout is left alone (no syscall).
fn arm(
    conn: &ConnShared,
    deadline: Option<std::time::Instant>,
    idle: Option<std::time::Duration>,
) -> std::io::Result<()> {
    let close_at =
        if conn.has_close_at.load(Acquire) { conn.close_at.lock().as_ref().map(|c| c.0) } else { None };
    let until = match (deadline, close_at) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Ok(()),
    };
    let left = until.saturating_duration_since(std::time::Instant::now());
    if left.is_zero() {
        return Err(std::io::ErrorKind::TimedOut.into());
    }
    if idle.is_some_and(|idle| idle <= left) {
        return Ok(());
    }
    conn.stream.set_read_timeout(Some(left))
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::net::TcpListener;

    /// A connection over a real loopback socket pair: the server side wrapped in
    /// `ConnShared`, and the peer's end.
    pub(crate) fn loopback_conn(id: ConnId) -> (Arc<ConnShared>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server_side, remote) = listener.accept().unwrap();
        (Arc::new(ConnShared::new(id, remote, server_side)), peer)
    }
}
