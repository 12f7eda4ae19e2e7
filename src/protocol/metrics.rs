//! The protocol layer's counters and the Prometheus text of `GET /metrics`.
//!
//! Engine counters come from [`ServerHandle::stats`]; this adds what only the
//! protocol knows (rate-limit drops, disconnect codes).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use crate::server::ServerHandle;

/// Counters the protocol handler keeps.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub rate_limited: AtomicU64,
    pub disconnects: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    pub fn count_disconnect(&self, code: u16) {
        *self.disconnects.lock().entry(code).or_default() += 1;
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric in PROTOCOL.md.
    pub fn render(&self, server: &ServerHandle) -> String {
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
                (r#"{reason="rate_limited"}"#.to_owned(), self.rate_limited.load(Relaxed)),
            ],
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
