//! The writer half: a thread that drains a connection's outbound queue,
//! started only when the queue needs one. (Other threads write to the socket
//! too, straight past the queue when nothing is queued: `outbound.rs` says who
//! and how order is kept, and how a writer is started and handed the queue.)
//!
//! An idle connection has no writer: what is sent to it goes straight to its
//! socket, and the hub sends its heartbeat (`hub/heartbeat.rs`). Once
//! something must wait (the socket took only part of a frame, frames queue
//! behind it, a pong or close reply, a close), whoever queued it starts a
//! writer. The writer takes everything queued (up to `write_buffer_size`
//! bytes) and writes it with one `writev`: under load many frames leave in
//! one syscall. When the queue has stayed empty for its linger it ends. After
//! it has written a close frame it writes nothing more, and stays until the
//! reader has finished (the close handshake's deadline is its to keep). For an
//! event stream it writes the same way, with no close frame: a close ends the
//! stream. A writer that panics ends its connection ([`EndsOnPanic`]), so
//! its reader is never left waiting for it.

use std::net::Shutdown;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::outbound::{Out, Patience, StartWriter};
use super::ConnShared;
use crate::config::Config;
use crate::frame;
use crate::stats::{Stats, ThreadKind};
use crate::sys::pthread;

/// Most frames in one batch (Linux's IOV_MAX is 1024).
const MAX_BATCH_FRAMES: usize = 512;
/// How often a blocked write wakes up to check its deadlines.
const WRITE_TICK: Duration = Duration::from_millis(250);
/// How long a writer waits with nothing queued before it ends: long enough
/// that a connection receiving a steady stream it cannot take at once keeps
/// one thread instead of starting one per burst.
pub(crate) const WRITER_LINGER: Duration = Duration::from_secs(5);

/// What every writer thread of one server needs, shared by them all.
#[derive(Debug)]
pub(crate) struct WriterEnv {
    pub(crate) stats: Arc<Stats>,
    /// Writer threads started and not yet gone (see `pthread::reap_detached`);
    /// those started in all are `Stats::writer_threads_started`.
    pub(crate) live: Arc<AtomicUsize>,
    patience: Patience,
    close_timeout: Duration,
    write_buffer_size: usize,
    stack_size: usize,
    /// How long a writer with nothing queued waits before it ends.
    pub(crate) linger: Duration,
    /// A test's writers panic as they start a batch.
    #[cfg(test)]
    pub(crate) panic_in_batch: bool,
}

impl WriterEnv {
    pub(crate) fn new(config: &Config, stats: Arc<Stats>) -> Self {
        WriterEnv {
            stats,
            live: Arc::default(),
            patience: Patience { open: config.idle_timeout, closing: config.close_timeout },
            close_timeout: config.close_timeout,
            write_buffer_size: config.write_buffer_size,
            stack_size: config.writer_stack_size,
            linger: WRITER_LINGER,
            #[cfg(test)]
            panic_in_batch: false,
        }
    }
}

/// What starts the writer threads of connections of one server
/// (`ConnShared::open_writer`): each on a thread of its own, for a
/// connection the caller has claimed for it (`ConnShared::claim_writer`);
/// with `here`, on the calling thread (see [`StartWriter`]).
pub(crate) fn starter(env: Arc<WriterEnv>) -> StartWriter {
    Arc::new(move |conn: Arc<ConnShared>, here: bool| {
        if here {
            // On the reader's thread, at its end: a panic ends the connection
            // (`EndsOnPanic`), and stops here, so the reader still gives the
            // connection back (registry, counts) as a writer thread's would.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(conn, &env)));
            return Ok(());
        }
        let env = env.clone();
        let (id, stack, live, stats) = (conn.id, env.stack_size, env.live.clone(), env.stats.clone());
        match pthread::spawn_detached(&format!("wshub-w{id}"), stack, &live, move || run(conn, &env)) {
            Ok(()) => {
                Stats::add(&stats.writer_threads_started, 1);
                Ok(())
            }
            Err(e) => {
                stats.thread_spawn_failed(ThreadKind::Writer, id, &e);
                Err(e)
            }
        }
    })
}

