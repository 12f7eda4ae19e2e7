//! Counters every part of the engine bumps; read as a [`StatsSnapshot`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

/// Live counters, shared by every thread of one server.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub write_batches: AtomicU64,
    pub direct_sends: AtomicU64,
    pub compressed_frames: AtomicU64,
    pub compressed_bytes: AtomicU64,
    pub compressed_plain_bytes: AtomicU64,
    pub dropped_slow_consumer: AtomicU64,
    pub dropped_outbound_bytes: AtomicU64,
    pub dropped_frame_rate: AtomicU64,
    pub dropped_fragments: AtomicU64,
    pub handshake_rejects: AtomicU64,
    /// `handshake_rejects` split by HTTP status (0: dropped without a response).
    pub handshake_rejects_by_status: Mutex<BTreeMap<u16, u64>>,
    pub queue_depth_max: AtomicU64,
    /// Sockets in their handshake now (each with a reader thread).
    pub handshakes: AtomicU64,
    /// Sockets handed to the overflow thread, by `ip_table::Refusal::ALL` index.
    pub handshake_overflow: [AtomicU64; 4],
    pub tls_handshake_failures: AtomicU64,
    /// Bytes of request bodies being read or answered now (`Config::request_body_budget`).
    pub request_body_bytes: AtomicU64,
    /// Writer threads started (`connection/writer.rs`).
    pub writer_threads_started: AtomicU64,
    /// Readers that gave their unused stack pages back (`connection/reader.rs`).
    pub reader_stack_releases: AtomicU64,
    /// Waits a reader made for a quiet moment before that release.
    pub reader_quiet_waits: AtomicU64,
    /// Connection threads that could not be started, by [`ThreadKind`].
    pub thread_spawn_failures: [AtomicU64; ThreadKind::ALL.len()],
    /// When those failures were last logged ([`Stats::thread_spawn_failed`]).
    spawn_log: Mutex<LogLimiter>,
}

/// The connection threads whose failures to start are counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ThreadKind {
    Writer = 0,
    /// A new connection's reader thread (`acceptor.rs`): at the thread limit
    /// every connection meets this one first.
    Reader = 1,
}

impl ThreadKind {
    pub(crate) const ALL: [ThreadKind; 2] = [ThreadKind::Writer, ThreadKind::Reader];

    /// Its name in `/metrics` and in [`StatsSnapshot::thread_spawn_failures_by_kind`].
    pub(crate) fn label(self) -> &'static str {
        match self {
            ThreadKind::Writer => "writer",
            ThreadKind::Reader => "reader",
        }
    }
}

/// How often at most a failure to start a connection thread is logged: at
/// the thread limit every connection meets it, and one line per connection
/// would bury everything else.
const SPAWN_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Lets one line through per period: the first occurrence at once, then the
/// first after each period, with how many were kept quiet since the last.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl LogLimiter {
    /// `Some(quiet)` when a line is due at `now` (`quiet`: occurrences not
    /// logged since the last line); `None` when this one stays quiet.
    fn due(&mut self, now: std::time::Instant, every: std::time::Duration) -> Option<u64> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < every) {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.quiet))
    }
}

