//! Scale-out over Redis (`--redis`): one room across many nodes, with one seq
//! per room, history and recovery from a Redis stream, and presence across
//! nodes: the [`Broker`](super::broker::Broker) of a node started with
//! `--redis` (or `--redis-sentinel`; `broker.rs` here). Rooms are spread over
//! the Redis instances given, each a shard with its own connections
//! (`shards.rs`); a connection goes to an instance's address or to the
//! primary Sentinel names (`sentinel.rs`).
//!
//! How a message travels: `publish.rs` hands a publish to [`Cluster::publish`],
//! which runs one Lua script (next seq, XADD, PUBLISH; `scripts.rs`) on the
//! room's shard and acks once Redis answered. Every node's subscriber
//! connection to that shard
//! (`subscriber.rs`), subscribed only to rooms with local members, gets the
//! message in seq order, builds its frame once and broadcasts it to the local
//! members with the hub, under the room's lock, as `publish.rs` does alone.
//! A join reads the room's seq and history in Redis without the room's
//! lock (so a slow Redis holds up that join, not the subscriber's
//! deliveries), then applies them under it only if the room has not moved
//! past its read, so it is exact against the deliveries of the subscriber
//! (which takes the same lock; `Before`). `node.rs` keeps this node's heartbeat key and reaps the
//! members of nodes whose key expired.
//!
//! Every Redis call from a reader thread is bounded by the call timeout
//! (`--redis-timeout-ms`; connect, read and write each), and while a shard is known to be down calls to it
//! fail at once with `error unavailable`, without touching the network.

mod broker;
mod node;
mod pool;
mod scripts;
pub(crate) mod sentinel;
mod shards;
mod subscriber;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use parking_lot::Mutex;
use serde_json::{json, Value};

use super::broker::Join;
use super::config::ProtocolConfig;
use super::envelope::{ack, now_ms, ErrorCode, ErrorReply};
use super::handler::Shared;
use super::namespace::HistoryRules;
use super::presence::{event as presence_event, payload as presence_payload};
use super::publish::{Publish, Published};
use super::reads::{Presence, PRESENCE_MAX};
use super::record::Record;
use super::room::RoomState;
use crate::frame as wire;
use crate::prometheus::write_one;
use crate::server::ServerHandle;
use crate::types::ConnId;

/// The bound on each Redis connect, read and write once the server is
/// stopping ([`Cluster::begin_stop`]) and [`STOP_GRACE`] has passed (or the
/// call timeout, `--redis-timeout-ms`, if that is shorter): a stop waits for
/// every connection's leaves, so a Redis that does not answer must not hold
/// it for a call timeout per member and room.
pub(crate) const STOP_TIMEOUT: Duration = Duration::from_millis(250);
/// From the start of a stop, how long its calls may wait for a Redis that
/// stalls (a fork, an fsync, a slow script): a call made in it waits until
/// it ends (at least [`STOP_TIMEOUT`], at most the call timeout), so a short
/// stall costs no leave, and a Redis frozen for good holds the stop about
/// this long before its shard is taken for down.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often a node refreshes its heartbeat key and looks for dead nodes.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// The TTL of a node's heartbeat key: a node silent this long is dead, and
/// the next heartbeat of any other node reaps its members.
pub(crate) const NODE_TTL: Duration = Duration::from_secs(5);
/// `HSCAN` calls one presence read makes at most.
const PRESENCE_PAGES: usize = 8;
/// Subscribe requests waiting for a shard's subscriber thread.
const CONTROL_QUEUE: usize = 1024;
/// Reads a join or stream open makes at most when what it read no longer
/// holds by the time it has the room's lock ([`Before::holds`]).
pub(super) const READ_ATTEMPTS: usize = 4;

/// A request to the subscriber thread.
enum Control {
    /// Subscribe to a room's channel; answers once Redis confirmed (or not).
    Subscribe(String, Sender<bool>),
    /// Unsubscribe, if the room still has no local members by then.
    Unsubscribe(String),
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct ClusterMetrics {
    rtt_micros: AtomicU64,
    calls: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    /// Messages a node read back from a stream because the live channel
    /// skipped them (a resubscribe after Redis came back).
    refilled: AtomicU64,
}

/// A ban (`ban: Some(until)`, Unix ms) or an unban (`None`) made on this
/// node that Redis has not recorded yet; `tell`: the other nodes are told
/// once it is (false for a ban taken back before anyone was told).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unrecorded {
    ban: Option<u64>,
    tell: bool,
}

/// This node's side of the cluster.
pub(crate) struct Cluster {
    /// This node's id, unique per process start: the prefix of its clientIds.
    pub node: String,
    /// The key prefix with its trailing `:`.
    prefix: String,
    /// The Redis instances rooms are spread over (`shards.rs`); the first
    /// also carries bans and requests to all nodes.
    shards: Vec<shards::Shard>,
    /// The fingerprint of the shard list every node must share.
    shard_list: String,
    scripts: scripts::Scripts,
    started: OnceLock<()>,
    /// Bans and unbans made on this node that the home shard has not
    /// recorded yet, by user.
    unrecorded: Mutex<HashMap<String, Unrecorded>>,
    /// The `run_id` of the home shard's Redis whose bans were last read
    /// ([`Cluster::sync_bans`]).
    bans_run_id: Mutex<Option<String>>,
    /// Subscriber sessions running (each holds the handler while it runs):
    /// when they are all that holds it, the handler was dropped.
    sessions: std::sync::atomic::AtomicUsize,
    /// When the server began to stop: calls wait until [`STOP_GRACE`] has
    /// passed, or [`STOP_TIMEOUT`] after, and one that times out marks its
    /// shard down, so the calls after it fail at once.
    stopping: OnceLock<Instant>,
    /// Whether a shard list that differs from another node's was logged.
    list_mismatch_told: std::sync::atomic::AtomicBool,
    idempotency_ttl: Duration,
    /// Each room's turn among this node's joins and stream opens
    /// ([`Cluster::gated`]), while one is taken or waited for.
    gates: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    /// Bound on each Redis connect, read and write a thread may wait for
    /// (`--redis-timeout-ms`).
    pub(super) timeout: Duration,
    epochs: RandomState,
    epoch_counter: AtomicU64,
    metrics: ClusterMetrics,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("node", &self.node).field("prefix", &self.prefix).finish()
    }
}

/// The `error unavailable` a client gets while Redis cannot be reached.
pub(crate) fn unavailable() -> ErrorReply {
    ErrorReply::new(ErrorCode::Unavailable, "the cluster's Redis cannot be reached; try again shortly")
}

/// A local member's presence, as Redis should hold it.
#[derive(Clone, Debug)]
pub(super) struct Member {
    pub user: String,
    /// `{room, clientId, user?}`: the payload of its presence events.
    pub payload: String,
}

/// Entries of a room's stream: id and flat field/value list.
type Entries = Vec<(String, Vec<Vec<u8>>)>;

