//! The engine: the state every thread of one server shares (configuration,
//! handler, hub channel, registry of connections, counters), how it starts,
//! and the stop sequence. [`ServerHandle`] is the public face of it.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::conn_map::ConnMap;
use crate::connection::outbound::QueueLimits;
use crate::connection::ConnShared;
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::hub::{self, Cmd, Hub};
use crate::ip_table::IpTable;
use crate::server::ServerHandle;
use crate::stats::Stats;
use crate::sys::{pthread, signals};
use crate::types::ConnId;

/// What the stopper thread runs: a stop asked for from inside a callback.
pub(crate) type StopJob = Box<dyn FnOnce() + Send>;

/// The state every thread of one server shares.
pub(crate) struct Engine {
    pub config: Config,
    pub local_addr: SocketAddr,
    pub handler: Box<dyn Handler>,
    hub_tx: Sender<hub::Ticketed>,
    pub stats: Arc<Stats>,
    /// Every accepted connection whose reader thread has not finished.
    /// Every connection with a thread, by id: read by every `send`, written
    /// when a connection starts and ends.
    pub conns: ConnMap<Arc<ConnShared>>,
    /// With `conns_changed`: signalled when `conns` becomes empty.
    conns_emptied: Mutex<()>,
    conns_changed: Condvar,
    next_id: AtomicU64,
    draining: AtomicBool,
    stop_started: AtomicBool,
    stopped: Mutex<bool>,
    stopped_changed: Condvar,
    /// `None` without a listener ([`Config::listen`] false): no acceptor either.
    listener: Option<Arc<TcpListener>>,
    /// The listener came from outside (systemd): it is shared with whoever
    /// passed it, so the stop must not shut it down (that would close it for
    /// the next instance too); the acceptor polls it instead.
    inherited: bool,
    acceptor: Mutex<Option<JoinHandle<()>>>,
    /// The listener of `Config::admin_bind`, and its acceptor thread.
    admin_listener: Option<Arc<TcpListener>>,
    admin_acceptor: Mutex<Option<JoinHandle<()>>>,
    /// For sockets adopted over the caps (see `acceptor::admit`); dropped by the stop.
    overflow_tx: Mutex<Option<Sender<crate::overflow::Overflowing>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Reader threads not yet finished (they are detached; see `pthread::reap_detached`).
    pub reader_threads: Arc<std::sync::atomic::AtomicUsize>,
    /// Where stops from inside callbacks go (see [`ServerHandle::stop`]);
    /// dropped at the end of the stop, which lets the stopper thread exit.
    stopper_tx: Mutex<Option<Sender<StopJob>>>,
    stopper: Mutex<Option<JoinHandle<()>>>,
    /// What each peer address holds: handshake slots, connections, connect rate.
    pub ip_table: IpTable,
    /// `Config::trusted_proxies`, parsed.
    pub trusted_proxies: Vec<crate::ip_table::Cidr>,
    /// TLS config new connections start from (`None`: plain ws/http).
    pub tls: Option<crate::tls::Tls>,
}

