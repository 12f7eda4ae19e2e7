//! One WebSocket connection: the state its two threads and the hub share, and
//! the outbound queue between them.
//!
//! - [`reader`]: the connection's first thread. Reads the HTTP request, upgrades,
//!   spawns the writer, reads frames and runs the handler's callbacks. It never
//!   writes to the socket after the handshake.
//! - [`writer`]: drains the outbound queue into the socket, many frames per
//!   `writev`, and sends the heartbeat pings.
//!
//! Delivery adapts to load. While the hub keeps up and a connection has nothing
//! queued, the hub sends a frame straight to its socket with one non-blocking
//! `send` ([`ConnShared::try_send_direct`]): no thread wakes, which is what keeps
//! latency low and CPU per delivery small at moderate rates. Once the hub falls
//! behind, or the connection has a backlog, frames go to the writer's queue and
//! leave in batches, many per `writev`. The write lock and the depth counter
//! keep the two paths in order: a direct send happens only with nothing queued
//! or being written, and a partial one leaves its rest as the [`Tail`] the
//! writer writes before anything else.
//!
//! The queue is crossbeam's list-backed channel with the bound kept by a depth
//! counter: an array-backed `bounded(1024)` channel preallocates its slots
//! (24 KiB per connection), which 10k idle connections cannot afford; this one
//! costs memory in proportion to what is queued. Only the hub (or its fan-out
//! helper, for members the hub is not serving at that moment) pushes data
//! frames, so the depth check needs no lock.

pub(crate) mod handshake;
pub(crate) mod reader;
pub(crate) mod writer;

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{fence, AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering::*};
#[cfg(test)]
use std::sync::Arc;
use std::time::SystemTime;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::frame::SharedFrame;
use crate::types::ConnId;
use crate::stats::Stats;

/// What a writer can be asked to do, in queue order.
#[derive(Debug)]
pub(crate) enum Out {
    /// A data frame; counts against the queue bound.
    Frame(SharedFrame),
    /// Frames tungstenite wrote on the reader's side (pongs, the close reply).
    Control(Vec<u8>),
    /// Close with this code and reason once everything queued before it is written.
    Close(u16, String),
    /// The rest of a direct send lies in the write lock's [`Tail`]; counts
    /// against the queue bound like a frame.
    Tail,
    /// The reader has finished: exit once the current batch is written.
    ReaderDone,
}

/// What a partial direct send left unwritten.
#[derive(Debug)]
pub(crate) struct Tail {
    pub frame: SharedFrame,
    pub written: usize,
}

/// The state of one connection shared by its reader, its writer, the hub and
/// the server handle.
#[derive(Debug)]
pub(crate) struct ConnShared {
    pub id: ConnId,
    pub remote: SocketAddr,
    pub accepted_at: SystemTime,
    /// The one socket, shared by both halves (`&TcpStream` is `Read + Write`).
    pub stream: TcpStream,
    tx: Sender<Out>,
    rx: Mutex<Option<Receiver<Out>>>,
    /// Data frames queued or being written (released once written or dropped).
    depth: AtomicUsize,
    /// Control frames (the reader's pongs and close reply) queued or being
    /// written: a direct send must not overtake them either (a pong answers a
    /// ping that came before the message the direct send may be replying to).
    controls: AtomicUsize,
    /// Held by whoever writes to the socket (the writer for a batch, the hub for
    /// a direct send), so frames never interleave.
    write: Mutex<Option<Tail>>,
    /// Set once the upgrade completed and the connection is registered.
    open: AtomicBool,
    /// A close has been queued: nothing more is queued after it.
    closing: AtomicBool,
    /// Code of the close the server queued first (0 when none).
    close_code: AtomicU16,
    /// Slow consumer: the writer drops the data frames still queued.
    discard: AtomicBool,
    /// [`WRITER_PARKED`] while the writer sleeps on this futex word instead
    /// of in the channel (see [`ConnShared::park_writer`]).
    writer_state: AtomicU32,
    /// Application key/values attached to the connection.
    pub values: Mutex<HashMap<String, String>>,
    /// Path and query of the upgrade request.
    pub request_path: Mutex<(String, String)>,
}

const WRITER_AWAKE: u32 = 0;
const WRITER_PARKED: u32 = 1;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue is at its bound: the connection is a slow consumer.
    Full,
}

