//! The `wshub` binary: the engine behind a command line.
//!
//! `wshub` alone serves wire protocol v1 (`docs/protocol.md`) on
//! `ws://127.0.0.1:9001/ws`, with `/healthz`, `/metrics` and a demo page at `/`;
//! `wshub --echo` echoes every message (the conformance target).
//!
//! Settings come from, by priority: flags given on the command line, the
//! `--config` TOML file, the defaults of [`Config`] and [`ProtocolConfig`].
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use wshub::protocol::{Namespace, ProtocolConfig, ProtocolHandler};
use wshub::{Config, EchoHandler, PemSource, Server};

mod cli_tools;

/// A thread-per-connection WebSocket server with rooms.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    tool: Option<cli_tools::Tool>,
    /// The config file's `[[namespace]]` blocks (not flags).
    #[arg(skip)]
    namespaces: Vec<Namespace>,
    /// Address to listen on (port 0 picks a free port; the real address is printed).
    #[arg(long, default_value = "127.0.0.1:9001")]
    bind: SocketAddr,
    /// TOML file with settings (keys are the flag names with `_`, e.g.
    /// `rate_limit = 50`); flags given on the command line override it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Echo every text and binary message back to its sender instead of serving the protocol.
    #[arg(long)]
    echo: bool,
    /// Request path that upgrades to WebSocket.
    #[arg(long, default_value_t = Config::default().path)]
    path: String,
    /// Largest message accepted, in bytes; larger closes with 1009.
    #[arg(long, default_value_t = Config::default().max_message_size)]
    max_message_size: usize,
    /// Frames that may queue for one client before it is closed with 1013.
    #[arg(long, default_value_t = Config::default().outbound_queue)]
    outbound_queue: usize,
    /// Bytes that may queue for one client (data, replies, replays, pongs, close) before it is closed with 1013.
    #[arg(long, default_value_t = Config::default().outbound_max_bytes)]
    outbound_max_bytes: usize,
    /// Frames per second one client may send, every kind counted, burst twice that; past it closes with 1008; 0 = off.
    #[arg(long, default_value_t = Config::default().frame_rate_limit)]
    frame_rate_limit: u32,
    /// Frames one message may arrive in; more closes with 1009; 0 = no limit.
    #[arg(long, default_value_t = Config::default().max_fragments)]
    max_fragments: usize,
    /// permessage-deflate (RFC 7692) for clients that offer it: off or on.
    #[arg(long, value_name = "off|on", default_value = on_off(Config::default().compression), value_parser = parse_on_off, action = clap::ArgAction::Set)]
    compression: bool,
    /// With --compression on: messages shorter than this many bytes go uncompressed.
    #[arg(long, default_value_t = Config::default().compression_min_bytes)]
    compression_min_bytes: usize,
    /// Milliseconds between server pings.
    #[arg(long, default_value_t = ms(Config::default().heartbeat_interval))]
    heartbeat_ms: u64,
    /// Milliseconds of silence after which a client is dropped.
    #[arg(long, default_value_t = ms(Config::default().idle_timeout))]
    idle_timeout_ms: u64,
    /// Open connections allowed; more are refused with 503.
    #[arg(long, default_value_t = Config::default().max_connections)]
    max_connections: usize,
    /// Stack bytes reserved per reader thread.
    #[arg(long, default_value_t = Config::default().reader_stack_size)]
    reader_stack_size: usize,
    /// Stack bytes reserved per writer thread.
    #[arg(long, default_value_t = Config::default().writer_stack_size)]
    writer_stack_size: usize,
    /// Initial read buffer per connection, in bytes (at most 1048576).
    #[arg(long, default_value_t = Config::default().read_buffer_size)]
    read_buffer_size: usize,
    /// Most bytes one writev batch gathers.
    #[arg(long, default_value_t = Config::default().write_buffer_size)]
    write_buffer_size: usize,
    /// Milliseconds a client has to send its HTTP request.
    #[arg(long, default_value_t = ms(Config::default().handshake_timeout))]
    handshake_timeout_ms: u64,
    /// Milliseconds a closing connection gets to finish the close handshake.
    #[arg(long, default_value_t = ms(Config::default().close_timeout))]
    close_timeout_ms: u64,
    /// Milliseconds a graceful stop waits for connections before cutting them.
    #[arg(long, default_value_t = ms(Config::default().shutdown_timeout))]
    shutdown_timeout_ms: u64,
    /// Commands that may wait in the room hub's queue.
    #[arg(long, default_value_t = Config::default().hub_queue)]
    hub_queue: usize,
    /// Messages per second one client may send (token bucket); 0 turns the limit off.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = ProtocolConfig::default().rate_limit)]
    rate_limit: u32,
    /// Messages a client may send in a burst before the rate applies.
    #[arg(long, value_name = "N", default_value_t = ProtocolConfig::default().rate_burst)]
    rate_burst: u32,
    /// Messages each room keeps for recovery (0 keeps none).
    #[arg(long, default_value_t = ProtocolConfig::default().history_size)]
    history_size: usize,
    /// Milliseconds each room keeps a message for recovery.
    #[arg(long, default_value_t = ms(ProtocolConfig::default().history_ttl))]
    history_ttl_ms: u64,
    /// Bytes of history each room keeps (frames plus a fixed overhead per message); the
    /// oldest go first.
    #[arg(long, value_name = "BYTES", default_value_t = ProtocolConfig::default().history_max_bytes)]
    history_max_bytes: usize,
    /// Bytes of history all rooms keep together; past it the oldest message of any room
    /// goes first.
    #[arg(long, value_name = "BYTES", default_value_t = ProtocolConfig::default().history_total_max_bytes)]
    history_total_max_bytes: usize,
    /// Most bytes one recovery (`room:join` with `since`) replays; past it only the
    /// newest are sent, with `recovered: false`.
    #[arg(long, value_name = "BYTES", default_value_t = ProtocolConfig::default().replay_max_bytes)]
    replay_max_bytes: usize,
    /// Rooms one client may be in at once; more joins get `error forbidden`.
    #[arg(long, value_name = "N", default_value_t = ProtocolConfig::default().max_rooms_per_client)]
    max_rooms_per_client: usize,
    /// Rooms (with members or history) the server keeps; a join creating one more gets
    /// `error forbidden`.
    #[arg(long, value_name = "N", default_value_t = ProtocolConfig::default().max_rooms)]
    max_rooms: usize,
    /// Frames waiting for a client at which a reply over 64 KiB (ping ack, presence:get,
    /// publish echo) is refused with `error rate_limited`.
    #[arg(long, value_name = "FRAMES", default_value_t = ProtocolConfig::default().max_reply_backlog)]
    max_reply_backlog: usize,
    /// Milliseconds between a stop signal and the stop, while /healthz answers 503
    /// and new upgrades are refused (lets a load balancer notice).
    #[arg(long, default_value_t = 0)]
    drain_delay_ms: u64,
    /// Sockets that may be in their handshake at once (each holds a thread); more
    /// get a quick answer from the overflow thread (503, or /healthz).
    #[arg(long, default_value_t = Config::default().max_handshakes)]
    max_handshakes: usize,
    /// Sockets one IP address (IPv6: one /64, as for every per-IP bound) may have in
    /// their handshake at once.
    #[arg(long, default_value_t = Config::default().max_handshakes_per_ip)]
    max_handshakes_per_ip: usize,
    /// Connections (open or in their handshake) one IP address may have; more get
    /// 503 with Retry-After. 0 = no limit.
    #[arg(long, default_value_t = Config::default().max_connections_per_ip)]
    max_connections_per_ip: usize,
    /// New connections per second one IP address may open (`N` or `N/s`); more get 429. 0 = no limit.
    #[arg(long, value_name = "N/s", value_parser = parse_rate, default_value_t = Config::default().connect_rate_per_ip)]
    connect_rate_per_ip: u32,
    /// Sockets the overflow thread holds at once while answering them.
    #[arg(long, default_value_t = Config::default().overflow_sockets)]
    overflow_sockets: usize,
    /// Bytes of request bodies (backend API calls) all clients together may be
    /// sending at once; one more gets 503 with Retry-After.
    #[arg(long, value_name = "BYTES", default_value_t = Config::default().request_body_budget)]
    request_body_budget: usize,
    /// A proxy whose X-Forwarded-For is believed (repeatable): `10.0.0.0/8`, `::1`.
    /// From such a peer the client is the rightmost entry that is not a trusted
    /// proxy, and every per-IP bound and log uses it; others' headers are ignored.
    #[arg(long = "trusted-proxy", value_name = "CIDR")]
    trusted_proxy: Vec<String>,
    /// A second address serving /metrics, /healthz and /api/* (and nothing else);
    /// the main port then answers 404 for /metrics and /api/*.
    #[arg(long, value_name = "ADDR")]
    admin_bind: Option<SocketAddr>,
    /// HMAC secret for HS256/384/512 tokens: every upgrade then needs a valid token
    /// (401 otherwise). Prefer the config file: a flag shows in `ps`.
    #[arg(long, value_name = "SECRET", conflicts_with = "jwt_public_key")]
    jwt_secret: Option<String>,
    /// PEM file with the public key verifying RS256 (RSA), ES256 (P-256) or ES384 (P-384) tokens.
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// A token's `aud` must name this.
    #[arg(long)]
    jwt_audience: Option<String>,
    /// A token's `iss` must be this.
    #[arg(long)]
    jwt_issuer: Option<String>,
    /// An Origin allowed to upgrade (repeatable): `https://app.example.com[:port]`
    /// or `https://*.example.com`; others get 403. None given: any origin.
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Connections one user (token `sub`) may have open; more get 503. 0 = no limit.
    #[arg(long, default_value_t = ProtocolConfig::default().max_connections_per_user)]
    max_connections_per_user: usize,
    // Backend HTTP API and moderation (docs/protocol.md, "Backend HTTP API").
    /// Turns the backend HTTP API (/api/*) on, requiring this key. Prefer the
    /// WSHUB_API_KEY environment variable or the config file: a flag shows in `ps`.
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Turns Server-Sent Events (`GET /sse`) off: it answers 404.
    #[arg(long)]
    no_sse: bool,
    /// http:// URL the backend answers before each WebSocket upgrade: `200 {user, caps?}`
    /// admits, 401/403 refuse, anything else (or no answer in time) is 503.
    #[arg(long, value_name = "URL")]
    proxy_connect: Option<String>,
    /// http:// URL the backend answers on each first room:join and /sse: `200 {allow?}`
    /// admits (with those rights), 403 is `error forbidden`, a failure `error unavailable`.
    #[arg(long, value_name = "URL")]
    proxy_join: Option<String>,
    /// http:// URL the backend answers on each client publish: 200 publishes (its `data`,
    /// if any, replaces the client's), 403 is `error forbidden`, a failure `error unavailable`.
    #[arg(long, value_name = "URL")]
    proxy_publish: Option<String>,
    /// Milliseconds one proxy call may take before it counts as failed.
    #[arg(long, default_value_t = ms(ProtocolConfig::default().proxy_timeout))]
    proxy_timeout_ms: u64,
    /// Sent as `Authorization: apikey KEY` on every proxy call (else $WSHUB_PROXY_KEY).
    #[arg(long, value_name = "KEY")]
    proxy_key: Option<String>,
    /// Users the ban list holds at most; a ban past it is refused (503).
    #[arg(long, default_value_t = ProtocolConfig::default().max_bans)]
    max_bans: usize,
    /// Log level: off, error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: log::LevelFilter,
    /// Certificate chain (PEM) to serve wss:// and https:// on the port (needs --tls-key); SIGHUP re-reads it.
    #[arg(long, value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// CA certificates (PEM) client certificates must chain to; clients without one fail the TLS handshake.
    #[arg(long, value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    // Scale-out over Redis (docs/scaling.md).
    /// Share rooms with every node on this Redis: `redis://[:password@]host:port[/db]`
    /// or `rediss://` (TLS). Repeatable: rooms are spread over the instances by a
    /// hash of their name (every node needs the same list, in the same order).
    /// Prefer the config file when it holds a password.
    #[arg(long, value_name = "URL")]
    redis: Vec<String>,
    /// A Sentinel (`HOST:PORT`, repeatable) that names the primary of
    /// --redis-sentinel-master: the node follows failovers. --redis, if
    /// given, then only lends its password, database and TLS.
    #[arg(long = "redis-sentinel", value_name = "HOST:PORT")]
    redis_sentinel: Vec<String>,
    /// The master name the sentinels watch (needed with --redis-sentinel).
    #[arg(long, value_name = "NAME")]
    redis_sentinel_master: Option<String>,
    /// Prefix of every Redis key and channel (several clusters on one Redis).
    #[arg(long, default_value_t = ProtocolConfig::default().redis_prefix)]
    redis_prefix: String,
    /// With --redis: how long a publish's idempotency key is remembered (ms),
    /// however few messages history keeps.
    #[arg(long, default_value_t = ms(ProtocolConfig::default().idempotency_ttl))]
    idempotency_ttl_ms: u64,
    /// With --redis: milliseconds each Redis connect, read and write may
    /// take before the call fails (`error unavailable`).
    #[arg(long, default_value_t = ms(ProtocolConfig::default().redis_timeout))]
    redis_timeout_ms: u64,
}

