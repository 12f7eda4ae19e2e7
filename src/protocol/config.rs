//! The protocol layer's own settings: rate limit, room history and the bounds
//! on what one client may make the server hold. The engine's settings (sizes,
//! heartbeat, queues) stay in [`crate::Config`].

use std::time::Duration;

/// Settings of [`ProtocolHandler`](super::ProtocolHandler), built from plain
/// values so the binary, the config file and a C setter can all fill it.
///
/// ```
/// use std::time::Duration;
/// let config = wshub::protocol::ProtocolConfig::default()
///     .rate_limit(50)
///     .history_ttl(Duration::from_secs(60));
/// assert_eq!(config.rate_burst, 200);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProtocolConfig {
    /// Messages per second one client may send (token bucket refill rate);
    /// 0 turns the rate limit off.
    pub rate_limit: u32,
    /// Messages a client may send at once before the rate applies (bucket size).
    pub rate_burst: u32,
    /// Messages each room keeps for recovery (0 keeps none).
    pub history_size: usize,
    /// How long a room keeps a message for recovery.
    pub history_ttl: Duration,
    /// Bytes of history each room keeps (its stored frames, plus a fixed
    /// overhead per message); the oldest go first.
    pub history_max_bytes: usize,
    /// Bytes of history all rooms keep together; past it the oldest message
    /// of any room goes first.
    pub history_total_max_bytes: usize,
    /// Most bytes one recovery (`room:join` with `since`) replays; the newest
    /// are sent, and the ack says `recovered: false`.
    pub replay_max_bytes: usize,
    /// Rooms one client may be in at once; more joins get `error forbidden`.
    pub max_rooms_per_client: usize,
    /// Rooms (with members or history) the server keeps; a join that would
    /// create one more gets `error forbidden`.
    pub max_rooms: usize,
    /// Frames already waiting in a client's outbound queue at which a reply
    /// over [`BIG_REPLY`] bytes (a `ping` ack, `presence:get`, a publish's
    /// echo) is refused with `error rate_limited` instead of queued.
    pub max_reply_backlog: usize,
}

/// Replies larger than this many bytes wait for a client that reads (see
/// [`ProtocolConfig::max_reply_backlog`]).
pub const BIG_REPLY: usize = 64 * 1024;

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            rate_limit: 100,
            rate_burst: 200,
            history_size: 1000,
            history_ttl: Duration::from_secs(300),
            history_max_bytes: 4 << 20,
            history_total_max_bytes: 256 << 20,
            replay_max_bytes: 4 << 20,
            max_rooms_per_client: 128,
            max_rooms: 100_000,
            max_reply_backlog: 8,
        }
    }
}

impl ProtocolConfig {
    /// Sets [`ProtocolConfig::rate_limit`].
    #[must_use]
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = per_second;
        self
    }

    /// Sets [`ProtocolConfig::rate_burst`].
    #[must_use]
    pub fn rate_burst(mut self, burst: u32) -> Self {
        self.rate_burst = burst;
        self
    }

    /// Sets [`ProtocolConfig::history_size`].
    #[must_use]
    pub fn history_size(mut self, messages: usize) -> Self {
        self.history_size = messages;
        self
    }

    /// Sets [`ProtocolConfig::history_ttl`].
    #[must_use]
    pub fn history_ttl(mut self, ttl: Duration) -> Self {
        self.history_ttl = ttl;
        self
    }

    /// Sets [`ProtocolConfig::history_max_bytes`].
    #[must_use]
    pub fn history_max_bytes(mut self, bytes: usize) -> Self {
        self.history_max_bytes = bytes;
        self
    }

    /// Sets [`ProtocolConfig::history_total_max_bytes`].
    #[must_use]
    pub fn history_total_max_bytes(mut self, bytes: usize) -> Self {
        self.history_total_max_bytes = bytes;
        self
    }

    /// Sets [`ProtocolConfig::replay_max_bytes`].
    #[must_use]
    pub fn replay_max_bytes(mut self, bytes: usize) -> Self {
        self.replay_max_bytes = bytes;
        self
    }

    /// Sets [`ProtocolConfig::max_rooms_per_client`].
    #[must_use]
    pub fn max_rooms_per_client(mut self, rooms: usize) -> Self {
        self.max_rooms_per_client = rooms;
        self
    }

    /// Sets [`ProtocolConfig::max_rooms`].
    #[must_use]
    pub fn max_rooms(mut self, rooms: usize) -> Self {
        self.max_rooms = rooms;
        self
    }

    /// Sets [`ProtocolConfig::max_reply_backlog`].
    #[must_use]
    pub fn max_reply_backlog(mut self, frames: usize) -> Self {
        self.max_reply_backlog = frames;
        self
    }
}