impl Cluster {
    /// A cluster node for the configured Redis URLs (one shard each) or
    /// sentinels; checks them only (the first connection is made on first use).
    pub fn new(config: &ProtocolConfig) -> Result<Self, String> {
        let urls: Vec<String> = config.redis_urls.iter().map(|url| url.0.clone()).collect();
        let mut shards = Vec::new();
        for index in 0..urls.len().max(1) {
            let connector = sentinel::Connector::new(
                urls.get(index).map(String::as_str),
                &config.redis_sentinels,
                config.redis_sentinel_master.as_deref(),
            )?;
            shards.push(shards::Shard::new(index, connector));
        }
        let epochs = RandomState::new();
        let mut h = epochs.build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
        );
        Ok(Cluster {
            node: format!("{:012x}", h.finish() & 0xffff_ffff_ffff),
            prefix: format!("{}:", config.redis_prefix),
            shards,
            // With Sentinel the URL lends only credentials: the master name
            // is what every node must share.
            shard_list: match &config.redis_sentinel_master {
                Some(master) if !config.redis_sentinels.is_empty() => {
                    shards::fingerprint(&[format!("sentinel master {master}")])
                }
                _ => shards::fingerprint(&urls),
            },
            scripts: scripts::Scripts::new(),
            started: OnceLock::new(),
            unrecorded: Mutex::new(HashMap::new()),
            sessions: std::sync::atomic::AtomicUsize::new(0),
            stopping: OnceLock::new(),
            bans_run_id: Mutex::new(None),
            list_mismatch_told: std::sync::atomic::AtomicBool::new(false),
            idempotency_ttl: config.idempotency_ttl,
            gates: Mutex::new(HashMap::new()),
            timeout: config.redis_timeout,
            epochs,
            epoch_counter: AtomicU64::new(0),
            metrics: ClusterMetrics::default(),
        })
    }

    /// Starts the subscriber and heartbeat threads, once: when the server
    /// starts (C hosts, `ffi/server.rs`), or on the first callback that has
    /// the server's handle. Neither thread keeps the server alive.
    pub fn start(cluster: &Arc<Cluster>, shared: &Arc<Shared>, server: &ServerHandle) {
        if cluster.started.get().is_some() {
            return;
        }
        if cluster.started.set(()).is_err() {
            return;
        }
        use crate::sys::signals;
        let mut spawned = Ok(());
        for shard in 0..cluster.shards.len() {
            let (weak, server2, cluster2) = (Arc::downgrade(shared), server.downgrade(), cluster.clone());
            spawned = spawned.and_then(|_| {
                signals::spawn(std::thread::Builder::new().name("wshub-redis-sub".into()), move || {
                    subscriber::run(weak, cluster2, server2, shard)
                })
                .map(drop)
            });
        }
        for shard in 0..cluster.shards.len() {
            let (weak, cluster2) = (Arc::downgrade(shared), cluster.clone());
            spawned = spawned.and_then(|_| {
                signals::spawn(std::thread::Builder::new().name("wshub-redis-node".into()), move || {
                    node::run(weak, cluster2, shard)
                })
                .map(drop)
            });
        }
        if let Err(e) = spawned {
            log::error!("cannot start the Redis threads: {e}");
        }
    }

    /// Whether some shard is up (its last heartbeat answered): a node that
    /// can serve some rooms is worth its clients (every node sees the same
    /// shard down).
    fn is_up(&self) -> bool {
        self.shards.iter().any(|s| s.up.load(Relaxed))
    }

    /// Whether `/healthz` may say 200, and if not why (its 503 body): the
    /// node has settled on every shard (`Shard::settled`: each heartbeat
    /// tried once, the first shard answered and its bans read), and some
    /// shard is up now.
    pub fn health(&self) -> Result<(), &'static str> {
        if !self.shards.iter().all(|s| s.settled.load(Relaxed)) {
            return Err("redis not reached yet\n");
        }
        if !self.is_up() {
            return Err("redis unavailable\n");
        }
        Ok(())
    }

    /// Whether every shard is up.
    fn all_up(&self) -> bool {
        self.shards.iter().all(|s| s.up.load(Relaxed))
    }

    /// The shard a room lives on.
    fn shard(&self, room: &str) -> &shards::Shard {
        &self.shards[shards::shard_of(room, self.shards.len())]
    }

    /// The shard that carries bans and the requests to all nodes.
    fn home(&self) -> &shards::Shard {
        &self.shards[0]
    }

    /// A clientId unique across nodes: `<node>-<conn>`.
    pub fn client_id(&self, conn: ConnId) -> String {
        format!("{}-{conn}", self.node)
    }

    /// Whose a clientId is: `Ok(conn)` this node's, `Err(())` another
    /// node's, `None` not a cluster clientId.
    pub fn owner_of(&self, client_id: &str) -> Option<Result<ConnId, ()>> {
        let (node, conn) = client_id.split_once('-')?;
        let conn: ConnId = conn.parse().ok().filter(|c: &ConnId| c.to_string() == conn)?;
        if node.len() != self.node.len() || !node.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(if node == self.node { Ok(conn) } else { Err(()) })
    }

    /// Asks every node to close the connection with this clientId (its own
    /// node does). Best effort: Redis down, nobody hears it.
    pub fn kick_client(&self, client_id: &str, code: u16, reason: &str) {
        self.send_control('k', code.into(), reason, client_id);
    }

    /// Asks every node to close the connections of `user`.
    pub fn kick_user(&self, user: &str, code: u16, reason: &str) {
        self.send_control('u', code.into(), reason, user);
    }

    /// Records a ban of `user` until `until_ms` (Unix ms) in Redis, for
    /// nodes started later and nodes that were not listening; one Redis could
    /// not take is written when the recorded bans are next read.
    /// Before the ban is made on this node: see [`Cluster::sync_bans`].
    pub fn record_ban(&self, user: &str, until_ms: u64) {
        self.record(user, Unrecorded { ban: Some(until_ms), tell: true });
    }

    /// Tells every node now of a ban [`Cluster::record_ban`] recorded.
    pub fn tell_ban(&self, user: &str, until_ms: u64) {
        self.send_control('b', until_ms, "", user);
    }

    /// Takes back a ban [`Cluster::record_ban`] recorded that its node then
    /// refused (its ban list was full); nobody was told of it.
    pub fn forget_ban(&self, user: &str) {
        self.record(user, Unrecorded { ban: None, tell: false });
    }

    /// Lifts a ban in Redis and on every node.
    pub fn share_unban(&self, user: &str) {
        self.record(user, Unrecorded { ban: None, tell: true });
        self.send_control('n', 0, "", user);
    }

    /// Writes a ban (`Some(until)`) or an unban (`None`) of `user` to Redis;
    /// one that fails waits in `unrecorded`, replacing what waited for the user.
    fn record(&self, user: &str, waiting: Unrecorded) {
        let bans = self.bans_key();
        let ban = waiting.ban;
        // Waiting before the write: a ban list read meanwhile must not lift it.
        self.unrecorded.lock().insert(user.to_owned(), waiting);
        let written = self.call(self.home(), |c| match ban {
            Some(until_ms) => redis::cmd("HSET").arg(&bans).arg(user).arg(until_ms).query::<i64>(c),
            None => redis::cmd("HDEL").arg(&bans).arg(user).query::<i64>(c),
        });
        let mut unrecorded = self.unrecorded.lock();
        if written.is_ok() {
            if unrecorded.get(user) == Some(&waiting) {
                unrecorded.remove(user);
            }
        } else {
            log::warn!(
                "redis: the ban or unban of {user:?} is written for the other nodes once Redis answers"
            );
        }
    }

    /// Writes the bans and unbans Redis could not take when they were made,
    /// and tells every node of each as it is written: their `ctl` message
    /// was lost with Redis, and a node that did not lose its subscriber
    /// meanwhile never reads the recorded bans again. The heartbeat calls it
    /// on every beat while any waits (a single call that timed out is no
    /// outage: nothing else would write it), and before reading the bans.
    pub(super) fn write_unrecorded(&self) -> redis::RedisResult<()> {
        let waiting: Vec<(String, Unrecorded)> =
            self.unrecorded.lock().iter().map(|(u, w)| (u.clone(), *w)).collect();
        let bans = self.bans_key();
        let channel = self.control_channel();
        for (user, w) in waiting {
            let tell =
                control_message(if w.ban.is_some() { 'b' } else { 'n' }, w.ban.unwrap_or(0), "", &user);
            self.call_anyway(self.home(), |c| {
                let mut pipe = redis::pipe();
                match w.ban {
                    Some(until_ms) => pipe.cmd("HSET").arg(&bans).arg(&user).arg(until_ms).ignore(),
                    None => pipe.cmd("HDEL").arg(&bans).arg(&user).ignore(),
                };
                // A ban refused here (`forget_ban`) was told to nobody.
                if w.tell {
                    pipe.cmd("PUBLISH").arg(&channel).arg(&tell).ignore();
                }
                pipe.query::<()>(c)
            })?;
            let mut unrecorded = self.unrecorded.lock();
            if unrecorded.get(&user) == Some(&w) {
                unrecorded.remove(&user);
            }
        }
        Ok(())
    }

    /// Whether bans or unbans wait for Redis ([`Cluster::write_unrecorded`]).
    pub(super) fn has_unrecorded(&self) -> bool {
        !self.unrecorded.lock().is_empty()
    }

    /// Makes this node's ban list what Redis records: writes first the bans
    /// and unbans Redis could not take when they were made (telling every
    /// node of each again, as it is written), then bans here
    /// the users Redis records (and closes their connections, given the
    /// server) and lifts the bans here that Redis no longer records (an
    /// unban published while this node was not listening). A ban is recorded
    /// before it is made on its node, so one made here meanwhile is either
    /// in Redis by the time it is read or still waits in `unrecorded`.
    ///
    /// Except when Redis is another server than at the last read (its
    /// `run_id` changed: a restart, perhaps without its data, or a failover):
    /// then the bans here that it does not record are written back instead,
    /// since it may have lost them. An unban lost with them is made again.
    pub(super) fn sync_bans(&self, shared: &Shared, server: Option<&ServerHandle>) -> redis::RedisResult<()> {
        self.write_unrecorded()?;
        let now = std::time::SystemTime::now();
        let here = shared.bans.held(now);
        let (run_id, recorded) = self.recorded_bans()?;
        let same_redis = self.bans_run_id.lock().as_ref().is_none_or(|seen| *seen == run_id);
        for (user, until_ms) in &recorded {
            super::bans::ban_until(shared, user, *until_ms);
            if let Some(server) = server {
                super::bans::disconnect_user(
                    shared,
                    server,
                    user,
                    super::bans::BANNED_CLOSE_CODE,
                    super::bans::BANNED_REASON,
                );
            }
        }
        let recorded: HashSet<&str> = recorded.iter().map(|(user, _)| user.as_str()).collect();
        let bans = self.bans_key();
        for (user, until) in here {
            if recorded.contains(user.as_str()) || self.unrecorded.lock().contains_key(&user) {
                continue;
            }
            if same_redis {
                log::info!("redis: the ban of {user:?} was lifted while this node was not listening");
                shared.bans.unban(&user, now);
            } else {
                let until_ms = super::bans::unix_ms(until);
                self.call_anyway(self.home(), |c| {
                    redis::cmd("HSET").arg(&bans).arg(&user).arg(until_ms).query::<i64>(c)
                })?;
            }
        }
        // Only once every ban is back: a read that failed halfway looks again.
        *self.bans_run_id.lock() = Some(run_id);
        Ok(())
    }

    /// The `run_id` of the Redis read, and the bans it records that still
    /// hold: user and until (Unix ms). Expired ones are removed from Redis.
    /// An entry whose value is not a time was not written by a node: it is
    /// passed over (one such entry must not fail the read, which every
    /// subscriber session and a node's first `/healthz` 200 wait for).
    fn recorded_bans(&self) -> redis::RedisResult<(String, Vec<(String, u64)>)> {
        let bans = self.bans_key();
        let (info, all): (String, Vec<(String, String)>) = self.call_anyway(self.home(), |c| {
            redis::pipe().cmd("INFO").arg("server").cmd("HGETALL").arg(&bans).query(c)
        })?;
        let all: Vec<(String, u64)> = all
            .into_iter()
            .filter_map(|(user, until)| match until.parse() {
                Ok(until) => Some((user, until)),
                Err(_) => {
                    log::warn!(
                        "redis: {bans} holds {user:?} with {until:?}, not a time in Unix ms: passed over"
                    );
                    None
                }
            })
            .collect();
        let run_id = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_owned())
            .unwrap_or_default();
        let now = super::bans::unix_ms(std::time::SystemTime::now());
        let (held, expired): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, until)| *until > now);
        if !expired.is_empty() {
            let users: Vec<&str> = expired.iter().map(|(user, _)| user.as_str()).collect();
            let _ =
                self.call_anyway(self.home(), |c| redis::cmd("HDEL").arg(&bans).arg(&users).query::<i64>(c));
        }
        Ok((run_id, held))
    }

    fn bans_key(&self) -> String {
        format!("{}bans", self.prefix)
    }

    fn send_control(&self, kind: char, number: u64, reason: &str, target: &str) {
        let channel = self.control_channel();
        let message = control_message(kind, number, reason, target);
        if self
            .call(self.home(), |c| redis::cmd("PUBLISH").arg(&channel).arg(&message).query::<i64>(c))
            .is_err()
        {
            log::warn!("redis: a kick or ban could not reach the other nodes");
        }
    }

    /// The channel every node subscribes to for requests to all nodes:
    /// `<kind> <number> <reason length>\n<reason><target>`, kind `k` (kick a
    /// clientId, number the close code), `u` (kick a user, the same), `b`
    /// (ban a user, number until when in Unix ms), `n` (unban a user).
    /// `subscriber.rs` reads them.
    fn control_channel(&self) -> String {
        format!("{}ctl", self.prefix)
    }

    fn key(&self, kind: &str, room: &str) -> String {
        format!("{}{kind}:{room}", self.prefix)
    }

    fn channel(&self, room: &str) -> String {
        self.key("c", room)
    }

    /// The room a channel name belongs to.
    fn room_of<'c>(&self, channel: &'c str) -> Option<&'c str> {
        channel.strip_prefix(&self.prefix)?.strip_prefix("c:")
    }

    fn new_epoch(&self) -> String {
        let mut h = self.epochs.build_hasher();
        h.write_u64(self.epoch_counter.fetch_add(1, Relaxed));
        format!("{:016x}", h.finish())
    }

    fn connect(&self, s: &shards::Shard) -> redis::RedisResult<redis::Connection> {
        s.connector.connect(self.call_timeout())
    }

    /// The server is stopping (its connections are closing, each leaving
    /// its rooms here): from now on every call is bounded by the end of
    /// [`STOP_GRACE`], or [`STOP_TIMEOUT`] once it has passed, and a shard
    /// whose call times out is taken for down, so the leaves after it give
    /// up at once. Members whose leave was given up are reaped by the other
    /// nodes, as a dead node's are.
    pub fn begin_stop(&self) {
        if self.stopping.set(Instant::now()).is_ok() {
            log::info!(
                "redis: stopping: Redis calls now wait until {STOP_GRACE:?} from now, then at most {STOP_TIMEOUT:?}"
            );
        }
    }

    /// The bound on each connect, read and write of a call, and on the wait
    /// for a pooled connection.
    fn call_timeout(&self) -> Duration {
        match self.stopping.get() {
            Some(began) => (*began + STOP_GRACE)
                .saturating_duration_since(Instant::now())
                .clamp(STOP_TIMEOUT.min(self.timeout), self.timeout),
            None => self.timeout,
        }
    }

    /// Runs `f` on a pooled connection of shard `s`, failing at once while
    /// that shard is down.
    fn call<T>(
        &self,
        s: &shards::Shard,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, ErrorReply> {
        if !s.up.load(Relaxed) {
            self.metrics.errors.fetch_add(1, Relaxed);
            return Err(unavailable());
        }
        self.call_anyway(s, f).map_err(|e| {
            log::warn!("redis: {e}");
            unavailable()
        })
    }

    /// Runs `f` on a pooled connection of shard `s` whether or not it is
    /// thought up.
    /// A connection that cannot be made, or that breaks or times out during
    /// `f`, fails this call only (and a broken one is closed): whether a
    /// shard is down is for its heartbeat to tell, on a connection of its
    /// own (`node.rs`), so a slow call or a pool busy with slow calls never
    /// makes every room of the shard unavailable. The one exception is a
    /// READONLY reply (the primary was made a replica by a failover): it
    /// counts as a broken connection and marks the shard down, which drops
    /// its pooled connections, so the next connection asks the sentinels
    /// again rather than the pool handing out more to a demoted primary.
    fn call_anyway<T>(
        &self,
        s: &shards::Shard,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let wait = self.call_timeout();
        let stopping = self.stopping.get().is_some();
        let Some(pool::Taken { slot, generation }) = s.pool.take(wait) else {
            self.metrics.errors.fetch_add(1, Relaxed);
            return Err(redis::RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "every pooled Redis connection stayed busy for the call timeout",
            )));
        };
        let mut conn = match slot {
            pool::Slot::Idle(conn) => conn,
            pool::Slot::Open => match self.connect(s) {
                Ok(conn) => conn,
                Err(e) => {
                    s.pool.forget(generation);
                    self.metrics.errors.fetch_add(1, Relaxed);
                    if stopping {
                        self.mark_down(s);
                    }
                    return Err(e);
                }
            },
        };
        if stopping {
            // Pooled before the stop with the longer bound; it never serves
            // a call without the stop's again.
            let bounded = conn.set_read_timeout(Some(wait)).and_then(|()| conn.set_write_timeout(Some(wait)));
            if let Err(e) = bounded {
                s.pool.forget(generation);
                return Err(e);
            }
        }
        let start = Instant::now();
        let result = f(&mut conn);
        self.metrics.rtt_micros.fetch_add(start.elapsed().as_micros() as u64, Relaxed);
        self.metrics.calls.fetch_add(1, Relaxed);
        match &result {
            Ok(_) => s.pool.give_back(conn, generation),
            Err(e) => {
                self.metrics.errors.fetch_add(1, Relaxed);
                let broken = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || sentinel::not_primary(e);
                // A stop does not wait for the heartbeat to tell.
                if sentinel::not_primary(e) || (stopping && broken) {
                    self.mark_down(s);
                }
                if broken {
                    // A timed-out reply may still arrive: the connection
                    // cannot serve another call.
                    s.pool.forget(generation);
                } else {
                    s.pool.give_back(conn, generation);
                }
            }
        }
        result
    }

    /// Counts a failed call that was not made through the pool.
    fn count_failure(&self) {
        self.metrics.errors.fetch_add(1, Relaxed);
    }

    /// A shard is down until a heartbeat on it goes through again.
    fn mark_down(&self, s: &shards::Shard) {
        if s.up.swap(false, Relaxed) {
            log::warn!(
                "redis (shard {}) is down: publishes and joins in its rooms get `error unavailable` until it answers again",
                s.index
            );
            s.pool.clear();
        }
    }

    /// Publishes `p`: one script call; the ack may go once it returns.
    /// `seen` is the epoch and seq this node delivered last in the room, if
    /// it follows the room: Redis being behind it moves the room to a new epoch.
    pub fn publish(
        &self,
        p: &Publish<'_>,
        ts: u64,
        seen: Option<(String, u64)>,
        history: &HistoryRules,
    ) -> Result<Published, ErrorReply> {
        // The room's namespace decides how much its stream keeps (0: nothing).
        let count = if history.keeps() { history.count } else { 0 };
        let (seen_epoch, seen_seq) = seen.unwrap_or_default();
        let body = Record::redis_body(p.room, ts, p.from, p.body);
        let origin = format!("{} {}", self.node, p.except.map_or_else(|| "-".to_owned(), |c| c.to_string()));
        let room = p.room;
        let (seq, _epoch, dup): (u64, String, u8) = self.call(self.shard(room), |c| {
            self.scripts
                .publish
                .key(self.key("m", room))
                .key(self.key("h", room))
                .key(self.key("k", room))
                .key(self.key("kz", room))
                .arg(&body)
                .arg(count)
                .arg(history.ttl.as_millis().max(1) as u64)
                .arg(self.channel(room))
                .arg(self.new_epoch())
                .arg(p.key.unwrap_or(""))
                .arg(origin)
                .arg(ts)
                .arg(&seen_epoch)
                .arg(seen_seq)
                .arg(self.idempotency_ttl.as_millis().max(1) as u64)
                .invoke(c)
        })?;
        Ok(Published { seq, duplicate: dup == 1 })
    }

    /// Makes sure this node's subscriber has the room's channel, waiting at
    /// most the call timeout for room in the subscriber's queue, then at most
    /// the call timeout and a [`HEARTBEAT`] for Redis to confirm a new subscription.
    fn ensure_subscribed(&self, room: &str) -> Result<(), ErrorReply> {
        let s = self.shard(room);
        if s.subscribed.lock().contains(room) {
            return Ok(());
        }
        if !s.up.load(Relaxed) {
            return Err(unavailable());
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        // Many joins at once may fill the queue: wait for room, within the bound.
        s.control
            .0
            .send_timeout(Control::Subscribe(room.to_owned(), tx), self.timeout)
            .map_err(|_| unavailable())?;
        match rx.recv_timeout(self.timeout + HEARTBEAT) {
            Ok(true) => Ok(()),
            _ => Err(unavailable()),
        }
    }

    /// Asks the room's shard's subscriber to drop a room that lost its last
    /// local member or stream.
    pub(crate) fn release(&self, room: &str) {
        let _ = self.shard(room).control.0.try_send(Control::Unsubscribe(room.to_owned()));
    }

    /// The room's epoch, seq, history entries from..=to and member count in
    /// one call. `seen` is the epoch and seq this node delivered last, if it
    /// follows the room (a Redis behind it moves the room to a new epoch).
    #[allow(clippy::too_many_arguments)]
    fn read(
        &self,
        room: &str,
        from: Option<u64>,
        to: Option<u64>,
        limit: usize,
        presence: Option<(&str, &Member, String)>,
        seen: Option<(&str, u64)>,
        anyway: bool,
    ) -> Result<(String, u64, Entries, u64), ErrorReply> {
        let invoke = |c: &mut redis::Connection| {
            let (client_id, user, payload, event) = match &presence {
                Some((client_id, m, event)) => {
                    (*client_id, m.user.as_str(), m.payload.as_str(), event.as_str())
                }
                None => ("", "", "", ""),
            };
            let (seen_epoch, seen_seq) = seen.unwrap_or_default();
            self.scripts
                .read
                .key(self.key("m", room))
                .key(self.key("h", room))
                .key(self.key("p", room))
                .key(format!("{}nm:{}", self.prefix, self.node))
                .key(self.key("k", room))
                .key(self.key("kz", room))
                .arg(self.new_epoch())
                .arg(from.map(|s| s.to_string()).unwrap_or_default())
                .arg(to.map(|s| s.to_string()).unwrap_or_default())
                .arg(limit.max(1))
                .arg(client_id)
                .arg(user)
                .arg(member_field(room, client_id))
                .arg(self.channel(room))
                .arg(event)
                .arg(seen_epoch)
                .arg(seen_seq)
                .arg(payload)
                .invoke(c)
        };
        let s = self.shard(room);
        if anyway {
            self.call_anyway(s, invoke).map_err(|_| unavailable())
        } else {
            self.call(s, invoke)
        }
    }

    /// A join (docs/protocol.md, "Scaling out"): the seq and history this
    /// node is at, read from Redis without the room's lock, then the replay,
    /// ack and presence as for one node, under it (see [`Before`] for why
    /// that is exact against the subscriber's deliveries). Joins and stream
    /// opens of one room on this node take turns ([`Cluster::gated`]), so a
    /// room's seats are counted one join at a time. Returns the room's
    /// published bytes and the bytes replayed.
    pub fn join(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        j: &Join<'_>,
    ) -> Result<(u64, usize), ErrorReply> {
        fits(shared, j.room)?;
        let joined = self.gated(j.room, || {
            let mut added = false;
            let joined = self.join_gated(shared, server, j, &mut added);
            if joined.is_err() && added {
                // The read added the member's presence and told the other
                // nodes: they hear it leave again.
                self.left(j.room, j.client_id, j.conn, j.user, false);
            }
            joined
        });
        if joined.is_err() {
            self.release(j.room); // the subscription made for it goes, if the room is idle
        }
        joined
    }

    /// [`Cluster::join`] while it has the room's turn; `added`: set once a
    /// read added the member's presence in Redis.
    fn join_gated(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        j: &Join<'_>,
        added: &mut bool,
    ) -> Result<(u64, usize), ErrorReply> {
        let missed = |miss| super::publish::missed(shared, miss);
        // Checked again where it counts (the read below adds the member):
        // joins at once on this node each passed `check_seat` before any
        // had its seat, and take turns from here. Other nodes' joins at the
        // same moment still may pass.
        if j.newly {
            let (rules, streams) =
                shared.rooms.with_room(j.room, true, |r| (r.rules.clone(), r.sse_streams)).map_err(missed)?;
            if rules.max_members > 0 {
                let members = self.member_count(j.room)?;
                rules.check_members(j.room, members.saturating_add(streams))?;
            }
        }
        let event = presence_event("presence:join", j.room, j.client_id, j.user);
        let member = Member {
            user: j.user.unwrap_or("").to_owned(),
            payload: presence_payload(j.room, j.client_id, j.user).to_string(),
        };
        // A `since` of the largest seq reads no history (no seq comes after it).
        let from = j.since.and_then(|s| s.checked_add(1));
        for _ in 0..READ_ATTEMPTS {
            self.ensure_subscribed(j.room)?;
            let before = shared.rooms.with_room(j.room, true, Before::take).map_err(missed)?;
            // Only the first read that answers adds the member and tells the
            // other nodes; a read again after it must not tell them twice.
            let presence =
                (j.newly && !*added).then(|| (j.client_id, &member, self.ephemeral(Some(j.conn), &event)));
            let telling = presence.is_some();
            let read = self.read(j.room, from, before.to(), j.max_replay, presence, before.seen(), false)?;
            *added |= telling;
            let outcome = shared
                .rooms
                .with_room(j.room, true, |r| self.join_apply(server, j, r, &before, read, &member, &event))
                .map_err(missed)?;
            if let Some(done) = outcome? {
                return Ok(done);
            }
        }
        Err(unavailable())
    }

    /// A join's read applied under the room's lock, if it still holds
    /// ([`Before::holds`]); None: read again.
    #[allow(clippy::too_many_arguments)]
    fn join_apply(
        &self,
        server: &ServerHandle,
        j: &Join<'_>,
        r: &mut RoomState,
        before: &Before,
        read: (String, u64, Entries, u64),
        member: &Member,
        event: &str,
    ) -> Result<Option<(u64, usize)>, ErrorReply> {
        let (epoch, seq, mut entries, members) = read;
        let meanwhile = before.settle(r, &epoch, seq, j.since.is_some());
        let Some(meanwhile) = meanwhile.filter(|_| self.shard(j.room).subscribed.lock().contains(j.room))
        else {
            return Ok(None);
        };
        adopt(server, j.room, r, epoch, seq, &mut entries);
        caught_up(r, &meanwhile);
        if j.newly {
            server.join(j.conn, j.room).map_err(|_| internal())?;
            self.shard(j.room).members.lock().insert(member_field(j.room, j.client_id), member.clone());
            r.members.insert(j.conn, json!({}));
            if r.rules.announces_members() {
                super::presence::announce(server, j.room, event.to_owned(), Some(j.conn));
                super::presence::listen(server, j.conn, j.room, j.presence);
            }
        }
        let mut payload = json!({"room": j.room, "seq": r.seq, "members": members, "epoch": r.epoch});
        let mut replayed = 0;
        if let Some(since) = j.since {
            let same_epoch = j.epoch.is_none_or(|e| e == r.epoch);
            let (frames, recovered) =
                self.replay(j.room, r, since, same_epoch && j.history, (&entries, &meanwhile), j.max_bytes);
            // An entry no node wrote (another tool's) reaches no member.
            for record in frames.iter().filter(|r| r.is_message()) {
                replayed += record.frame().len();
                let _ = server.send_frame(j.conn, record.frame().clone());
            }
            payload["recovered"] = Value::Bool(recovered);
        }
        if let Some(id) = j.id {
            let _ = server.send(j.conn, ack(id, payload));
        }
        Ok(Some((r.published_bytes, replayed)))
    }

    /// Runs `f` with the room's turn among this node's joins and stream
    /// opens: one at a time per room, across their Redis calls. Not the
    /// room's lock, which the subscriber takes for every delivery: holding
    /// that across a Redis call stalled every room of the shard behind it.
    /// Taken before the room's lock, never while holding it.
    fn gated<T>(&self, room: &str, f: impl FnOnce() -> T) -> T {
        let gate = self.gates.lock().entry(room.to_owned()).or_default().clone();
        let out = {
            let _turn = gate.lock();
            f()
        };
        let mut gates = self.gates.lock();
        // Only the table and this caller hold it: nobody waits for the turn.
        if Arc::strong_count(&gate) == 2 {
            gates.remove(room);
        }
        out
    }

    /// The frames a client that saw `since` missed, from `entries` (newest
    /// first), within `max_bytes` and the room's history rules (a room that
    /// keeps none never recovers; older than its TTL is gone), oldest first;
    /// and whether they are all it missed. `may_recover` is false when the
    /// client saw another epoch or lacks the history right.
    fn replay(
        &self,
        room: &str,
        r: &RoomState,
        since: u64,
        may_recover: bool,
        (entries, meanwhile): (&Entries, &[(u64, Record)]),
        max_bytes: usize,
    ) -> (Vec<Record>, bool) {
        if !may_recover || !r.rules.history.keeps() || since > r.seq {
            return (Vec::new(), false);
        }
        let oldest_kept = now_ms().saturating_sub(r.rules.history.ttl.as_millis() as u64);
        let (mut frames, mut bytes) = (Vec::new(), 0);
        let read = entries
            .iter()
            .rev()
            .filter_map(|(id, fields)| parse_entry(id, fields))
            .filter(|&(seq, ts, _)| seq > since && seq <= r.seq && ts >= oldest_kept)
            .map(|(seq, _, body)| Record::from_redis(room, seq, body));
        // What the subscriber delivered while the read was made comes after it.
        let meanwhile = meanwhile.iter().filter(|(seq, _)| *seq > since).map(|(_, record)| record.clone());
        for record in read.chain(meanwhile) {
            if bytes + record.frame().len() > max_bytes {
                break;
            }
            bytes += record.frame().len();
            frames.push(record);
        }
        let recovered = frames.len() as u64 == r.seq - since;
        (frames, recovered)
    }

    /// An event stream opening on this node (`sse.rs`): as a join, the seq
    /// and history this node is at, read from Redis without the room's lock
    /// and applied under it ([`Before`]), in the room's turn; then
    /// `connected` (`connected` given, with the room's seq, epoch and, with
    /// `since`, `recovered`) and the replay are sent, and the stream joins the
    /// room's shadow room, which the subscriber feeds from then on. Without
    /// `history` (the right), or with a `since` of another epoch than the
    /// room's (`epoch`), a `since` is answered `recovered: false`.
    #[allow(clippy::too_many_arguments)]
    pub fn open_stream(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        conn: ConnId,
        room: &str,
        since: Option<u64>,
        history: bool,
        epoch: Option<&str>,
        max_replay: usize,
        max_bytes: usize,
        connected: Value,
    ) -> Result<(), ErrorReply> {
        fits(shared, room)?;
        let (from, bounds) = ((since, epoch, history), (max_replay, max_bytes));
        let opened = self
            .gated(room, || self.open_stream_subscribed(shared, server, conn, room, from, bounds, connected));
        if opened.is_err() {
            self.release(room); // the subscription made for it goes, if the room is idle
        }
        opened
    }

    #[allow(clippy::too_many_arguments)]
    fn open_stream_subscribed(
        &self,
        shared: &Shared,
        server: &ServerHandle,
        conn: ConnId,
        room: &str,
        (since, since_epoch, history): (Option<u64>, Option<&str>, bool),
        (max_replay, max_bytes): (usize, usize),
        connected: Value,
    ) -> Result<(), ErrorReply> {
        let missed = |miss| super::publish::missed(shared, miss);
        for _ in 0..READ_ATTEMPTS {
            self.ensure_subscribed(room)?;
            let before = shared.rooms.with_room(room, true, Before::take).map_err(missed)?;
            let from = since.and_then(|s| s.checked_add(1));
            let (epoch, seq, mut entries, members) =
                self.read(room, from, before.to(), max_replay, None, before.seen(), false)?;
            let outcome = shared.rooms.with_room(room, true, |r| -> Result<bool, ErrorReply> {
                let meanwhile = before.settle(r, &epoch, seq, since.is_some());
                let Some(meanwhile) = meanwhile.filter(|_| self.shard(room).subscribed.lock().contains(room))
                else {
                    return Ok(false);
                };
                adopt(server, room, r, epoch, seq, &mut entries);
                caught_up(r, &meanwhile);
                // Checked again where it counts, as `check_seat` counts (the
                // members on every node, this node's streams): streams opening
                // at once on this node each passed the upgrade's check, and
                // take turns from there.
                let members = usize::try_from(members).unwrap_or(usize::MAX);
                r.rules.check_members(room, members.saturating_add(r.sse_streams))?;
                server.join_stream(conn, &super::sse::shadow(room)).map_err(|_| internal())?;
                r.sse_streams += 1;
                let mut connected = connected.clone();
                connected["seq"] = json!(r.seq);
                connected["epoch"] = json!(r.epoch);
                let mut frames = Vec::new();
                if let Some(since) = since {
                    let recovered;
                    let same_epoch = since_epoch.is_none_or(|e| e == r.epoch);
                    (frames, recovered) =
                        self.replay(room, r, since, history && same_epoch, (&entries, &meanwhile), max_bytes);
                    connected["recovered"] = Value::Bool(recovered);
                }
                let _ = server.send_frame(
                    conn,
                    wire::shared(super::sse::event(None, "connected", &connected.to_string())),
                );
                for record in frames {
                    if let Some(event) = record.sse_event(room, None) {
                        let _ = server.send_frame(conn, event);
                    }
                }
                Ok(true)
            });
            if outcome.map_err(missed)?? {
                return Ok(());
            }
        }
        Err(unavailable())
    }

    /// After a local member left `room` (its local `presence:leave` is sent
    /// already): drops its presence entry, tells the other nodes, and lets
    /// the subscription go when no local member is left.
    pub fn left(&self, room: &str, client_id: &str, conn: ConnId, user: Option<&str>, last: bool) {
        let event = self.ephemeral(Some(conn), &presence_event("presence:leave", room, client_id, user));
        // Before Redis: the heartbeat must not put back a member on its way out.
        let s = self.shard(room);
        s.members.lock().remove(&member_field(room, client_id));
        let result = self.call(s, |c| {
            self.scripts
                .leave
                .key(self.key("p", room))
                .key(format!("{}nm:{}", self.prefix, self.node))
                .arg(client_id)
                .arg(member_field(room, client_id))
                .arg(self.channel(room))
                .arg(event)
                .invoke::<i64>(c)
        });
        if result.is_err() {
            log::warn!(
                "redis: the presence of {client_id} in {room:?} stays until this node's entries are reaped"
            );
        }
        if last {
            self.release(room);
        }
    }

    /// Sends an ephemeral event (typing) to the room's members on other nodes.
    pub fn relay(&self, room: &str, conn: ConnId, text: &str) -> Result<(), ErrorReply> {
        let msg = self.ephemeral(Some(conn), text);
        let channel = self.channel(room);
        self.call(self.shard(room), |c| redis::cmd("PUBLISH").arg(&channel).arg(&msg).query::<i64>(c))
            .map(drop)
    }

    /// How many members the room has on every node (its Redis presence).
    pub fn member_count(&self, room: &str) -> Result<usize, ErrorReply> {
        let key = self.key("p", room);
        self.call(self.shard(room), |c| redis::cmd("HLEN").arg(&key).query(c))
    }

    /// `presence:get` across nodes: at most [`PRESENCE_MAX`] members
    /// (`{clientId, meta, user?}` by clientId) and the room's count, read
    /// by `HSCAN` pages (each a bounded amount of work for Redis, however big
    /// the room) on one pooled connection.
    pub fn presence(&self, room: &str) -> Result<Presence, ErrorReply> {
        let key = self.key("p", room);
        let (count, found) = self.call(self.shard(room), |c| {
            let count: usize = redis::cmd("HLEN").arg(&key).query(c)?;
            let mut found: Vec<(String, String)> = Vec::with_capacity(count.min(PRESENCE_MAX));
            let mut cursor = 0u64;
            // HSCAN's COUNT is a hint: a few pages may come short, so the
            // pages are bounded too, not only the members.
            for _ in 0..PRESENCE_PAGES {
                let (next, page): (u64, Vec<(String, String)>) =
                    redis::cmd("HSCAN").arg(&key).arg(cursor).arg("COUNT").arg(PRESENCE_MAX).query(c)?;
                found.extend(page);
                cursor = next;
                if cursor == 0 || found.len() >= PRESENCE_MAX {
                    break;
                }
            }
            Ok((count, found))
        })?;
        let mut found = found;
        // A scan may return a field twice (the hash was resized meanwhile).
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        found.truncate(PRESENCE_MAX);
        let members = found
            .into_iter()
            .map(|(client_id, user)| {
                let mut m = json!({"clientId": client_id, "meta": {}});
                if !user.is_empty() {
                    m["user"] = Value::String(user);
                }
                m
            })
            .collect();
        Ok(Presence { members, count })
    }

    /// The room's epoch and the messages its stream holds after `since`,
    /// oldest first, at most `limit`, each as the frame members got (for the
    /// backend API's history read). `history` is the room's (its namespace's).
    pub fn history(
        &self,
        room: &str,
        since: u64,
        limit: usize,
        history: &HistoryRules,
    ) -> Result<(String, Vec<Record>), ErrorReply> {
        // The stream holds at most the room's history count: read them all,
        // then keep the oldest `limit` after `since`.
        let (epoch, _, entries, _) =
            self.read(room, Some(since + 1), None, history.count.max(1), None, None, false)?;
        let mut found: Vec<(u64, &[u8])> = entries
            .iter()
            .filter_map(|(id, fields)| parse_entry(id, fields))
            .map(|(seq, _, b)| (seq, b))
            .collect();
        found.sort_unstable_by_key(|(seq, _)| *seq);
        let frames = found
            .into_iter()
            .filter(|(seq, _)| *seq > since)
            .take(limit)
            .map(|(seq, b)| Record::from_redis(room, seq, b));
        Ok((epoch, frames.collect()))
    }

    /// An ephemeral message on a room's channel: `e <node> <conn>\n<frame>`.
    fn ephemeral(&self, conn: Option<ConnId>, text: &str) -> String {
        format!("e {} {}\n{text}", self.node, conn.map_or_else(|| "-".to_owned(), |c| c.to_string()))
    }

    /// The cluster's lines of `/metrics`.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let mut out = String::with_capacity(1024);
        let mut metric =
            |name: &str, kind: &str, help: &str, value: String| write_one(&mut out, name, kind, help, value);
        metric(
            "wshub_redis_up",
            "gauge",
            "1 while Redis (every shard) answers, 0 while one is down.",
            u64::from(self.all_up()).to_string(),
        );
        metric(
            "wshub_redis_shards_up",
            "gauge",
            "Redis instances (shards, --redis repeated) answering now.",
            self.shards.iter().filter(|s| s.up.load(Relaxed)).count().to_string(),
        );
        out.push_str(
            "# HELP wshub_redis_shard_up 1 while the Redis instance at this position of the list answers.\n\
             # TYPE wshub_redis_shard_up gauge\n",
        );
        for s in &self.shards {
            let _ = writeln!(
                out,
                "wshub_redis_shard_up{{shard=\"{}\"}} {}",
                s.index,
                u8::from(s.up.load(Relaxed))
            );
        }
        let micros = m.rtt_micros.load(Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "wshub_redis_roundtrip_seconds_sum",
            "counter",
            "Time spent in Redis calls (with wshub_redis_calls_total: the mean round trip).",
            format!("{:.6}", micros as f64 / 1e6),
        );
        metric("wshub_redis_calls_total", "counter", "Redis calls made.", m.calls.load(Relaxed).to_string());
        metric(
            "wshub_redis_errors_total",
            "counter",
            "Redis calls failed or refused while it was down.",
            m.errors.load(Relaxed).to_string(),
        );
        metric(
            "wshub_redis_reconnects_total",
            "counter",
            "Times the subscriber connection was made again.",
            m.reconnects.load(Relaxed).to_string(),
        );
        metric(
            "wshub_redis_subscribed_rooms",
            "gauge",
            "Rooms whose channel this node subscribes to (rooms with local members).",
            self.shards.iter().map(|s| s.subscribed.lock().len()).sum::<usize>().to_string(),
        );
        metric(
            "wshub_redis_refilled_total",
            "counter",
            "Messages read back from a room's stream because the channel skipped them.",
            m.refilled.load(Relaxed).to_string(),
        );
        out
    }
}

