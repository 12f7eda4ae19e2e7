//! A connection's outbound path: the one ordering point for every byte written
//! to its socket once it is a WebSocket. The queue, its depth counters, the
//! write lock with the rest of a partial direct send ([`Tail`]), the direct
//! send, and parking and waking the writer all live here, and nothing outside
//! this file writes to a connection's socket after the 101, except the TLS
//! records the reader's reads caused (`tls_session.rs`), under the same
//! write lock.
//!
//! Who writes to a socket, all through this file:
//! - the connection's **writer thread** (`writer.rs`), while it has one:
//!   queued frames in batches, the close frame ([`ConnShared::write_locked`]);
//! - the **hub thread** and its **fan-out helper** (`hub/fanout.rs`): the
//!   frames a member gets in one round of the hub go straight to its socket
//!   in one `writev` when it has nothing queued
//!   ([`ConnShared::try_send_direct_many`]);
//! - **any thread calling `ServerHandle::send`** (a callback on a reader
//!   thread, an application thread): the same direct send, when every
//!   earlier hub command of that thread has taken effect (`hub/order.rs`);
//! - the **hub thread** again for the heartbeat (`hub/heartbeat.rs`): a ping
//!   sent the same way ([`ConnShared::send_heartbeat`]), or queued behind
//!   what is queued (one at a time), or put off a moment when another
//!   thread is writing.
//!
//! A connection has a writer thread only while something is queued, or
//! shortly after: whoever queues an item when none runs starts one, and a
//! writer that has found the queue empty for its linger (`writer.rs`)
//! gives the connection up and ends. Who owns the queue is one word
//! (`Outbound::writer`): no writer, a writer, or ended for good (the reader
//! has finished). Queueing and leaving are ordered by two fences
//! ([`ConnShared::enqueue`], [`ConnShared::writer_leaves`]): either the
//! leaving writer sees the new item and stays, or the one who queued it sees
//! the writer gone and starts the next; a compare-and-swap makes one of them
//! the owner, never two. So nothing queued is left without a writer, and
//! at most one writer drains a queue, in order.
//!
//! The reader thread writes the HTTP response, before any writer can exist;
//! after the 101 its pong and close replies are queued like any frame
//! ([`ConnShared::push_control`]). Under TLS it also flushes, under the write
//! lock, the records its reads caused (alerts, key updates, session
//! tickets); what the socket does not take then, the writer flushes before
//! its next frame.
//!
//! The rule that keeps frames in order:
//! 1. Every write happens under the write lock, so frames never interleave.
//! 2. A direct send happens only when nothing is queued or being written (no
//!    data frame, no control frame, no [`Tail`]) and no close has gone out,
//!    checked under the write lock: it cannot overtake anything.
//! 3. A queued frame holds its place in the depth counters until it has been
//!    written, not merely dequeued, so a direct send cannot slip in between.
//! 4. A direct send the socket took only part of leaves its rest as the
//!    [`Tail`], which counts as a queued frame and is written before anything
//!    else.
//! 5. The close frame is written under the write lock with `closing` set:
//!    nothing follows it.
//! 6. One thread's frames keep its own order across the hub and the direct
//!    path through its command tickets (`hub/order.rs`).
//!
//! What a connection may hold is bounded twice: in frames (`outbound_queue`)
//! and in bytes (`outbound_max_bytes`), counting data frames, the rest of a
//! partial direct send, pongs and the close reply, from the moment they are
//! queued until they are written. A push past either bound makes the
//! connection a slow consumer: what it has queued is dropped and it is closed
//! with 1013. Its pongs never pile up: up to [`PONGS_IN_FLIGHT`] unwritten
//! pongs queue one per ping (a burst of pings read at once, as a TLS record
//! of several pings often is, gets every pong), and past that a pong not yet
//! written is replaced by the next one (RFC 6455 lets a pong answer only the
//! latest ping), so a ping flood from a peer that never reads holds a few
//! pongs, not one per ping.
//!
//! With TLS (`tls.rs`), the connection's one rustls session lives under the
//! write lock ([`WriteState`]) and the rule above holds for ciphertext: how
//! each read and write keeps it is in `tls_session.rs`, which holds the
//! session's side of every path here.
//!
//! The queue is crossbeam's list-backed channel with the bounds kept by
//! counters: an array-backed bounded channel would preallocate its slots for
//! every connection, idle or not; this one costs memory in proportion to what
//! is queued. Only the hub (or its fan-out helper, for members the hub is not
//! serving at that moment) pushes data frames, so the checks need no lock.

use std::borrow::Borrow;
use std::io::{self, IoSlice};
use std::sync::atomic::{fence, AtomicBool, AtomicU16, AtomicU32, AtomicUsize, Ordering::*};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;
use rustls::ServerConnection;

use super::ConnShared;
use crate::frame::SharedFrame;
use crate::stats::Stats;
use crate::sys::{futex, sock};

