//! The protocol layer's own settings: rate limit, room history and the bounds
//! on what one client may make the server hold. The engine's settings (sizes,
//! heartbeat, queues) stay in [`crate::Config`].

use std::time::Duration;

use super::namespace::{HistoryRules, Namespace, Namespaces};

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

    // Admission (docs/protocol.md, "Handshake rules", "Identity and authorization").
    /// HMAC secret for HS256/384/512 tokens; with it (or
    /// [`jwt_public_key_pem`](Self::jwt_public_key_pem)) every upgrade needs a
    /// valid token (else 401). Never shown by `Debug`.
    pub jwt_secret: Option<Secret>,
    /// PEM public key (RSA for RS256, P-256 for ES256, P-384 for ES384) verifying tokens.
    pub jwt_public_key_pem: Option<String>,
    /// When set, a token's `aud` must name it; when not, a token carrying
    /// `aud` is refused (it was minted for another service).
    pub jwt_audience: Option<String>,
    /// When set, a token's `iss` must be it.
    pub jwt_issuer: Option<String>,
    /// Origins an upgrade may come from: exact `scheme://host[:port]`, or
    /// `scheme://*.example.com` for its subdomains. Another `Origin` gets 403.
    /// Empty = any origin (and requests without `Origin`).
    pub allow_origins: Vec<String>,
    /// Connections one user (`sub`) may have open; one more gets 503 with
    /// `Retry-After`. 0 = no limit.
    pub max_connections_per_user: usize,
    // Backend HTTP API and moderation (docs/protocol.md, "Backend HTTP API").
    /// The key the backend HTTP API (`/api/*`) requires (`Authorization:
    /// apikey <KEY>` or `X-API-Key`); `None` or an empty key turns the API
    /// off (404), and an empty presented key never matches. Never shown by
    /// `Debug` or logged.
    pub api_key: Option<Secret>,
    /// Users the ban list holds at most (expired bans do not count); a ban
    /// past it is refused.
    pub max_bans: usize,

    // Scale-out (docs/scaling.md).
    /// `redis://[:password@]host:port[/db]` or `rediss://...`: rooms, seq,
    /// history and presence are shared with every node on the same Redis.
    /// More than one: rooms are spread over them by a consistent hash of the
    /// room name (every node must be given the same list, in the same
    /// order). Empty = a single node, with no Redis code on its paths (unless
    /// `redis_sentinels` are set). Never shown by `Debug` (a URL may hold a
    /// password).
    pub redis_urls: Vec<Secret>,
    /// Sentinels (`HOST:PORT`) that name the primary of
    /// [`redis_sentinel_master`](Self::redis_sentinel_master): each new
    /// connection goes to the primary they name, so a node follows a
    /// failover. A URL in `redis_urls`, if set, then only lends its password,
    /// database and TLS settings. Empty = no Sentinel. Sentinel serves one
    /// shard: with more than one URL it is refused.
    pub redis_sentinels: Vec<String>,
    /// The master name the sentinels watch; needed with `redis_sentinels`.
    pub redis_sentinel_master: Option<String>,
    /// Prefix of every Redis key and channel this cluster uses.
    pub redis_prefix: String,
    /// With Redis: how long a publish's idempotency key is remembered, however
    /// few messages the room's history keeps.
    pub idempotency_ttl: Duration,
    /// With Redis: the bound on each Redis connect, read and write a call
    /// may wait for (and on the wait for a pooled connection), before the
    /// call fails with `error unavailable`.
    pub redis_timeout: Duration,

    /// Serves `GET /sse` (docs/protocol.md, "Server-Sent Events"); `false`
    /// answers it `404`.
    pub sse: bool,

    /// Rooms with their own rules, by name prefix (docs/protocol.md,
    /// "Namespaces and rights"); rooms no prefix matches follow the settings above.
    pub namespaces: Vec<Namespace>,

    // The backend proxy (docs/protocol.md, "Namespaces and rights"): http:// URLs.
    /// Asked before every WebSocket upgrade: its `200 {user, caps?}` admits
    /// (instead of a token), `401`/`403` refuse, anything else is `503`.
    pub proxy_connect: Option<String>,
    /// Asked on every first `room:join` of a room and every `/sse`.
    pub proxy_join: Option<String>,
    /// Asked on every client publish; it may replace the data.
    pub proxy_publish: Option<String>,
    /// How long one proxy call may take before it counts as failed.
    pub proxy_timeout: Duration,
    /// Sent as `Authorization: apikey <key>` on every proxy call. Never
    /// shown by `Debug` or logged.
    pub proxy_key: Option<Secret>,
}

/// A secret setting: compared and cloned as usual, but `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
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
            jwt_secret: None,
            jwt_public_key_pem: None,
            jwt_audience: None,
            jwt_issuer: None,
            allow_origins: Vec::new(),
            max_connections_per_user: 0,
            api_key: None,
            max_bans: 10_000,
            redis_urls: Vec::new(),
            redis_sentinels: Vec::new(),
            redis_sentinel_master: None,
            redis_prefix: "wshub".to_owned(),
            idempotency_ttl: Duration::from_secs(300),
            redis_timeout: Duration::from_millis(1000),
            sse: true,
            namespaces: Vec::new(),
            proxy_connect: None,
            proxy_join: None,
            proxy_publish: None,
            proxy_timeout: Duration::from_millis(1000),
            proxy_key: None,
        }
    }
}

