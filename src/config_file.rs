//! The `wshub` binary's optional TOML config file (`--config FILE`): every key
//! is the name of a command-line flag with `_` for `-`; flags given on the
//! command line override the file. Parsing only; the binary merges it.

use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::protocol::Namespace;
use std::time::Duration;

/// The `--config` file: every setting optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)] // each field is the CLI flag of the same name; `wshub --help` documents it
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub bind: Option<SocketAddr>,
    pub echo: Option<bool>,
    pub path: Option<String>,
    pub max_message_size: Option<usize>,
    pub outbound_queue: Option<usize>,
    pub outbound_max_bytes: Option<usize>,
    pub frame_rate_limit: Option<u32>,
    pub max_fragments: Option<usize>,
    /// `"off"` or `"on"`, as `--compression`.
    pub compression: Option<String>,
    pub compression_min_bytes: Option<usize>,
    pub heartbeat_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub reader_stack_size: Option<usize>,
    pub writer_stack_size: Option<usize>,
    pub read_buffer_size: Option<usize>,
    pub write_buffer_size: Option<usize>,
    pub handshake_timeout_ms: Option<u64>,
    pub close_timeout_ms: Option<u64>,
    pub shutdown_timeout_ms: Option<u64>,
    pub hub_queue: Option<usize>,
    pub rate_limit: Option<u32>,
    pub rate_burst: Option<u32>,
    pub history_size: Option<usize>,
    pub history_ttl_ms: Option<u64>,
    pub history_max_bytes: Option<usize>,
    pub history_total_max_bytes: Option<usize>,
    pub replay_max_bytes: Option<usize>,
    pub max_rooms_per_client: Option<usize>,
    pub max_rooms: Option<usize>,
    pub max_reply_backlog: Option<usize>,
    pub drain_delay_ms: Option<u64>,
    pub log_level: Option<String>,
    pub max_handshakes: Option<usize>,
    pub max_handshakes_per_ip: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    /// `20`, or `"20/s"` as on the command line.
    pub connect_rate_per_ip: Option<Rate>,
    pub overflow_sockets: Option<usize>,
    pub request_body_budget: Option<usize>,
    /// Every trusted proxy block (the flag `--trusted-proxy`, repeated).
    pub trusted_proxy: Option<Vec<String>>,
    pub admin_bind: Option<SocketAddr>,
    pub jwt_secret: Option<String>,
    pub jwt_public_key: Option<std::path::PathBuf>,
    pub jwt_audience: Option<String>,
    pub jwt_issuer: Option<String>,
    /// Every allowed Origin (the flag `--allow-origin`, repeated).
    pub allow_origin: Option<Vec<String>>,
    pub max_connections_per_user: Option<usize>,
    /// The backend API's key (`--api-key`).
    pub api_key: Option<String>,
    pub max_bans: Option<usize>,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// One Redis URL, or a list of them (shards).
    pub redis: Option<OneOrMany>,
    /// Every sentinel (the flag `--redis-sentinel`, repeated).
    pub redis_sentinel: Option<Vec<String>>,
    pub redis_sentinel_master: Option<String>,
    pub redis_prefix: Option<String>,
    pub idempotency_ttl_ms: Option<u64>,
    pub redis_timeout_ms: Option<u64>,
    /// `true` turns `GET /sse` off (`--no-sse`).
    pub no_sse: Option<bool>,
    pub proxy_connect: Option<String>,
    pub proxy_join: Option<String>,
    pub proxy_publish: Option<String>,
    pub proxy_timeout_ms: Option<u64>,
    pub proxy_key: Option<String>,
    /// `[[namespace]]` blocks: rooms with their own rules (no flag can say this).
    #[serde(default)]
    pub namespace: Vec<NamespaceBlock>,
}

/// One `[[namespace]]` block; unset keys keep [`Namespace::new`]'s rules.
#[derive(Debug, Default, Deserialize)]
#[allow(missing_docs)] // each field is the `Namespace` field of the same name
#[serde(deny_unknown_fields)]
pub struct NamespaceBlock {
    pub prefix: String,
    pub client_publish: Option<bool>,
    pub history_size: Option<usize>,
    pub history_ttl_ms: Option<u64>,
    pub history_max_bytes: Option<usize>,
    pub presence: Option<bool>,
    pub join_leave: Option<bool>,
    pub typing: Option<bool>,
    pub max_members: Option<usize>,
}

impl NamespaceBlock {
    /// The namespace this block describes.
    pub fn to_namespace(&self) -> Namespace {
        let mut n = Namespace::new(self.prefix.clone());
        n.client_publish = self.client_publish.unwrap_or(n.client_publish);
        n.history_size = self.history_size;
        n.history_ttl = self.history_ttl_ms.map(Duration::from_millis);
        n.history_max_bytes = self.history_max_bytes;
        n.presence = self.presence.unwrap_or(n.presence);
        n.join_leave = self.join_leave.unwrap_or(n.join_leave);
        n.typing = self.typing.unwrap_or(n.typing);
        n.max_members = self.max_members.unwrap_or(n.max_members);
        n
    }
}

/// A per-second rate as the config file may write it: `20` or `"20/s"`
/// (parsed by the binary, like the flag).
#[derive(Debug, Default)]
pub struct Rate(pub String);

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u32),
            S(String),
        }
        Ok(Rate(match Either::deserialize(d)? {
            Either::N(n) => n.to_string(),
            Either::S(s) => s,
        }))
    }
}

impl ConfigFile {
    /// Reads and parses the file at `path`; the error names the file and the problem.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses TOML text; unknown keys and wrong types are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// A key that takes one string or a list of them (`redis`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `key = "value"`.
    One(String),
    /// `key = ["value", ...]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}
