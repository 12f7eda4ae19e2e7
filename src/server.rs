//! Starting and stopping a server, and [`ServerHandle`], the API applications
//! drive it with.
//!
//! The handle owns no thread of its own: room operations travel to the hub as
//! commands, connection lookups read the registry of live connections, which the
//! acceptor fills and each reader empties when its connection is over.

use std::cell::Cell;
use crate::conn_map::ConnMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::connection::ConnShared;
use crate::error::{Error, Result};
use crate::ffi::pthread;
use crate::frame::{encode_message, is_sendable_close_code};
use crate::handler::{ConnId, Handler, Message};
use crate::hub::{self, Cmd, Hub};
use crate::rooms::is_valid_room;
use crate::stats::{Stats, StatsSnapshot};

thread_local! {
    /// True on a connection's reader thread, where the handler's callbacks run.
    pub(crate) static ON_CONNECTION_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// Entry point: [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.bind`, starts the acceptor and hub threads, and returns a
    /// handle. Connections are served until [`ServerHandle::stop`].
    pub fn start(config: Config, handler: impl Handler) -> Result<ServerHandle> {
        config.validate().map_err(Error::InvalidConfig)?;
        let listener = TcpListener::bind(config.bind)?;
        crate::sock::deepen_backlog(&listener)?;
        // A reader and a writer per connection, most of them waiting on futexes.
        let buckets = crate::ffi::pthread::size_futex_hash(2 * config.max_connections + 16);
        log::debug!("futex hash buckets: {buckets:?}");
        let listener = Arc::new(listener);
        let local_addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let (hub_tx, hub_rx) = crossbeam_channel::bounded(config.hub_queue);
        let mut hub = Hub::new(config.outbound_queue, stats.clone());
        hub.start_helper();
        let hub_thread = std::thread::Builder::new()
            .name("wshub-hub".into())
            .spawn(move || hub.run(hub_rx))?;
        let inner = Arc::new(Inner {
            config,
            local_addr,
            handler: Box::new(handler),
            hub_tx,
            stats,
            conns: ConnMap::default(),
            conns_emptied: Mutex::new(()),
            conns_changed: Condvar::new(),
            next_id: AtomicU64::new(1),
            draining: AtomicBool::new(false),
            stop_started: AtomicBool::new(false),
            stopped: Mutex::new(false),
            stopped_changed: Condvar::new(),
            listener: listener.clone(),
            threads: Mutex::new(Vec::new()),
            reader_threads: Arc::default(),
        });
        let handle = ServerHandle { inner };
        let acceptor = {
            let handle = handle.clone();
            std::thread::Builder::new()
                .name("wshub-acceptor".into())
                .spawn(move || crate::acceptor::run(handle, listener))
        };
        let acceptor = match acceptor {
            Ok(t) => t,
            Err(e) => {
                handle.inner.send_to_hub(Cmd::Shutdown);
                let _ = hub_thread.join();
                return Err(e.into());
            }
        };
        handle.inner.threads.lock().extend([acceptor, hub_thread]);
        log::info!("listening on {local_addr}, WebSocket path {}", handle.inner.config.path);
        Ok(handle)
    }
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
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local_addr", &self.inner.local_addr).finish()
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
}

impl ServerHandle {
    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// The address the server listens on (with the real port when bound to 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Sends a message to one connection.
    pub fn send(&self, conn: ConnId, message: impl Into<Message>) -> Result<()> {
        let target = self.inner.open_conn(conn)?;
        let frame = encode_message(&message.into());
        // Straight to the socket when nothing can be overtaken: every earlier
        // command of this thread has taken effect, and the connection has
        // nothing queued or being written. A reply from a callback usually is
        // such a case, and then costs no hub or writer wakeup.
        if hub::nothing_pending() && target.try_send_direct(&frame, &self.inner.stats) {
            return Ok(());
        }
        self.inner.command(Cmd::Send(conn, frame))
    }

    /// Adds a connection to a room (created on first join).
    pub fn join(&self, conn: ConnId, room: &str) -> Result<()> {
        check_room(room)?;
        self.inner.open_conn(conn)?;
        self.inner.command(Cmd::Join(conn, room.to_owned()))
    }

    /// Removes a connection from a room (gone with its last member).
    pub fn leave(&self, conn: ConnId, room: &str) -> Result<()> {
        check_room(room)?;
        self.inner.open_conn(conn)?;
        self.inner.command(Cmd::Leave(conn, room.to_owned()))
    }

    /// Sends a message to every member of `room` but `except`. The frame is
    /// built once, here, and shared by every member's queue.
    pub fn broadcast(&self, room: &str, message: impl Into<Message>, except: Option<ConnId>) -> Result<()> {
        check_room(room)?;
        let frame = encode_message(&message.into());
        self.inner.command(Cmd::Broadcast { room: room.to_owned(), frame, except })
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
        self.inner.open_conn(conn)?;
        self.inner.command(Cmd::Close(conn, code, reason.to_owned()))
    }