/// What a writer can be asked to do, in queue order.
#[derive(Debug)]
pub(crate) enum Out {
    /// A data frame; counts against the queue bound.
    Frame(SharedFrame),
    /// Frames tungstenite wrote on the reader's side (the close reply; a pong
    /// once the writer has taken it out of its slot).
    Control(Vec<u8>),
    /// The pong waiting in [`Outbound`]'s slot; the writer takes it with
    /// [`ConnShared::take_pong`] (the latest one by then).
    Pong,
    /// A heartbeat the socket could not take at once
    /// ([`ConnShared::send_heartbeat`]); counted like a control frame.
    Heartbeat,
    /// Close with this code and reason once everything queued before it is written.
    Close(u16, String),
    /// The rest of a direct send, `bytes` of it, lies in the write lock's
    /// [`Tail`]; counts against the queue bounds like a frame. `message`: it
    /// completes a data frame (not a heartbeat), counted once written.
    Tail { bytes: usize, message: bool },
    /// The reader has finished: exit once the current batch is written.
    ReaderDone,
}

/// What a partial direct send left unwritten.
#[derive(Debug)]
pub(crate) struct Tail {
    frame: SharedFrame,
    written: usize,
}

/// What the write lock guards: the rest of a partial direct send, and the
/// connection's TLS session, if it has one.
#[derive(Debug, Default)]
pub(crate) struct WriteState {
    pub(super) tail: Option<Tail>,
    /// The TLS session: every byte written is encrypted here, under the lock.
    pub(super) tls: Option<Box<ServerConnection>>,
    /// TLS: a direct send left ciphertext in the session; the writer's
    /// [`Out::Tail`] flushes it (and completes what was sent).
    pub(super) tls_tail: bool,
}

/// Why a frame was not queued: the connection is a slow consumer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `outbound_queue` frames.
    Full,
    /// The queue holds `outbound_max_bytes` bytes (or this frame would take it past).
    OverBytes,
}

/// How much one connection's queue may hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueLimits {
    /// Frames (`Config::outbound_queue`).
    pub frames: usize,
    /// Bytes (`Config::outbound_max_bytes`). A frame larger than this is still
    /// queued when nothing else is.
    pub bytes: usize,
}

/// How long a write may make no progress before the peer counts as gone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Patience {
    /// While the connection is open.
    pub open: Duration,
    /// Once a close is on its way.
    pub closing: Duration,
}

/// A write under the lock failed: the socket is shut down.
#[derive(Debug)]
pub(crate) struct WriteFailed;

/// The outbound half of a connection's shared state.
#[derive(Debug)]
pub(crate) struct Outbound {
    tx: Sender<Out>,
    rx: Receiver<Out>,
    /// Data frames queued or being written (released once written or dropped).
    pub(super) depth: AtomicUsize,
    /// Control frames (the reader's pongs and close reply) queued or being
    /// written: a direct send must not overtake them either (a pong answers a
    /// ping that came before the message the direct send may be replying to).
    controls: AtomicUsize,
    /// Bytes of everything counted in `depth` and `controls`.
    pub(super) bytes: AtomicUsize,
    /// The pong not yet taken by the writer; `Some` while an [`Out::Pong`]
    /// is queued.
    pong: Mutex<Option<Vec<u8>>>,
    /// Pongs queued as [`Out::Control`] and not yet written or dropped.
    pongs_in_flight: AtomicUsize,
    /// Held by whoever writes to the socket, so frames never interleave.
    pub(super) write: Mutex<WriteState>,
    /// The connection speaks TLS (set once, before the writer exists).
    pub(super) tls: AtomicBool,
    /// A close has been queued: nothing more is queued after it.
    closing: AtomicBool,
    /// Once closing: when every write must be over (the peer's close came,
    /// see [`ConnShared::peer_closed`]); `None`: only stalls are bounded.
    close_by: Mutex<Option<Instant>>,
    /// Code of the close the server queued first (0 when none).
    close_code: AtomicU16,
    /// Slow consumer: the writer drops the data frames still queued.
    discard: AtomicBool,
    /// Who drains the queue: [`NO_WRITER`], [`WRITER_RUNS`] or
    /// [`WRITER_ENDED`] (see the module comment). A futex word: the reader's
    /// last wait ([`ConnShared::end_writer`]) sleeps on it.
    writer: AtomicU32,
    /// Where a writer thread comes from; set when the connection opens
    /// ([`ConnShared::open_writer`]). Until then nothing starts one.
    home: OnceLock<WriterHome>,
    /// A writer thread could not be started: none is tried again, and the
    /// reader, woken, writes what is queued itself at its end.
    no_thread: AtomicBool,
    /// An [`Out::Heartbeat`] is queued and not yet written or dropped.
    heartbeat_queued: AtomicBool,
}

/// Starts a writer for a connection claimed for it
/// ([`ConnShared::claim_writer`]): `writer::starter`, kept here as a function
/// so that this file needs nothing of `writer.rs`. With `here`, the writer
/// runs on the calling thread and this returns once it has ended (the
/// reader's last resort when no thread could be started).
pub(crate) type StartWriter =
    std::sync::Arc<dyn Fn(std::sync::Arc<ConnShared>, bool) -> io::Result<()> + Send + Sync>;