/// A point-in-time copy of the server's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Open WebSocket connections.
    pub connections: u64,
    /// WebSocket connections opened since start.
    pub connections_total: u64,
    /// Data messages received from peers.
    pub messages_in: u64,
    /// Data frames written to peers.
    pub messages_out: u64,
    /// Payload bytes received in data messages.
    pub bytes_in: u64,
    /// Bytes written to sockets after the handshake (frames, all kinds).
    pub bytes_out: u64,
    /// `writev` batches the writer threads made ((messages_out - direct_sends) /
    /// write_batches = frames per writer syscall).
    pub write_batches: u64,
    /// Data frames sent straight to an idle connection's socket, by the hub or
    /// by the thread calling `send` (a non-blocking `send`, or one `writev`
    /// for all of a member's frames in a round of the hub; no writer woken);
    /// a frame the socket took only part of is not one. Included in
    /// `messages_out`.
    pub direct_sends: u64,
    /// Data frames sent compressed (permessage-deflate), each member's copy
    /// of a shared frame counted; included in `messages_out`.
    pub compressed_frames: u64,
    /// Bytes of those compressed frames, headers included.
    pub compressed_bytes: u64,
    /// Bytes those frames would have been uncompressed.
    pub compressed_plain_bytes: u64,
    /// Connections closed with 1013 because their outbound queue held
    /// `outbound_queue` frames.
    pub dropped_slow_consumer: u64,
    /// Connections closed with 1013 because their outbound queue held
    /// `outbound_max_bytes` bytes.
    pub dropped_outbound_bytes: u64,
    /// Connections closed with 1008 for sending frames faster than
    /// `frame_rate_limit` allows.
    pub dropped_frame_rate: u64,
    /// Connections closed with 1009 for a message in more than
    /// `max_fragments` frames.
    pub dropped_fragments: u64,
    /// Requests answered with an HTTP error instead of an upgrade.
    pub handshake_rejects: u64,
    /// [`handshake_rejects`](Self::handshake_rejects) by HTTP status, ascending;
    /// status 0 counts connections dropped without a response (over the
    /// limit of connections in progress).
    pub handshake_rejects_by_status: Vec<(u16, u64)>,
    /// The deepest any outbound queue has been.
    pub queue_depth_max: u64,
    /// Sockets in their handshake now (connected, HTTP request not yet answered).
    pub handshakes_in_progress: u64,
    /// Sockets that got no handshake slot and were answered by the overflow
    /// thread instead, by reason (`connect_rate_per_ip`,
    /// `connections_per_ip`, `handshakes_per_ip`, `handshakes`).
    pub handshake_overflow_by_reason: Vec<(&'static str, u64)>,
    /// TLS handshakes that failed or timed out (the connection was dropped).
    pub tls_handshake_failures: u64,
    /// Bytes of plain requests' bodies being read or answered now (counted
    /// at their `Content-Length`; at most the request body budget).
    pub request_body_bytes: u64,
    /// Writer threads started since the start (a connection has one only
    /// while something waits in its queue).
    pub writer_threads_started: u64,
    /// Readers that gave back the stack pages their handshake and first
    /// callbacks left, at their connection's first quiet moment, or at its
    /// last try for one when it never went quiet (at most once per
    /// connection).
    pub reader_stack_releases: u64,
    /// Waits for that quiet moment: a `poll` of the socket at a frame
    /// boundary, at most a few per connection, however long it talks.
    pub reader_quiet_waits: u64,
    /// Connection threads that could not be started (the process at its
    /// thread limit), by kind (`writer`, `reader`).
    pub thread_spawn_failures_by_kind: Vec<(&'static str, u64)>,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// A connection thread of `kind` could not be started for `conn` (the
    /// process is at its thread limit): counted, and logged at most once
    /// per [`SPAWN_LOG_EVERY`], with the number not logged since.
    pub(crate) fn thread_spawn_failed(
        &self,
        kind: ThreadKind,
        conn: crate::types::ConnId,
        e: &std::io::Error,
    ) {
        Stats::add(&self.thread_spawn_failures[kind as usize], 1);
        let due = self.spawn_log.lock().due(std::time::Instant::now(), SPAWN_LOG_EVERY);
        let what = kind.label();
        match due {
            None => {}
            Some(0) => log::error!("conn {conn}: cannot start a {what} thread: {e}; ending it"),
            Some(quiet) => log::error!(
                "conn {conn}: cannot start a {what} thread: {e}; ending it ({quiet} more connections \
                 met this since the last such line; wshub_thread_spawn_failures_total counts them all)"
            ),
        }
    }

    /// Counts one refused request under its HTTP status (0: no response).
    pub(crate) fn count_reject(&self, status: u16) {
        Stats::add(&self.handshake_rejects, 1);
        *self.handshake_rejects_by_status.lock().entry(status).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Relaxed),
            connections_total: self.connections_total.load(Relaxed),
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            write_batches: self.write_batches.load(Relaxed),
            direct_sends: self.direct_sends.load(Relaxed),
            compressed_frames: self.compressed_frames.load(Relaxed),
            compressed_bytes: self.compressed_bytes.load(Relaxed),
            compressed_plain_bytes: self.compressed_plain_bytes.load(Relaxed),
            dropped_slow_consumer: self.dropped_slow_consumer.load(Relaxed),
            dropped_outbound_bytes: self.dropped_outbound_bytes.load(Relaxed),
            dropped_frame_rate: self.dropped_frame_rate.load(Relaxed),
            dropped_fragments: self.dropped_fragments.load(Relaxed),
            handshake_rejects: self.handshake_rejects.load(Relaxed),
            handshake_rejects_by_status: self
                .handshake_rejects_by_status
                .lock()
                .iter()
                .map(|(status, n)| (*status, *n))
                .collect(),
            queue_depth_max: self.queue_depth_max.load(Relaxed),
            handshakes_in_progress: self.handshakes.load(Relaxed),
            handshake_overflow_by_reason: crate::ip_table::Refusal::ALL
                .iter()
                .zip(&self.handshake_overflow)
                .map(|(r, n)| (r.label(), n.load(Relaxed)))
                .collect(),
            tls_handshake_failures: self.tls_handshake_failures.load(Relaxed),
            request_body_bytes: self.request_body_bytes.load(Relaxed),
            writer_threads_started: self.writer_threads_started.load(Relaxed),
            reader_stack_releases: self.reader_stack_releases.load(Relaxed),
            reader_quiet_waits: self.reader_quiet_waits.load(Relaxed),
            thread_spawn_failures_by_kind: ThreadKind::ALL
                .iter()
                .map(|k| (k.label(), self.thread_spawn_failures[*k as usize].load(Relaxed)))
                .collect(),
        }
    }
}