impl ConnShared {
    pub(crate) fn new(id: ConnId, remote: SocketAddr, stream: TcpStream) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        ConnShared {
            id,
            remote,
            accepted_at: SystemTime::now(),
            stream,
            tx,
            rx: Mutex::new(Some(rx)),
            depth: AtomicUsize::new(0),
            controls: AtomicUsize::new(0),
            write: Mutex::new(None),
            open: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close_code: AtomicU16::new(0),
            discard: AtomicBool::new(false),
            writer_state: AtomicU32::new(WRITER_AWAKE),
            values: Mutex::new(HashMap::new()),
            request_path: Mutex::new(Default::default()),
        }
    }

    /// Queues a data frame unless the queue is at `bound`. A frame for a closing
    /// connection is dropped silently (it could never be sent).
    pub(crate) fn push_frame(
        &self,
        frame: SharedFrame,
        bound: usize,
        stats: &Stats,
    ) -> Result<(), PushError> {
        if self.closing.load(Acquire) {
            return Ok(());
        }
        let depth = self.depth.fetch_add(1, AcqRel);
        if depth >= bound {
            self.depth.fetch_sub(1, AcqRel);
            return Err(PushError::Full);
        }
        stats.queue_depth_max.fetch_max(depth as u64 + 1, Relaxed);
        self.enqueue(Out::Frame(frame));
        Ok(())
    }

    /// Sends `frame` straight to the socket when that keeps order and costs no
    /// wait: nothing is queued or being written, the writer does not hold the
    /// socket, and no close has gone out. True when the frame is taken care of
    /// (sent, or partly sent with its rest handed to the writer); false when
    /// the caller should queue it instead.
    pub(crate) fn try_send_direct(&self, frame: &SharedFrame, stats: &Stats) -> bool {
        // Checked before the lock (cheap refusal) and again under it.
        if self.has_queued() {
            return false;
        }
        let Some(mut tail) = self.write.try_lock() else { return false };
        if tail.is_some() || self.has_queued() || self.closing.load(Acquire) {
            return false;
        }
        match crate::sys::sock::send(&self.stream, frame, true) {
            Ok(n) if n == frame.len() => {
                Stats::add(&stats.bytes_out, n as u64);
                Stats::add(&stats.messages_out, 1);
                Stats::add(&stats.direct_sends, 1);
                true
            }
            Ok(n) if n > 0 => {
                Stats::add(&stats.bytes_out, n as u64);
                *tail = Some(Tail { frame: frame.clone(), written: n });
                self.depth.fetch_add(1, AcqRel);
                self.enqueue(Out::Tail);
                true
            }
            // Full socket buffer, or an error the writer will meet and report.
            _ => false,
        }
    }

    /// Puts `out` on the writer's queue, and wakes the writer if it is
    /// parked on [`ConnShared::park_writer`] (crossbeam wakes it otherwise).
    fn enqueue(&self, out: Out) {
        // The receiver lives until the writer exits; a send after that is moot.
        let _ = self.tx.send(out);
        // Pairs with the fence in `park_writer`: either the writer sees this
        // item before it sleeps, or we see it parked and wake it.
        fence(SeqCst);
        if self.writer_state.load(Relaxed) == WRITER_PARKED
            && self.writer_state.swap(WRITER_AWAKE, AcqRel) == WRITER_PARKED
        {
            crate::sys::pthread::futex_wake(&self.writer_state);
        }
    }

    /// The writer's first wait: sleeps until something is queued or
    /// `deadline`, without the spinning and `sched_yield`s of crossbeam's
    /// blocking receive. Those pay off once a writer is busy (frames arriving
    /// while it yields leave in one batch), but a new connection's writer
    /// usually has nothing to do for a long while: during a burst of
    /// connections they were ~3 yields per writer (27k context switches for
    /// 10k connections), each one handing the CPU to another new thread.
    /// Returns early on any wakeup; the caller then looks at the queue.
    pub(crate) fn park_writer(&self, rx: &Receiver<Out>, deadline: std::time::Instant) {
        self.writer_state.store(WRITER_PARKED, Relaxed);
        fence(SeqCst);
        if rx.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if !left.is_zero() {
                crate::sys::pthread::futex_wait(&self.writer_state, WRITER_PARKED, left);
            }
        }
        self.writer_state.store(WRITER_AWAKE, Relaxed);
    }

    /// Data or control frames are queued or being written.
    fn has_queued(&self) -> bool {
        self.depth.load(Acquire) != 0 || self.controls.load(Acquire) != 0
    }

    /// The write lock, with the rest of a partial direct send if there is one.
    pub(crate) fn lock_write(&self) -> parking_lot::MutexGuard<'_, Option<Tail>> {
        self.write.lock()
    }

    /// A close frame is about to be written (under the write lock): nothing
    /// may follow it, so direct sends and queueing stop.
    pub(crate) fn mark_closing(&self) {
        self.closing.store(true, Release);
    }

    /// Queues a close frame after everything queued so far. Only the first close
    /// counts; later ones are ignored.
    pub(crate) fn push_close(&self, code: u16, reason: &str) {
        if !self.closing.swap(true, AcqRel) {
            self.close_code.store(code, Release);
            self.enqueue(Out::Close(code, reason.to_owned()));
        }
    }

    /// Marks a slow consumer: queued data frames are dropped and it is closed with 1013.
    pub(crate) fn close_slow_consumer(&self) {
        self.discard.store(true, Release);
        self.push_close(1013, "slow consumer");
    }

    pub(crate) fn push_control(&self, bytes: Vec<u8>) {
        self.controls.fetch_add(1, AcqRel);
        self.enqueue(Out::Control(bytes));
    }

    pub(crate) fn push_reader_done(&self) {
        self.enqueue(Out::ReaderDone);
    }

    /// The receiving end, handed once to the writer thread.
    pub(crate) fn take_receiver(&self) -> Option<Receiver<Out>> {
        self.rx.lock().take()
    }

    /// `n` control frames were written or dropped.
    pub(crate) fn controls_done(&self, n: usize) {
        if n > 0 {
            self.controls.fetch_sub(n, AcqRel);
        }
    }

    /// `n` data frames were written or dropped: they no longer hold the queue.
    pub(crate) fn frames_done(&self, n: usize) {
        if n > 0 {
            self.depth.fetch_sub(n, AcqRel);
        }
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.depth.load(Acquire)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.open.load(Acquire)
    }

    pub(crate) fn set_open(&self, open: bool) {
        self.open.store(open, Release);
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Acquire)
    }

    pub(crate) fn discards(&self) -> bool {
        self.discard.load(Acquire)
    }

    /// The code of the close the server queued, if it queued one.
    pub(crate) fn server_close_code(&self) -> Option<u16> {
        match self.close_code.load(Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    /// Ends the TCP connection in both directions, waking whichever half is
    /// blocked on it. Errors (already shut down, reset) mean the same thing.
    pub(crate) fn kill(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
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

#[cfg(test)]
mod tests {
    use super::test_support::loopback_conn;
    use super::*;
    use std::time::{Duration, Instant};

    /// The producer pushes before, while or after the writer parks: in every
    /// order the writer must come back with the item long before its deadline
    /// (a lost wakeup would hold it there for the whole 10 s).
    #[test]
    fn a_parked_writer_never_misses_a_push() {
        let (conn, _peer) = loopback_conn(1);
        let rx = conn.take_receiver().unwrap();
        let rx = Arc::new(rx);
        for round in 0..300 {
            let (conn2, rx2) = (conn.clone(), rx.clone());
            let writer = std::thread::spawn(move || {
                let started = Instant::now();
                conn2.park_writer(&rx2, started + Duration::from_secs(10));
                // A wakeup may come early (spuriously); what matters is that the
                // item is there by the time the writer would give up waiting.
                let item = rx2.recv_timeout(Duration::from_secs(5));
                (started.elapsed(), item.is_ok())
            });
            if round % 3 == 1 {
                std::thread::yield_now();
            }
            match round % 4 {
                0 => conn.push_control(vec![0x8a, 0]),
                1 => conn.push_reader_done(),
                2 => conn.push_control(vec![0x89, 0]),
                _ => conn.push_reader_done(),
            }
            let (waited, got) = writer.join().unwrap();
            assert!(got, "round {round}: nothing arrived");
            assert!(waited < Duration::from_secs(5), "round {round}: parked for {waited:?}");
            conn.controls_done(conn.controls.load(Acquire));
        }
    }
}