/// A writer's life: drains the queue until the reader's end (then marks the
/// connection so that no writer starts again), or until the queue has stayed
/// empty for the linger (then it hands the queue back).
pub(crate) fn run(conn: Arc<ConnShared>, env: &WriterEnv) {
    let _unwinding = EndsOnPanic(&conn);
    let _ = conn.stream.set_write_timeout(Some(WRITE_TICK.min(env.close_timeout)));
    let stream = conn.is_event_stream();
    let rx = conn.queue();
    let mut w = Writer { conn: &conn, env, reader_done: false, stream };
    let mut batch: Vec<Out> = Vec::new();
    loop {
        let first = match rx.recv_timeout(env.linger) {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                if conn.writer_leaves() {
                    return; // not ours any more: the next item starts a writer
                }
                continue;
            }
            // The queue's sender lives in the connection, as long as `rx`.
            Err(RecvTimeoutError::Disconnected) => break,
        };
        batch.push(dequeued(&conn, first));
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_FRAMES && bytes < env.write_buffer_size {
            match rx.try_recv() {
                Ok(item) => {
                    if let Out::Frame(f) = &item {
                        bytes += f.len();
                    }
                    batch.push(dequeued(&conn, item));
                }
                Err(_) => break,
            }
        }
        match w.write_batch(&mut batch) {
            Step::Continue => {}
            Step::ReaderDone => break,
            Step::Closed => {
                w.after_close(rx);
                break;
            }
            Step::Failed => {
                w.wait_for_reader(rx);
                break;
            }
        }
    }
    conn.writer_ended();
}

/// Ends the connection when its writer panics: nothing would drain its
/// queue again, and its reader would wait for the writer's end for good.
/// The socket is shut down in both directions (the peer sees the end, the
/// reader's read returns and it finishes the connection), and the writer
/// counts as ended, so the reader's last wait (`ConnShared::end_writer`)
/// returns and no writer starts again. The panic itself goes on to the
/// thread's start, which logs it.
struct EndsOnPanic<'a>(&'a ConnShared);

impl Drop for EndsOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("conn {}: its writer panicked; ending the connection", self.0.id);
            self.0.kill();
            self.0.writer_ended();
        }
    }
}

/// An item as it comes off the queue: a pong marker becomes the latest pong.
fn dequeued(conn: &ConnShared, item: Out) -> Out {
    match item {
        Out::Pong => conn.take_pong(),
        other => other,
    }
}

enum Step {
    Continue,
    /// A close frame went out: nothing more may be sent.
    Closed,
    ReaderDone,
    Failed,
}

struct Writer<'a> {
    conn: &'a ConnShared,
    env: &'a WriterEnv,
    /// The reader's `ReaderDone` has been taken off the queue (it is sent once,
    /// and may arrive in any batch, so every wait checks this first).
    reader_done: bool,
    /// An event stream: a close writes no close frame, and ends the stream.
    stream: bool,
}