impl ProtocolConfig {
    /// The rules every room gets: its namespace's, or the top-level ones.
    pub(crate) fn namespace_rules(&self) -> Namespaces {
        let history =
            HistoryRules { count: self.history_size, ttl: self.history_ttl, bytes: self.history_max_bytes };
        Namespaces::new(history, &self.namespaces)
    }

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

    /// Checks what would otherwise only show at the first upgrade: a JWT key
    /// that cannot be used, a secret and a public key both set, an Origin
    /// pattern that does not parse.
    pub fn validate(&self) -> Result<(), String> {
        use crate::config::bounds;
        bounds::check(&[
            ("history_size", self.history_size, bounds::SLOTS),
            ("history_max_bytes", self.history_max_bytes, bounds::BUDGET),
            ("history_total_max_bytes", self.history_total_max_bytes, bounds::BUDGET),
            ("replay_max_bytes", self.replay_max_bytes, bounds::BUDGET),
            ("max_rooms_per_client", self.max_rooms_per_client, bounds::SLOTS),
            ("max_rooms", self.max_rooms, bounds::SLOTS),
            ("max_reply_backlog", self.max_reply_backlog, bounds::SLOTS),
            ("max_connections_per_user", self.max_connections_per_user, bounds::CONNECTIONS),
            ("max_bans", self.max_bans, bounds::SLOTS),
            ("redis (instances)", self.redis_urls.len(), bounds::REDIS_SHARDS),
            ("redis_sentinel (sentinels)", self.redis_sentinels.len(), bounds::REDIS_SENTINELS),
        ])?;
        bounds::check_durations(&[
            ("history_ttl", self.history_ttl),
            ("idempotency_ttl", self.idempotency_ttl),
            ("redis_timeout", self.redis_timeout),
        ])?;
        if self.redis_timeout.is_zero() {
            return Err("redis_timeout must be above 0".to_owned());
        }
        super::auth::Verifier::new(
            self.jwt_secret.as_ref().map(|s| s.0.as_str()),
            self.jwt_public_key_pem.as_deref(),
            self.jwt_audience.as_deref(),
            self.jwt_issuer.as_deref(),
        )?;
        if let Some(bad) =
            self.allow_origins.iter().find(|o| super::origin::Origin::parse_pattern(o).is_none())
        {
            return Err(format!("allow_origin {bad:?} is not scheme://host[:port]"));
        }
        if self.api_key.as_ref().is_some_and(|k| k.0.is_empty()) {
            return Err("api_key must not be empty (leave it unset to turn the API off)".to_owned());
        }
        for namespace in &self.namespaces {
            namespace.check()?;
        }
        for (name, url) in [
            ("proxy_connect", &self.proxy_connect),
            ("proxy_join", &self.proxy_join),
            ("proxy_publish", &self.proxy_publish),
        ] {
            if let Some(url) = url {
                check_url(name, url)?;
            }
        }
        // Sent as a header value: a control character (CR, LF) would fail
        // every call (refused by the HTTP client), so it is refused here.
        if self.proxy_key.as_ref().is_some_and(|k| k.0.is_empty() || k.0.chars().any(|c| c.is_control())) {
            return Err("proxy_key must be non-empty, without control characters".to_owned());
        }
        bounds::check_durations(&[("proxy_timeout", self.proxy_timeout)])?;
        if self.proxy_timeout.is_zero() {
            return Err("proxy_timeout must be above 0".to_owned());
        }
        for url in &self.redis_urls {
            redis::Client::open(url.0.as_str()).map_err(|e| format!("redis: {e}"))?;
        }
        if self.redis_urls.len() > 1 && !self.redis_sentinels.is_empty() {
            return Err("redis_sentinel watches one master: give at most one redis URL with it".to_owned());
        }
        for addr in &self.redis_sentinels {
            super::cluster::sentinel::parse_addr(addr)?;
        }
        match (self.redis_sentinels.is_empty(), &self.redis_sentinel_master) {
            (false, None) => return Err("redis_sentinel needs redis_sentinel_master".to_owned()),
            (true, Some(_)) => return Err("redis_sentinel_master needs redis_sentinel".to_owned()),
            (_, Some(name)) if name.is_empty() || name.contains(char::is_whitespace) => {
                return Err("redis_sentinel_master must be a name without spaces".to_owned())
            }
            _ => {}
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.chars().any(|c| c.is_control() || c == ' ') {
            return Err("redis_prefix must be non-empty, without spaces or control characters".to_owned());
        }
        Ok(())
    }

    /// Sets [`ProtocolConfig::api_key`] (an empty key is refused by
    /// [`validate`](Self::validate), and without it leaves the API off).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret(key.into()));
        self
    }

    /// Sets [`ProtocolConfig::max_bans`].
    #[must_use]
    pub fn max_bans(mut self, users: usize) -> Self {
        self.max_bans = users;
        self
    }

