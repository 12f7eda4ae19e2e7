//! This node's heartbeat (and its reading of the bans Redis records: at
//! start and after an outage): every [`HEARTBEAT`] it sets its key with a TTL of
//! [`NODE_TTL`] on every shard, which also tells whether that shard is up,
//! and checks that the shard holds the same shard-list fingerprint as this
//! node's (`shards.rs`); with Sentinel it first checks that the primary its
//! connections reach was not replaced ([`replaced`]). It alone decides that
//! a shard is down (a READONLY reply on a call also does, `mod.rs`), and it beats on a connection of its
//! own per shard, in a thread of its own per shard, so calls that are slow,
//! or that wait for a pooled connection, fail only themselves, and a shard
//! that does not answer delays no other's beat. Then, on each shard apart:
//!
//! - it puts back its own members Redis lost (it was taken for dead while
//!   paused, or Redis lost writes), with a `presence:join` for each put back:
//!   looked for when Redis holds fewer of them than the node has, and after
//!   every outage;
//! - it reaps dead nodes: a node whose key this node has seen missing for
//!   [`NODE_TTL`] in a row, while its own heartbeats went through. So an
//!   outage of Redis (every key expires meanwhile) or a pause shorter than
//!   that removes no member; a dead node's members go within
//!   [`NODE_TTL`] twice plus two heartbeats. Reaping goes by pages of
//!   [`REAP_PAGE`] members, each page one script that also publishes the
//!   page's `presence:leave` events.

use std::collections::HashMap;
use std::sync::Weak;
use std::time::{Duration, Instant};

use super::shards::Shard;
use super::{member_field, Cluster, Member, HEARTBEAT, NODE_TTL};
use crate::protocol::envelope::frame;
use crate::protocol::handler::Shared;

/// Bound on each connect, read and write of the heartbeat's own connection
/// (the call timeout if shorter): a beat that fails within it is made again
/// on a new connection well within [`NODE_TTL`].
const BEAT_TIMEOUT: Duration = Duration::from_secs(1);
/// Members reaped (or put back) per Redis call.
const REAP_PAGE: usize = 500;
/// Reap calls per heartbeat (the rest waits for the next one).
const PAGES_PER_BEAT: usize = 20;