/// `20` or `20/s`.
fn parse_rate(s: &str) -> Result<u32, String> {
    s.strip_suffix("/s").unwrap_or(s).trim().parse().map_err(|e| format!("{s:?}: {e}"))
}

/// `--compression`'s value: `off` or `on`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "off" => Ok(false),
        "on" => Ok(true),
        _ => Err(format!("expected off or on, not {s:?}")),
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Takes the file's value unless the flag was given on the command line.
fn set<T>(matches: &ArgMatches, id: &str, field: &mut T, from_file: T) {
    if matches.value_source(id) != Some(ValueSource::CommandLine) {
        *field = from_file;
    }
}

impl Cli {
    /// Parses the command line and lays it over the config file: a flag given
    /// explicitly wins, then the file, then the flag's default.
    fn load() -> Result<Cli, String> {
        let matches = Cli::command().get_matches();
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.to_string())?;
        let Some(path) = cli.config.clone() else { return Ok(cli) };
        let file = wshub::ConfigFile::load(&path)?;
        let m = &matches;
        macro_rules! merge {
            ($($field:ident),*) => {$(
                if let Some(v) = file.$field { set(m, stringify!($field), &mut cli.$field, v); }
            )*};
        }
        merge!(
            bind,
            echo,
            path,
            max_message_size,
            outbound_queue,
            outbound_max_bytes,
            frame_rate_limit,
            max_fragments,
            heartbeat_ms,
            idle_timeout_ms,
            max_connections,
            reader_stack_size,
            writer_stack_size,
            read_buffer_size,
            write_buffer_size,
            handshake_timeout_ms,
            close_timeout_ms,
            shutdown_timeout_ms,
            hub_queue,
            rate_limit,
            rate_burst,
            history_size,
            history_ttl_ms,
            history_max_bytes,
            history_total_max_bytes,
            replay_max_bytes,
            max_rooms_per_client,
            max_rooms,
            max_reply_backlog,
            drain_delay_ms
        );
        merge!(max_handshakes, max_handshakes_per_ip, max_connections_per_ip, overflow_sockets);
        merge!(request_body_budget, compression_min_bytes);
        if let Some(on) = &file.compression {
            let on = parse_on_off(on).map_err(|e| format!("{}: compression: {e}", path.display()))?;
            set(m, "compression", &mut cli.compression, on);
        }
        merge!(max_connections_per_user, allow_origin, redis_prefix, trusted_proxy, idempotency_ttl_ms);
        merge!(redis_sentinel, redis_timeout_ms);
        macro_rules! merge_some {
            ($($field:ident),*) => {$(
                if file.$field.is_some() { set(m, stringify!($field), &mut cli.$field, file.$field.clone()); }
            )*};
        }
        merge_some!(jwt_secret, jwt_public_key, jwt_audience, jwt_issuer);
        merge_some!(api_key);
        merge!(max_bans, no_sse, proxy_timeout_ms);
        merge_some!(proxy_connect, proxy_join, proxy_publish, proxy_key);
        if let Some(rate) = &file.connect_rate_per_ip {
            let rate =
                parse_rate(&rate.0).map_err(|e| format!("{}: connect_rate_per_ip: {e}", path.display()))?;
            set(m, "connect_rate_per_ip", &mut cli.connect_rate_per_ip, rate);
        }
        if let Some(level) = file.log_level {
            let level = level
                .parse()
                .map_err(|_| format!("{}: log_level: unknown level {level:?}", path.display()))?;
            set(m, "log_level", &mut cli.log_level, level);
        }
        macro_rules! merge_optional {
            ($($field:ident),*) => {$(
                if file.$field.is_some() && matches.value_source(stringify!($field)) != Some(ValueSource::CommandLine) {
                    cli.$field = file.$field.clone();
                }
            )*};
        }
        merge_optional!(tls_cert, tls_key, tls_client_ca, admin_bind, redis_sentinel_master);
        if let Some(urls) = file.redis.clone() {
            set(m, "redis", &mut cli.redis, urls.into_vec());
        }
        cli.namespaces = file.namespace.iter().map(wshub::NamespaceBlock::to_namespace).collect();
        Ok(cli)
    }

    fn protocol_config(&self) -> Result<ProtocolConfig, String> {
        let mut config = ProtocolConfig::default()
            .rate_limit(self.rate_limit)
            .rate_burst(self.rate_burst)
            .history_size(self.history_size)
            .history_ttl(Duration::from_millis(self.history_ttl_ms))
            .history_max_bytes(self.history_max_bytes)
            .history_total_max_bytes(self.history_total_max_bytes)
            .replay_max_bytes(self.replay_max_bytes)
            .max_rooms_per_client(self.max_rooms_per_client)
            .max_rooms(self.max_rooms)
            .max_reply_backlog(self.max_reply_backlog);
        for namespace in &self.namespaces {
            config = config.namespace(namespace.clone());
        }
        config = self.admission(config)?;
        config = self.backend_api(config);
        config.validate()?;
        Ok(config)
    }

    /// The admission settings: tokens, origins, the per-user cap.
    fn admission(&self, mut config: ProtocolConfig) -> Result<ProtocolConfig, String> {
        if let Some(secret) = &self.jwt_secret {
            config = config.jwt_secret(secret.clone());
        }
        if let Some(path) = &self.jwt_public_key {
            let pem = std::fs::read_to_string(path)
                .map_err(|e| format!("--jwt-public-key: cannot read {}: {e}", path.display()))?;
            config = config.jwt_public_key_pem(pem);
        }
        if let Some(aud) = &self.jwt_audience {
            config = config.jwt_audience(aud.clone());
        }
        if let Some(iss) = &self.jwt_issuer {
            config = config.jwt_issuer(iss.clone());
        }
        for origin in &self.allow_origin {
            config = config.allow_origin(origin.clone());
        }
        for url in &self.redis {
            config = config.redis(url.clone());
        }
        for addr in &self.redis_sentinel {
            config = config.redis_sentinel(addr.clone());
        }
        if let Some(name) = &self.redis_sentinel_master {
            config = config.redis_sentinel_master(name.clone());
        }
        Ok(config
            .max_connections_per_user(self.max_connections_per_user)
            .redis_prefix(self.redis_prefix.clone())
            .idempotency_ttl(Duration::from_millis(self.idempotency_ttl_ms))
            .redis_timeout(Duration::from_millis(self.redis_timeout_ms)))
    }

    /// The backend API's key (the flag or config file, else `WSHUB_API_KEY`),
    /// the ban list's bound, and whether `/sse` is served.
    fn backend_api(&self, mut config: ProtocolConfig) -> ProtocolConfig {
        let key =
            self.api_key.clone().or_else(|| std::env::var("WSHUB_API_KEY").ok().filter(|k| !k.is_empty()));
        if let Some(key) = key {
            config = config.api_key(key);
        }
        for (url, set) in [
            (
                &self.proxy_connect,
                ProtocolConfig::proxy_connect as fn(ProtocolConfig, String) -> ProtocolConfig,
            ),
            (&self.proxy_join, ProtocolConfig::proxy_join),
            (&self.proxy_publish, ProtocolConfig::proxy_publish),
        ] {
            if let Some(url) = url {
                config = set(config, url.clone());
            }
        }
        let proxy_key = self
            .proxy_key
            .clone()
            .or_else(|| std::env::var("WSHUB_PROXY_KEY").ok().filter(|k| !k.is_empty()));
        if let Some(key) = proxy_key {
            config = config.proxy_key(key);
        }
        config
            .proxy_timeout(Duration::from_millis(self.proxy_timeout_ms))
            .max_bans(self.max_bans)
            .sse(!self.no_sse)
    }

    fn config(&self) -> Config {
        let mut config = Config::default();
        for cidr in &self.trusted_proxy {
            config = config.trusted_proxy(cidr.clone());
        }
        config
            .bind(self.bind)
            .path(self.path.clone())
            .max_message_size(self.max_message_size)
            .outbound_queue(self.outbound_queue)
            .outbound_max_bytes(self.outbound_max_bytes)
            .frame_rate_limit(self.frame_rate_limit)
            .max_fragments(self.max_fragments)
            .compression(self.compression)
            .compression_min_bytes(self.compression_min_bytes)
            .heartbeat_interval(Duration::from_millis(self.heartbeat_ms))
            .idle_timeout(Duration::from_millis(self.idle_timeout_ms))
            .max_connections(self.max_connections)
            .reader_stack_size(self.reader_stack_size)
            .writer_stack_size(self.writer_stack_size)
            .read_buffer_size(self.read_buffer_size)
            .write_buffer_size(self.write_buffer_size)
            .handshake_timeout(Duration::from_millis(self.handshake_timeout_ms))
            .close_timeout(Duration::from_millis(self.close_timeout_ms))
            .shutdown_timeout(Duration::from_millis(self.shutdown_timeout_ms))
            .hub_queue(self.hub_queue)
            .max_handshakes(self.max_handshakes)
            .max_handshakes_per_ip(self.max_handshakes_per_ip)
            .max_connections_per_ip(self.max_connections_per_ip)
            .connect_rate_per_ip(self.connect_rate_per_ip)
            .overflow_sockets(self.overflow_sockets)
            .request_body_budget(self.request_body_budget)
            .admin_bind(self.admin_bind)
            .tls_cert(self.tls_cert.clone().map(PemSource::File))
            .tls_key(self.tls_key.clone().map(PemSource::File))
            .tls_client_ca(self.tls_client_ca.clone().map(PemSource::File))
    }
}