    /// Sets [`ProtocolConfig::jwt_secret`].
    #[must_use]
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(Secret(secret.into()));
        self
    }

    /// Sets [`ProtocolConfig::jwt_public_key_pem`].
    #[must_use]
    pub fn jwt_public_key_pem(mut self, pem: impl Into<String>) -> Self {
        self.jwt_public_key_pem = Some(pem.into());
        self
    }

    /// Sets [`ProtocolConfig::jwt_audience`].
    #[must_use]
    pub fn jwt_audience(mut self, audience: impl Into<String>) -> Self {
        self.jwt_audience = Some(audience.into());
        self
    }

    /// Sets [`ProtocolConfig::jwt_issuer`].
    #[must_use]
    pub fn jwt_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.jwt_issuer = Some(issuer.into());
        self
    }

    /// Adds an origin to [`ProtocolConfig::allow_origins`].
    #[must_use]
    pub fn allow_origin(mut self, origin: impl Into<String>) -> Self {
        self.allow_origins.push(origin.into());
        self
    }

    /// Adds a Redis to [`ProtocolConfig::redis_urls`] (called again: one
    /// more shard).
    #[must_use]
    pub fn redis(mut self, url: impl Into<String>) -> Self {
        self.redis_urls.push(Secret(url.into()));
        self
    }

    /// Adds a sentinel to [`ProtocolConfig::redis_sentinels`].
    #[must_use]
    pub fn redis_sentinel(mut self, addr: impl Into<String>) -> Self {
        self.redis_sentinels.push(addr.into());
        self
    }

    /// Sets [`ProtocolConfig::redis_sentinel_master`].
    #[must_use]
    pub fn redis_sentinel_master(mut self, name: impl Into<String>) -> Self {
        self.redis_sentinel_master = Some(name.into());
        self
    }

    /// Whether this node shares rooms through Redis (a URL or sentinels).
    pub fn clustered(&self) -> bool {
        !self.redis_urls.is_empty() || !self.redis_sentinels.is_empty()
    }

    /// Sets [`ProtocolConfig::redis_prefix`].
    #[must_use]
    pub fn redis_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.redis_prefix = prefix.into();
        self
    }

    /// Sets [`ProtocolConfig::idempotency_ttl`].
    #[must_use]
    pub fn idempotency_ttl(mut self, ttl: Duration) -> Self {
        self.idempotency_ttl = ttl;
        self
    }

    /// Sets [`ProtocolConfig::sse`].
    #[must_use]
    pub fn sse(mut self, on: bool) -> Self {
        self.sse = on;
        self
    }

    /// Adds a namespace to [`ProtocolConfig::namespaces`] (one with the
    /// prefix of an earlier one replaces it).
    #[must_use]
    pub fn namespace(mut self, namespace: Namespace) -> Self {
        self.namespaces.push(namespace);
        self
    }

    /// Sets [`ProtocolConfig::proxy_connect`].
    #[must_use]
    pub fn proxy_connect(mut self, url: impl Into<String>) -> Self {
        self.proxy_connect = Some(url.into());
        self
    }

    /// Sets [`ProtocolConfig::proxy_join`].
    #[must_use]
    pub fn proxy_join(mut self, url: impl Into<String>) -> Self {
        self.proxy_join = Some(url.into());
        self
    }

    /// Sets [`ProtocolConfig::proxy_publish`].
    #[must_use]
    pub fn proxy_publish(mut self, url: impl Into<String>) -> Self {
        self.proxy_publish = Some(url.into());
        self
    }

    /// Sets [`ProtocolConfig::redis_timeout`].
    #[must_use]
    pub fn redis_timeout(mut self, timeout: Duration) -> Self {
        self.redis_timeout = timeout;
        self
    }

    /// Sets [`ProtocolConfig::proxy_timeout`].
    #[must_use]
    pub fn proxy_timeout(mut self, timeout: Duration) -> Self {
        self.proxy_timeout = timeout;
        self
    }

    /// Sets [`ProtocolConfig::proxy_key`].
    #[must_use]
    pub fn proxy_key(mut self, key: impl Into<String>) -> Self {
        self.proxy_key = Some(Secret(key.into()));
        self
    }

    /// Sets [`ProtocolConfig::max_connections_per_user`].
    #[must_use]
    pub fn max_connections_per_user(mut self, n: usize) -> Self {
        self.max_connections_per_user = n;
        self
    }
}

/// Checks a proxy URL (for [`ProtocolConfig::validate`]).
pub(crate) fn check_url(name: &str, url: &str) -> Result<(), String> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && url.parse::<ureq::http::Uri>().is_ok() => Ok(()),
        _ => Err(format!("{name} must be an http:// URL (https:// is not supported), not {url:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_key_that_cannot_be_a_header_value_is_refused() {
        let with = |key: &str| ProtocolConfig::default().proxy_key(key).validate();
        assert!(with("k3y-with spaces").is_ok());
        assert!(with("key\r\nX-Evil: 1").is_err());
        assert!(with("key\n").is_err());
        assert!(with("").is_err());
    }
}
