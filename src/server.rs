//! [`ServerHandle`], the API applications drive a running server with (its
//! stop included); how a server starts is `start.rs`.
//!
//! The handle owns no thread of its own: room operations travel to the hub as
//! commands, connection lookups read the registry of live connections, which the
//! acceptor fills and each reader empties when its connection is over.

use std::cell::Cell;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::config::Config;
use crate::connection::handshake::MAX_REQUEST_HEAD;
use crate::engine::{Engine, StopJob};
use crate::error::{Error, Result};
use crate::frame::{encode_message, encode_single, is_sendable_close_code};
use crate::hub::rooms::is_valid_room;
use crate::hub::{self, Cmd};
use crate::stats::{render_engine, EngineNumbers, StatsSnapshot};
use crate::types::{ConnId, Message};

thread_local! {
    /// True on a connection's reader thread, where the handler's callbacks run.
    pub(crate) static ON_CONNECTION_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// A cheap, cloneable handle to a running server, usable from any thread and
/// from inside any [`Handler`] callback.
///
/// Operations on connections and rooms are queued to the room hub and take
/// effect in the order one thread calls them; `send`, `join`, `leave`,
/// `broadcast` and `close` return once queued. A `send` goes straight to the
/// socket instead when that cannot break this order (every earlier operation of
/// the calling thread has taken effect and the connection has nothing queued).
#[derive(Clone)]
pub struct ServerHandle {
    engine: Arc<Engine>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.engine.local_addr).finish()
    }
}

/// What the server knows about one open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnInfo {
    /// The connection's id.
    pub id: ConnId,
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// When the TCP connection was accepted.
    pub connected_at: SystemTime,
    /// Path of the upgrade request.
    pub path: String,
    /// Query string of the upgrade request (without `?`).
    pub query: String,
    /// Frames waiting in its outbound queue.
    pub queue_depth: usize,
    /// Bytes waiting in its outbound queue (see [`Config::outbound_max_bytes`](crate::Config::outbound_max_bytes)).
    pub queued_bytes: usize,
}

/// A handle that does not keep the server alive: for threads that outlive no
/// stop (the Redis subscriber), so that the engine and its handler are
/// dropped when everyone else lets go.
#[derive(Clone)]
pub(crate) struct WeakServerHandle(std::sync::Weak<Engine>);

impl WeakServerHandle {
    /// The server, while anything else still holds it.
    pub(crate) fn upgrade(&self) -> Option<ServerHandle> {
        self.0.upgrade().map(ServerHandle::new)
    }
}

impl ServerHandle {
    pub(crate) fn new(engine: Arc<Engine>) -> Self {
        ServerHandle { engine }
    }

    /// A [`WeakServerHandle`] to this server.
    pub(crate) fn downgrade(&self) -> WeakServerHandle {
        WeakServerHandle(Arc::downgrade(&self.engine))
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The address the server listens on (with the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.engine.local_addr
    }

    /// Where the admin listener ([`Config::admin_bind`]) listens (its real
    /// port when the config asked for port 0); `None` without one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.engine.admin_addr()
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.engine.config
    }

    /// Sends a message to one connection (an event stream refuses it with
    /// [`Error::Refused`]).
    pub fn send(&self, conn: ConnId, message: impl Into<Message>) -> Result<()> {
        let target = self.engine.open_conn(conn)?;
        if target.is_event_stream() {
            return Err(Error::Refused(NOT_A_WEBSOCKET.to_owned()));
        }
        let frame = encode_single(&message.into());
        // Straight to the socket when nothing can be overtaken: every earlier
        // command of this thread has taken effect, and the connection has
        // nothing queued or being written. A reply from a callback usually is
        // such a case, and then costs no hub or writer wakeup (compressed
        // here, on this thread, when it needs to be).
        if hub::nothing_pending() && target.try_send_direct_compressing(&frame, &self.engine.stats) {
            return Ok(());
        }
        self.engine.command(Cmd::Send(conn, frame))
    }

    /// Adds a connection to a room (created on first join); an event stream
    /// refuses it with [`Error::Refused`].
    pub fn join(&self, conn: ConnId, room: &str) -> Result<()> {
        check_room(room)?;
        if self.engine.open_conn(conn)?.is_event_stream() {
            return Err(Error::Refused(NOT_A_WEBSOCKET.to_owned()));
        }
        self.engine.command(Cmd::Join(conn, room.to_owned()))
    }

    /// Removes a connection from a room (gone with its last member).
    pub fn leave(&self, conn: ConnId, room: &str) -> Result<()> {
        check_room(room)?;
        self.engine.open_conn(conn)?;
        self.engine.command(Cmd::Leave(conn, room.to_owned()))
    }

