//! The protocol layer's own settings: rate limit and room history. The engine's
//! settings (sizes, heartbeat, queues) stay in [`crate::Config`].

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
}

impl Default for ProtocolConfig {
    fn default() -> Self {
        ProtocolConfig {
            rate_limit: 100,
            rate_burst: 200,
            history_size: 1000,
            history_ttl: Duration::from_secs(300),
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
}