/// A request to all nodes, as [`Cluster::control_channel`] carries it.
fn control_message(kind: char, number: u64, reason: &str, target: &str) -> String {
    format!("{kind} {number} {}\n{reason}{target}", reason.len())
}

/// Refuses a room this node's room table cannot take before its channel is
/// subscribed: a subscription is let go under the room's lock, which a room
/// that cannot be made never has, so each refused join used to leave its
/// channel subscribed for good (and subscribed again on every reconnect).
fn fits(shared: &Shared, room: &str) -> Result<(), ErrorReply> {
    shared.rooms.with_room(room, true, |_| ()).map_err(|miss| super::publish::missed(shared, miss))
}

/// Adopts what Redis says of a room (its `epoch` and `seq`) when this node
/// does not follow it yet, or Redis moved it to a new epoch (its local
/// members are told, and `entries` read up to a seq of the old epoch are
/// dropped).
fn adopt(
    server: &ServerHandle,
    room: &str,
    r: &mut RoomState,
    epoch: String,
    seq: u64,
    entries: &mut Entries,
) {
    if !r.cluster_synced || r.epoch != epoch {
        if r.cluster_synced {
            entries.clear();
            subscriber::notify(server, room, r.seq, subscriber::NEW_EPOCH);
        }
        (r.epoch, r.seq, r.cluster_synced, r.cluster_last) = (epoch, seq, true, None);
    }
}