/// The numbers [`render_engine`] writes: the counters, and the room count
/// the hub reports (0 when it does not answer).
#[derive(Debug, Clone)]
pub(crate) struct EngineNumbers {
    pub stats: StatsSnapshot,
    pub rooms: u64,
}

/// The engine's counters in the Prometheus text format, as `/metrics` names
/// them. `more_drops` are reasons a handler adds to `wshub_dropped_total` (a
/// family's samples must stay together); the protocol appends its own
/// families after this (`protocol/metrics.rs`).
pub(crate) fn render_engine(numbers: &EngineNumbers, more_drops: &[(&str, u64)]) -> String {
    use crate::prometheus::write_metric;
    let (s, rooms) = (&numbers.stats, numbers.rooms);
    let mut out = String::with_capacity(2048);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        write_metric(&mut out, name, kind, help, samples)
    };
    let one = |v: u64| [(String::new(), v)];
    let labelled = |label: &str, pairs: &[(String, u64)]| -> Vec<(String, u64)> {
        pairs.iter().map(|(k, v)| (format!("{{{label}=\"{k}\"}}"), *v)).collect()
    };
    metric("wshub_connections", "gauge", "Open WebSocket connections.", &one(s.connections));
    metric("wshub_connections_total", "counter", "WebSocket connections opened.", &one(s.connections_total));
    metric("wshub_rooms", "gauge", "Rooms with at least one member.", &one(rooms));
    metric("wshub_messages_in_total", "counter", "Data messages received.", &one(s.messages_in));
    metric("wshub_messages_out_total", "counter", "Data frames sent.", &one(s.messages_out));
    metric(
        "wshub_direct_sends_total",
        "counter",
        "Data frames sent straight to an idle socket, not through a writer thread (part of wshub_messages_out_total).",
        &one(s.direct_sends),
    );
    metric(
        "wshub_write_batches_total",
        "counter",
        "writev calls by writer threads (frames per call = (messages_out - direct_sends) / this).",
        &one(s.write_batches),
    );
    metric(
        "wshub_compressed_frames_total",
        "counter",
        "Data frames sent compressed with permessage-deflate (part of wshub_messages_out_total).",
        &one(s.compressed_frames),
    );
    metric(
        "wshub_compressed_bytes_total",
        "counter",
        "Bytes of the frames sent compressed.",
        &one(s.compressed_bytes),
    );
    metric(
        "wshub_compressed_plain_bytes_total",
        "counter",
        "Bytes the frames sent compressed would have taken uncompressed.",
        &one(s.compressed_plain_bytes),
    );
    metric("wshub_bytes_in_total", "counter", "Payload bytes received.", &one(s.bytes_in));
    metric("wshub_bytes_out_total", "counter", "Bytes written after the handshake.", &one(s.bytes_out));
    let mut drops = vec![
        ("slow_consumer".to_owned(), s.dropped_slow_consumer),
        ("outbound_bytes".to_owned(), s.dropped_outbound_bytes),
        ("frame_rate".to_owned(), s.dropped_frame_rate),
        ("fragments".to_owned(), s.dropped_fragments),
    ];
    drops.extend(more_drops.iter().map(|(reason, n)| ((*reason).to_owned(), *n)));
    metric(
        "wshub_dropped_total",
        "counter",
        "Messages or connections dropped, by reason.",
        &labelled("reason", &drops),
    );
    metric(
        "wshub_memory_trims_total",
        "counter",
        "Times freed heap memory was given back to the system (malloc_trim).",
        &one(crate::sys::trim::trims() as u64),
    );
    let rejects: Vec<_> = s
        .handshake_rejects_by_status
        .iter()
        .map(|(status, n)| (if *status == 0 { "dropped".to_owned() } else { status.to_string() }, *n))
        .collect();
    metric(
        "wshub_handshake_rejects_total",
        "counter",
        "Requests refused instead of upgraded, by HTTP status (\"dropped\": no response).",
        &labelled("status", &rejects),
    );
    metric(
        "wshub_outbound_queue_depth",
        "gauge",
        "Deepest any outbound queue has been (high-water mark, frames).",
        &one(s.queue_depth_max),
    );
    metric(
        "wshub_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed or timed out (no HTTP request was read).",
        &one(s.tls_handshake_failures),
    );
    metric(
        "wshub_handshakes_in_progress",
        "gauge",
        "Sockets in their handshake (HTTP request not yet answered), each holding a reader thread.",
        &one(s.handshakes_in_progress),
    );
    metric(
        "wshub_request_body_bytes",
        "gauge",
        "Bytes of plain requests' bodies being read or answered (at most the request body budget).",
        &one(s.request_body_bytes),
    );
    let overflow: Vec<_> =
        s.handshake_overflow_by_reason.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect();
    metric(
        "wshub_handshake_overflow_total",
        "counter",
        "Sockets over a handshake bound, a per-IP cap or the connect rate, answered by the overflow thread, by the bound.",
        &labelled("reason", &overflow),
    );
    metric(
        "wshub_writer_threads_started_total",
        "counter",
        "Writer threads started (a connection has one only while something waits in its queue).",
        &one(s.writer_threads_started),
    );
    metric(
        "wshub_reader_stack_releases_total",
        "counter",
        "Readers that gave back their unused stack pages at their connection's first quiet moment (or its last try for one).",
        &one(s.reader_stack_releases),
    );
    metric(
        "wshub_reader_quiet_waits_total",
        "counter",
        "Polls a reader made at a frame boundary waiting for a quiet moment to give back its stack (a few per connection at most).",
        &one(s.reader_quiet_waits),
    );
    let failures: Vec<_> =
        s.thread_spawn_failures_by_kind.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect();
    metric(
        "wshub_thread_spawn_failures_total",
        "counter",
        "Connection threads that could not be started (the process at its thread limit), by kind.",
        &labelled("kind", &failures),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_limited_log_lets_the_first_line_through_then_one_per_period_with_the_count() {
        let every = Duration::from_secs(10);
        let start = Instant::now();
        let mut log = LogLimiter::default();
        assert_eq!(log.due(start, every), Some(0), "the first at once");
        for i in 1..=500 {
            assert_eq!(
                log.due(start + Duration::from_millis(i * 10), every),
                None,
                "quiet within the period"
            );
        }
        assert_eq!(log.due(start + every, every), Some(500), "then one, with the count");
        assert_eq!(log.due(start + every + Duration::from_secs(1), every), None);
        assert_eq!(log.due(start + every * 5, every), Some(1));
    }

    #[test]
    fn every_spawn_failure_is_counted_even_when_not_logged() {
        let stats = Stats::default();
        let e = std::io::Error::from_raw_os_error(libc::EAGAIN);
        for conn in 0..100 {
            stats.thread_spawn_failed(ThreadKind::Writer, conn, &e);
        }
        assert_eq!(stats.snapshot().thread_spawn_failures_by_kind, [("writer", 100), ("reader", 0)]);
        let text = render_engine(&EngineNumbers { stats: stats.snapshot(), rooms: 0 }, &[]);
        assert!(text.contains("wshub_thread_spawn_failures_total{kind=\"writer\"} 100"), "{text}");
    }
}