impl Writer<'_> {
    /// Writes the batch up to its first close, in order, and empties it
    /// (after the rest of a partial direct send, if any: see
    /// [`ConnShared::write_locked`]).
    fn write_batch(&mut self, batch: &mut Vec<Out>) -> Step {
        #[cfg(test)]
        assert!(!self.env.panic_in_batch, "a test's writer panics");
        let discard = self.conn.discards();
        let mut close_frame = None;
        let mut step = Step::Continue;
        let mut end = batch.len();
        for (i, item) in batch.iter().enumerate() {
            match item {
                Out::Control(bytes) if frame::contains_close(bytes) => {
                    step = Step::Closed;
                    end = i + 1;
                    break;
                }
                Out::Close(code, reason) => {
                    if !self.stream {
                        close_frame = Some(frame::encode_close(*code, reason));
                    }
                    step = Step::Closed;
                    end = i;
                    break;
                }
                Out::ReaderDone => {
                    self.reader_done = true;
                    step = Step::ReaderDone;
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        // Frames behind the first close are never sent (they are still
        // released below); do not lose the reader's goodbye if it is among them.
        if batch.iter().any(|item| matches!(item, Out::ReaderDone)) {
            self.reader_done = true;
        }
        // One client's frames are compressed here, just before framing the
        // batch (`ConnShared::writer_form`): (position in the batch, form).
        let mut forms: Vec<(usize, frame::SharedFrame)> = Vec::new();
        if !discard {
            for (i, item) in batch[..end].iter().enumerate() {
                if let Out::Frame(f) = item {
                    if let Some(form) = self.conn.writer_form(f, &self.env.stats) {
                        forms.push((i, form));
                    }
                }
            }
        }
        let mut forms_left = forms.iter().peekable();
        let mut parts: Vec<&[u8]> = Vec::with_capacity(end + 1);
        let mut data_frames = 0u64;
        for (i, item) in batch[..end].iter().enumerate() {
            match item {
                Out::Frame(f) if !discard => {
                    match forms_left.next_if(|(at, _)| *at == i) {
                        Some((_, form)) => parts.push(form),
                        None => parts.push(f),
                    }
                    data_frames += 1;
                }
                Out::Control(bytes) => parts.push(bytes),
                Out::Heartbeat => parts.push(self.conn.heartbeat_bytes()),
                // Its bytes are the write lock's `Tail`, written first.
                Out::Tail { message: true, .. } => data_frames += 1,
                _ => {}
            }
        }
        if let Some(close) = &close_frame {
            parts.push(close);
        }
        let closed = matches!(step, Step::Closed);
        let result = self.conn.write_locked(&parts, closed, self.env.patience, &self.env.stats);
        drop(parts);
        // Released only now: while frames are being written the hub must not
        // send around them.
        for item in batch.drain(..) {
            self.conn.done(&item);
        }
        match result {
            Err(_) => Step::Failed,
            Ok(()) => {
                Stats::add(&self.env.stats.messages_out, data_frames);
                step
            }
        }
    }

    /// After a close frame: half-close, so the peer sees the end promptly, then
    /// give the reader `close_timeout` to see the peer's close before forcing it.
    fn after_close(&mut self, rx: &Receiver<Out>) {
        if self.stream {
            // No closing handshake: the end of the stream is the close, and
            // ending both directions wakes the reader at once.
            self.conn.kill();
            return self.wait_for_reader(rx);
        }
        let _ = self.conn.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + self.env.close_timeout;
        while !self.reader_done {
            match rx.recv_deadline(deadline) {
                Ok(Out::ReaderDone) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(item) => self.conn.done(&item),
                Err(RecvTimeoutError::Timeout) => {
                    self.conn.kill();
                    return self.wait_for_reader(rx);
                }
            }
        }
    }

    /// The socket is dead: wait for the reader (woken by the shutdown) to finish.
    fn wait_for_reader(&mut self, rx: &Receiver<Out>) {
        if self.reader_done {
            return;
        }
        loop {
            match rx.recv() {
                Ok(Out::ReaderDone) | Err(_) => return,
                Ok(item) => self.conn.done(&item),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::outbound::{QueueLimits, WriterHome};
    use crate::connection::test_support::loopback_conn;
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    const LIMITS: QueueLimits = QueueLimits { frames: 1024, bytes: usize::MAX };

    /// Runs a writer for `conn` on this thread (a test connection is never
    /// opened, so nothing queued starts one of its own).
    fn run_here(conn: &Arc<ConnShared>, stats: &Arc<Stats>) {
        let env = WriterEnv::new(&Config::default(), stats.clone());
        assert!(conn.claim_writer());
        run(conn.clone(), &env);
    }

    /// A loopback connection opened as the engine opens one (items queued
    /// start writer threads), its writers lingering `linger` before they
    /// hand the queue back; the peer's end, and the writers' environment.
    fn opened_with_linger(
        id: crate::types::ConnId,
        linger: Duration,
        stats: &Arc<Stats>,
    ) -> (Arc<ConnShared>, std::net::TcpStream, Arc<WriterEnv>) {
        let (conn, peer) = loopback_conn(id);
        let mut env = WriterEnv::new(&Config::default(), stats.clone());
        env.linger = linger;
        let env = Arc::new(env);
        conn.open_writer(WriterHome { start: starter(env.clone()), conn: Arc::downgrade(&conn) });
        (conn, peer, env)
    }

    /// Runs a writer for `conn` on a thread of its own (what is queued ends
    /// with the reader's end) and returns every byte the peer read until EOF.
    fn written_to_the_end(conn: &Arc<ConnShared>, stats: &Arc<Stats>, peer: &mut impl Read) -> Vec<u8> {
        let writer = {
            let (conn, stats) = (conn.clone(), stats.clone());
            std::thread::spawn(move || run_here(&conn, &stats))
        };
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got
    }

    #[test]
    fn frames_queued_together_leave_in_one_writev_and_nothing_after_a_close() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let mut expected = Vec::new();
        for i in 0..100u32 {
            let f = frame::shared(frame::encode(frame::OP_BINARY, &i.to_be_bytes()));
            expected.extend_from_slice(&f);
            conn.push_frame(f, LIMITS, &stats).unwrap();
        }
        conn.push_close(1000, "done");
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        // Queued behind the close: must never reach the wire.
        conn.push_control(frame::encode(frame::OP_TEXT, b"too late"));
        conn.push_reader_done();

        run_here(&conn, &stats);

        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap(); // the writer half-closed after the close
        assert_eq!(got, expected);
        assert_eq!(stats.messages_out.load(Relaxed), 100);
        assert_eq!(stats.write_batches.load(Relaxed), 1, "101 frames, one writev");
        assert_eq!(conn.queue_depth(), 0);
    }

    #[test]
    fn the_rest_of_a_partial_direct_send_leaves_before_anything_queued() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        // Far more than loopback's socket buffers hold: the peer is not reading
        // yet, so the non-blocking send takes only part of it.
        let big: crate::frame::SharedFrame =
            frame::shared(frame::encode(frame::OP_BINARY, &vec![5u8; 32 << 20]));
        assert!(conn.try_send_direct(&big, &stats));
        assert_eq!(conn.queue_depth(), 1, "its unsent rest holds the queue");
        assert_eq!(stats.direct_sends.load(Relaxed), 0);
        let small: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"after"));
        assert!(!conn.try_send_direct(&small, &stats), "must not overtake the rest");
        conn.push_frame(small.clone(), LIMITS, &stats).unwrap();
        conn.push_close(1000, "done");
        conn.push_reader_done();

        let got = written_to_the_end(&conn, &stats, &mut peer);
        let mut expected = big.to_vec();
        expected.extend_from_slice(&small);
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive whole and in order");
        assert_eq!(stats.messages_out.load(Relaxed), 2);
        assert_eq!(conn.queue_depth(), 0);
    }

    #[test]
    fn a_corked_round_the_socket_takes_in_part_leaves_its_rest_then_the_queue_in_order() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        // A round of frames far larger than loopback's socket buffers, the
        // peer not reading yet: one writev takes the first ones and part of one.
        let round: Vec<crate::frame::SharedFrame> =
            (0..64u8).map(|i| frame::shared(frame::encode(frame::OP_BINARY, &vec![i; 1 << 20]))).collect();
        let sent = conn.try_send_direct_many(&round, &stats);
        assert!(sent > 0 && sent < round.len(), "{sent} of {}", round.len());
        assert_eq!(conn.queue_depth(), 1, "the rest of the frame cut short holds the queue");
        for f in &round[sent..] {
            conn.push_frame(f.clone(), LIMITS, &stats).unwrap();
        }
        // Neither a later round nor a direct send may overtake what is queued.
        let after: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"after"));
        assert_eq!(conn.try_send_direct_many(&[after.clone(), after.clone()], &stats), 0);
        assert!(!conn.try_send_direct(&after, &stats));
        conn.push_frame(after.clone(), LIMITS, &stats).unwrap();
        conn.push_close(1000, "done");
        conn.push_reader_done();

        let got = written_to_the_end(&conn, &stats, &mut peer);
        let mut expected: Vec<u8> = round.iter().flat_map(|f| f.iter().copied()).collect();
        expected.extend_from_slice(&after);
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive whole and in order");
        assert_eq!(stats.messages_out.load(Relaxed), 65);
        assert_eq!(conn.queue_depth(), 0);
    }

    #[test]
    fn a_corked_round_to_a_deflate_member_goes_in_its_forms_and_stops_at_a_reply_to_compress() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        conn.set_deflate(usize::MAX, 128);
        let long = "{\"type\":\"message\",\"data\":\"the quick brown fox\"} ".repeat(20);
        let room = |b: &[u8]| frame::shared(frame::encode(frame::OP_TEXT, b));
        // Compressed, plain (under the minimum), compressed, then one
        // client's reply that the writer compresses, and a frame behind it.
        let round = [room(long.as_bytes()), room(b"short"), room(long.as_bytes())];
        let reply = frame::single(frame::encode(frame::OP_TEXT, long.as_bytes()));
        let mine: Vec<&crate::frame::SharedFrame> = round.iter().chain([&reply, &round[1]]).collect();
        assert_eq!(conn.try_send_direct_many(&mine, &stats), 3, "up to the reply the writer compresses");
        let forms: Vec<crate::frame::SharedFrame> =
            round.iter().map(|f| f.for_deflate(usize::MAX, 128)).collect();
        let want: Vec<u8> = forms.iter().flat_map(|f| f.to_vec()).collect();
        let mut got = vec![0u8; want.len()];
        peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        peer.read_exact(&mut got).unwrap();
        assert!(got == want, "each frame in this member's form, in order");
        assert_eq!(got[0], 0xC1, "compressed: FIN, RSV1, text");
        assert_eq!(stats.compressed_frames.load(Relaxed), 2);
        assert_eq!((stats.messages_out.load(Relaxed), stats.direct_sends.load(Relaxed)), (3, 3));
        assert_eq!(conn.queue_depth(), 0);
    }

    #[test]
    fn a_corked_round_never_overtakes_a_queued_pong() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let pong = frame::encode(0xA, b"p");
        conn.push_control(pong.clone());
        let round: Vec<crate::frame::SharedFrame> =
            (0..3u8).map(|i| frame::shared(frame::encode(frame::OP_TEXT, &[b'a' + i]))).collect();
        assert_eq!(conn.try_send_direct_many(&round, &stats), 0, "the pong is still queued");
        for f in &round {
            conn.push_frame(f.clone(), LIMITS, &stats).unwrap();
        }
        conn.push_close(1000, "");
        conn.push_reader_done();
        run_here(&conn, &stats);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut expected = pong;
        round.iter().for_each(|f| expected.extend_from_slice(f));
        expected.extend_from_slice(&frame::encode_close(1000, ""));
        assert_eq!(got, expected);
    }

    #[test]
    fn one_clients_frame_is_compressed_just_before_it_is_written_never_by_the_hub() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        conn.set_deflate(usize::MAX, 128);
        let text = "{\"type\":\"ack\",\"payload\":\"the quick brown fox\"} ".repeat(40);
        let reply = frame::single(frame::encode(frame::OP_TEXT, text.as_bytes()));
        assert!(!conn.try_send_direct(&reply, &stats), "the hub's direct send leaves it to the writer");
        conn.push_frame(reply.clone(), LIMITS, &stats).unwrap();
        assert_eq!(conn.queued_bytes(), reply.len(), "queued plain: compressed by the writer");
        assert_eq!(stats.compressed_frames.load(Relaxed), 0);
        // One byte short of the minimum, then exactly at it.
        let short = frame::single(frame::encode(frame::OP_TEXT, &[b'a'; 127]));
        let at_min = frame::single(frame::encode(frame::OP_BINARY, &[b'b'; 128]));
        conn.push_frame(short.clone(), LIMITS, &stats).unwrap();
        conn.push_frame(at_min, LIMITS, &stats).unwrap();
        conn.push_close(1000, "");
        conn.push_reader_done();
        run_here(&conn, &stats);

        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut at = std::io::Cursor::new(&got[..]);
        let mut next = || {
            let (header, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut at).unwrap().unwrap();
            let start = at.position() as usize;
            at.set_position((start + len as usize) as u64);
            (header, got[start..start + len as usize].to_vec())
        };
        let (h, payload) = next();
        assert!(h.rsv1 && h.is_final, "compressed: RSV1 set");
        assert!(payload.len() * 3 < text.len());
        assert_eq!(crate::connection::inflate::inflate(&payload, text.len()).unwrap(), text.as_bytes());
        let (h, payload) = next();
        assert!(!h.rsv1, "under the minimum: plain");
        assert_eq!(payload, [b'a'; 127]);
        let (h, payload) = next();
        assert!(h.rsv1, "at the minimum: compressed");
        assert_eq!(crate::connection::inflate::inflate(&payload, 128).unwrap(), [b'b'; 128]);
        assert_eq!(stats.compressed_frames.load(Relaxed), 2);
        assert_eq!(stats.messages_out.load(Relaxed), 3);
        assert_eq!(conn.queued_bytes(), 0, "released by the plain length it was queued with");
        // A short one-client frame still goes straight to the socket; a long
        // one too from a thread that is not the hub, compressed by it.
        let (conn, mut peer) = loopback_conn(2);
        conn.set_deflate(usize::MAX, 128);
        assert!(conn.try_send_direct(&short, &stats));
        assert!(conn.try_send_direct_compressing(&reply, &stats));
        let mut got = vec![0u8; short.len() + 1];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got[..short.len()], short[..]);
        assert_eq!(got[short.len()], 0xC1, "compressed: FIN, RSV1, text");
        assert_eq!(stats.compressed_frames.load(Relaxed), 3);
    }

    #[test]
    fn a_direct_send_never_overtakes_a_queued_pong() {
        // Autobahn 5.6: fragment, ping, fragment; the pong (queued by the
        // reader) must reach the peer before the echo of the whole message.
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let pong = frame::encode(0xA, b"p"); // a pong frame
        conn.push_control(pong.clone());
        let reply: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"reply"));
        assert!(!conn.try_send_direct(&reply, &stats), "the pong is still queued");
        conn.push_frame(reply.clone(), LIMITS, &stats).unwrap();
        conn.push_close(1000, "");
        conn.push_reader_done();
        run_here(&conn, &stats);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut expected = pong;
        expected.extend_from_slice(&reply);
        expected.extend_from_slice(&frame::encode_close(1000, ""));
        assert_eq!(got, expected);
        let fresh: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"x"));
        assert!(!conn.try_send_direct(&fresh, &stats), "closed: nothing more");
    }

    #[test]
    fn a_heartbeat_goes_straight_to_an_idle_socket_and_waits_behind_a_backlog() {
        let stats = Arc::new(Stats::default());
        // Idle: straight out, nothing queued, no writer, not a message.
        let (conn, mut peer) = loopback_conn(1);
        conn.send_heartbeat(&stats, false);
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [0x89, 0x00]);
        assert_eq!((conn.queue_depth(), conn.queued_bytes()), (0, 0));
        assert!(!conn.has_writer());
        // Backed up: behind the rest of a partial send, ahead of what follows.
        let (conn, mut peer) = loopback_conn(2);
        let big: crate::frame::SharedFrame =
            frame::shared(frame::encode(frame::OP_BINARY, &vec![5u8; 32 << 20]));
        assert!(conn.try_send_direct(&big, &stats));
        assert_eq!(conn.queue_depth(), 1, "its unsent rest holds the queue");
        conn.send_heartbeat(&stats, false);
        let after: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"after"));
        assert!(!conn.try_send_direct(&after, &stats), "the heartbeat is queued");
        conn.push_frame(after.clone(), LIMITS, &stats).unwrap();
        conn.push_close(1000, "done");
        conn.push_reader_done();
        let got = written_to_the_end(&conn, &stats, &mut peer);
        let mut expected = big.to_vec();
        expected.extend_from_slice(&[0x89, 0x00]);
        expected.extend_from_slice(&after);
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        assert!(got == expected, "the bytes arrive whole and in order");
        assert_eq!(stats.messages_out.load(Relaxed), 2, "two data frames; heartbeats are not messages");
        assert_eq!(conn.queued_bytes(), 0);
    }

    /// A heartbeat that finds another thread writing is put off (nothing
    /// queued, no writer) when it may be, queued when it may not; while one
    /// heartbeat waits in the queue, the next ones are not queued again.
    #[test]
    fn a_heartbeat_is_put_off_while_another_thread_writes_and_queued_once_at_most() {
        let stats = Arc::new(Stats::default());
        let (conn, mut peer) = loopback_conn(1);
        let rx = conn.take_receiver().unwrap();
        {
            let _writing = conn.out_write_lock_for_test();
            assert!(!conn.send_heartbeat(&stats, true), "put off");
            assert!(rx.is_empty() && conn.queued_bytes() == 0, "nothing queued for it");
            assert!(conn.send_heartbeat(&stats, false), "too late to put off: queued");
            assert!(conn.send_heartbeat(&stats, false), "one queued already serves");
            assert!(conn.send_heartbeat(&stats, true));
        }
        assert_eq!(rx.len(), 1, "one heartbeat queued, not three");
        assert_eq!(conn.queued_bytes(), 2);
        let item = rx.try_recv().unwrap();
        assert!(matches!(item, Out::Heartbeat));
        conn.done(&item);
        // Written: the next one goes straight out again.
        assert!(conn.send_heartbeat(&stats, true));
        let mut got = [0u8; 2];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, [0x89, 0x00]);
        assert!(rx.is_empty());
    }

    /// Frames of `len` bytes whose payload starts with `tag`.
    fn tagged(opcode: u8, tag: u64, len: usize) -> Vec<u8> {
        let mut payload = vec![0u8; len];
        payload[..8].copy_from_slice(&tag.to_be_bytes());
        frame::encode(opcode, &payload)
    }

    /// The sender's side, as the hub and `send` drive it: single frames sent
    /// directly or queued, corked rounds of several (one `writev`, the rest
    /// queued), and pongs the reader queues, all tagged from one counter,
    /// while writers start and end under it (a linger of zero or a few
    /// microseconds: a writer ends whenever the queue runs dry). The peer
    /// reads in bursts with pauses, so the socket fills and empties. Every
    /// data frame must arrive once and in order, and no pong before a frame
    /// that was queued ahead of it.
    #[test]
    fn writers_started_and_ended_while_frames_arrive_lose_and_reorder_nothing() {
        const FRAMES: u64 = 1500;
        const PAYLOAD: usize = 4000;
        // Unbounded here: the bound is not what this test is about.
        const LIMITS: QueueLimits = QueueLimits { frames: usize::MAX, bytes: usize::MAX };
        let stats = Arc::new(Stats::default());
        for round in 0..8u64 {
            let linger = Duration::from_micros(if round % 2 == 0 { 0 } else { 300 });
            let (conn, mut peer, env) = opened_with_linger(round + 1, linger, &stats);
            let reader = std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let (mut next_data, mut pongs, mut reads) = (0u64, 0u64, 0u64);
                peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                while next_data < FRAMES {
                    let n = peer.read(&mut chunk).expect("the server's frames");
                    assert!(n > 0, "the socket ended after {next_data} frames");
                    buf.extend_from_slice(&chunk[..n]);
                    reads += 1;
                    if reads.is_multiple_of(16) {
                        std::thread::sleep(Duration::from_millis(1)); // let the socket fill
                    }
                    let mut at = std::io::Cursor::new(&buf[..]);
                    let mut used = 0;
                    while let Ok(Some((header, len))) =
                        tungstenite::protocol::frame::FrameHeader::parse(&mut at)
                    {
                        let start = at.position() as usize;
                        let end = start + len as usize;
                        if end > buf.len() {
                            break;
                        }
                        let tag = u64::from_be_bytes(buf[start..start + 8].try_into().unwrap());
                        match header.opcode {
                            tungstenite::protocol::frame::coding::OpCode::Control(_) => {
                                assert!(tag >= next_data, "a pong ({tag}) overtook frame {next_data}");
                                pongs += 1;
                            }
                            _ => {
                                assert_eq!(tag, next_data, "frame lost or out of order");
                                next_data += 1;
                            }
                        }
                        at.set_position(end as u64);
                        used = end;
                    }
                    buf.drain(..used);
                }
                pongs
            });
            let mut tag = 0u64;
            while tag < FRAMES {
                match tag % 7 {
                    // A corked round of three: one writev, the rest queued behind.
                    0 if tag + 3 <= FRAMES => {
                        let round: Vec<_> = (tag..tag + 3)
                            .map(|t| frame::shared(tagged(frame::OP_BINARY, t, PAYLOAD)))
                            .collect();
                        let sent = conn.try_send_direct_many(&round, &stats);
                        for f in &round[sent..] {
                            conn.push_frame(f.clone(), LIMITS, &stats).unwrap();
                        }
                        tag += 3;
                        continue;
                    }
                    // A pong, queued; it carries the tag of the next data frame.
                    3 => conn.push_control(tagged(0xA, tag, 8)),
                    _ => {}
                }
                let f = frame::shared(tagged(frame::OP_BINARY, tag, PAYLOAD));
                if !conn.try_send_direct(&f, &stats) {
                    conn.push_frame(f, LIMITS, &stats).unwrap();
                }
                tag += 1;
                if tag.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_micros(200)); // the queue may run dry
                }
                if tag.is_multiple_of(250) {
                    // Here it must: the writer drains, leaves, and the next
                    // pong starts another.
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while conn.has_writer() {
                        assert!(Instant::now() < deadline, "round {round}: the writer never left");
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
            }
            let pongs = reader.join().expect("the peer saw every frame in order");
            assert!(pongs > 0, "round {round}: no pong arrived");
            conn.end_writer();
            let deadline = Instant::now() + Duration::from_secs(20);
            while env.live.load(std::sync::atomic::Ordering::Acquire) > 0 {
                assert!(Instant::now() < deadline, "round {round}: a writer thread is left");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert!(!conn.has_writer());
        }
        let started = stats.writer_threads_started.load(Relaxed);
        assert!(started >= 16, "writers were started {started} times: the hand-off was not exercised");
    }

    /// At the process's thread limit a writer thread cannot start: the
    /// connection ends (its reading side is shut down, which wakes its
    /// reader), and what was queued (a stop's 1001) still reaches the peer,
    /// written by the reader at its end instead of lost with the socket.
    #[test]
    fn a_connection_whose_writer_cannot_start_still_gets_what_was_queued() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let env = Arc::new(WriterEnv::new(&Config::default(), stats.clone()));
        let real = starter(env.clone());
        let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start: StartWriter = {
            let tries = tries.clone();
            Arc::new(move |conn: Arc<ConnShared>, here: bool| {
                if here {
                    return real(conn, true);
                }
                tries.fetch_add(1, Relaxed);
                Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
            })
        };
        conn.open_writer(WriterHome { start, conn: Arc::downgrade(&conn) });
        let text: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"last words"));
        conn.push_frame(text.clone(), LIMITS, &stats).unwrap();
        conn.push_close(1001, "server shutting down");
        assert_eq!(tries.load(Relaxed), 1, "one try, not one per item");
        // The reader's side was shut down: its next read ends at once.
        let mut reader_side = conn.stream.try_clone().unwrap();
        reader_side.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(reader_side.read(&mut [0u8; 16]).unwrap(), 0, "the reader is woken");
        conn.end_writer();
        assert!(!conn.has_writer());
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut expected = text.to_vec();
        expected.extend_from_slice(&frame::encode_close(1001, "server shutting down"));
        assert_eq!(got, expected);
        assert_eq!(conn.queue_depth(), 0);
    }

    /// At the thread limit the reader writes what was queued itself, as the
    /// writer, at its end: a panic there ends the connection like a writer
    /// thread's, and does not unwind through the reader's last step (the
    /// reader has the connection's registry entry still to give back).
    #[test]
    fn a_writer_that_panics_on_the_readers_thread_leaves_the_readers_end_to_it() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let mut env = WriterEnv::new(&Config::default(), stats.clone());
        env.panic_in_batch = true;
        let real = starter(Arc::new(env));
        let start: StartWriter = Arc::new(move |conn: Arc<ConnShared>, here: bool| {
            if here {
                return real(conn, true);
            }
            Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
        });
        conn.open_writer(WriterHome { start, conn: Arc::downgrade(&conn) });
        let text: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"x"));
        conn.push_frame(text, LIMITS, &stats).unwrap(); // no thread: the reader's to write
        let reader = {
            let conn = conn.clone();
            std::thread::spawn(move || conn.end_writer())
        };
        assert!(reader.join().is_ok(), "the writer's panic went through the reader's end");
        assert!(!conn.has_writer());
        peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        assert!(peer.read_to_end(&mut rest).is_ok(), "the peer sees the socket end");
    }

    /// A writer thread that panics ends its connection: the socket is shut
    /// down (the peer sees its end, the reader's read returns), the reader's
    /// last wait for the writer returns, and no thread is left.
    #[test]
    fn a_writer_that_panics_ends_its_connection_and_releases_its_reader() {
        let stats = Arc::new(Stats::default());
        let (conn, mut peer) = loopback_conn(1);
        let mut env = WriterEnv::new(&Config::default(), stats.clone());
        env.panic_in_batch = true;
        let env = Arc::new(env);
        conn.open_writer(WriterHome { start: starter(env.clone()), conn: Arc::downgrade(&conn) });
        // The reader: reads until the socket ends, then waits for the writer.
        let (ended_tx, ended) = crossbeam_channel::bounded(1);
        let reader = {
            let conn = conn.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while matches!((&conn.stream).read(&mut buf), Ok(n) if n > 0) {}
                conn.end_writer();
                let _ = ended_tx.send(());
            })
        };
        let text: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"x"));
        conn.push_frame(text, LIMITS, &stats).unwrap(); // starts the writer, which panics
        assert!(
            ended.recv_timeout(Duration::from_secs(20)).is_ok(),
            "the reader is still waiting (its socket open, or its writer never counted as ended)"
        );
        reader.join().unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut rest = Vec::new();
        assert!(peer.read_to_end(&mut rest).is_ok(), "the peer sees the socket end");
        let deadline = Instant::now() + Duration::from_secs(20);
        while env.live.load(std::sync::atomic::Ordering::Acquire) > 0 {
            assert!(Instant::now() < deadline, "the writer thread is left");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!conn.has_writer());
    }

    /// Several threads at once (the hub, `send` from application threads, the
    /// reader's pongs) send to one connection while its writer starts and
    /// leaves (linger zero): each thread's frames arrive once and in that
    /// thread's order, and nothing is left queued without a writer.
    #[test]
    fn writers_handed_off_under_several_senders_lose_and_reorder_nothing() {
        const SENDERS: u64 = 4;
        const FRAMES: u64 = 400;
        const LIMITS: QueueLimits = QueueLimits { frames: usize::MAX, bytes: usize::MAX };
        let rounds: u64 =
            std::env::var("WSHUB_HANDOFF_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(6);
        let stats = Arc::new(Stats::default());
        for round in 0..rounds {
            let linger = Duration::from_micros(if round % 2 == 0 { 0 } else { 50 });
            let (conn, mut peer, env) = opened_with_linger(round + 1, linger, &stats);
            let reader = std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = vec![0u8; 64 * 1024];
                let mut next = [0u64; SENDERS as usize];
                peer.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut reads = 0u64;
                while next.iter().any(|n| *n < FRAMES) {
                    let n = peer
                        .read(&mut chunk)
                        .unwrap_or_else(|e| panic!("round {round}: stuck at {next:?}: {e}"));
                    assert!(n > 0);
                    buf.extend_from_slice(&chunk[..n]);
                    reads += 1;
                    if reads.is_multiple_of(8) {
                        std::thread::sleep(Duration::from_micros(300));
                    }
                    let mut at = std::io::Cursor::new(&buf[..]);
                    let mut used = 0;
                    while let Ok(Some((header, len))) =
                        tungstenite::protocol::frame::FrameHeader::parse(&mut at)
                    {
                        let start = at.position() as usize;
                        let end = start + len as usize;
                        if end > buf.len() {
                            break;
                        }
                        if let tungstenite::protocol::frame::coding::OpCode::Data(_) = header.opcode {
                            let who = buf[start] as usize;
                            let tag = u64::from_be_bytes(buf[start + 1..start + 9].try_into().unwrap());
                            assert_eq!(
                                tag, next[who],
                                "round {round}: sender {who} lost or reordered a frame"
                            );
                            next[who] += 1;
                        }
                        at.set_position(end as u64);
                        used = end;
                    }
                    buf.drain(..used);
                }
            });
            let senders: Vec<_> = (0..SENDERS)
                .map(|who| {
                    let (conn, stats) = (conn.clone(), stats.clone());
                    std::thread::spawn(move || {
                        for tag in 0..FRAMES {
                            let mut payload = vec![0u8; 1 + 8 + (tag as usize * 131 % 6000)];
                            payload[0] = who as u8;
                            payload[1..9].copy_from_slice(&tag.to_be_bytes());
                            let f = frame::shared(frame::encode(frame::OP_BINARY, &payload));
                            if who == 3 && tag % 5 == 0 {
                                conn.push_control(frame::encode(0xA, b"p"));
                            }
                            if (tag + who) % 3 == 0 || !conn.try_send_direct(&f, &stats) {
                                conn.push_frame(f, LIMITS, &stats).unwrap();
                            }
                            if tag % 37 == who {
                                std::thread::sleep(Duration::from_micros(100));
                            }
                        }
                    })
                })
                .collect();
            for s in senders {
                s.join().unwrap();
            }
            reader.join().expect("every sender's frames, in order");
            conn.end_writer();
            let deadline = Instant::now() + Duration::from_secs(20);
            while env.live.load(std::sync::atomic::Ordering::Acquire) > 0 {
                assert!(Instant::now() < deadline, "round {round}: a writer thread is left");
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}
