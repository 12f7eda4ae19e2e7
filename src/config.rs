//! Server configuration: the engine's settings (sockets, threads, queues,
//! handshake and per-address bounds, TLS), each with its default here, once.
//! The protocol's settings (rooms, history, auth, Redis) and their defaults
//! are in [`ProtocolConfig`](crate::protocol::ProtocolConfig); fixed
//! constants that are no setting stay next to the code they bound.
//!
//! The CLI flags of the `wshub` binary and the C setters in `ffi/` mirror
//! these fields and `ProtocolConfig`'s; neither defines a default of its own.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::PemSource;

/// Upper bounds of every size, count and duration in a configuration, here
/// and in [`ProtocolConfig`](crate::protocol::ProtocolConfig): checked when a
/// server starts, so the Rust API, the C setters, the binary's flags and its
/// config file refuse the same values with the same message. Each is far
/// above any real deployment and low enough that what wshub allocates up to
/// it (a queue's slots, a connection's buffers) cannot abort the process.
pub(crate) mod bounds {
    use std::time::Duration;

    /// Connections, handshakes, per-address and per-user caps.
    pub(crate) const CONNECTIONS: usize = 1 << 22;
    /// Slots of a queue allocated up front or grown per message: the hub's
    /// queue, a connection's outbound frames, fragments, events, history
    /// entries, rooms and bans.
    pub(crate) const SLOTS: usize = 1 << 20;
    /// A single buffer or message, in bytes (a connection's read and write
    /// buffers, the largest message).
    pub(crate) const BUFFER: usize = 1 << 30;
    /// A connection's read buffer: tungstenite zero-fills this many bytes
    /// before every read, so each connection pays it in memory (touched, not
    /// just reserved) and every read in time. At 1 GiB twenty clients took
    /// 20 GiB and the OOM killer ended the host.
    pub(crate) const READ_BUFFER: usize = 1 << 20;
    /// A byte budget that is counted, never allocated at once (an outbound
    /// queue's bytes, history bytes, replay bytes).
    pub(crate) const BUDGET: usize = 1 << 36;
    /// Redis instances (`--redis` repeated), each a shard with a subscriber
    /// thread of its own: 20,000 made the process abort at start (no
    /// memory for the threads' stacks) and 2,000 ran 2,000 threads.
    pub(crate) const REDIS_SHARDS: usize = 256;
    /// Sentinels (`--redis-sentinel` repeated): every new Redis connection
    /// may ask each in turn.
    pub(crate) const REDIS_SENTINELS: usize = 16;
    /// Any timeout or interval: 30 days.
    pub(crate) const DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

    /// The first `(name, value, bound)` whose value is over its bound, as the
    /// error every caller reports.
    pub(crate) fn check(limits: &[(&str, usize, usize)]) -> Result<(), String> {
        match limits.iter().find(|(_, value, bound)| value > bound) {
            Some((name, _, bound)) => Err(format!("{name} must be at most {bound}")),
            None => Ok(()),
        }
    }

    /// Like [`check`] for durations.
    pub(crate) fn check_durations(limits: &[(&str, Duration)]) -> Result<(), String> {
        match limits.iter().find(|(_, value)| *value > DURATION) {
            Some((name, _)) => Err(format!("{name} must be at most {} ms", DURATION.as_millis())),
            None => Ok(()),
        }
    }
}