    /// The ids of every open connection, ascending.
    pub fn connections(&self) -> Vec<ConnId> {
        let mut ids: Vec<ConnId> =
            {
            let mut ids = Vec::new();
            self.inner.conns.for_each(|c| if c.is_open() { ids.push(c.id) });
            ids
        };
        ids.sort_unstable();
        ids
    }

    /// What the server knows about an open connection.
    pub fn conn_info(&self, conn: ConnId) -> Option<ConnInfo> {
        let c = self.inner.open_conn(conn).ok()?;
        let (path, query) = c.request_path.lock().clone();
        Some(ConnInfo {
            id: c.id,
            remote_addr: c.remote,
            connected_at: c.accepted_at,
            path,
            query,
            queue_depth: c.queue_depth(),
        })
    }

    /// Attaches an application value to a connection (replacing any under `key`).
    pub fn set_conn_value(&self, conn: ConnId, key: &str, value: &str) -> Result<()> {
        let c = self.inner.open_conn(conn)?;
        c.values.lock().insert(key.to_owned(), value.to_owned());
        Ok(())
    }

    /// A value attached with [`set_conn_value`](Self::set_conn_value).
    pub fn conn_value(&self, conn: ConnId, key: &str) -> Option<String> {
        self.inner.open_conn(conn).ok()?.values.lock().get(key).cloned()
    }

    /// The server's counters.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// True once [`stop`](Self::stop) has begun.
    pub fn is_draining(&self) -> bool {
        self.inner.is_draining()
    }

    /// Stops the server gracefully: no new connections; every open connection
    /// gets what is already queued for it and then a 1001 close; connections
    /// that have not finished after `shutdown_timeout` are cut; every thread is
    /// joined. Returns when all of that is done, except when called from inside
    /// a callback: then it starts the stop and returns at once (the callback's
    /// own thread cannot be joined while it runs). Later calls wait for the
    /// first to finish.
    pub fn stop(&self) {
        if ON_CONNECTION_THREAD.with(Cell::get) {
            let inner = self.inner.clone();
            let _ = std::thread::Builder::new()
                .name("wshub-stop".into())
                .spawn(move || inner.stop());
            return;
        }
        self.inner.stop();
    }

    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Cmd) -> Result<T> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.inner.command(make(tx))?;
        rx.recv().map_err(|_| Error::Stopped)
    }

    /// [`send`](Self::send) of a frame that is already built and shared (a
    /// room's stored message, replayed): the same `Arc` bytes are queued,
    /// never framed or copied again.
    pub(crate) fn send_frame(&self, conn: ConnId, frame: crate::frame::SharedFrame) -> Result<()> {
        let target = self.inner.open_conn(conn)?;
        if hub::nothing_pending() && target.try_send_direct(&frame, &self.inner.stats) {
            return Ok(());
        }
        self.inner.command(Cmd::Send(conn, frame))
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
        self.inner.command(Cmd::Broadcast { room: room.to_owned(), frame, except })
    }

    /// Frames still queued for a connection, open or closing (0 once it is
    /// gone): lets `on_close` see that a large backlog is about to be freed.
    pub(crate) fn queued_frames(&self, conn: ConnId) -> usize {
        self.inner.conns.get(conn).map_or(0, |c| c.queue_depth())
    }
}

fn check_room(room: &str) -> Result<()> {
    if is_valid_room(room) {
        Ok(())
    } else {
        Err(Error::InvalidRoom)
    }
}

/// The state every thread of one server shares.
pub(crate) struct Inner {
    pub config: Config,
    local_addr: SocketAddr,
    pub handler: Box<dyn Handler>,
    hub_tx: Sender<hub::Ticketed>,
    pub stats: Arc<Stats>,
    /// Every accepted connection whose reader thread has not finished.
    /// Every connection with a thread, by id: read by every `send`, written
    /// when a connection starts and ends.
    conns: ConnMap<Arc<ConnShared>>,
    /// With `conns_changed`: signalled when `conns` becomes empty.
    conns_emptied: Mutex<()>,
    conns_changed: Condvar,
    next_id: AtomicU64,
    draining: AtomicBool,
    stop_started: AtomicBool,
    stopped: Mutex<bool>,
    stopped_changed: Condvar,
    listener: Arc<TcpListener>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Reader threads not yet finished (they are detached; see `pthread::reap_detached`).
    pub reader_threads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Inner {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(SeqCst)
    }

    pub(crate) fn next_conn_id(&self) -> ConnId {
        self.next_id.fetch_add(1, Relaxed)
    }