fn main() -> ExitCode {
    let mut cli = match Cli::load() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(tool) = cli.tool.take() {
        return match cli_tools::run(tool, Cli::command()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wshub: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let _ = simplelog::TermLogger::init(
        cli.log_level,
        simplelog::Config::default(),
        simplelog::TerminalMode::Stderr,
        simplelog::ColorChoice::Never,
    );
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = cli.config();
    let protocol = match cli.protocol_config() {
        Ok(c) => ProtocolHandler::new(c),
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::from(2);
        }
    };
    // systemd (issue 20): a socket passed by socket activation replaces --bind.
    let inherited = match wshub::systemd::listener_from_env() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("wshub: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = match (inherited, cli.echo) {
        (Some(l), true) => Server::start_on(l, config, EchoHandler),
        (Some(l), false) => Server::start_on(l, config, protocol.clone()),
        (None, true) => Server::start(config, EchoHandler),
        (None, false) => Server::start(config, protocol.clone()),
    };
    let server = match started {
        Ok(s) => s,
        Err(e) => {
            eprintln!("wshub: {e}");
            // A value out of range is the caller's to fix, like a bad flag.
            let usage = matches!(e, wshub::Error::InvalidConfig(_));
            return if usage { ExitCode::from(2) } else { ExitCode::FAILURE };
        }
    };
    // Scripts and tests read the real address (port 0 binds a free one) from here.
    println!("wshub listening on {}", server.local_addr());
    if let Some(admin) = server.admin_addr() {
        log::info!("admin endpoints (/metrics, /healthz, /api/*) on {admin}");
    }
    wshub::systemd::notify("READY=1");
    let watchdog = {
        let server = server.clone();
        wshub::systemd::Watchdog::start(move || server.room_count().is_ok())
    };
    for signal in signals.forever() {
        if signal == signal_hook::consts::SIGHUP {
            // New connections get the new certificate; open ones stay up. A
            // bad file is logged (by reload_tls) and the old one kept.
            let _ = server.reload_tls(); // logs its outcome either way
            continue;
        }
        log::info!("signal {signal}: stopping gracefully");
        break;
    }
    wshub::systemd::notify("STOPPING=1");
    drop(watchdog);
    if cli.drain_delay_ms > 0 {
        protocol.begin_drain();
        std::thread::sleep(Duration::from_millis(cli.drain_delay_ms));
    }
    server.stop();
    ExitCode::SUCCESS
}