/// Where an open connection's writer threads come from (see
/// [`ConnShared::open_writer`]).
pub(crate) struct WriterHome {
    pub(crate) start: StartWriter,
    /// The connection itself, for the thread to hold while it runs.
    pub(crate) conn: std::sync::Weak<ConnShared>,
}

impl std::fmt::Debug for WriterHome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterHome").finish_non_exhaustive()
    }
}

/// The most frames [`ConnShared::try_send_direct_many`] hands the socket in
/// one `writev` (a round of the hub has at most as many for a member).
pub(crate) const MOST_IN_ONE_WRITE: usize = 64;

/// Unwritten pongs queued one per ping before later ones replace the last.
pub(crate) const PONGS_IN_FLIGHT: usize = 16;

/// No writer thread: the next item queued starts one.
const NO_WRITER: u32 = 0;
/// A writer thread owns the queue.
const WRITER_RUNS: u32 = 1;
/// No writer runs or will run again: the reader has finished (after
/// writing what was queued itself, when no writer thread could be started).
const WRITER_ENDED: u32 = 2;

/// The bytes of a heartbeat: an empty ping frame, or for an event stream a
/// comment line.
const WS_HEARTBEAT: &[u8] = &[0x80 | crate::frame::OP_PING, 0];
const STREAM_HEARTBEAT: &[u8] = b": ping\n\n";

impl Outbound {
    pub(crate) fn new() -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Outbound {
            tx,
            rx,
            depth: AtomicUsize::new(0),
            controls: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            pong: Mutex::new(None),
            pongs_in_flight: AtomicUsize::new(0),
            write: Mutex::new(WriteState::default()),
            tls: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            close_by: Mutex::new(None),
            close_code: AtomicU16::new(0),
            discard: AtomicBool::new(false),
            writer: AtomicU32::new(NO_WRITER),
            home: OnceLock::new(),
            no_thread: AtomicBool::new(false),
            heartbeat_queued: AtomicBool::new(false),
        }
    }
}

impl ConnShared {
    /// Queues a data frame unless that would take the queue past `limits`.
    /// A frame for a closing connection is dropped silently (it could never
    /// be sent).
    pub(crate) fn push_frame(
        &self,
        frame: SharedFrame,
        limits: QueueLimits,
        stats: &Stats,
    ) -> Result<(), PushError> {
        let frame = match self.deflate_max.load(Relaxed) {
            0 => frame,
            _ => self.wire_form(&frame),
        };
        let out = &self.out;
        if out.closing.load(Acquire) {
            return Ok(());
        }
        let depth = out.depth.fetch_add(1, AcqRel);
        if depth >= limits.frames {
            out.depth.fetch_sub(1, AcqRel);
            return Err(PushError::Full);
        }
        let len = frame.len();
        let held = out.bytes.fetch_add(len, AcqRel);
        if held > 0 && held + len > limits.bytes {
            out.bytes.fetch_sub(len, AcqRel);
            out.depth.fetch_sub(1, AcqRel);
            return Err(PushError::OverBytes);
        }
        stats.queue_depth_max.fetch_max(depth as u64 + 1, Relaxed);
        count_compressed(&frame, stats);
        self.enqueue(Out::Frame(frame));
        Ok(())
    }

    /// Sends `frame` straight to the socket when that keeps order and costs no
    /// wait: nothing is queued or being written, the writer does not hold the
    /// socket, and no close has gone out. True when the frame is taken care of
    /// (sent, or partly sent with its rest handed to the writer); false when
    /// the caller should queue it instead. A one-client frame that needs
    /// compressing is refused: the hub (which calls this) never compresses
    /// one; the writer does.
    pub(crate) fn try_send_direct(&self, frame: &SharedFrame, stats: &Stats) -> bool {
        self.send_direct(frame, stats, false)
    }

    /// [`ConnShared::try_send_direct`] for a thread that is not the hub
    /// (`ServerHandle::send`: a reader's callback, an application thread):
    /// a one-client frame that needs compressing is compressed here, under
    /// the write lock just before it is written, as the writer would
    /// ([`ConnShared::writer_form`]). A reply then still costs no hub or
    /// writer wakeup, and the hub still never compresses it.
    pub(crate) fn try_send_direct_compressing(&self, frame: &SharedFrame, stats: &Stats) -> bool {
        self.send_direct(frame, stats, true)
    }