    pub(crate) fn live_connections(&self) -> usize {
        self.conns.len()
    }

    pub(crate) fn connection_started(&self, conn: Arc<ConnShared>) {
        self.conns.insert(conn.id, conn);
    }

    pub(crate) fn connection_finished(&self, id: ConnId) {
        self.conns.remove(id);
        let empty = self.conns.is_empty();
        if empty {
            // Under the waiter's lock, so the wakeup cannot slip in between
            // its check and its wait.
            let _guard = self.conns_emptied.lock();
            self.conns_changed.notify_all();
        }
    }

    /// Takes one of the `max_connections` slots; false when none is free.
    pub(crate) fn reserve_connection_slot(&self) -> bool {
        let max = self.config.max_connections as u64;
        let taken = self.stats.connections.fetch_add(1, AcqRel);
        if taken >= max {
            self.stats.connections.fetch_sub(1, AcqRel);
            return false;
        }
        true
    }

    pub(crate) fn release_connection_slot(&self) {
        self.stats.connections.fetch_sub(1, AcqRel);
    }

    fn open_conn(&self, id: ConnId) -> Result<Arc<ConnShared>> {
        if self.stop_started.load(Acquire) && *self.stopped.lock() {
            return Err(Error::Stopped);
        }
        match self.conns.get(id) {
            Some(c) if c.is_open() => Ok(c.clone()),
            _ => Err(Error::NoSuchConnection),
        }
    }

    /// Queues a command for the hub (blocking while its queue is full).
    fn command(&self, cmd: Cmd) -> Result<()> {
        hub::submit(&self.hub_tx, cmd).map_err(|_| Error::Stopped)
    }

    /// For the connection threads, which outlive nothing the hub needs: a
    /// stopped hub just means there is nothing left to tell it.
    pub(crate) fn send_to_hub(&self, cmd: Cmd) {
        let _ = hub::submit(&self.hub_tx, cmd);
    }

    /// Registers an open connection with the hub. Untracked: it changes no
    /// frame order, so the `connected`-style first `send` from `on_connect`
    /// may still go straight to the socket.
    pub(crate) fn register_with_hub(&self, conn: Arc<ConnShared>) {
        hub::submit_untracked(&self.hub_tx, Cmd::Register(conn));
    }

    /// Closes a connection after everything sent to it so far: the close goes
    /// through the hub, behind the frames earlier calls queued there (a direct
    /// push could overtake them). Direct only when the hub is gone.
    pub(crate) fn close_in_order(&self, conn: &ConnShared, code: u16, reason: &str) {
        if hub::submit(&self.hub_tx, Cmd::Close(conn.id, code, reason.to_owned())).is_err() {
            conn.push_close(code, reason);
        }
    }

    /// Waits until no connection thread is left or `deadline` passes.
    fn wait_for_connections(&self, deadline: Instant) -> bool {
        let mut guard = self.conns_emptied.lock();
        while !self.conns.is_empty() {
            if self.conns_changed.wait_until(&mut guard, deadline).timed_out() {
                return self.conns.is_empty();
            }
        }
        true
    }

    fn stop(&self) {
        if self.stop_started.swap(true, AcqRel) {
            let mut stopped = self.stopped.lock();
            while !*stopped {
                self.stopped_changed.wait(&mut stopped);
            }
            return;
        }
        log::info!("stopping: draining connections");
        self.draining.store(true, SeqCst);
        pthread::shutdown_listener(&self.listener);
        let acceptor = self.threads.lock().drain(..1).next();
        if let Some(t) = acceptor {
            let _ = t.join();
        }
        // Through the hub, so each connection first gets what was sent to it
        // before the stop; connections that register later close themselves.
        self.send_to_hub(Cmd::CloseAll(1001, "server shutting down".into()));
        for conn in self.conns.values() {
            if !conn.is_open() {
                conn.kill(); // still in its handshake: it gets no WebSocket now
            }
        }
        let deadline = Instant::now() + self.config.shutdown_timeout;
        if !self.wait_for_connections(deadline) {
            let cut: Vec<_> = self.conns.values();
            log::warn!("stopping: cutting {} connections that did not finish in time", cut.len());
            cut.iter().for_each(|c| c.kill());
            let grace = Instant::now() + self.config.close_timeout + Duration::from_secs(1);
            if !self.wait_for_connections(grace) {
                log::error!("stopping: {} connection threads did not exit", self.live_connections());
            }
        }
        pthread::reap_detached(&self.reader_threads, Instant::now() + Duration::from_secs(1));
        self.send_to_hub(Cmd::Shutdown);
        let rest: Vec<_> = self.threads.lock().drain(..).collect();
        for t in rest {
            let _ = t.join();
        }
        *self.stopped.lock() = true;
        self.stopped_changed.notify_all();
        log::info!("stopped");
    }
}
