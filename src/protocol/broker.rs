//! The seam between the protocol and where rooms live: [`Broker`].
//!
//! The protocol (`handler.rs`, `publish.rs`, `reads.rs`, `sse.rs`,
//! `bans.rs`, `http.rs`) asks the broker for every operation whose answer
//! depends on whether the room is this node's alone or shared with other
//! nodes: a join with its replay and ack, a leave, a publish, an ephemeral
//! event, the member count, presence and history reads, an event stream's
//! open and close, kicks and bans, health and metrics. Two brokers answer:
//! `local.rs` (one node: the room table, its history and the streams'
//! fan-out) and `cluster/` (Redis, with the room table as this node's
//! copy). No protocol file outside those two asks whether there is Redis.
//!
//! As Centrifuge's `Broker` and `PresenceManager` are two interfaces of one
//! engine, the presence side here (member count, presence read, a member
//! left) is part of the same trait: both brokers keep presence where they
//! keep the room.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;

use super::bans::BanError;
use super::cluster::Cluster;
use super::config::ProtocolConfig;
use super::envelope::ErrorReply;
use super::handler::Shared;
use super::local::LocalBroker;
use super::publish::{Publish, Published};
use super::reads::Presence;
use super::record::Record;
use crate::server::ServerHandle;
use crate::types::ConnId;

/// The broker `config` asks for: Redis with `--redis` or `--redis-sentinel`
/// (a Redis setting that cannot be used is logged, and the node runs
/// alone), else this node alone.
pub(crate) fn for_config(config: &ProtocolConfig) -> Box<dyn Broker> {
    if !config.clustered() {
        return Box::new(LocalBroker);
    }
    match Cluster::new(config) {
        Ok(cluster) => Box::new(Arc::new(cluster)),
        Err(e) => {
            log::error!("{e}: running as a single node");
            Box::new(LocalBroker)
        }
    }
}

/// One join, as the handler asks for it.
pub(crate) struct Join<'a> {
    pub conn: ConnId,
    pub id: Option<&'a str>,
    pub room: &'a str,
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
    pub newly: bool,
    /// Whether it may be replayed what it missed (the history right): without
    /// it a `since` is answered `recovered: false`.
    pub history: bool,
    /// Whether it hears the room's presence events (the presence right).
    pub presence: bool,
    pub client_id: &'a str,
    pub user: Option<&'a str>,
    /// The replay bounds: frames, and bytes.
    pub max_replay: usize,
    pub max_bytes: usize,
}

/// One event stream opening its room (`sse.rs`).
pub(crate) struct StreamOpen<'a> {
    pub conn: ConnId,
    pub room: &'a str,
    /// `Last-Event-ID` / `since`, and the epoch it belongs to.
    pub since: Option<u64>,
    pub epoch: Option<&'a str>,
    /// Whether it may be replayed what it missed (the history right).
    pub history: bool,
    /// The replay bounds: frames, and bytes.
    pub max_replay: usize,
    pub max_bytes: usize,
    /// The `connected` event's payload so far (`clientId`, `room`, `user`):
    /// the broker adds `seq`, `epoch` and, with `since`, `recovered`.
    pub connected: Value,
}

/// Where rooms live: this node alone ([`LocalBroker`](super::local::LocalBroker))
/// or every node through Redis (`cluster/`). Calls come from connection
/// threads, the API and the hub's callbacks; each is bounded in time.
pub(crate) trait Broker: Send + Sync {
    /// Starts the broker's background threads, once (a no-op after the
    /// first call, and for a broker without any).
    fn start(&self, shared: &Arc<Shared>, server: &ServerHandle);

    /// This node's name, as the backend proxy's `X-Wshub-Node` says it.
    fn node(&self) -> String;

    /// The clientId of a connection (WebSocket or event stream).
    fn client_id(&self, conn: ConnId) -> String;

    /// Whether `/healthz` may say 200, and if not why (its 503 body).
    fn health(&self) -> Result<(), &'static str>;

    /// Appends the broker's own lines to `/metrics`.
    fn write_metrics(&self, text: &mut String);

    /// A connection closes while the server drains: the stop waits for its leaves.
    fn begin_stop(&self);

    /// The members of `room` that count toward `max_members` (event streams
    /// apart): this node's, or every node's.
    fn member_count(&self, shared: &Shared, room: &str) -> Result<usize, ErrorReply>;

    /// A join: presence, replay and ack in `seq` order with the room's
    /// publishes. Returns the room's published bytes and the bytes replayed.
    fn join(&self, shared: &Shared, server: &ServerHandle, j: &Join<'_>) -> Result<(u64, usize), ErrorReply>;

    /// A member left `room` (the local `presence:leave` is sent already);
    /// `last`: no local member is left.
    fn left(&self, room: &str, client_id: &str, conn: ConnId, user: Option<&str>, last: bool);

    /// An ephemeral event (typing) to the room's members on other nodes; the
    /// local members get it from the caller.
    fn relay(&self, room: &str, conn: ConnId, text: &str) -> Result<(), ErrorReply>;

    /// Publishes `p` (its key scoped already) at `ts` (Unix ms).
    fn publish(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        p: &Publish<'_>,
        ts: u64,
    ) -> Result<Published, ErrorReply>;

    /// The members of `room`, bounded by `reads::PRESENCE_MAX`.
    fn presence(&self, shared: &Shared, room: &str) -> Result<Presence, ErrorReply>;

    /// The room's epoch (`None`: no such room) and up to `limit` of its
    /// messages after `since`, oldest first, as records (`record.rs`).
    fn history(
        &self,
        shared: &Shared,
        room: &str,
        since: u64,
        limit: usize,
    ) -> Result<(Option<String>, Vec<Record>), ErrorReply>;

    /// Opens an event stream on its room: `connected`, the replay, then the
    /// room's messages, in `seq` order.
    fn open_stream(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        s: StreamOpen<'_>,
    ) -> Result<(), ErrorReply>;

    /// The last local reader of `room` (member or stream) went.
    fn release(&self, room: &str);

    /// Closes a connection by clientId (`/api/disconnect`), here or on the
    /// node that owns it; how many closed here.
    fn disconnect_client(&self, server: &ServerHandle, client_id: &str, code: u16, reason: &str) -> usize;

    /// Tells every other node to close `user`'s connections.
    fn kick_user(&self, user: &str, code: u16, reason: &str);

    /// Records a ban until `until_ms` where every node reads bans, before
    /// it is made here at `now` (a ban this node would refuse at that same
    /// instant is refused first).
    fn record_ban(&self, shared: &Shared, user: &str, now: SystemTime, until_ms: u64)
        -> Result<(), BanError>;

    /// Takes back a [`record_ban`](Self::record_ban) the ban list here refused.
    fn forget_ban(&self, user: &str);

    /// Tells every other node of a ban made here.
    fn tell_ban(&self, user: &str, until_ms: u64);

    /// Lifts `user`'s ban where every node reads bans, and tells them.
    fn share_unban(&self, user: &str);
}
