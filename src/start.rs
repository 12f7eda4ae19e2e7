//! How a server starts: [`Server::start`] and [`Server::start_on`], and
//! `Engine::start`, which binds (or takes) the listener, builds the
//! `Engine` and spawns the hub, stopper, overflow and acceptor threads.
//! The stop sequence is `Engine::stop` (`engine.rs`).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::config::Config;
use crate::conn_map::ConnMap;
use crate::connection::outbound::QueueLimits;
use crate::engine::{Engine, StopJob};
use crate::error::{Error, Result};
use crate::handler::Handler;
use crate::hub::{self, Cmd, Hub};
use crate::ip_table::IpTable;
use crate::server::ServerHandle;
use crate::stats::Stats;
use crate::sys::{pthread, signals};

/// Entry point: [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Binds `config.bind`, starts the acceptor and hub threads, and returns a
    /// handle. Connections are served until [`ServerHandle::stop`].
    pub fn start(config: Config, handler: impl Handler) -> Result<ServerHandle> {
        Engine::start(config, Box::new(handler), None)
    }

    /// Like [`Server::start`], serving on `listener`,
    /// a listening socket made elsewhere (passed by systemd, see
    /// `LISTEN_FDS`), instead of binding [`Config::bind`](crate::Config::bind).
    /// The socket stays listening when the server stops (connections queued
    /// then wait for the next process).
    pub fn start_on(listener: TcpListener, config: Config, handler: impl Handler) -> Result<ServerHandle> {
        Engine::start(config, Box::new(handler), Some(listener))
    }
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
        // A reader per connection, and a writer for each whose queue is
        // backed up: at most two threads per connection.
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
        let (hub_tx, hub_rx) = hub::lanes(config.hub_queue);
        let limits = QueueLimits { frames: config.outbound_queue, bytes: config.outbound_max_bytes };
        let mut hub = Hub::new(limits, stats.clone(), config.heartbeat_interval);
        let writers = Arc::new(crate::connection::writer::WriterEnv::new(&config, stats.clone()));
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
            start_writer: crate::connection::writer::starter(writers.clone()),
            writers,
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
                    handle.stop();
                    return Err(e.into());
                }
            }
        }
        handle.engine().handler.on_start(&handle);
        let scheme = if handle.engine().tls.is_some() { "TLS (wss/https)" } else { "plain (ws/http)" };
        if handle.engine().listener.is_some() {
            log::info!("listening on {local_addr}, {scheme}, WebSocket path {}", handle.engine().config.path);
        } else {
            log::info!("started without a listener (adopted sockets only), {scheme}");
        }
        Ok(handle)
    }
}
