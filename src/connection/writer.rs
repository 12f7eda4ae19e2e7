//! The writer half: the connection's second thread, which drains its outbound
//! queue. (Other threads may write to the socket too, straight past the queue
//! when nothing is queued: `outbound.rs` says who and how order is kept.)
//!
//! It sleeps on the outbound queue until something arrives or a ping is due,
//! then takes everything queued (up to `write_buffer_size` bytes) and writes it
//! with one `writev`: under load many frames leave in one syscall. After it has
//! written a close frame it writes nothing more. For an event stream it
//! writes the same way, with `: ping` comments for pings and no close frame:
//! a close ends the stream.

use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::outbound::{Out, Patience};
use super::ConnShared;
use crate::config::Config;
use crate::frame;
use crate::stats::Stats;

/// Most frames in one batch (Linux's IOV_MAX is 1024).
const MAX_BATCH_FRAMES: usize = 512;
/// How often a blocked write wakes up to check its deadlines.
const WRITE_TICK: Duration = Duration::from_millis(250);

pub(crate) fn run(conn: Arc<ConnShared>, rx: Receiver<Out>, config: Config, stats: Arc<Stats>) {
    let _ = conn.stream.set_write_timeout(Some(WRITE_TICK.min(config.close_timeout)));
    let stream = conn.is_event_stream();
    let mut w = Writer { conn: &conn, config: &config, stats: &stats, reader_done: false, stream };
    // An event stream's heartbeat is a comment line.
    let ping = if stream { b": ping\n\n".to_vec() } else { frame::encode(frame::OP_PING, b"") };
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
                match conn.write_locked(&[&ping], false, w.patience(), &stats) {
                    Ok(tail) => Stats::add(&stats.messages_out, u64::from(tail)),
                    Err(_) => return w.wait_for_reader(&rx),
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        batch.push(dequeued(&conn, first));
        let mut bytes = 0;
        while batch.len() < MAX_BATCH_FRAMES && bytes < config.write_buffer_size {
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
            Step::ReaderDone => return,
            Step::Closed => return w.after_close(&rx),
            Step::Failed => return w.wait_for_reader(&rx),
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
    config: &'a Config,
    stats: &'a Stats,
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
                    if let Some(form) = self.conn.writer_form(f, self.stats) {
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
                _ => {}
            }
        }
        if let Some(close) = &close_frame {
            parts.push(close);
        }
        let closed = matches!(step, Step::Closed);
        let result = self.conn.write_locked(&parts, closed, self.patience(), self.stats);
        drop(parts);
        // Released only now: while frames are being written the hub must not
        // send around them.
        for item in batch.drain(..) {
            self.conn.done(&item);
        }
        match result {
            Err(_) => Step::Failed,
            Ok(tail) => {
                Stats::add(&self.stats.messages_out, data_frames + u64::from(tail));
                step
            }
        }
    }

    /// How long a write may stall: the idle timeout, or the close timeout once
    /// the connection is closing.
    fn patience(&self) -> Patience {
        Patience { open: self.config.idle_timeout, closing: self.config.close_timeout }
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
        let deadline = Instant::now() + self.config.close_timeout;
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
    use crate::connection::outbound::QueueLimits;
    use crate::connection::test_support::loopback_conn;
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    const LIMITS: QueueLimits = QueueLimits { frames: 1024, bytes: usize::MAX };

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
            frame::shared(frame::encode(frame::OP_BINARY, &vec![5u8; 32 << 20]));
        assert!(conn.try_send_direct(&big, &stats));
        assert_eq!(conn.queue_depth(), 1, "its unsent rest holds the queue");
        assert_eq!(stats.direct_sends.load(Relaxed), 0);
        let small: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"after"));
        assert!(!conn.try_send_direct(&small, &stats), "must not overtake the rest");
        conn.push_frame(small.clone(), LIMITS, &stats).unwrap();
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

        let rx = conn.take_receiver().unwrap();
        let writer = {
            let (conn, stats) = (conn.clone(), stats.clone());
            std::thread::spawn(move || run(conn, rx, Config::default(), stats))
        };
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        let mut expected: Vec<u8> = round.iter().flat_map(|f| f.iter().copied()).collect();
        expected.extend_from_slice(&after);
        expected.extend_from_slice(&frame::encode_close(1000, "done"));
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes arrive whole and in order");
        assert_eq!(stats.messages_out.load(Relaxed), 65);
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
        let rx = conn.take_receiver().unwrap();
        run(conn.clone(), rx, Config::default(), stats.clone());
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
        let rx = conn.take_receiver().unwrap();
        run(conn.clone(), rx, Config::default(), stats.clone());

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
        let rx = conn.take_receiver().unwrap();
        run(conn.clone(), rx, Config::default(), stats.clone());
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        let mut expected = pong;
        expected.extend_from_slice(&reply);
        expected.extend_from_slice(&frame::encode_close(1000, ""));
        assert_eq!(got, expected);
        let fresh: crate::frame::SharedFrame = frame::shared(frame::encode(frame::OP_TEXT, b"x"));
        assert!(!conn.try_send_direct(&fresh, &stats), "closed: nothing more");
    }
}
