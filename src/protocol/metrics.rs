//! The protocol layer's counters and the Prometheus text of `GET /metrics`.
//!
//! Engine counters come from [`ServerHandle::stats`]; this adds what only the
//! protocol knows (rate-limit drops, what the protocol's bounds refused or
//! evicted, disconnect codes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use super::room::Budget;
use crate::server::ServerHandle;

/// Counters the protocol handler keeps.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub rate_limited: AtomicU64,
    /// Joins refused: the client was in `max_rooms_per_client` rooms.
    pub max_rooms_per_client: AtomicU64,
    /// Joins refused: the server had `max_rooms` rooms.
    pub max_rooms: AtomicU64,
    /// Big replies refused: the client had `max_reply_backlog` frames unread.
    pub reply_backlog: AtomicU64,
    /// Recoveries cut short by `replay_max_bytes`.
    pub replay_bytes: AtomicU64,
    /// Publishes whose idempotency key was already in the room's history.
    pub duplicates: AtomicU64,
    pub disconnects: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub fn count_disconnect(&self, code: u16) {
        *self.disconnects.lock().entry(code).or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric in docs/protocol.md.
    pub fn render(&self, server: &ServerHandle, history: &Budget) -> String {
        let s = server.stats();
        let rooms = server.room_count().unwrap_or(0);
        let mut out = String::with_capacity(2048);
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: u64| [(String::new(), v)];
        metric("wshub_connections", "gauge", "Open WebSocket connections.", &one(s.connections));
        metric(
            "wshub_connections_total",
            "counter",
            "WebSocket connections opened.",
            &one(s.connections_total),
        );
        metric("wshub_rooms", "gauge", "Rooms with at least one member.", &one(rooms as u64));
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
        metric("wshub_bytes_in_total", "counter", "Payload bytes received.", &one(s.bytes_in));
        metric("wshub_bytes_out_total", "counter", "Bytes written after the handshake.", &one(s.bytes_out));
        metric(
            "wshub_dropped_total",
            "counter",
            "Messages or connections dropped, by reason.",
            &[
                (r#"{reason="slow_consumer"}"#.to_owned(), s.dropped_slow_consumer),
                (r#"{reason="outbound_bytes"}"#.to_owned(), s.dropped_outbound_bytes),
                (r#"{reason="frame_rate"}"#.to_owned(), s.dropped_frame_rate),
                (r#"{reason="fragments"}"#.to_owned(), s.dropped_fragments),
                (r#"{reason="rate_limited"}"#.to_owned(), self.rate_limited.load(Relaxed)),
                (r#"{reason="history_bytes"}"#.to_owned(), history.evicted_room_bytes.load(Relaxed)),
                (r#"{reason="history_total_bytes"}"#.to_owned(), history.evicted_total_bytes.load(Relaxed)),
                (r#"{reason="replay_bytes"}"#.to_owned(), self.replay_bytes.load(Relaxed)),
                (r#"{reason="max_rooms_per_client"}"#.to_owned(), self.max_rooms_per_client.load(Relaxed)),
                (r#"{reason="max_rooms"}"#.to_owned(), self.max_rooms.load(Relaxed)),
                (r#"{reason="reply_backlog"}"#.to_owned(), self.reply_backlog.load(Relaxed)),
            ],
        );
        metric(
            "wshub_duplicate_publishes_total",
            "counter",
            "Publishes that repeated a key still in the room's history (acked, not sent again).",
            &one(self.duplicates.load(Relaxed)),
        );
        metric(
            "wshub_history_bytes",
            "gauge",
            "Bytes all rooms' history holds (frames plus a fixed overhead per message).",
            &one(history.total.load(Relaxed) as u64),
        );
        metric(
            "wshub_memory_trims_total",
            "counter",
            "Times freed heap memory was given back to the system (malloc_trim).",
            &one(crate::sys::trim::trims() as u64),
        );
        let codes: Vec<_> =
            self.disconnects.lock().iter().map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n)).collect();
        metric("wshub_disconnects_total", "counter", "Closed WebSocket connections, by close code.", &codes);
        let rejects: Vec<_> = s
            .handshake_rejects_by_status
            .iter()
            .map(|(status, n)| match status {
                0 => (r#"{status="dropped"}"#.to_owned(), *n),
                status => (format!("{{status=\"{status}\"}}"), *n),
            })
            .collect();
        metric(
            "wshub_handshake_rejects_total",
            "counter",
            "Requests refused instead of upgraded, by HTTP status (\"dropped\": no response).",
            &rejects,
        );
        metric(
            "wshub_outbound_queue_depth",
            "gauge",
            "Deepest any outbound queue has been (high-water mark, frames).",
            &one(s.queue_depth_max),
        );
        metric(
            "wshub_handshakes_in_progress",
            "gauge",
            "Sockets in their handshake (HTTP request not yet answered), each holding a reader thread.",
            &one(s.handshakes_in_progress),
        );
        let overflow: Vec<_> = s
            .handshake_overflow_by_reason
            .iter()
            .map(|(reason, n)| (format!("{{reason=\"{reason}\"}}"), *n))
            .collect();
        metric(
            "wshub_handshake_overflow_total",
            "counter",
            "Sockets over a handshake bound, a per-IP cap or the connect rate, answered by the overflow thread, by the bound.",
            &overflow,
        );
        out
    }
}