/// The heartbeat of shard `index`, in a thread of its own: a shard that
/// does not answer (each beat then waits out its 1 s timeouts) delays no
/// other shard's beat, which must refresh this node's key within
/// [`NODE_TTL`] or the other nodes reap its members there.
pub(super) fn run(weak: Weak<Shared>, cluster: std::sync::Arc<Cluster>, index: usize) {
    // Nodes found silent: since when (as this node saw it), and where the
    // reaping of their members got to.
    let mut silent: HashMap<String, Silent> = HashMap::new();
    // The bans recorded in Redis are to be read (at start, after an outage
    // of the home shard, and again after a read that failed).
    let mut bans_due = true;
    // The heartbeat's own connection, made again after it broke.
    let mut own: Option<redis::Connection> = None;
    loop {
        {
            let Some(shared) = weak.upgrade() else { return };
            let cluster = &*cluster;
            let Some(s) = cluster.shards.get(index) else { return };
            let was_up = s.up.load(std::sync::atomic::Ordering::Relaxed);
            let answered = match replaced(cluster, s, &mut own) {
                Some(why) => {
                    log::warn!(
                        "redis (shard {}): {why}: its connections are dropped and made again to the primary \
                         the sentinels name; calls get `error unavailable` meanwhile",
                        s.index
                    );
                    own = None;
                    silent.clear();
                    s.pool.clear();
                    s.primary_changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    cluster.mark_down(s);
                    false
                }
                None => beat(cluster, s, &mut own, &mut silent),
            };
            // At start, and after an outage of the home shard (bans and
            // unbans made meanwhile reached no subscriber of this node): the
            // bans recorded in Redis.
            if index == 0 {
                bans_due |= !was_up;
                if answered && bans_due {
                    bans_due = !read_bans(&shared, cluster);
                } else if answered && cluster.has_unrecorded() {
                    // A ban or unban whose write failed alone (no outage).
                    let _ = cluster.write_unrecorded();
                }
            }
            // Settled once tried; the first shard once the bans were read
            // (a node that has not read them would admit banned users).
            if index != 0 || (answered && !bans_due) {
                s.settled.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        std::thread::sleep(HEARTBEAT);
    }
}

/// With Sentinel, whether the primary this node's connections reach was
/// replaced, and how: the instance the heartbeat's own connection reaches
/// says (`ROLE`) it is a replica now, or the sentinels name another
/// primary, which says it is one. After a `SENTINEL FAILOVER` (or a
/// partition) the old primary stays a primary for seconds, taking every
/// write sent to it, which its resync then drops: the pooled connections
/// still on it must not serve another call. A sentinel or `ROLE` that does
/// not answer tells nothing (the beat itself finds an outage).
fn replaced(c: &Cluster, s: &Shard, own: &mut Option<redis::Connection>) -> Option<&'static str> {
    if !s.connector.is_sentinel() {
        return None;
    }
    if own.is_some() {
        let role = own_call(c, s, own, |conn| redis::cmd("ROLE").query::<Vec<redis::Value>>(conn));
        if role.is_ok_and(|role| !super::sentinel::is_primary(&role)) {
            return Some("the primary it was connected to is a replica now");
        }
    }
    s.connector.another_primary_named(c.timeout).then_some("the sentinels name another primary")
}

/// Makes this node's ban list what Redis records ([`Cluster::sync_bans`]);
/// whether Redis answered.
fn read_bans(shared: &Shared, c: &Cluster) -> bool {
    c.sync_bans(shared, None).is_ok()
}

/// A node found silent.
struct Silent {
    since: Instant,
    /// The `HSCAN` cursor of its members hash where the last page ended: a
    /// scan started again from 0 each page finds nothing once the buckets it
    /// reaches first are emptied, and would leave the rest there for good.
    cursor: u64,
}

/// One heartbeat on shard `s`, on `own` (its heartbeat connection, made
/// first if there is none); whether it answered. A shard list that differs
/// from another node's is logged once per start.
fn beat(
    c: &Cluster,
    s: &Shard,
    own: &mut Option<redis::Connection>,
    silent: &mut HashMap<String, Silent>,
) -> bool {
    let node_key = format!("{}node:{}", c.prefix, c.node);
    let nodes = format!("{}nodes", c.prefix);
    let members_key = format!("{}nm:{}", c.prefix, c.node);
    let list_key = format!("{}shards", c.prefix);
    let alive = own_call(c, s, own, |conn| {
        redis::pipe()
            .cmd("SET")
            .arg(&list_key)
            .arg(&c.shard_list)
            .arg("NX")
            .arg("PX")
            .arg(3 * NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("GET")
            .arg(&list_key)
            .cmd("SET")
            .arg(&node_key)
            .arg(1)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(&nodes)
            .arg(&c.node)
            .ignore()
            .cmd("HLEN")
            .arg(&members_key)
            .query::<(Option<String>, usize)>(conn)
    });
    let Ok((list, held)) = alive else {
        // What this node saw of the others while it could not see Redis
        // says nothing: they may be as cut off as it was.
        silent.clear();
        c.mark_down(s);
        return false;
    };
    match list {
        Some(list) if list != c.shard_list => {
            if !c.list_mismatch_told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::error!(
                    "redis: another node of this cluster was given another --redis list ({list}, this node \
                     {}): rooms are looked for on different shards; give every node the same list, in order",
                    c.shard_list
                );
            }
        }
        _ => {
            // Ours (or none yet): keep it alive while this node runs.
            let _ = own_call(c, s, own, |conn| {
                redis::cmd("PEXPIRE").arg(&list_key).arg(3 * NODE_TTL.as_millis() as u64).query::<i64>(conn)
            });
        }
    }
    let came_back = !s.up.swap(true, std::sync::atomic::Ordering::Relaxed);
    if came_back {
        log::info!("redis (shard {}) answers again", s.index);
    }
    // After an outage the count alone does not tell: Redis may have come
    // back without a member that joined after its snapshot, yet still hold
    // one that left while it was down.
    if came_back || held < s.members.lock().len() {
        put_back(c, s, &members_key);
    }
    let found: Vec<String> =
        match own_call(c, s, own, |conn| c.scripts.silent.key(&nodes).arg(&c.prefix).invoke(conn)) {
            Ok(found) => found,
            Err(_) => return true,
        };
    let now = Instant::now();
    silent.retain(|id, _| found.contains(id));
    let mut pages = 0;
    for id in found {
        let found = silent.entry(id.clone()).or_insert(Silent { since: now, cursor: 0 });
        if now.duration_since(found.since) < NODE_TTL {
            continue;
        }
        let mut cursor = found.cursor;
        while pages < PAGES_PER_BEAT {
            pages += 1;
            let left = own_call(c, s, own, |conn| {
                c.scripts
                    .reap
                    .key(&nodes)
                    .arg(&c.prefix)
                    .arg(&id)
                    .arg(REAP_PAGE)
                    .arg(cursor)
                    .invoke::<(i64, u64)>(conn)
            });
            if let Ok((_, next)) = left {
                cursor = next;
                if let Some(found) = silent.get_mut(&id) {
                    found.cursor = next;
                }
            }
            match left.map(|(left, _)| left) {
                Ok(0) => {
                    log::info!("redis: reaped the members of dead node {id}");
                    silent.remove(&id);
                    break;
                }
                Ok(n) if n < 0 => {
                    silent.remove(&id); // it beats again
                    break;
                }
                Ok(_) => {}
                Err(_) => return true,
            }
        }
    }
    true
}

/// Runs `f` on the heartbeat's own connection to shard `s`, making it first
/// if needed (through the shard's connector: with Sentinel, to the primary
/// it names now); a connection that failed is dropped (the next beat makes
/// a new one).
fn own_call<T>(
    c: &Cluster,
    s: &Shard,
    own: &mut Option<redis::Connection>,
    f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
) -> redis::RedisResult<T> {
    let conn = match own {
        Some(conn) => conn,
        // At most [`BEAT_TIMEOUT`] whatever the call timeout: a beat stuck
        // longer on a connection cut without a close lets the node's key
        // expire, and the other nodes reap its members, still connected (so
        // the beat's look for silent nodes and its reaping go here too, not
        // through the pool, whose idle connections a NAT may drop).
        None => own.insert(
            s.connector.connect(c.call_timeout().min(BEAT_TIMEOUT)).inspect_err(|_| c.count_failure())?,
        ),
    };
    let result = f(conn);
    if result.is_err() {
        *own = None;
        c.count_failure();
    }
    result
}

/// Writes back the members this node has that Redis lost (its entries were
/// reaped, or Redis came back without them), each with a `presence:join`.
fn put_back(c: &Cluster, s: &Shard, members_key: &str) {
    let Ok(held) = c.call_anyway(s, |conn| redis::cmd("HKEYS").arg(members_key).query::<Vec<String>>(conn))
    else {
        return;
    };
    let held: std::collections::HashSet<String> = held.into_iter().collect();
    let missing: Vec<(String, Member)> = s
        .members
        .lock()
        .iter()
        .filter(|(field, _)| !held.contains(*field))
        .map(|(field, m)| (field.clone(), m.clone()))
        .collect();
    if missing.is_empty() {
        return;
    }
    log::info!("redis: putting back {} members of this node it no longer held", missing.len());
    for page in missing.chunks(REAP_PAGE) {
        let mut pipe = redis::pipe();
        for (field, m) in page {
            let Some((room, client_id)) = field.split_once('\n') else { continue };
            // Left meanwhile: the leave's own call removes what this adds.
            if !s.members.lock().contains_key(&member_field(room, client_id)) {
                continue;
            }
            let event = serde_json::from_str::<serde_json::Value>(&m.payload)
                .map(|payload| frame("presence:join", None, payload))
                .unwrap_or_default();
            pipe.cmd("HSET").arg(c.key("p", room)).arg(client_id).arg(&m.user).ignore();
            pipe.cmd("HSET").arg(members_key).arg(field).arg(&m.payload).ignore();
            pipe.cmd("PUBLISH").arg(c.channel(room)).arg(format!("e - -\n{event}")).ignore();
        }
        if c.call_anyway(s, |conn| pipe.query::<()>(conn)).is_err() {
            return;
        }
    }
}