    fn send_direct(&self, frame: &SharedFrame, stats: &Stats, compress_here: bool) -> bool {
        let out = &self.out;
        // Checked before the lock (cheap refusal) and again under it.
        if self.has_queued() {
            return false;
        }
        let single_to_compress = self.writer_compresses(frame);
        if single_to_compress && !compress_here {
            return false;
        }
        let Some(mut st) = out.write.try_lock() else { return false };
        if st.tail.is_some() || st.tls_tail || self.has_queued() || out.closing.load(Acquire) {
            return false;
        }
        // Without permessage-deflate the frame goes as it is, borrowed: no
        // reference count touched per member (the hub and its helper would
        // share that cache line).
        let formed;
        let frame = match (single_to_compress, self.deflate_max.load(Relaxed)) {
            (true, _) => {
                formed = self.single_form(frame).unwrap_or_else(|| frame.clone());
                &formed
            }
            (false, 0) => frame,
            (false, _) => {
                formed = self.wire_form(frame);
                &formed
            }
        };
        if st.tls.is_some() {
            let sent = self.send_direct_tls(&mut st, &[&frame[..]], stats, true);
            if sent {
                count_compressed(frame, stats);
            }
            return sent;
        }
        let sent = match sock::send(&self.stream, frame, true) {
            Ok(n) if n == frame.len() => {
                Stats::add(&stats.bytes_out, n as u64);
                Stats::add(&stats.messages_out, 1);
                Stats::add(&stats.direct_sends, 1);
                true
            }
            Ok(n) if n > 0 => {
                Stats::add(&stats.bytes_out, n as u64);
                self.leave_tail(&mut st, frame.clone(), n, true);
                true
            }
            // Full socket buffer, or an error the writer will meet and report.
            _ => false,
        };
        if sent {
            count_compressed(frame, stats);
        }
        sent
    }

    /// [`ConnShared::try_send_direct`] for the frames one round of the hub
    /// has for this connection (owned or borrowed), in one non-blocking
    /// `writev` of at most [`MOST_IN_ONE_WRITE`]. Returns how many of
    /// `frames`, from the first, are taken care of: sent, the last of them
    /// possibly only in part with its rest handed to the writer as the
    /// [`Tail`]. The caller queues the others, in order, behind them.
    pub(crate) fn try_send_direct_many<F: Borrow<SharedFrame>>(&self, frames: &[F], stats: &Stats) -> usize {
        if frames.len() == 1 {
            return usize::from(self.try_send_direct(frames[0].borrow(), stats));
        }
        let out = &self.out;
        // One client's frame that this connection takes compressed is left,
        // with everything after it, to the writer (the hub never compresses
        // one: see `try_send_direct`).
        let upto = frames.iter().position(|f| self.writer_compresses(f.borrow())).unwrap_or(frames.len());
        let frames = &frames[..upto.min(MOST_IN_ONE_WRITE)];
        if frames.is_empty() || self.has_queued() {
            return 0;
        }
        let Some(mut st) = out.write.try_lock() else { return 0 };
        if st.tail.is_some() || st.tls_tail || self.has_queued() || out.closing.load(Acquire) {
            return 0;
        }
        // Without permessage-deflate every frame goes as it is, borrowed;
        // with it, each in its form for this connection.
        let deflating = self.deflate_max.load(Relaxed) != 0;
        let forms: Vec<SharedFrame> = match deflating {
            true => frames.iter().map(|f| self.wire_form(f.borrow())).collect(),
            false => Vec::new(),
        };
        let wire = |i: usize| -> &SharedFrame {
            match deflating {
                true => &forms[i],
                false => frames[i].borrow(),
            }
        };
        if st.tls.is_some() {
            let wire: Vec<&SharedFrame> = (0..frames.len()).map(wire).collect();
            return self.send_direct_many_tls(&mut st, &wire, stats);
        }
        let mut slices = [IoSlice::new(&[]); MOST_IN_ONE_WRITE];
        for (i, slice) in slices.iter_mut().enumerate().take(frames.len()) {
            *slice = IoSlice::new(wire(i));
        }
        // Full socket buffer, or an error the writer will meet and report.
        let Ok(n) = sock::send_vectored_dont_wait(&self.stream, &slices[..frames.len()]) else { return 0 };
        Stats::add(&stats.bytes_out, n as u64);
        let (mut left, mut taken) = (n, 0);
        for i in 0..frames.len() {
            if left == 0 {
                break;
            }
            let frame = wire(i);
            taken += 1;
            count_compressed(frame, stats);
            if left < frame.len() {
                self.leave_tail(&mut st, frame.clone(), left, true);
                break;
            }
            left -= frame.len();
        }
        let whole = taken - usize::from(st.tail.is_some());
        Stats::add(&stats.messages_out, whole as u64);
        Stats::add(&stats.direct_sends, whole as u64);
        taken
    }

    /// The form of `frame` this connection is handed by the thread that
    /// pushes or sends it: the shared compressed one when it agreed to
    /// permessage-deflate and the frame qualifies (see `Frame::for_deflate`),
    /// else the frame itself. A frame for one client only stays plain here:
    /// it is compressed just before it is written ([`ConnShared::writer_form`],
    /// [`ConnShared::try_send_direct_compressing`]).
    fn wire_form(&self, frame: &SharedFrame) -> SharedFrame {
        match self.deflate_max.load(Relaxed) {
            0 => frame.clone(),
            _ if frame.is_single() => frame.clone(),
            max => frame.for_deflate(max, self.deflate_min.load(Relaxed)),
        }
    }

