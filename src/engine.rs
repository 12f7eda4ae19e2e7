//! The engine: the state every thread of one server shares (configuration,
//! handler, hub channel, registry of connections, counters) and the stop
//! sequence; how it starts is `start.rs`. [`ServerHandle`](crate::ServerHandle) is the public face of it.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::conn_map::ConnMap;
use crate::connection::ConnShared;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::hub::{self, Cmd};
use crate::ip_table::IpTable;
use crate::stats::Stats;
use crate::sys::pthread;
use crate::types::ConnId;

thread_local! {
    /// The engine (its address) whose handler's `on_stop` this thread is
    /// running, 0 for none: a `stop` called from there returns at once
    /// rather than wait for the stop this thread is itself doing.
    static IN_ON_STOP: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What the stopper thread runs: a stop asked for from inside a callback.
pub(crate) type StopJob = Box<dyn FnOnce() + Send>;

/// A socket the acceptor (or `adopt`) hands to the overflow thread
/// (`overflow.rs`): over the caps, answered there without a thread of its own.
/// Defined with the channel it travels on, so the engine needs nothing of
/// the overflow thread.
pub(crate) struct Overflowing {
    pub stream: std::net::TcpStream,
    pub remote: SocketAddr,
    pub refusal: crate::ip_table::Refusal,
    /// What the host read before adopting it (`ServerHandle::adopt`); empty
    /// for an accepted socket.
    pub preread: Vec<u8>,
    /// It came to the admin listener (`Config::admin_bind`).
    pub admin: bool,
}

/// The state every thread of one server shares.
pub(crate) struct Engine {
    pub(crate) config: Config,
    pub(crate) local_addr: SocketAddr,
    pub(crate) handler: Box<dyn Handler>,
    pub(crate) hub_tx: hub::HubTx,
    pub(crate) stats: Arc<Stats>,
    /// Every accepted connection whose reader thread has not finished.
    /// Every connection with a thread, by id: read by every `send`, written
    /// when a connection starts and ends.
    pub(crate) conns: ConnMap<Arc<ConnShared>>,
    /// With `conns_changed`: signalled when `conns` becomes empty.
    pub(crate) conns_emptied: Mutex<()>,
    pub(crate) conns_changed: Condvar,
    pub(crate) next_id: AtomicU64,
    pub(crate) draining: AtomicBool,
    pub(crate) stop_started: AtomicBool,
    pub(crate) stopped: Mutex<bool>,
    pub(crate) stopped_changed: Condvar,
    /// `None` without a listener ([`Config::listen`] false): no acceptor either.
    pub(crate) listener: Option<Arc<TcpListener>>,
    /// The listener came from outside (systemd): it is shared with whoever
    /// passed it, so the stop must not shut it down (that would close it for
    /// the next instance too); the acceptor polls it instead.
    pub(crate) inherited: bool,
    pub(crate) acceptor: Mutex<Option<JoinHandle<()>>>,
    /// The listener of `Config::admin_bind`, and its acceptor thread.
    pub(crate) admin_listener: Option<Arc<TcpListener>>,
    pub(crate) admin_acceptor: Mutex<Option<JoinHandle<()>>>,
    /// For sockets adopted over the caps (see `acceptor::admit`); dropped by the stop.
    pub(crate) overflow_tx: Mutex<Option<Sender<Overflowing>>>,
    pub(crate) threads: Mutex<Vec<JoinHandle<()>>>,
    /// Reader threads not yet finished (they are detached; see `pthread::reap_detached`).
    pub(crate) reader_threads: Arc<std::sync::atomic::AtomicUsize>,
    /// What connections' writer threads start from (`connection/writer.rs`),
    /// and the count of those not yet finished (detached too).
    pub(crate) writers: Arc<crate::connection::writer::WriterEnv>,
    /// Starts a connection's writer thread from `writers`.
    pub(crate) start_writer: crate::connection::outbound::StartWriter,
    /// Where stops from inside callbacks go (see [`ServerHandle::stop`](crate::ServerHandle::stop));
    /// dropped at the end of the stop, which lets the stopper thread exit.
    pub(crate) stopper_tx: Mutex<Option<Sender<StopJob>>>,
    pub(crate) stopper: Mutex<Option<JoinHandle<()>>>,
    /// What each peer address holds: handshake slots, connections, connect rate.
    pub(crate) ip_table: IpTable,
    /// `Config::trusted_proxies`, parsed.
    pub(crate) trusted_proxies: Vec<crate::ip_table::Cidr>,
    /// TLS config new connections start from (`None`: plain ws/http).
    pub(crate) tls: Option<crate::tls::Tls>,
}

impl Engine {
    /// Where `ServerHandle::adopt` sends a socket over the caps; `None` once stopping.
    pub(crate) fn overflow_sender(&self) -> Option<Sender<Overflowing>> {
        self.overflow_tx.lock().clone()
    }

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

    /// Takes a handshake slot for `conn` (the acceptor checked `ip_table`).
    pub(crate) fn handshake_started(&self, conn: &ConnShared) {
        conn.handshaking.store(true, SeqCst);
        self.stats.handshakes.fetch_add(1, Relaxed);
    }

    /// Gives back `conn`'s handshake slot, once: its request was answered or
    /// upgraded, or it is gone.
    pub(crate) fn handshake_finished(&self, conn: &ConnShared) {
        if conn.handshaking.swap(false, SeqCst) {
            self.ip_table.handshake_done(conn.addr().ip(), conn.id);
            self.stats.handshakes.fetch_sub(1, Relaxed);
        }
    }

    /// Where the admin listener (`Config::admin_bind`) listens, if there is one.
    pub(crate) fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// With an admin listener (`Config::admin_bind`), the `404` a request
    /// gets instead of the handler's answer: on the admin port anything but
    /// `/metrics`, `/healthz` and `/api/*` (upgrades included), on the main
    /// port `/metrics` and `/api/*`. `None`: the handler answers.
    pub(crate) fn admin_split(
        &self,
        on_admin: bool,
        request: &crate::types::RequestInfo,
    ) -> Option<crate::types::HttpResponse> {
        self.config.admin_bind?;
        let path = request.path.as_str();
        let operators = path == "/metrics" || path.starts_with("/api/");
        let refused = if on_admin {
            crate::connection::handshake::wants_upgrade(request) || !(operators || path == "/healthz")
        } else {
            operators
        };
        refused.then(crate::types::HttpResponse::not_found)
    }

    /// Whether `ip` is a trusted proxy's (`Config::trusted_proxies`).
    pub(crate) fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|cidr| cidr.contains(ip))
    }

    /// The client a trusted proxy forwards `request` from, and its counts
    /// moved to that client's address (see `ip_table`); nothing for a peer
    /// that is not a trusted proxy. Refused when that address is over a
    /// per-address bound (with that address: the connection's stays the
    /// proxy's, its counts being the proxy's still).
    pub(crate) fn take_forwarded_client(
        &self,
        conn: &ConnShared,
        request: &crate::types::RequestInfo,
    ) -> std::result::Result<(), (crate::ip_table::Refusal, std::net::IpAddr)> {
        if !self.is_trusted_proxy(conn.remote.ip()) {
            return Ok(());
        }
        let Some(client) = crate::ip_table::forwarded_client(&request.headers, &self.trusted_proxies) else {
            return Ok(());
        };
        self.ip_table
            .rekey(conn.remote.ip(), client, conn.id, &self.config, Instant::now())
            .map_err(|refusal| (refusal, client))?;
        conn.set_client(SocketAddr::new(client, 0));
        Ok(())
    }

    /// Another socket took `id`'s handshake slot (see `ip_table`): unless its
    /// handshake has just ended anyway, it is closed, and its reader ends.
    pub(crate) fn handshake_slot_taken(&self, id: ConnId) {
        let Some(conn) = self.conns.get(id) else { return };
        if conn.handshaking.swap(false, SeqCst) {
            self.stats.handshakes.fetch_sub(1, Relaxed);
            log::debug!("conn {} ({}): handshake slot taken by a newer address; closing", id, conn.addr());
            conn.kill();
        }
    }

    pub(crate) fn connection_finished(&self, id: ConnId) {
        if let Some(conn) = self.conns.remove(id) {
            self.handshake_finished(&conn);
            self.ip_table.connection_done(conn.addr().ip());
        }
        let empty = self.conns.is_empty();
        if empty {
            // Under the waiter's lock, so the wakeup cannot slip in between
            // its check and its wait.
            let _guard = self.conns_emptied.lock();
            self.conns_changed.notify_all();
        }
    }

    /// Reserves `len` bytes of the request body budget; false when it has
    /// no room for them.
    pub(crate) fn reserve_body(&self, len: usize) -> bool {
        let held = self.stats.request_body_bytes.fetch_add(len as u64, AcqRel);
        if held.saturating_add(len as u64) > self.config.request_body_budget as u64 {
            self.stats.request_body_bytes.fetch_sub(len as u64, AcqRel);
            return false;
        }
        true
    }

    /// Frees a request's body and gives back the `reserved` bytes of the
    /// budget; the freed memory counts towards a trim (`sys/trim.rs`).
    pub(crate) fn release_body(&self, body: &mut Vec<u8>, reserved: usize) {
        crate::sys::trim::note_freed(std::mem::take(body).capacity());
        self.stats.request_body_bytes.fetch_sub(reserved as u64, AcqRel);
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

    pub(crate) fn open_conn(&self, id: ConnId) -> Result<Arc<ConnShared>> {
        if self.stop_started.load(Acquire) && *self.stopped.lock() {
            return Err(Error::Stopped);
        }
        match self.conns.get(id) {
            Some(c) if c.is_open() => Ok(c.clone()),
            _ => Err(Error::NoSuchConnection),
        }
    }

    /// Queues a command for the hub (blocking while its queue is full).
    pub(crate) fn command(&self, cmd: Cmd) -> Result<()> {
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

    pub(crate) fn stop(self: &Arc<Self>) {
        if self.stop_started.swap(true, AcqRel) {
            if IN_ON_STOP.with(std::cell::Cell::get) == Arc::as_ptr(self) as usize {
                return; // from the handler's on_stop: this very thread is doing the stop
            }
            let mut stopped = self.stopped.lock();
            while !*stopped {
                self.stopped_changed.wait(&mut stopped);
            }
            return;
        }
        log::info!("stopping: draining connections");
        self.draining.store(true, SeqCst);
        // First, so what the handler waits for elsewhere (a call to its
        // backend) ends now and its connections can close with the others.
        // A panic in it stops nothing else: the stop has begun (`stop_started`
        // makes every other caller wait for its end), so it must finish.
        let handle = crate::server::ServerHandle::new(self.clone());
        let outer = IN_ON_STOP.with(|s| s.replace(Arc::as_ptr(self) as usize));
        let on_stop =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.handler.on_stop(&handle)));
        IN_ON_STOP.with(|s| s.set(outer));
        if on_stop.is_err() {
            log::error!("the handler's on_stop panicked; stopping anyway");
        }
        match &self.listener {
            Some(listener) if !self.inherited => crate::sys::sock::shutdown_listener(listener),
            _ => {} // an inherited one is polled: the acceptor sees `draining` within a tick
        }
        let acceptor = self.acceptor.lock().take();
        if let Some(t) = acceptor {
            let _ = t.join();
        }
        if let Some(admin) = &self.admin_listener {
            crate::sys::sock::shutdown_listener(admin);
        }
        let admin_acceptor = self.admin_acceptor.lock().take();
        if let Some(t) = admin_acceptor {
            let _ = t.join();
        }
        self.overflow_tx.lock().take();
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
        // A reader waits for its writer to end before it finishes, so by now
        // the writers are on their way out too.
        let reap_by = Instant::now() + Duration::from_secs(1);
        pthread::reap_detached(&self.writers.live, reap_by);
        pthread::reap_detached(&self.reader_threads, reap_by);
        self.send_to_hub(Cmd::Shutdown);
        let rest: Vec<_> = self.threads.lock().drain(..).collect();
        for t in rest {
            let _ = t.join();
        }
        *self.stopped.lock() = true;
        self.stopped_changed.notify_all();
        // After `stopped`: a stop job queued meanwhile only waits for it.
        self.release_stopper();
        log::info!("stopped");
    }

    /// Queues `job` (which stops the server) for the stopper thread; nothing
    /// happens once the stopper has been released, after the stop.
    pub(crate) fn queue_stop(&self, job: StopJob) {
        let tx = self.stopper_tx.lock().clone();
        if let Some(tx) = tx {
            // Fails only once the stopper has exited, after the stop.
            let _ = tx.send(job);
        }
    }

    /// Lets the stopper thread finish what is queued and exit, and joins it,
    /// unless this is the stopper thread (then it exits when its job returns).
    pub(crate) fn release_stopper(&self) {
        drop(self.stopper_tx.lock().take());
        let stopper = self.stopper.lock().take();
        if let Some(t) = stopper {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
