//! The protocol layer's counters and the Prometheus text of `GET /metrics`.
//!
//! Engine counters come from [`ServerHandle::engine_numbers`]; this adds what only the
//! protocol knows (rate-limit drops, what the protocol's bounds refused or
//! evicted, disconnect codes).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use parking_lot::Mutex;

use super::room::Budget;
use crate::prometheus::write_metric;
use crate::server::ServerHandle;
use crate::stats::render_engine;

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

    /// The Prometheus text exposition (format 0.0.4) of every metric in
    /// docs/protocol.md: the engine's (`stats.rs`), with the protocol's drop
    /// reasons, then the protocol's own families.
    pub fn render(&self, server: &ServerHandle, history: &Budget) -> String {
        let drops = [
            ("rate_limited", self.rate_limited.load(Relaxed)),
            ("history_bytes", history.evicted_room_bytes.load(Relaxed)),
            ("history_total_bytes", history.evicted_total_bytes.load(Relaxed)),
            ("replay_bytes", self.replay_bytes.load(Relaxed)),
            ("max_rooms_per_client", self.max_rooms_per_client.load(Relaxed)),
            ("max_rooms", self.max_rooms.load(Relaxed)),
            ("reply_backlog", self.reply_backlog.load(Relaxed)),
        ];
        let mut out = render_engine(&server.engine_numbers(), &drops);
        let one = |v: u64| [(String::new(), v)];
        write_metric(
            &mut out,
            "wshub_duplicate_publishes_total",
            "counter",
            "Publishes that repeated a key still in the room's history (acked, not sent again).",
            &one(self.duplicates.load(Relaxed)),
        );
        write_metric(
            &mut out,
            "wshub_history_bytes",
            "gauge",
            "Bytes all rooms' history holds (frames plus a fixed overhead per message).",
            &one(history.total.load(Relaxed) as u64),
        );
        let codes: Vec<_> =
            self.disconnects.lock().iter().map(|(code, n)| (format!("{{code=\"{code}\"}}"), *n)).collect();
        write_metric(
            &mut out,
            "wshub_disconnects_total",
            "counter",
            "Closed WebSocket connections, by close code.",
            &codes,
        );
        out
    }
}
