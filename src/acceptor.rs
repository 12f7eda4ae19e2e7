//! The acceptor thread: takes TCP connections off the listening socket and
//! gives each one its reader thread. It does nothing else, so a slow client can
//! never hold up the next accept.
//!
//! A socket gets a reader thread only within the handshake bounds and the
//! per-address caps (`ip_table`); otherwise it goes to the overflow thread
//! (`overflow`), which answers it (a refusal, or `/healthz`) without a thread
//! of its own, so sockets that never finish their request cannot lock the
//! server out.
//!
//! [`ServerHandle::adopt`](crate::ServerHandle::adopt) (a socket a host accepted itself) goes through the
//! same [`admit`] as an accepted one: caps, handshake deadline, then the
//! reader's checks (path, Origin, auth) are one code path for both.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::connection::{reader, ConnShared};
use crate::engine::Overflowing;
use crate::ip_table::Admitted;
use crate::server::ServerHandle;
use crate::sys::pthread;

/// How often the acceptor of an inherited (non-blocking) listener looks at
/// `draining` while no connection comes.
const INHERITED_TICK: Duration = Duration::from_millis(50);

/// Longest the acceptor waits for room in the overflow thread's channel
/// before it drops a socket unanswered (an overflow thread that is not
/// draining it, e.g. busy in a slow `on_http`, costs accepts at most this).
const OVERFLOW_WAIT: Duration = Duration::from_millis(5);

/// The admin listener's acceptor (`Config::admin_bind`): the same as
/// [`run`], its sockets marked as the admin port's (see `Engine::admin_split`).
pub(crate) fn run_admin(server: ServerHandle, listener: Arc<TcpListener>, overflow: Sender<Overflowing>) {
    accept_loop(server, listener, false, overflow, true)
}

/// Accepts until the server drains. `inherited`: the listener is
/// non-blocking and shared with whoever passed it (systemd), so the stop
/// cannot wake a blocked `accept` with `shutdown`; it is polled instead.
pub(crate) fn run(
    server: ServerHandle,
    listener: Arc<TcpListener>,
    inherited: bool,
    overflow: Sender<Overflowing>,
) {
    accept_loop(server, listener, inherited, overflow, false)
}

fn accept_loop(
    server: ServerHandle,
    listener: Arc<TcpListener>,
    inherited: bool,
    overflow: Sender<Overflowing>,
    admin: bool,
) {
    let engine = server.engine();
    let fd = [std::os::fd::AsRawFd::as_raw_fd(&*listener)];
    let mut ready = Vec::new();
    loop {
        if inherited {
            if engine.is_draining() {
                break;
            }
            if crate::sys::poll::readable(&fd, INHERITED_TICK, &mut ready).is_err() {
                std::thread::sleep(INHERITED_TICK);
            }
            if !ready.first().copied().unwrap_or(false) {
                continue;
            }
        }
        let (stream, remote) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if engine.is_draining() => break,
            Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock) => continue,
            Err(e) => {
                // Out of fds or memory: back off instead of spinning; the
                // listen backlog holds the connection until we can take it.
                log::warn!("accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
        };
        if engine.is_draining() {
            break;
        }
        admit(&server, stream, remote, Vec::new(), &overflow, admin);
    }
    log::debug!("acceptor stopped");
}

/// What happens to every socket after its accept (by the acceptor, or by a
/// host that adopts it): a handshake slot and a reader thread, or the
/// overflow thread's answer. `preread`: what the host already read of it.
pub(crate) fn admit(
    server: &ServerHandle,
    stream: TcpStream,
    remote: SocketAddr,
    preread: Vec<u8>,
    overflow: &Sender<Overflowing>,
    admin: bool,
) {
    let engine = server.engine();
    let id = engine.next_conn_id();
    let trusted = engine.is_trusted_proxy(remote.ip());
    let admitted = match engine.ip_table.admit(remote.ip(), id, trusted, &engine.config, Instant::now()) {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let socket = Overflowing { stream, remote, refusal: refusal.0, preread, admin };
            return overflow_to(engine, socket, refusal.1, overflow);
        }
    };
    let conn = Arc::new(ConnShared::new(id, remote, stream));
    if admin {
        conn.set_on_admin();
    }
    engine.handshake_started(&conn);
    engine.connection_started(conn.clone());
    if let Admitted::Took(oldest) = admitted {
        engine.handshake_slot_taken(oldest);
    }
    let (server2, conn2) = (server.clone(), conn.clone());
    let name = format!("wshub-r{}", conn.id);
    if let Err(e) =
        pthread::spawn_detached(&name, engine.config.reader_stack_size, &engine.reader_threads, move || {
            reader::run(server2, conn2, preread)
        })
    {
        // Counted, and logged once per period: at the thread limit every
        // new connection ends here.
        engine.stats.thread_spawn_failed(crate::stats::ThreadKind::Reader, conn.id, &e);
        engine.connection_finished(conn.id);
    }
}

/// Hands a socket that got no handshake slot to the overflow thread.
fn overflow_to(
    engine: &crate::engine::Engine,
    socket: Overflowing,
    log: bool,
    overflow: &Sender<Overflowing>,
) {
    let (remote, refusal) = (socket.remote, socket.refusal);
    if log {
        // Once per address per interval, however many it sends.
        log::warn!(
            "{}: over {}; answering {} from the overflow thread",
            remote.ip(),
            refusal.label(),
            refusal.status()
        );
    }
    crate::stats::Stats::add(&engine.stats.handshake_overflow[refusal as usize], 1);
    // A full channel would drop this socket whatever its address, before the
    // overflow thread's eviction (which takes from the address holding the
    // most) can choose: wait for it a little instead (it drains the channel
    // every `BUSY_TICK` while sockets keep coming); meanwhile the next
    // connections wait in the listen backlog.
    if overflow.send_timeout(socket, OVERFLOW_WAIT).is_err() {
        engine.stats.count_reject(0);
    }
}