/// After [`adopt`]: a room not followed yet is at the last message the
/// subscriber passed over while its read was made ([`Before::settle`]).
fn caught_up(r: &mut RoomState, meanwhile: &[(u64, Record)]) {
    if let Some((seq, _)) = meanwhile.last() {
        r.seq = r.seq.max(*seq);
    }
}

/// How this node followed a room when a join or stream open began to read
/// it from Redis, without the room's lock (a read under it stalled the
/// subscriber, which takes the lock of each room it delivers to, and so
/// every room of the shard, for as long as Redis took).
///
/// The invariant that makes the read exact once applied under the lock:
/// the member (or stream) starts hearing the room's deliveries when it is
/// added under the lock; everything the room delivered before that is what
/// the replay must hold, and nothing after. So the read must end exactly at
/// the seq the room has delivered when it is applied (`r.seq`). It read up
/// to the seq the room had delivered when it began (`to`); the subscriber
/// delivers in seq order, so if the room is still at that seq in the same
/// epoch, the read ends where the deliveries do: the replay is the read's
/// messages after `since`, each once, and every later message comes live.
/// If the subscriber delivered meanwhile, the read is short of them: the
/// room's watch (`RoomState::cluster_watch`, kept from [`Before::take`] to
/// [`Before::settle`]; joins of a room take turns, so one at a time) holds
/// them, and they are replayed after the read's (in a busy room nearly every
/// read is overtaken: reading again failed as often). Only when the watch
/// lacks some (a refill moved the room, more than `WATCHED` came) is the
/// read made again (a join without `since` replays nothing and needs no match).
/// A room not followed yet takes the read's epoch and seq as its own, moved
/// on to the last message the subscriber passed over meanwhile
/// (`RoomState::cluster_skipped`; messages at or below the read's seq are in
/// the read, those after it in the watch).
struct Before {
    synced: bool,
    epoch: String,
    seq: u64,
}

