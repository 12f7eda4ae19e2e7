//! The acceptor thread: takes TCP connections off the listening socket and
//! gives each one its reader thread. It does nothing else, so a slow client can
//! never hold up the next accept.
//!
//! A socket gets a reader thread only within the handshake bounds and the
//! per-address caps (`ip_table`); otherwise it goes to the overflow thread
//! (`overflow`), which answers it (a refusal, or `/healthz`) without a thread
//! of its own, so sockets that never finish their request cannot lock the
//! server out.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::connection::{reader, ConnShared};
use crate::overflow::Overflowing;
use crate::server::ServerHandle;
use crate::sys::pthread;

pub(crate) fn run(server: ServerHandle, listener: Arc<TcpListener>, overflow: Sender<Overflowing>) {
    let engine = server.engine();
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
        if let Err((refusal, log)) = engine.ip_table.admit(remote.ip(), &engine.config, Instant::now()) {
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
            if overflow.try_send(Overflowing { stream, remote, refusal }).is_err() {
                engine.stats.count_reject(0);
            }
            continue;
        }
        let conn = Arc::new(ConnShared::new(engine.next_conn_id(), remote, stream));
        engine.handshake_started(&conn);
        engine.connection_started(conn.clone());
        let (server2, conn2) = (server.clone(), conn.clone());
        let name = format!("wshub-r{}", conn.id);
        if let Err(e) = pthread::spawn_detached(
            &name,
            engine.config.reader_stack_size,
            &engine.reader_threads,
            move || reader::run(server2, conn2),
        ) {
            log::error!("{remote}: cannot spawn a reader thread: {e}; dropping");
            engine.connection_finished(conn.id);
        }
    }
    log::debug!("acceptor stopped");
}
