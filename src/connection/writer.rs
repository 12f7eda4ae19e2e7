//! The writer half: the only thread that writes to a socket once it is a WebSocket.
//!
//! It sleeps on the outbound queue until something arrives or a ping is due,
//! then takes everything queued (up to `write_buffer_size` bytes) and writes it
//! with one `writev`: under load many frames leave in one syscall. After it has
//! written a close frame it writes nothing more.

use std::io::{self, IoSlice};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::{ConnShared, Out};
use crate::config::Config;
use crate::frame;
use crate::stats::Stats;

/// Most frames in one batch (Linux's IOV_MAX is 1024).
const MAX_BATCH_FRAMES: usize = 512;
/// How often a blocked write wakes up to check its deadlines.
const WRITE_TICK: Duration = Duration::from_millis(250);

/// What a write attempt ended with.
enum Written {
    Ok,
    /// The peer is gone or stopped reading for too long; the socket is shut down.
    Failed,
}

pub(crate) fn run(conn: Arc<ConnShared>, rx: Receiver<Out>, config: Config, stats: Arc<Stats>) {
    let _ = conn.stream.set_write_timeout(Some(WRITE_TICK.min(config.close_timeout)));
    let mut w = Writer { conn: &conn, config: &config, stats: &stats, reader_done: false };
    let ping = frame::encode(frame::OP_PING, b"");
    let mut next_ping = Instant::now() + config.heartbeat_interval;
    let mut batch: Vec<Out> = Vec::new();
    let mut fresh = true;
    loop {
        let got = if std::mem::take(&mut fresh) {
            conn.park_writer(&rx, next_ping);
            match rx.try_recv() {
                Ok(item) => Ok(item),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) if Instant::now() >= next_ping => Err(RecvTimeoutError::Timeout),
                Err(TryRecvError::Empty) => rx.recv_deadline(next_ping),
            }
        } else {
            rx.recv_deadline(next_ping)
        };
        let first = match got {
            Ok(item) => item,
            Err(RecvTimeoutError::Timeout) => {
                next_ping = Instant::now() + config.heartbeat_interval;
                let mut guard = conn.lock_write();
                let tail = guard.take();
                let mut slices = Vec::with_capacity(2);
                if let Some(t) = &tail {
                    slices.push(IoSlice::new(&t.frame[t.written..]));
                }
                slices.push(IoSlice::new(&ping));
                let written = w.write_all(&mut slices);
                drop(guard);
                if tail.is_some() {
                    Stats::add(&stats.messages_out, 1);
                }
                if let Written::Failed = written {
                    return w.wait_for_reader(&rx);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        batch.push(first);
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_FRAMES && bytes < config.write_buffer_size {
            match rx.try_recv() {
                Ok(item) => {
                    if let Out::Frame(f) = &item {
                        bytes += f.len();
                    }
                    batch.push(item);
                }
                Err(_) => break,
            }
        }
        match w.write_batch(&mut batch) {
            Step::Continue => {}
            Step::ReaderDone => return,
            Step::Closed => return w.after_close(&rx),
            Step::Failed => return w.wait_for_reader(&rx),
        }
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
    config: &'a Config,
    stats: &'a Stats,
    /// The reader's `ReaderDone` has been taken off the queue (it is sent once,
    /// and may arrive in any batch, so every wait checks this first).
    reader_done: bool,
}

impl Writer<'_> {
    /// Writes the batch up to its first close, in order, and empties it. The
    /// rest of a partial direct send, if any, goes first: its first bytes are
    /// already on the wire.
    fn write_batch(&mut self, batch: &mut Vec<Out>) -> Step {
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
                    close_frame = Some(frame::encode_close(*code, reason));
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
        // Frames behind the first close are never sent; still release their
        // slots, and do not lose the reader's goodbye if it is among them.
        let (mut released, mut controls) = (0, 0);
        for item in batch.iter() {
            match item {
                Out::Frame(_) | Out::Tail => released += 1,
                Out::Control(_) => controls += 1,
                Out::ReaderDone => self.reader_done = true,
                Out::Close(..) => {}
            }
        }
        let mut guard = self.conn.lock_write();
        if let Step::Closed = step {
            // Under the write lock: no direct send may follow the close frame.
            self.conn.mark_closing();
        }
        let tail = guard.take();
        let mut slices: Vec<IoSlice<'_>> = Vec::with_capacity(end + 2);
        if let Some(t) = &tail {
            slices.push(IoSlice::new(&t.frame[t.written..]));
        }
        let mut data_frames = u64::from(tail.is_some());
        for item in &batch[..end] {
            match item {
                Out::Frame(f) if !discard => {
                    slices.push(IoSlice::new(f));
                    data_frames += 1;
                }
                Out::Control(bytes) => slices.push(IoSlice::new(bytes)),
                _ => {}
            }
        }
        if let Some(close) = &close_frame {
            slices.push(IoSlice::new(close));
        }
        let result = if slices.is_empty() { Written::Ok } else { self.write_all(&mut slices) };
        drop(slices);
        drop(guard);
        batch.clear();
        // Released only now: while frames are being written the hub must not
        // send around them.
        self.conn.frames_done(released);
        self.conn.controls_done(controls);
        match result {
            Written::Failed => Step::Failed,
            Written::Ok => {
                Stats::add(&self.stats.messages_out, data_frames);
                step
            }
        }
    }

    /// `write_all` for a vector of slices. A write that makes no progress for the
    /// idle timeout, or for the close timeout once the connection is closing,
    /// gives up and shuts the socket down.
    fn write_all(&mut self, mut slices: &mut [IoSlice<'_>]) -> Written {
        let mut stalled_since: Option<Instant> = None;
        let mut writes = 0u64;
        while !slices.is_empty() {
            match crate::sys::sock::send_vectored(&self.conn.stream, slices) {
                Ok(0) => return self.fail("socket closed"),
                Ok(n) => {
                    writes += 1;
                    stalled_since = None;
                    Stats::add(&self.stats.bytes_out, n as u64);
                    IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    let since = *stalled_since.get_or_insert_with(Instant::now);
                    let limit = if self.conn.is_closing() {
                        self.config.close_timeout
                    } else {
                        self.config.idle_timeout
                    };
                    if since.elapsed() >= limit {
                        return self.fail("peer stopped reading");
                    }
                }
                Err(e) => return self.fail(&e.to_string()),
            }
        }
        Stats::add(&self.stats.write_batches, writes);
        Written::Ok
    }

    fn fail(&self, why: &str) -> Written {
        log::debug!("conn {}: write failed: {why}", self.conn.id);
        self.conn.kill();
        Written::Failed
    }

    /// After a close frame: half-close, so the peer sees the end promptly, then
    /// give the reader `close_timeout` to see the peer's close before forcing it.
    fn after_close(&mut self, rx: &Receiver<Out>) {
        let _ = self.conn.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + self.config.close_timeout;
        while !self.reader_done {
            match rx.recv_deadline(deadline) {
                Ok(Out::ReaderDone) | Err(RecvTimeoutError::Disconnected) => return,
                Ok(Out::Frame(_) | Out::Tail) => self.conn.frames_done(1),
                Ok(Out::Control(_)) => self.conn.controls_done(1),
                Ok(_) => {}
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
                Ok(Out::Frame(_) | Out::Tail) => self.conn.frames_done(1),
                Ok(Out::Control(_)) => self.conn.controls_done(1),
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support::loopback_conn;
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn frames_queued_together_leave_in_one_writev_and_nothing_after_a_close() {
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let mut expected = Vec::new();
        for i in 0..100u32 {
            let f = Arc::new(frame::encode(frame::OP_BINARY, &i.to_be_bytes()));
            expected.extend_from_slice(&f);
            conn.push_frame(f, 1024, &stats).unwrap();
        }
        conn.push_close(1000, "done");
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        // Queued behind the close: must never reach the wire.
        conn.push_control(frame::encode(frame::OP_TEXT, b"too late"));
        conn.push_reader_done();

        let rx = conn.take_receiver().unwrap();
        let config = Config::default();
        run(conn.clone(), rx, config, stats.clone());

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
            Arc::new(frame::encode(frame::OP_BINARY, &vec![5u8; 32 << 20]));
        assert!(conn.try_send_direct(&big, &stats));
        assert_eq!(conn.queue_depth(), 1, "its unsent rest holds the queue");
        assert_eq!(stats.direct_sends.load(Relaxed), 0);
        let small: crate::frame::SharedFrame = Arc::new(frame::encode(frame::OP_TEXT, b"after"));
        assert!(!conn.try_send_direct(&small, &stats), "must not overtake the rest");
        conn.push_frame(small.clone(), 1024, &stats).unwrap();
        conn.push_close(1000, "done");
        conn.push_reader_done();

        let rx = conn.take_receiver().unwrap();
        let writer = {
            let (conn, stats) = (conn.clone(), stats.clone());
            std::thread::spawn(move || run(conn, rx, Config::default(), stats))
        };
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        let mut expected = big.to_vec();
        expected.extend_from_slice(&small);
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive whole and in order");
        assert_eq!(stats.messages_out.load(Relaxed), 2);
        assert_eq!(conn.queue_depth(), 0);
    }

    #[test]
    fn a_direct_send_never_overtakes_a_queued_pong() {
        // Autobahn 5.6: fragment, ping, fragment; the pong (queued by the
        // reader) must reach the peer before the echo of the whole message.
        let (conn, mut peer) = loopback_conn(1);
        let stats = Arc::new(Stats::default());
        let pong = frame::encode(0xA, b"p"); // a pong frame
        conn.push_control(pong.clone());
        let reply: crate::frame::SharedFrame = Arc::new(frame::encode(frame::OP_TEXT, b"reply"));
        assert!(!conn.try_send_direct(&reply, &stats), "the pong is still queued");
        conn.push_frame(reply.clone(), 1024, &stats).unwrap();
        conn.push_close(1000, "");
        conn.push_reader_done();
        let rx = conn.take_receiver().unwrap();
        run(conn.clone(), rx, Config::default(), stats.clone());
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut expected = pong;
        expected.extend_from_slice(&reply);
        expected.extend_from_slice(&frame::encode_close(1000, ""));
        assert_eq!(got, expected);
        let fresh: crate::frame::SharedFrame = Arc::new(frame::encode(frame::OP_TEXT, b"x"));
        assert!(!conn.try_send_direct(&fresh, &stats), "closed: nothing more");
    }
}