    /// The form the writer puts on the wire for a queued frame, when it is not
    /// the frame itself: one client's frame (a reply, a direct send: see
    /// `frame::single`) compressed just before it is written, with nothing
    /// kept between messages. Every other frame was given its form when it
    /// was queued.
    pub(crate) fn writer_form(&self, frame: &SharedFrame, stats: &Stats) -> Option<SharedFrame> {
        let packed = self.single_form(frame)?;
        count_compressed(&packed, stats);
        Some(packed)
    }

    /// A one-client frame compressed for this connection (made once, kept in
    /// the frame); `None` for any other frame, or when it stays plain.
    fn single_form(&self, frame: &SharedFrame) -> Option<SharedFrame> {
        let max = self.deflate_max.load(Relaxed);
        if max == 0 || !frame.is_single() {
            return None;
        }
        let packed = frame.for_deflate(max, self.deflate_min.load(Relaxed));
        packed.compressed_from()?;
        Some(packed)
    }

    /// `frame` is one client's, and this connection takes it compressed: the
    /// hub must not send it directly (it would have to compress it).
    fn writer_compresses(&self, frame: &SharedFrame) -> bool {
        let max = self.deflate_max.load(Relaxed);
        max != 0 && frame.is_single() && frame.qualifies_for_deflate(max, self.deflate_min.load(Relaxed))
    }

    /// With permessage-deflate agreed: payloads up to `max_payload` bytes and
    /// at least `min_bytes` go compressed. Set once, before the connection opens.
    pub(crate) fn set_deflate(&self, max_payload: usize, min_bytes: usize) {
        self.deflate_min.store(min_bytes, Relaxed);
        self.deflate_max.store(max_payload.max(1), Relaxed);
    }

    /// Writes, under the write lock: the rest of a partial direct send first
    /// (its first bytes are already on the wire), then `parts` in order. With
    /// `close`, the last part is a close frame: `closing` is set under the lock
    /// so that no direct send can follow it. The [`Out::Tail`] that stands
    /// for a [`Tail`] is always in the batch that writes it (nothing is
    /// queued ahead of it), where the writer counts it.
    pub(crate) fn write_locked(
        &self,
        parts: &[&[u8]],
        close: bool,
        patience: Patience,
        stats: &Stats,
    ) -> Result<(), WriteFailed> {
        let mut guard = self.out.write.lock();
        if close {
            self.out.closing.store(true, Release);
        }
        if guard.tls.is_some() {
            return self.write_locked_tls(guard, parts, close, patience, stats);
        }
        let tail = guard.tail.take();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
        if let Some(t) = &tail {
            slices.push(IoSlice::new(&t.frame[t.written..]));
        }
        slices.extend(parts.iter().map(|p| IoSlice::new(p)));
        if !slices.is_empty() {
            self.send_all(&mut slices, patience, stats)?;
        }
        Ok(())
    }