/// Everything a [`Server`](crate::Server) needs to know before it starts.
///
/// Build it from [`Config::default()`] and the by-value setters:
///
/// ```
/// use std::time::Duration;
/// let config = wshub::Config::default()
///     .bind("127.0.0.1:0".parse().unwrap())
///     .heartbeat_interval(Duration::from_millis(200))
///     .idle_timeout(Duration::from_millis(600));
/// assert_eq!(config.path, "/ws");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// Address the acceptor listens on. Port 0 picks a free port; read it back
    /// with [`ServerHandle::local_addr`](crate::ServerHandle::local_addr).
    pub bind: SocketAddr,
    /// Request path that upgrades to WebSocket (default `/ws`). Other paths are
    /// plain HTTP and go to [`Handler::on_http`](crate::Handler::on_http).
    pub path: String,
    /// Largest message (and frame) accepted from a peer, in bytes. A larger one
    /// closes the connection with 1009.
    pub max_message_size: usize,
    /// Frames that may wait in one connection's outbound queue. A connection whose
    /// queue is full is a slow consumer and is closed with 1013.
    pub outbound_queue: usize,
    /// Bytes that may wait in one connection's outbound queue: data frames,
    /// replies, replays, its pong and close frames, until written. Past it the
    /// connection is a slow consumer and is closed with 1013. A single frame
    /// larger than this is still sent when nothing else is queued.
    pub outbound_max_bytes: usize,
    /// Frames per second a connection may send, every kind counted (data,
    /// continuation, ping, pong, close), with a burst of twice as many; past
    /// it the connection is closed with 1008. 0 turns the limit off.
    pub frame_rate_limit: u32,
    /// Frames one message may arrive in; a message in more closes the
    /// connection with 1009. 0 turns the limit off.
    pub max_fragments: usize,
    /// Whether the server accepts `permessage-deflate` (RFC 7692) when a
    /// client offers it. On by default: see "Compression" in docs/design.md for the measurement.
    pub compression: bool,
    /// With [`Config::compression`]: messages to a client whose payload is
    /// shorter than this go uncompressed (RSV1 clear).
    pub compression_min_bytes: usize,
    /// How often the writer pings an open connection.
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing (no frame, no pong) for this long is
    /// terminated without a close handshake.
    pub idle_timeout: Duration,
    /// Open WebSocket connections allowed at once; one more is refused with 503.
    pub max_connections: usize,
    /// Stack reserved for each reader thread, which also runs the handler's
    /// callbacks: 64 KiB to 256 MiB for their own use; glibc's thread
    /// descriptor and TLS come on top. Only touched pages cost memory.
    pub reader_stack_size: usize,
    /// Stack reserved for each writer thread.
    pub writer_stack_size: usize,
    /// Initial capacity of a connection's read buffer, and the most one `read`
    /// takes (tungstenite's default is 128 KiB), at most 1 MiB. A small one
    /// keeps an idle connection's footprint small (docs/operations.md, "What a
    /// connection costs"); the buffer grows to hold a larger message.
    pub read_buffer_size: usize,
    /// Most bytes the writer gathers into one `writev` batch.
    pub write_buffer_size: usize,
    /// Time a client has to send its complete HTTP request, from the accept:
    /// one deadline for the whole request head, however it trickles in (then
    /// 408). It also bounds the quick answers of the overflow thread.
    pub handshake_timeout: Duration,
    /// Time a closing connection gets to flush its close frame and receive the
    /// peer's close before the socket is torn down.
    pub close_timeout: Duration,
    /// Time [`ServerHandle::stop`](crate::ServerHandle::stop) lets connections
    /// drain their queues and finish the close handshake before forcing them.
    pub shutdown_timeout: Duration,
    /// Commands that may wait in the room hub's queue (sends, broadcasts,
    /// joins, leaves, closes, queries); callers block (briefly) when it is
    /// full, which is the back-pressure on publishers. A stop and a
    /// connection's start and end take the hub's control lane instead
    /// (`hub/order.rs`), which this does not size.
    pub hub_queue: usize,

    // Admission: what a peer may hold before its upgrade, per address and in
    // total (docs/protocol.md, "Handshake rules").
    /// Sockets that may be in their handshake at once (connected, HTTP request
    /// not yet answered), apart from [`max_connections`](Self::max_connections).
    /// Each holds a reader thread; past it, a socket gets a quick answer from
    /// the overflow thread (503, or the handler's answer to a plain request
    /// such as `/healthz`). When all are taken, a socket from an address
    /// holding fewer than the biggest holder takes that holder's oldest slot
    /// (closing that socket).
    pub max_handshakes: usize,
    /// Sockets one IP address (an IPv6 address: its /64, as for every
    /// per-address bound) may have in their handshake at once; past it, as
    /// past [`max_handshakes`](Self::max_handshakes). Default 16.
    pub max_handshakes_per_ip: usize,
    /// Connections (open, or still in their handshake) one IP address may
    /// have; one more gets 503 with `Retry-After`. 0 = no limit.
    pub max_connections_per_ip: usize,
    /// New connections per second one IP address may open (a token bucket
    /// holding one second's worth); one more gets 429. 0 = no limit.
    pub connect_rate_per_ip: u32,
    /// Sockets the overflow thread holds at once while it answers them (each
    /// for at most a second or two); past it the oldest socket of the address
    /// holding the most is dropped unanswered.
    pub overflow_sockets: usize,
    /// Bytes of plain requests' bodies all connections together may be
    /// reading at once (each counted at its `Content-Length` from its head
    /// until it is answered); a body that would take it past gets 503 with
    /// `Retry-After`, unread (413 when it is larger than the whole budget,
    /// as it could never be read). Which requests take a body at all is the
    /// handler's call ([`Handler::on_body`](crate::Handler::on_body)).
    pub request_body_budget: usize,
    /// Address blocks of proxies whose `X-Forwarded-For` is believed
    /// (`10.0.0.0/8`, `::1`; see [`Config::trusted_proxy`]): from such a
    /// peer, the client's address is the rightmost entry of that header
    /// that is not itself in one of these blocks, and every per-address
    /// bound, the logs and [`RequestInfo::remote_addr`](crate::RequestInfo::remote_addr)
    /// use it; from any other peer the header is ignored. Empty: no proxy
    /// is trusted.
    pub trusted_proxies: Vec<String>,
    /// A second listener for the operator's endpoints: `/metrics`,
    /// `/healthz` and `/api/*` are served there (and nothing else: `404`,
    /// upgrades included), and the main port then answers `404` for
    /// `/metrics` and `/api/*`. `None` (the default): everything on the
    /// main port. It speaks TLS when the main port does (the same
    /// certificate), so the API key never travels in cleartext there either.
    pub admin_bind: Option<SocketAddr>,
    /// The certificate chain (PEM, leaf first) served over TLS. With
    /// [`Config::tls_key`] the port speaks only TLS: `wss://` and `https://`.
    /// Re-read by [`ServerHandle::reload_tls`](crate::ServerHandle::reload_tls).
    pub tls_cert: Option<PemSource>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of [`Config::tls_cert`].
    pub tls_key: Option<PemSource>,
    /// CA certificates (PEM) that client certificates must chain to; a client
    /// without a valid one fails the TLS handshake. `None`: no client certificates.
    pub tls_client_ca: Option<PemSource>,

    // Embedding in a host (issue 20).
    /// Whether the server binds [`bind`](Self::bind) and runs an acceptor
    /// thread (default true). False: no listening socket and no acceptor
    /// thread at all; connections come only from
    /// [`ServerHandle::adopt`](crate::ServerHandle::adopt), and
    /// [`ServerHandle::local_addr`](crate::ServerHandle::local_addr) is
    /// `0.0.0.0:0`. In C: `wshub_config_set_bind(config, "")`.
    pub listen: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 9001)),
            path: "/ws".to_owned(),
            max_message_size: 1 << 20,
            outbound_queue: 1024,
            outbound_max_bytes: 8 << 20,
            frame_rate_limit: 1000,
            max_fragments: 1024,
            compression: true,
            compression_min_bytes: 128,
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            max_connections: 10_000,
            reader_stack_size: 256 * 1024,
            writer_stack_size: 128 * 1024,
            read_buffer_size: 2 * 1024,
            write_buffer_size: 64 * 1024,
            handshake_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(5),
            hub_queue: 16 * 1024,
            max_handshakes: 1024,
            max_handshakes_per_ip: 16,
            max_connections_per_ip: 0,
            connect_rate_per_ip: 0,
            overflow_sockets: 1024,
            request_body_budget: 16 << 20,
            trusted_proxies: Vec::new(),
            admin_bind: None,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            listen: true,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty;)*) => {
        impl Config {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $name(mut self, value: $ty) -> Self {
                    self.$name = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`Config::bind`].
    bind: SocketAddr;
    /// Sets [`Config::max_message_size`].
    max_message_size: usize;
    /// Sets [`Config::outbound_queue`].
    outbound_queue: usize;
    /// Sets [`Config::outbound_max_bytes`].
    outbound_max_bytes: usize;
    /// Sets [`Config::frame_rate_limit`].
    frame_rate_limit: u32;
    /// Sets [`Config::max_fragments`].
    max_fragments: usize;
    /// Sets [`Config::compression`].
    compression: bool;
    /// Sets [`Config::compression_min_bytes`].
    compression_min_bytes: usize;
    /// Sets [`Config::heartbeat_interval`].
    heartbeat_interval: Duration;
    /// Sets [`Config::idle_timeout`].
    idle_timeout: Duration;
    /// Sets [`Config::max_connections`].
    max_connections: usize;
    /// Sets [`Config::reader_stack_size`].
    reader_stack_size: usize;
    /// Sets [`Config::writer_stack_size`].
    writer_stack_size: usize;
    /// Sets [`Config::read_buffer_size`].
    read_buffer_size: usize;
    /// Sets [`Config::write_buffer_size`].
    write_buffer_size: usize;
    /// Sets [`Config::handshake_timeout`].
    handshake_timeout: Duration;
    /// Sets [`Config::close_timeout`].
    close_timeout: Duration;
    /// Sets [`Config::shutdown_timeout`].
    shutdown_timeout: Duration;
    /// Sets [`Config::hub_queue`].
    hub_queue: usize;
    /// Sets [`Config::max_handshakes`].
    max_handshakes: usize;
    /// Sets [`Config::max_handshakes_per_ip`].
    max_handshakes_per_ip: usize;
    /// Sets [`Config::max_connections_per_ip`].
    max_connections_per_ip: usize;
    /// Sets [`Config::connect_rate_per_ip`].
    connect_rate_per_ip: u32;
    /// Sets [`Config::overflow_sockets`].
    overflow_sockets: usize;
    /// Sets [`Config::request_body_budget`].
    request_body_budget: usize;
    /// Sets [`Config::admin_bind`].
    admin_bind: Option<SocketAddr>;
    /// Sets [`Config::tls_cert`].
    tls_cert: Option<PemSource>;
    /// Sets [`Config::tls_key`].
    tls_key: Option<PemSource>;
    /// Sets [`Config::tls_client_ca`].
    tls_client_ca: Option<PemSource>;
    /// Sets [`Config::listen`].
    listen: bool;
}

impl Config {
    /// Adds a block to [`Config::trusted_proxies`].
    #[must_use]
    pub fn trusted_proxy(mut self, cidr: impl Into<String>) -> Self {
        self.trusted_proxies.push(cidr.into());
        self
    }

    /// [`Config::trusted_proxies`], parsed.
    pub(crate) fn trusted_blocks(&self) -> Result<Vec<crate::trusted_proxy::Cidr>, String> {
        self.trusted_proxies.iter().map(|s| s.parse().map_err(|e| format!("trusted_proxy: {e}"))).collect()
    }

    /// Sets [`Config::path`].
    #[must_use]
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Checks the values that would make the server misbehave rather than fail
    /// loudly, so `start` can refuse them with a message naming the field.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let nonzero = [
            ("max_message_size", self.max_message_size),
            ("outbound_queue", self.outbound_queue),
            ("outbound_max_bytes", self.outbound_max_bytes),
            ("max_connections", self.max_connections),
            ("read_buffer_size", self.read_buffer_size),
            ("write_buffer_size", self.write_buffer_size),
            ("hub_queue", self.hub_queue),
            ("max_handshakes", self.max_handshakes),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip),
            ("overflow_sockets", self.overflow_sockets),
        ];
        if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be greater than 0"));
        }
        let durations = [
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("close_timeout", self.close_timeout),
        ];
        if let Some((name, _)) = durations.iter().find(|(_, d)| d.is_zero()) {
            return Err(format!("{name} must be greater than 0"));
        }
        bounds::check(&[
            ("max_message_size", self.max_message_size, bounds::BUFFER),
            ("outbound_queue", self.outbound_queue, bounds::SLOTS),
            ("outbound_max_bytes", self.outbound_max_bytes, bounds::BUDGET),
            ("max_fragments", self.max_fragments, bounds::SLOTS),
            ("max_connections", self.max_connections, bounds::CONNECTIONS),
            ("read_buffer_size", self.read_buffer_size, bounds::READ_BUFFER),
            ("write_buffer_size", self.write_buffer_size, bounds::BUFFER),
            ("hub_queue", self.hub_queue, bounds::SLOTS),
            ("max_handshakes", self.max_handshakes, bounds::CONNECTIONS),
            ("max_handshakes_per_ip", self.max_handshakes_per_ip, bounds::CONNECTIONS),
            ("max_connections_per_ip", self.max_connections_per_ip, bounds::CONNECTIONS),
            ("overflow_sockets", self.overflow_sockets, bounds::SLOTS),
        ])?;
        bounds::check_durations(&[
            ("heartbeat_interval", self.heartbeat_interval),
            ("idle_timeout", self.idle_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("close_timeout", self.close_timeout),
            ("shutdown_timeout", self.shutdown_timeout),
        ])?;
        const MIN_STACK: usize = 64 * 1024;
        // Far above any need; keeps the stack arithmetic (glibc's share,
        // guards, 32 stacks per mapping) far from overflowing.
        const MAX_STACK: usize = 256 * 1024 * 1024;
        let stacks =
            [("reader_stack_size", self.reader_stack_size), ("writer_stack_size", self.writer_stack_size)];
        if let Some((name, _)) = stacks.iter().find(|(_, s)| !(MIN_STACK..=MAX_STACK).contains(s)) {
            return Err(format!("{name} must be {MIN_STACK} to {MAX_STACK} bytes"));
        }
        if !self.path.starts_with('/') {
            return Err("path must start with '/'".to_owned());
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err("tls_cert and tls_key go together".to_owned());
        }
        self.trusted_blocks()?;
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err("tls_client_ca needs tls_cert and tls_key".to_owned());
        }
        Ok(())
    }

    /// The TLS material, when TLS is on.
    pub(crate) fn tls_sources(&self) -> Option<crate::tls::TlsSources> {
        Some(crate::tls::TlsSources {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_protocol() {
        let c = Config::default();
        assert!(c.validate().is_ok());
        assert_eq!(c.max_message_size, 1024 * 1024);
        assert_eq!(c.outbound_queue, 1024);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(30));
        assert_eq!(c.idle_timeout, Duration::from_secs(45));
    }

    #[test]
    fn validate_names_the_bad_field() {
        let err = Config::default().outbound_queue(0).validate().unwrap_err();
        assert!(err.contains("outbound_queue"), "{err}");
        let err = Config::default().idle_timeout(Duration::ZERO).validate().unwrap_err();
        assert!(err.contains("idle_timeout"), "{err}");
        assert!(Config::default().path("ws").validate().is_err());
        assert!(Config::default().reader_stack_size(4096).validate().is_err());
        assert!(Config::default().writer_stack_size(usize::MAX).validate().is_err());
        assert!(Config::default().reader_stack_size(256 << 20).validate().is_ok());
        assert!(Config::default().reader_stack_size((256 << 20) + 1).validate().is_err());
    }

    #[test]
    fn sizes_counts_and_durations_have_upper_bounds() {
        let err = Config::default().hub_queue(1 << 40).validate().unwrap_err();
        assert_eq!(err, format!("hub_queue must be at most {}", bounds::SLOTS));
        assert!(Config::default()
            .read_buffer_size(usize::MAX)
            .validate()
            .unwrap_err()
            .contains("read_buffer_size"));
        assert!(Config::default().hub_queue(bounds::SLOTS).validate().is_ok());
        // Each connection touches its whole read buffer: 1 GiB each is a
        // host killed by its twentieth client, not a bound.
        assert!(Config::default().read_buffer_size(1 << 20).validate().is_ok());
        let err = Config::default().read_buffer_size((1 << 20) + 1).validate().unwrap_err();
        assert_eq!(err, "read_buffer_size must be at most 1048576");
        assert!(Config::default().read_buffer_size(1 << 30).validate().is_err());
        let err = Config::default().shutdown_timeout(Duration::MAX).validate().unwrap_err();
        assert!(err.contains("shutdown_timeout"), "{err}");
    }
}
