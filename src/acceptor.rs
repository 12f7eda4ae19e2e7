//! The acceptor thread: takes TCP connections off the listening socket and
//! gives each one its reader thread. It does nothing else, so a slow client can
//! never hold up the next accept.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::connection::{reader, ConnShared};
use crate::sys::pthread;
use crate::server::ServerHandle;

/// Connections allowed to be in their handshake beyond `max_connections`, so
/// over-limit clients get their 503 instead of a reset.
const HANDSHAKE_HEADROOM: usize = 256;

pub(crate) fn run(server: ServerHandle, listener: Arc<TcpListener>) {
    let engine = server.engine();
    let limit = engine.config.max_connections + HANDSHAKE_HEADROOM;
    loop {
        let (stream, remote) = match listener.accept() {
            Ok(pair) => pair,
            Err(_) if engine.is_draining() => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
        if engine.live_connections() >= limit {
            log::warn!("{remote}: {limit} connections already in progress; dropping");
            engine.stats.count_reject(0);
            continue;
        }
        let conn = Arc::new(ConnShared::new(engine.next_conn_id(), remote, stream));
        engine.connection_started(conn.clone());
        let (server2, conn2) = (server.clone(), conn.clone());
        let name = format!("wshub-r{}", conn.id);
        if let Err(e) = pthread::spawn_detached(&name, engine.config.reader_stack_size, &engine.reader_threads, move || {
            reader::run(server2, conn2)
        }) {
            log::error!("{remote}: cannot spawn a reader thread: {e}; dropping");
            engine.connection_finished(conn.id);
        }
    }
    log::debug!("acceptor stopped");
}