    /// `write_all` for a vector of slices, under the write lock. A write that
    /// makes no progress for the patience allowed gives up and shuts the
    /// socket down.
    fn send_all(
        &self,
        mut slices: &mut [IoSlice<'_>],
        patience: Patience,
        stats: &Stats,
    ) -> Result<(), WriteFailed> {
        let mut stalled_since: Option<Instant> = None;
        let mut writes = 0u64;
        while !slices.is_empty() {
            if self.past_close_by() {
                return Err(self.write_failed("close timeout"));
            }
            match sock::send_vectored(&self.stream, slices) {
                Ok(0) => return Err(self.write_failed("socket closed")),
                Ok(n) => {
                    writes += 1;
                    stalled_since = None;
                    Stats::add(&stats.bytes_out, n as u64);
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    let limit = if self.is_closing() { patience.closing } else { patience.open };
                    if since.elapsed() >= limit {
                        return Err(self.write_failed("peer stopped reading"));
                    }
                }
                Err(e) => return Err(self.write_failed(&e.to_string())),
            }
        }
        Stats::add(&stats.write_batches, writes);
        Ok(())
    }

    pub(super) fn write_failed(&self, why: &str) -> WriteFailed {
        log::debug!("conn {}: write failed: {why}", self.id);
        self.kill();
        WriteFailed
    }

    /// What a partial direct send left: the rest of `frame` after `written`
    /// bytes, written by a writer before anything else. `message`: `frame`
    /// is a data frame (counted once its rest is written).
    pub(super) fn leave_tail(&self, st: &mut WriteState, frame: SharedFrame, written: usize, message: bool) {
        let rest = frame.len() - written;
        st.tail = Some(Tail { frame, written });
        self.out.depth.fetch_add(1, AcqRel);
        self.out.bytes.fetch_add(rest, AcqRel);
        self.enqueue(Out::Tail { bytes: rest, message });
    }

    /// Puts `item` on the queue, and starts a writer thread if none runs
    /// (a running one is woken by crossbeam).
    pub(super) fn enqueue(&self, item: Out) {
        let out = &self.out;
        // Never fails: the queue's receiver lives as long as its sender, here.
        let _ = out.tx.send(item);
        // Pairs with the fence in `writer_leaves`: either the leaving writer
        // sees this item, or this sees it gone and starts the next.
        fence(SeqCst);
        if out.writer.load(Relaxed) == NO_WRITER {
            self.start_writer();
        }
    }

    /// Makes the caller the queue's one writer, if none runs and the reader
    /// has not finished. The writer thread itself claims it again when it
    /// takes back a queue it was leaving ([`ConnShared::writer_leaves`]).
    pub(crate) fn claim_writer(&self) -> bool {
        self.out.writer.compare_exchange(NO_WRITER, WRITER_RUNS, AcqRel, Relaxed).is_ok()
    }

    /// Starts a writer thread for what is queued, unless one runs, the
    /// reader has finished, or the connection is not open yet (then
    /// [`ConnShared::open_writer`] starts it). A thread that cannot be
    /// started (the process is at its thread limit) ends the connection: its
    /// reading side is shut down, and the reader, at its end, writes what is
    /// queued (a stop's 1001, say) on its own thread
    /// ([`ConnShared::end_writer`]).
    fn start_writer(&self) {
        let Some(home) = self.out.home.get() else { return };
        if self.out.no_thread.load(Acquire) || !self.claim_writer() {
            return;
        }
        let Some(conn) = home.conn.upgrade() else {
            // Dropped already: nothing is left to write to.
            return self.writer_ended();
        };
        if let Err(e) = (home.start)(conn, false) {
            // Counted and logged (rate-limited) where it was started: `writer::starter`.
            log::debug!("conn {}: no writer thread ({e}); ending it", self.id);
            self.out.no_thread.store(true, Release);
            self.out.writer.store(NO_WRITER, Release);
            // A reader already waiting in `end_writer` takes it from here.
            futex::futex_wake_all(&self.out.writer);
            let _ = self.stream.shutdown(std::net::Shutdown::Read);
        }
    }

    /// The connection is open: from now on whoever queues an item starts a
    /// writer when none runs; one starts now for anything queued already
    /// (the TLS records of the handshake's last reads, a close).
    pub(crate) fn open_writer(&self, home: WriterHome) {
        let _ = self.out.home.set(home);
        // Pairs with the fence in `enqueue`: an item queued meanwhile is
        // seen here, or its sender sees the home set and starts the writer.
        fence(SeqCst);
        if !self.out.rx.is_empty() {
            self.start_writer();
        }
    }

    /// The queue, for its writer.
    pub(crate) fn queue(&self) -> &Receiver<Out> {
        &self.out.rx
    }

    /// The writer found the queue empty for its linger and gives the
    /// connection up. True: it has gone, and must not touch the queue again;
    /// false: an item came as it left and it is the writer still.
    pub(crate) fn writer_leaves(&self) -> bool {
        let out = &self.out;
        out.writer.store(NO_WRITER, Release);
        // Pairs with the fence in `enqueue`.
        fence(SeqCst);
        if out.rx.is_empty() {
            return true;
        }
        // Taken back, unless whoever queued it has started a writer already.
        !self.claim_writer()
    }

    /// The writer has seen the reader's end (or could not start): no writer
    /// runs again. Wakes the reader waiting in [`ConnShared::end_writer`].
    pub(crate) fn writer_ended(&self) {
        self.out.writer.store(WRITER_ENDED, Release);
        futex::futex_wake_all(&self.out.writer);
    }

    /// The reader's last step: when a writer runs (or something is queued),
    /// tells it the reader is done and waits until it has written what was
    /// queued before (the close reply, say) and ended; with nothing queued
    /// and no writer, marks the connection so that none starts again. When
    /// no writer thread could be started, it writes what is queued itself.
    pub(crate) fn end_writer(&self) {
        let out = &self.out;
        if out.rx.is_empty() && out.writer.compare_exchange(NO_WRITER, WRITER_ENDED, AcqRel, Relaxed).is_ok()
        {
            return;
        }
        // Starts a writer if none runs: it writes what is queued, then ends.
        self.enqueue(Out::ReaderDone);
        loop {
            if out.no_thread.load(Acquire) && self.claim_writer() {
                // No writer thread could be started: this thread, done
                // reading, is the writer, and ends it.
                let home = out.home.get().and_then(|home| Some((home, home.conn.upgrade()?)));
                if let Some((home, conn)) = home {
                    if (home.start)(conn, true).is_ok() {
                        return;
                    }
                }
                return self.writer_ended();
            }
            let now = out.writer.load(Acquire);
            if now == WRITER_ENDED {
                return;
            }
            // Bounded only so that a missed wakeup cannot hold the reader for long.
            futex::futex_wait(&out.writer, now, Duration::from_secs(1));
        }
    }

    /// No writer thread could be started for this connection: its reader
    /// writes what is queued at its end ([`ConnShared::end_writer`]).
    pub(crate) fn writer_cannot_start(&self) -> bool {
        self.out.no_thread.load(Acquire)
    }

    /// Holds the write lock, as a thread writing to the socket does.
    #[cfg(test)]
    pub(crate) fn out_write_lock_for_test(&self) -> parking_lot::MutexGuard<'_, WriteState> {
        self.out.write.lock()
    }