    /// Sends a message to every member of `room` but `except`. The frame is
    /// built once, here, and shared by every member's queue.
    pub fn broadcast(&self, room: &str, message: impl Into<Message>, except: Option<ConnId>) -> Result<()> {
        check_room(room)?;
        let frame = encode_message(&message.into());
        self.engine.command(Cmd::Broadcast { room: room.to_owned(), frame, except })
    }

    /// Members in `room` (0 when it does not exist).
    pub fn room_size(&self, room: &str) -> Result<usize> {
        self.ask(|reply| Cmd::RoomSize(room.to_owned(), reply))
    }

    /// How many rooms exist.
    pub fn room_count(&self) -> Result<usize> {
        self.ask(Cmd::RoomCount)
    }

    /// The rooms a connection is in, sorted.
    pub fn rooms_of(&self, conn: ConnId) -> Result<Vec<String>> {
        self.ask(|reply| Cmd::RoomsOf(conn, reply))
    }

    /// Closes a connection with `code` and `reason` after the frames already
    /// queued for it.
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> Result<()> {
        if !is_sendable_close_code(code) || reason.len() > 123 {
            return Err(Error::InvalidCloseCode);
        }
        self.engine.open_conn(conn)?;
        self.engine.command(Cmd::Close(conn, code, reason.to_owned()))
    }