impl Before {
    /// Notes the room as it is now, and starts watching what the subscriber
    /// passes over in a room it does not follow yet.
    fn take(r: &mut RoomState) -> Before {
        if !r.cluster_synced {
            r.cluster_skipped = None;
        }
        r.cluster_watch = Some(Vec::new());
        Before { synced: r.cluster_synced, epoch: r.epoch.clone(), seq: r.seq }
    }

    /// The newest seq to read: what the room had delivered (unfollowed: Redis's).
    fn to(&self) -> Option<u64> {
        self.synced.then_some(self.seq)
    }

    /// The epoch and seq this node delivered last, for the read's check
    /// that Redis is not behind it.
    fn seen(&self) -> Option<(&str, u64)> {
        self.synced.then_some((self.epoch.as_str(), self.seq))
    }

    /// Whether a read begun at `self` that found the room at `epoch` and
    /// `seq` may be applied to the room as it is now (`exact`: its history
    /// is replayed, so it must reach as far as the subscriber went), with
    /// the messages the subscriber delivered or passed over after the read's
    /// last one (from the room's watch, which this ends), in order, to be
    /// replayed after the read's; `None`: read again.
    fn settle(&self, r: &mut RoomState, epoch: &str, seq: u64, exact: bool) -> Option<Vec<(u64, Record)>> {
        let watched = r.cluster_watch.take();
        if r.cluster_synced != self.synced {
            return None; // followed or let go meanwhile
        }
        // How far the read reaches, and how far the subscriber went.
        let (read, went) = if self.synced {
            if r.epoch != self.epoch {
                return None;
            }
            if !exact {
                return Some(Vec::new());
            }
            if epoch != r.epoch {
                // A new epoch read moves the room to it (`adopt`) if
                // nothing of the old one came meanwhile.
                return (r.seq == self.seq).then(Vec::new);
            }
            (self.seq, r.seq)
        } else {
            match &r.cluster_skipped {
                None => return Some(Vec::new()),
                Some((e, s)) if e == epoch => (seq, *s),
                Some(_) => return None,
            }
        };
        if went <= read {
            return Some(Vec::new());
        }
        let meanwhile: Vec<(u64, Record)> = watched?
            .into_iter()
            .filter(|(e, s, _)| e == epoch && *s > read)
            .map(|(_, s, record)| (s, record))
            .collect();
        // All of them, each once: the subscriber goes in seq order.
        let whole = meanwhile.iter().map(|(s, _)| *s).eq(read + 1..=went);
        whole.then_some(meanwhile)
    }
}