    /// A writer thread is draining this connection's queue now.
    #[cfg(test)]
    pub(crate) fn has_writer(&self) -> bool {
        self.out.writer.load(Acquire) == WRITER_RUNS
    }

    /// The heartbeat's bytes for this connection: a ping, or a comment line
    /// for an event stream.
    pub(crate) fn heartbeat_bytes(&self) -> &'static [u8] {
        if self.is_event_stream() {
            STREAM_HEARTBEAT
        } else {
            WS_HEARTBEAT
        }
    }

    /// Sends the heartbeat (the hub's timer, `hub/heartbeat.rs`): straight to
    /// the socket when nothing is queued or being written, like a direct
    /// send, so an idle connection needs no writer thread for it; else (the
    /// socket full, frames waiting) queued behind them, which starts a
    /// writer if none runs, unless a heartbeat queued earlier is still
    /// waiting there (it serves for this one). False, with nothing done,
    /// when `may_defer` and another thread holds the write lock (a frame
    /// going straight out): the connection is not idle, and queueing the
    /// ping would start a writer thread for it alone; the hub tries again
    /// soon. Nothing once a close is on its way. A socket that fails is shut
    /// down; its reader then ends the connection.
    pub(crate) fn send_heartbeat(&self, stats: &Stats, may_defer: bool) -> bool {
        let out = &self.out;
        if out.closing.load(Acquire) {
            return true;
        }
        let ping = self.heartbeat_bytes();
        if !self.has_queued() {
            match out.write.try_lock() {
                None if may_defer => return false,
                None => {}
                Some(st) => {
                    let idle =
                        st.tail.is_none() && !st.tls_tail && !self.has_queued() && !out.closing.load(Acquire);
                    if idle && self.heartbeat_direct(st, ping, stats) {
                        return true;
                    }
                }
            }
        }
        if out.heartbeat_queued.swap(true, AcqRel) {
            return true;
        }
        out.controls.fetch_add(1, AcqRel);
        out.bytes.fetch_add(ping.len(), AcqRel);
        self.enqueue(Out::Heartbeat);
        true
    }

    /// The heartbeat straight to the socket, under the write lock `st`
    /// (nothing queued or being written): true when it is taken care of
    /// (sent, its rest left as the [`Tail`], or the socket failed and was
    /// shut down); false when the socket is full and it must be queued.
    fn heartbeat_direct(
        &self,
        mut st: parking_lot::MutexGuard<'_, WriteState>,
        ping: &[u8],
        stats: &Stats,
    ) -> bool {
        if st.tls.is_some() {
            return self.send_direct_tls(&mut st, &[ping], stats, false);
        }
        match sock::send(&self.stream, ping, true) {
            Ok(n) if n == ping.len() => {
                Stats::add(&stats.bytes_out, n as u64);
                true
            }
            Ok(n) if n > 0 => {
                Stats::add(&stats.bytes_out, n as u64);
                self.leave_tail(&mut st, crate::frame::shared(ping.to_vec()), n, false);
                true
            }
            Err(e) if !matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                drop(st);
                self.write_failed(&e.to_string());
                true
            }
            // Full: it waits its turn behind nothing, with a writer.
            _ => false,
        }
    }

    /// Data or control frames are queued or being written.
    fn has_queued(&self) -> bool {
        self.out.depth.load(Acquire) != 0 || self.out.controls.load(Acquire) != 0
    }

    /// The peer sent its close (the reply is queued): nothing more is
    /// queued, and everything still queued (the reply last) must be written
    /// within `limit` from now, or the socket is shut down.
    pub(crate) fn peer_closed(&self, limit: Duration) {
        *self.out.close_by.lock() = Some(Instant::now() + limit);
        self.out.closing.store(true, Release);
    }

    /// Closing, and the time set by [`ConnShared::peer_closed`] has passed.
    pub(super) fn past_close_by(&self) -> bool {
        self.is_closing() && self.out.close_by.lock().is_some_and(|at| Instant::now() >= at)
    }

    /// Queues a close frame after everything queued so far. Only the first close
    /// counts; later ones are ignored.
    pub(crate) fn push_close(&self, code: u16, reason: &str) {
        if !self.out.closing.swap(true, AcqRel) {
            self.out.close_code.store(code, Release);
            self.enqueue(Out::Close(code, reason.to_owned()));
        }
    }

    /// Marks a slow consumer: queued data frames are dropped and it is closed with 1013.
    pub(crate) fn close_slow_consumer(&self) {
        self.out.discard.store(true, Release);
        self.push_close(1013, "slow consumer");
    }

    /// Queues bytes tungstenite wrote on the reader's side (a pong, the close
    /// reply), behind everything queued so far. Past [`PONGS_IN_FLIGHT`]
    /// unwritten pongs, a pong replaces the one still waiting in the slot
    /// instead of queueing another.
    pub(crate) fn push_control(&self, bytes: Vec<u8>) {
        let out = &self.out;
        if crate::frame::is_single_pong(&bytes) {
            let mut slot = out.pong.lock();
            if slot.is_none() && out.pongs_in_flight.load(Acquire) < PONGS_IN_FLIGHT {
                out.pongs_in_flight.fetch_add(1, AcqRel);
                out.controls.fetch_add(1, AcqRel);
                out.bytes.fetch_add(bytes.len(), AcqRel);
                drop(slot);
                self.enqueue(Out::Control(bytes));
                return;
            }
            let new_len = bytes.len();
            if let Some(old) = slot.replace(bytes) {
                // Its place in the queue is kept; only the payload is the newer one.
                out.bytes.fetch_add(new_len, AcqRel);
                out.bytes.fetch_sub(old.len(), AcqRel);
                return;
            }
            out.controls.fetch_add(1, AcqRel);
            out.bytes.fetch_add(new_len, AcqRel);
            drop(slot);
            self.enqueue(Out::Pong);
            return;
        }
        out.controls.fetch_add(1, AcqRel);
        out.bytes.fetch_add(bytes.len(), AcqRel);
        self.enqueue(Out::Control(bytes));
    }

    /// The writer dequeued an [`Out::Pong`]: the pong to write in its place,
    /// as a control frame (still counted until written). The next ping's pong
    /// queues anew.
    pub(crate) fn take_pong(&self) -> Out {
        let pong = self.out.pong.lock().take().unwrap_or_default();
        if crate::frame::is_single_pong(&pong) {
            // Counted like the pongs queued as controls, until `done`.
            self.out.pongs_in_flight.fetch_add(1, AcqRel);
        }
        Out::Control(pong)
    }

    /// `item` was written or dropped: it no longer holds the queue.
    pub(crate) fn done(&self, item: &Out) {
        let out = &self.out;
        match item {
            Out::Frame(f) => {
                out.bytes.fetch_sub(f.len(), AcqRel);
                out.depth.fetch_sub(1, AcqRel);
            }
            Out::Tail { bytes, .. } => {
                out.bytes.fetch_sub(*bytes, AcqRel);
                out.depth.fetch_sub(1, AcqRel);
            }
            Out::Heartbeat => {
                out.bytes.fetch_sub(self.heartbeat_bytes().len(), AcqRel);
                out.controls.fetch_sub(1, AcqRel);
                out.heartbeat_queued.store(false, Release);
            }
            Out::Control(bytes) => {
                if crate::frame::is_single_pong(bytes) {
                    out.pongs_in_flight.fetch_sub(1, AcqRel);
                }
                out.bytes.fetch_sub(bytes.len(), AcqRel);
                out.controls.fetch_sub(1, AcqRel);
            }
            // Dropped before the writer took its pong out of the slot.
            Out::Pong => {
                if let Out::Control(bytes) = self.take_pong() {
                    if crate::frame::is_single_pong(&bytes) {
                        out.pongs_in_flight.fetch_sub(1, AcqRel);
                    }
                    out.bytes.fetch_sub(bytes.len(), AcqRel);
                }
                out.controls.fetch_sub(1, AcqRel);
            }
            Out::Close(..) | Out::ReaderDone => {}
        }
    }

    /// Queues the reader's end, as [`ConnShared::end_writer`] does, without
    /// waiting: for a test that runs the writer itself.
    #[cfg(test)]
    pub(crate) fn push_reader_done(&self) {
        self.enqueue(Out::ReaderDone);
    }

    /// The queue's receiving end, for a test to look at what was queued
    /// (a connection that was never opened starts no writer to take it).
    #[cfg(test)]
    pub(crate) fn take_receiver(&self) -> Option<Receiver<Out>> {
        Some(self.out.rx.clone())
    }

    pub(crate) fn queue_depth(&self) -> usize {
        self.out.depth.load(Acquire)
    }

    /// Bytes queued or being written.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.out.bytes.load(Acquire)
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.out.closing.load(Acquire)
    }

    pub(crate) fn discards(&self) -> bool {
        self.out.discard.load(Acquire)
    }

    /// The code of the close the server queued, if it queued one.
    pub(crate) fn server_close_code(&self) -> Option<u16> {
        match self.out.close_code.load(Acquire) {
            0 => None,
            code => Some(code),
        }
    }
}

/// Counts a frame handed to a connection compressed.
pub(super) fn count_compressed(frame: &SharedFrame, stats: &Stats) {
    if let Some(plain) = frame.compressed_from() {
        Stats::add(&stats.compressed_frames, 1);
        Stats::add(&stats.compressed_bytes, frame.len() as u64);
        Stats::add(&stats.compressed_plain_bytes, plain as u64);
    }
}