    /// Closes a connection with `code` and `reason` at `when` (wall clock),
    /// exactly then rather than at its next message: a session that ends
    /// (a token's `exp`). A later call replaces the time; `None` cancels it.
    /// Its reader thread arms it before reading its next frame, so call it from
    /// the connection's own callbacks (`on_connect`, `on_message`) to have it
    /// take effect at once; from elsewhere it takes effect after the
    /// connection's current read (at most the idle timeout).
    pub fn close_at(
        &self,
        conn: ConnId,
        when: Option<std::time::SystemTime>,
        code: u16,
        reason: &str,
    ) -> Result<()> {
        if !is_sendable_close_code(code) || reason.len() > 123 {
            return Err(Error::InvalidCloseCode);
        }
        let c = self.engine.open_conn(conn)?;
        let at = when.map(|when| {
            let now = (std::time::Instant::now(), std::time::SystemTime::now());
            now.0 + when.duration_since(now.1).unwrap_or_default()
        });
        *c.close_at.lock() = at.map(|at| (at, code, reason.to_owned()));
        c.has_close_at.store(at.is_some(), std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The ids of every open connection, ascending.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> = {
            let mut ids = Vec::new();
            self.engine.conns.for_each(|c| {
                if c.is_open() {
                    ids.push(c.id)
                }
            });
            ids
        };
        ids.sort_unstable();
        ids
    }

    /// What the server knows about an open connection.
    pub fn conn_info(&self, conn: ConnId) -> Option<ConnInfo> {
        let c = self.engine.open_conn(conn).ok()?;
        let (path, query) = c.request_path.lock().clone();
        Some(ConnInfo {
            id: c.id,
            remote_addr: c.addr(),
            connected_at: c.accepted_at,
            path,
            query,
            queue_depth: c.queue_depth(),
            queued_bytes: c.queued_bytes(),
        })
    }

    /// Attaches an application value to a connection (replacing any under `key`).
    pub fn set_conn_value(&self, conn: ConnId, key: &str, value: &str) -> Result<()> {
        let c = self.engine.open_conn(conn)?;
        c.values.lock().insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// A value attached with [`set_conn_value`](Self::set_conn_value).
    pub fn conn_value(&self, conn: ConnId, key: &str) -> Option<String> {
        self.engine.open_conn(conn).ok()?.values.lock().get(key).cloned()
    }

    /// The server's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.engine.stats.snapshot()
    }

    /// The server's counters as Prometheus text (exposition format 0.0.4),
    /// for an application that serves them on its own admin port. With the
    /// protocol ([`ProtocolHandler`](crate::protocol::ProtocolHandler)) it
    /// is exactly what `GET /metrics` returns; otherwise the engine's
    /// counters, under the same metric names and in the same format (the
    /// protocol's own counters, such as `reason="rate_limited"`, are absent).
    pub fn metrics_text(&self) -> String {
        let engine = self.engine();
        engine.handler.metrics_text(self).unwrap_or_else(|| render_engine(&self.engine_numbers(), &[]))
    }

    /// Takes over a TCP connection the application accepted itself, e.g. on a
    /// port its own HTTP server owns, once it has seen a request for the
    /// WebSocket path. `already_read` is what the application read from it
    /// so far (the start of the HTTP request, or all of it; empty if
    /// nothing); at most 8 KiB, the largest request head wshub accepts.
    ///
    /// From here the socket is treated exactly like one the server accepted:
    /// the per-address caps and connect rate, the handshake deadline
    /// (counted from now), the path, the handler's `on_upgrade` (Origin and
    /// token checks of the protocol), then the connection's threads. The
    /// call returns at once (after at most a few milliseconds over the caps
    /// while the overflow thread is saturated); the answer (101 or a
    /// refusal) is written by wshub's threads. Works with or without a
    /// listener of the server's own ([`Config::listen`](crate::Config::listen)).
    ///
    /// Errors: [`Error::Stopped`] after a stop began; [`Error::InvalidConfig`]
    /// when `already_read` is longer than 8 KiB, or not empty on a TLS
    /// server (TLS bytes must reach wshub undecrypted); [`Error::Io`] when
    /// the socket's address cannot be read (it is not connected).
    pub fn adopt(&self, stream: TcpStream, already_read: &[u8]) -> Result<()> {
        self.try_adopt(stream, already_read).map_err(|(e, _)| e)
    }

    /// [`adopt`](Self::adopt) that hands the socket back, untouched (its
    /// blocking mode too), with any error: for C hosts, whose descriptor
    /// must stay theirs when the call fails (`ffi/adopt.rs`).
    pub(crate) fn try_adopt(
        &self,
        stream: TcpStream,
        already_read: &[u8],
    ) -> std::result::Result<(), (Error, TcpStream)> {
        let engine = self.engine();
        if engine.is_draining() {
            return Err((Error::Stopped, stream));
        }
        if already_read.len() > MAX_REQUEST_HEAD {
            let why = format!(
                "adopt: {} bytes already read; a request head is at most {MAX_REQUEST_HEAD}",
                already_read.len()
            );
            return Err((Error::InvalidConfig(why), stream));
        }
        if engine.tls.is_some() && !already_read.is_empty() {
            let why = "adopt: a TLS server cannot take bytes already read from the socket".into();
            return Err((Error::InvalidConfig(why), stream));
        }
        let remote = match stream.peer_addr() {
            Ok(remote) => remote,
            Err(e) => return Err((e.into(), stream)),
        };
        let Some(overflow) = engine.overflow_sender() else { return Err((Error::Stopped, stream)) };
        // The last step that can fail. The host may have made it
        // non-blocking; the reader expects blocking reads.
        if let Err(e) = stream.set_nonblocking(false) {
            return Err((e.into(), stream));
        }
        crate::acceptor::admit(self, stream, remote, already_read.to_vec(), &overflow, false);
        Ok(())
    }

    /// What [`render_engine`] writes: the counters and the room count.
    pub(crate) fn engine_numbers(&self) -> EngineNumbers {
        EngineNumbers { stats: self.stats(), rooms: self.room_count().unwrap_or(0) as u64 }
    }

    /// True once [`stop`](Self::stop) has begun.
    pub fn is_draining(&self) -> bool {
        self.engine.is_draining()
    }

    /// Stops the server gracefully: no new connections; every open connection
    /// gets what is already queued for it (and what the calling thread sent
    /// before; broadcasts other threads still have waiting in the hub are
    /// overtaken, then dropped) and then a 1001 close; connections
    /// that have not finished after `shutdown_timeout` are cut; every thread is
    /// joined. Returns when all of that is done, except when called from inside
    /// a callback: then it starts the stop and returns at once (the callback's
    /// own thread cannot be joined while it runs); the stop runs on a thread
    /// the server made when it started, so it happens even when no thread can
    /// be created any more. Later calls wait for the first to finish.
    pub fn stop(&self) {
        if ON_CONNECTION_THREAD.with(Cell::get) {
            self.begin_stop();
            return;
        }
        self.engine.stop();
    }

    /// Starts the stop on the server's stopper thread and returns at once:
    /// for callers that must not wait for it (a callback, or the host's log
    /// callback, which may run on the very thread that performs the stop).
    pub(crate) fn begin_stop(&self) {
        let engine = self.engine.clone();
        self.stop_in_background(Box::new(move || engine.stop()));
    }

    /// Runs `job` (which stops the server) on the server's stopper thread,
    /// once what the calling thread sent to the hub before has taken effect
    /// (at most the shutdown timeout later): the stop's close takes the
    /// hub's control lane from the stopper, which has nothing pending, and
    /// would overtake the caller's broadcasts. Nothing is done when the
    /// server has already stopped, which is what `job` would have done.
    pub(crate) fn stop_in_background(&self, job: StopJob) {
        let (before, most) = (crate::hub::sent_so_far(), self.engine.config.shutdown_timeout);
        self.engine.queue_stop(Box::new(move || {
            before.wait(most);
            job();
        }));
    }

    /// Re-reads the TLS certificate, key and client CA (files are read
    /// again; in-memory PEM is reused). New connections get the new
    /// certificate; open ones keep their sessions. On error (a bad or missing
    /// file, TLS not configured) the old certificate stays in use and the
    /// error says why.
    pub fn reload_tls(&self) -> Result<()> {
        match &self.engine.tls {
            None => Err(Error::InvalidConfig("TLS is not configured (tls_cert, tls_key)".to_owned())),
            Some(tls) => tls.reload().map_err(|why| {
                log::error!("TLS reload failed, keeping the old certificate: {why}");
                Error::InvalidConfig(why)
            }),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.engine.command(make(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// [`send`](Self::send) of a frame that is already built and shared (a
    /// room's stored message, replayed): the same `Arc` bytes are queued,
    /// never framed or copied again.
    pub(crate) fn send_frame(&self, conn: ConnId, frame: crate::frame::SharedFrame) -> Result<()> {
        let target = self.engine.open_conn(conn)?;
        if hub::nothing_pending() && target.try_send_direct(&frame, &self.engine.stats) {
            return Ok(());
        }
        self.engine.command(Cmd::Send(conn, frame))
    }

    /// [`broadcast`](Self::broadcast) of a frame that is already built and
    /// shared (a room's message, also kept in its history).
    pub(crate) fn broadcast_frame(
        &self,
        room: &str,
        frame: crate::frame::SharedFrame,
        except: Option<ConnId>,
    ) -> Result<()> {
        check_room(room)?;
        self.engine.command(Cmd::Broadcast { room: room.to_owned(), frame, except })
    }

    /// True when `conn` is an event stream (opened by
    /// [`HttpResponse::event_stream`](crate::HttpResponse::event_stream)),
    /// not a WebSocket: what is sent to it must already be event-stream
    /// bytes, and it never receives messages.
    pub fn is_event_stream(&self, conn: ConnId) -> bool {
        self.engine.conns.get(conn).is_some_and(|c| c.is_event_stream())
    }

    /// Adds a connection (an event stream, or a WebSocket member for
    /// `protocol/presence.rs`) to a hub room of the protocol's own (a name no
    /// client room can have, so it is not checked like one).
    pub(crate) fn join_stream(&self, conn: ConnId, hub_room: &str) -> Result<()> {
        self.engine.open_conn(conn)?;
        self.engine.command(Cmd::Join(conn, hub_room.to_owned()))
    }

    /// Removes a connection from a hub room of the protocol's own (see
    /// [`join_stream`](Self::join_stream), which adds any connection).
    pub(crate) fn leave_internal(&self, conn: ConnId, hub_room: &str) -> Result<()> {
        self.engine.open_conn(conn)?;
        self.engine.command(Cmd::Leave(conn, hub_room.to_owned()))
    }

    /// [`broadcast`](Self::broadcast) to a hub room of the protocol's own.
    pub(crate) fn broadcast_internal(
        &self,
        hub_room: &str,
        message: impl Into<Message>,
        except: Option<ConnId>,
    ) -> Result<()> {
        let frame = encode_message(&message.into());
        self.engine.command(Cmd::Broadcast { room: hub_room.to_owned(), frame, except })
    }

    /// [`broadcast_frame`](Self::broadcast_frame) to a hub room of
    /// [`join_stream`](Self::join_stream).
    pub(crate) fn broadcast_stream(&self, hub_room: &str, frame: crate::frame::SharedFrame) -> Result<()> {
        self.engine.command(Cmd::Broadcast { room: hub_room.to_owned(), frame, except: None })
    }

    /// Frames still queued for a connection, open or closing (0 once it is
    /// gone): lets `on_close` see that a large backlog is about to be freed.
    pub(crate) fn queued_frames(&self, conn: ConnId) -> usize {
        self.engine.conns.get(conn).map_or(0, |c| c.queue_depth())
    }
}

/// Why `send` and `join` refuse an event stream: it is written only in the
/// event-stream format, by the protocol.
const NOT_A_WEBSOCKET: &str = "this connection is an event stream, not a WebSocket";

fn check_room(room: &str) -> Result<()> {
    if is_valid_room(room) {
        Ok(())
    } else {
        Err(Error::InvalidRoom)
    }
}