fn internal() -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "the server is stopping")
}

/// Whether `text` is a frame [`presence_event`] made (its `type` comes first).
pub(crate) fn is_presence_event(text: &str) -> bool {
    text.starts_with(r#"{"type":"presence:"#)
}

/// A member's field in its node's members hash (and in [`Cluster::members`]).
pub(super) fn member_field(room: &str, client_id: &str) -> String {
    format!("{room}\n{client_id}")
}

/// A fingerprint of a message's body (which holds its timestamp and
/// publisher): two messages Redis put at one seq are told apart by it.
fn fingerprint(body: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(body);
    h.finish()
}

/// A stream entry's seq, timestamp and body.
fn parse_entry<'e>(id: &str, fields: &'e [Vec<u8>]) -> Option<(u64, u64, &'e [u8])> {
    let seq = id.strip_suffix("-0")?.parse().ok()?;
    let (mut ts, mut body) = (None, None);
    for pair in fields.chunks(2) {
        match pair {
            [k, v] if k == b"t" => ts = std::str::from_utf8(v).ok()?.parse().ok(),
            [k, v] if k == b"b" => body = Some(v.as_slice()),
            _ => {}
        }
    }
    Some((seq, ts?, body?))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The subscriber tells presence events from typing by their first bytes:
    /// `presence_event` writes `type` first, whatever the user's name.
    #[test]
    fn presence_events_are_told_from_other_ephemerals() {
        assert!(is_presence_event(&presence_event("presence:join", "r", "1", Some(r#"{"type":"typing"}"#))));
        assert!(is_presence_event(&presence_event("presence:leave", "r", "1", None)));
        let typing =
            crate::protocol::envelope::frame("typing", None, json!({"room": "r", "clientId": "presence:"}));
        assert!(!is_presence_event(&typing));
    }

    /// A read made without the room's lock is applied only while the room
    /// has not moved past it: the cases the slow-join test cannot time
    /// (a message passed over while the room was not followed, an epoch
    /// or follow change meanwhile).
    #[test]
    fn a_read_holds_only_while_the_room_has_not_moved_past_it() {
        use crate::protocol::room::{Limits, RoomTable};
        let namespaces = Arc::new(ProtocolConfig::default().namespace_rules());
        let rooms = RoomTable::new(Limits { total_bytes: 1 << 20, max_rooms: 10 }, namespaces);
        rooms
            .with_room("r", true, |r| {
                // Not followed yet: the read's epoch and seq become the room's
                // unless the subscriber passed over a newer message meanwhile.
                r.cluster_skipped = Some(("old".into(), 9));
                let before = Before::take(r);
                assert_eq!((before.to(), before.seen()), (None, None));
                assert!(
                    before.settle(r, "e1", 5, true).is_some(),
                    "take forgets what was passed over before"
                );
                r.cluster_skipped = Some(("e1".into(), 5));
                assert!(before.settle(r, "e1", 5, true).is_some(), "a message the read has");
                r.cluster_skipped = Some(("e1".into(), 6));
                assert!(before.settle(r, "e1", 5, true).is_none(), "a message after the read");
                r.cluster_skipped = Some(("e0".into(), 1));
                assert!(before.settle(r, "e1", 5, true).is_none(), "a message of another epoch");
                (r.cluster_synced, r.epoch, r.seq) = (true, "e1".into(), 5);
                assert!(before.settle(r, "e1", 5, false).is_none(), "followed meanwhile");

                // Followed: the read ends at the seq delivered when it began.
                let before = Before::take(r);
                assert_eq!((before.to(), before.seen()), (Some(5), Some(("e1", 5))));
                assert!(before.settle(r, "e1", 5, true).is_some());
                r.seq = 6;
                assert!(before.settle(r, "e1", 6, true).is_none(), "a delivery the replay would miss");
                assert!(before.settle(r, "e1", 6, false).is_some(), "no replay: nothing to miss");

                // The subscriber overtook the read: what it delivered meanwhile
                // (its watch) fills in, when the watch has all of it.
                r.seq = 5;
                let before = Before::take(r);
                for seq in [6, 7] {
                    r.watched("e1", seq, || Record::from_redis("r", seq, b"1"));
                    r.seq = seq;
                }
                let meanwhile = before.settle(r, "e1", 7, true).expect("the watch has 6 and 7");
                assert_eq!(meanwhile.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [6, 7]);
                assert!(r.cluster_watch.is_none(), "settling ends the watch");
                let before = Before::take(r);
                r.watched("e1", 9, || Record::from_redis("r", 9, b"1"));
                r.seq = 9;
                assert!(before.settle(r, "e1", 9, true).is_none(), "8 is not in the watch");
                r.seq = 6;
                r.epoch = "e2".into();
                assert!(before.settle(r, "e2", 1, false).is_none(), "a new epoch meanwhile");
                r.cluster_synced = false;
                assert!(before.settle(r, "e1", 6, false).is_none(), "let go meanwhile");
            })
            .expect("room");
    }

    #[test]
    fn stream_entries_parse_and_junk_does_not() {
        let fields = vec![b"t".to_vec(), b"17".to_vec(), b"b".to_vec(), b"tx".to_vec()];
        assert_eq!(parse_entry("42-0", &fields), Some((42, 17, &b"tx"[..])));
        assert_eq!(parse_entry("42-1", &fields), None);
        assert_eq!(parse_entry("42-0", &fields[..2]), None);
    }
}