impl Engine {
    /// Binds `config.bind` (or takes `inherited`, a listening socket made
    /// by someone else, such as systemd), starts the acceptor and hub
    /// threads, and returns the first handle (see
    /// [`Server::start`](crate::Server::start)). With
    /// [`Config::listen`] false and nothing inherited, no socket and no
    /// acceptor thread.
    pub(crate) fn start(
        config: Config,
        handler: Box<dyn Handler>,
        inherited: Option<TcpListener>,
    ) -> Result<ServerHandle> {
        config.validate().map_err(Error::InvalidConfig)?;
        pthread::watch_fork();
        let tls =
            config.tls_sources().map(crate::tls::Tls::load).transpose().map_err(Error::InvalidConfig)?;
        let trusted_proxies = config.trusted_blocks().map_err(Error::InvalidConfig)?;
        let shared_listener = inherited.is_some();
        let listener = match inherited {
            Some(l) => Some(l),
            None if config.listen => {
                let l = TcpListener::bind(config.bind).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", config.bind))
                })?;
                crate::sys::sock::deepen_backlog(&l)?;
                Some(l)
            }
            None => None,
        };
        if let Some(l) = &listener {
            l.set_nonblocking(shared_listener)?;
        }
        // A reader and a writer per connection, most of them waiting on futexes.
        let buckets = crate::sys::futex::size_futex_hash(2 * config.max_connections + 16);
        log::debug!("futex hash buckets: {buckets:?}");
        let listener = listener.map(Arc::new);
        let admin_listener = match config.admin_bind {
            Some(addr) => {
                let l = TcpListener::bind(addr)?;
                crate::sys::sock::deepen_backlog(&l)?;
                Some(Arc::new(l))
            }
            None => None,
        };
        let local_addr = match &listener {
            Some(l) => l.local_addr()?,
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        let stats = Arc::new(Stats::default());
        let (hub_tx, hub_rx) = crossbeam_channel::bounded(config.hub_queue);
        let limits = QueueLimits { frames: config.outbound_queue, bytes: config.outbound_max_bytes };
        let mut hub = Hub::new(limits, stats.clone());
        hub.start_helper();
        let hub_thread =
            signals::spawn(std::thread::Builder::new().name("wshub-hub".into()), move || hub.run(hub_rx))?;
        // A stop asked for from inside a callback cannot run on the callback's
        // thread, and must not depend on creating a thread then: the server
        // may be out of threads exactly when it is asked to stop. So the
        // thread that will run it is made now, and waits.
        let (stopper_tx, stopper_rx) = crossbeam_channel::unbounded::<StopJob>();
        let stopper = signals::spawn(std::thread::Builder::new().name("wshub-stopper".into()), move || {
            while let Ok(job) = stopper_rx.recv() {
                job();
            }
        });
        let stopper = match stopper {
            Ok(t) => t,
            Err(e) => {
                let _ = hub::submit(&hub_tx, Cmd::Shutdown);
                let _ = hub_thread.join();
                return Err(e.into());
            }
        };
        let engine = Arc::new(Engine {
            config,
            local_addr,
            handler,
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
            inherited: shared_listener,
            acceptor: Mutex::new(None),
            admin_listener: admin_listener.clone(),
            admin_acceptor: Mutex::new(None),
            overflow_tx: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
            reader_threads: Arc::default(),
            stopper_tx: Mutex::new(Some(stopper_tx)),
            stopper: Mutex::new(Some(stopper)),
            ip_table: IpTable::default(),
            trusted_proxies,
            tls,
        });
        let handle = ServerHandle::new(engine);
        // Bounded: the acceptor never waits for the overflow thread; a full
        // channel drops the socket (counted as "dropped").
        let (overflow_tx, overflow_rx) = crossbeam_channel::bounded(handle.engine().config.overflow_sockets);
        let overflow = {
            let handle = handle.clone();
            signals::spawn(std::thread::Builder::new().name("wshub-overflow".into()), move || {
                crate::overflow::run(handle, overflow_rx)
            })
        };
        *handle.engine().overflow_tx.lock() = Some(overflow_tx.clone());
        let overflow_tx_admin = overflow_tx.clone();
        let acceptor = overflow.and_then(|overflow| match listener {
            Some(listener) => {
                let handle = handle.clone();
                signals::spawn(std::thread::Builder::new().name("wshub-accept".into()), move || {
                    crate::acceptor::run(handle, listener, shared_listener, overflow_tx)
                })
                .map(|acceptor| (Some(acceptor), overflow))
            }
            None => Ok((None, overflow)),
        });
        let (acceptor, overflow) = match acceptor {
            Ok(t) => t,
            Err(e) => {
                // A spawned overflow thread ends when its channel's sender drops.
                handle.engine().overflow_tx.lock().take();
                handle.engine().send_to_hub(Cmd::Shutdown);
                let _ = hub_thread.join();
                handle.engine().release_stopper();
                return Err(e.into());
            }
        };
        // `stop` joins the acceptor before the rest.
        *handle.engine().acceptor.lock() = acceptor;
        handle.engine().threads.lock().extend([overflow, hub_thread]);
        if let Some(admin) = admin_listener {
            let (server, overflow) = (handle.clone(), overflow_tx_admin);
            let spawned = std::thread::Builder::new()
                .name("wshub-admin".into())
                .spawn(move || crate::acceptor::run_admin(server, admin, overflow));
            match spawned {
                Ok(t) => *handle.engine().admin_acceptor.lock() = Some(t),
                Err(e) => {
                    handle.engine().stop();
                    return Err(e.into());
                }
            }
        }
        let scheme = if handle.engine().tls.is_some() { "TLS (wss/https)" } else { "plain (ws/http)" };
        if handle.engine().listener.is_some() {
            log::info!("listening on {local_addr}, {scheme}, WebSocket path {}", handle.engine().config.path);
        } else {
            log::info!("started without a listener (adopted sockets only), {scheme}");
        }
        Ok(handle)
    }

    /// Where `ServerHandle::adopt` sends a socket over the caps; `None` once stopping.
    pub(crate) fn overflow_sender(&self) -> Option<Sender<crate::overflow::Overflowing>> {
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

    pub(crate) fn stop(&self) {
        if self.stop_started.swap(true, AcqRel) {
            let mut stopped = self.stopped.lock();
            while !*stopped {
                self.stopped_changed.wait(&mut stopped);
            }
            return;
        }
        log::info!("stopping: draining connections");
        self.draining.store(true, SeqCst);
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
        pthread::reap_detached(&self.reader_threads, Instant::now() + Duration::from_secs(1));
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
    fn release_stopper(&self) {
        drop(self.stopper_tx.lock().take());
        let stopper = self.stopper.lock().take();
        if let Some(t) = stopper {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
    }
}
