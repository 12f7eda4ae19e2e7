//! A node's subscriber connection, one per shard (`shards.rs`): it subscribes to the channels of
//! rooms with local members (on request of a join, dropping them when the last
//! local member leaves; the requests waiting are served together, one
//! SUBSCRIBE and one UNSUBSCRIBE for many channels), and delivers what arrives to the local members with
//! the hub, in seq order, under each room's lock.
//!
//! A connection silent for [`PING_AFTER`] is pinged; one that does not
//! answer within the call timeout (`--redis-timeout-ms`) counts as broken (a NAT or load balancer may
//! drop an idle connection without closing it).
//!
//! When the connection breaks it reconnects with backoff, subscribes again
//! and reads what the channels skipped meanwhile from each room's stream (as
//! it does when a message shows a gap); a room whose stream no longer
//! reaches back gets a notice (`error unavailable` with `room` and `seq`:
//! rejoin with `since`). Such a read (a refill) is made without the room's
//! lock and applied under it ([`refill`]), so a slow Redis holds up this
//! thread but not the room's joins, publishes and reads on this node.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::json;

use super::shards::Shard;
use super::{fingerprint, parse_entry, Cluster, Control};
use crate::protocol::envelope::frame;
use crate::protocol::handler::Shared;
use crate::protocol::record::Record;
use crate::protocol::room::RoomState;
use crate::protocol::{bans, sse};
use crate::server::{ServerHandle, WeakServerHandle};

/// How long the subscriber waits for a message before it looks at its requests.
const POLL: Duration = Duration::from_millis(10);
/// Silence after which the subscriber pings Redis to learn whether the
/// connection still carries anything.
const PING_AFTER: Duration = Duration::from_secs(1);
/// Channels per SUBSCRIBE or UNSUBSCRIBE.
const BATCH: usize = 1000;
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The subscriber of shard `index`. Holds the server weakly: a stop must
/// not wait for this thread, which may be sleeping in a backoff or
/// connecting to an unreachable Redis.
pub(super) fn run(weak: Weak<Shared>, cluster: Arc<Cluster>, server: WeakServerHandle, index: usize) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let cluster = &*cluster;
        let Some(shard) = cluster.shards.get(index) else { return };
        // Before connecting: a primary replaced while this connects,
        // subscribes and refills (it may have reached the old one) ends the
        // session at its first turn.
        let primary = shard.primary_changes.load(Relaxed);
        match cluster.connect(shard) {
            Ok(mut conn) => {
                backoff = MIN_BACKOFF;
                if !first {
                    cluster.metrics.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::info!("redis: the subscriber is connected again");
                }
                first = false;
                match session(&shared, cluster, shard, &server, &mut conn, primary) {
                    Ok(()) => return,
                    Err(e) => {
                        // Not a sign that Redis is down (the heartbeat and
                        // the calls tell that): publishes go on, and what the
                        // channel skips now is read back from the streams.
                        log::warn!("redis: the subscriber connection failed: {e}");
                        cluster.count_failure();
                    }
                }
                drop(shared);
                std::thread::sleep(MIN_BACKOFF);
            }
            Err(e) => {
                log::debug!("redis: cannot connect the subscriber: {e}");
                refuse_pending(&shared, shard);
                drop(shared);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Answers what waits while there is no connection: subscriptions fail,
/// releases happen (only subscribed rooms are subscribed again).
fn refuse_pending(shared: &Shared, s: &Shard) {
    while let Ok(ctl) = s.control.1.try_recv() {
        match ctl {
            Control::Subscribe(_, done) => {
                let _ = done.send(false);
            }
            Control::Unsubscribe(room) => {
                release_if_idle(shared, s, &room);
            }
        }
    }
}

/// Serves one connection until it fails (or the handler is gone: `Ok`);
/// `primary`: the shard's `primary_changes` before it was connected.
fn session(
    shared: &Arc<Shared>,
    c: &Cluster,
    s: &Shard,
    server: &WeakServerHandle,
    conn: &mut redis::Connection,
    primary: u64,
) -> redis::RedisResult<()> {
    c.sessions.fetch_add(1, Relaxed);
    let _session = Session(c);
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(c.timeout))?;
    // The first shard carries the requests to all nodes and the bans.
    let home = s.index == 0;
    if home {
        pubsub.subscribe(c.control_channel())?;
    }
    // Bans and unbans published while this node had no subscription (it was
    // starting, reconnecting, or its connection was silently cut) reached no
    // one here: what Redis records holds from now on, on the users'
    // connections too.
    if let Some(server) = server.upgrade().filter(|_| home) {
        c.sync_bans(shared, Some(&server))?;
    }
    let rooms: Vec<String> = s.subscribed.lock().iter().cloned().collect();
    for batch in rooms.chunks(BATCH) {
        pubsub.subscribe(batch.iter().map(|room| c.channel(room)).collect::<Vec<_>>())?;
    }
    if let Some(server) = server.upgrade() {
        for room in &rooms {
            if !refill(shared, c, &server, room, None) {
                // Connect again (after a backoff) and read it then.
                return Err(redis::RedisError::from(std::io::Error::other(
                    "a room's stream could not be read",
                )));
            }
        }
    }
    pubsub.set_read_timeout(Some(POLL))?;
    let mut heard = Instant::now();
    loop {
        if s.primary_changes.load(Relaxed) != primary {
            // It may be on the old primary, which no longer gets the rooms'
            // publishes: connect to the new one and read back what it skipped.
            return Err(redis::RedisError::from(std::io::Error::other(
                "the shard's primary was replaced: connecting to the new one",
            )));
        }
        // Only subscriber sessions (one per shard) hold the handler: it was dropped.
        let handler_gone = Arc::strong_count(shared) <= c.sessions.load(Relaxed);
        if handler_gone || server.upgrade().is_none() {
            return Ok(()); // the handler or the server was dropped
        }
        let (mut joins, mut releases) = (Vec::new(), Vec::new());
        while let Ok(ctl) = s.control.1.try_recv() {
            match ctl {
                Control::Subscribe(room, done) => joins.push((room, done)),
                Control::Unsubscribe(room) => releases.push(room),
            }
            if joins.len() + releases.len() >= BATCH {
                break;
            }
        }
        if !joins.is_empty() || !releases.is_empty() {
            pubsub.set_read_timeout(Some(c.timeout))?;
            serve_requests(shared, c, s, &mut pubsub, joins, releases)?;
            pubsub.set_read_timeout(Some(POLL))?;
            heard = Instant::now();
        }
        match pubsub.get_message() {
            Ok(msg) => {
                heard = Instant::now();
                let Some(server) = server.upgrade() else { return Ok(()) }; // stopped
                if let Some(room) = c.room_of(msg.get_channel_name()) {
                    deliver(shared, c, &server, room, msg.get_payload_bytes());
                } else if msg.get_channel_name() == c.control_channel() {
                    kick(shared, c, &server, msg.get_payload_bytes());
                }
            }
            // A read cut short by a signal (the process was stopped and
            // continued) left the connection as a timeout does.
            Err(e) if e.is_timeout() || interrupted(&e) => {
                if heard.elapsed() >= PING_AFTER {
                    pubsub.set_read_timeout(Some(c.timeout))?;
                    pubsub.ping::<redis::Value>()?;
                    pubsub.set_read_timeout(Some(POLL))?;
                    heard = Instant::now();
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Counts a session in [`Cluster::sessions`] while it lives.
struct Session<'c>(&'c Cluster);

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Relaxed);
    }
}

/// Whether a Redis call failed only because a signal interrupted its read
/// (`EINTR` after SIGSTOP and SIGCONT), not because the connection broke.
/// redis-rs keeps the `io::Error` to itself (behind an `Arc` no downcast
/// reaches), so this reads std's rendering of it, which ends with the OS
/// error code whatever the locale.
fn interrupted(e: &redis::RedisError) -> bool {
    e.is_io_error() && e.to_string().ends_with(&format!("(os error {})", libc::EINTR))
}

/// Subscribes the joined rooms' channels with one SUBSCRIBE, answers each
/// join, then unsubscribes with one UNSUBSCRIBE the rooms left without local
/// members (and those of joins that gave up waiting).
fn serve_requests(
    shared: &Shared,
    c: &Cluster,
    s: &Shard,
    pubsub: &mut redis::PubSub<'_>,
    joins: Vec<(String, crossbeam_channel::Sender<bool>)>,
    mut releases: Vec<String>,
) -> redis::RedisResult<()> {
    let new: Vec<String> = {
        let subscribed = s.subscribed.lock();
        let mut new: Vec<String> =
            joins.iter().map(|(room, _)| room.clone()).filter(|r| !subscribed.contains(r)).collect();
        new.sort_unstable();
        new.dedup();
        new
    };
    if !new.is_empty() {
        if let Err(e) = pubsub.subscribe(new.iter().map(|room| c.channel(room)).collect::<Vec<_>>()) {
            for (_, done) in joins {
                let _ = done.send(false);
            }
            return Err(e);
        }
        s.subscribed.lock().extend(new);
    }
    for (room, done) in joins {
        // A join that gave up waiting leaves no subscription behind.
        if done.send(true).is_err() {
            releases.push(room);
        }
    }
    let gone: Vec<String> = releases.into_iter().filter(|room| release_if_idle(shared, s, room)).collect();
    if !gone.is_empty() {
        pubsub.unsubscribe(gone.iter().map(|room| c.channel(room)).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Drops the room from the subscribed set if it has no local member, under
/// its lock (so a join holding the lock sees either the room subscribed or not).
fn release_if_idle(shared: &Shared, s: &Shard, room: &str) -> bool {
    let released = shared
        .rooms
        .with_room(room, true, |r| {
            let idle = r.members.is_empty() && r.sse_streams == 0;
            if idle {
                r.cluster_synced = false;
                s.subscribed.lock().remove(room);
            }
            idle
        })
        .unwrap_or(false);
    shared.rooms.remove_if_idle(room);
    released
}

/// One message from a room's channel: `m <seq> <epoch> <node> <except>\n<body>`
/// (a publish) or `e <node> <conn>\n<frame>` (presence, typing).
fn deliver(shared: &Shared, c: &Cluster, server: &ServerHandle, room: &str, payload: &[u8]) {
    let foreign = || log::warn!("redis: skipped a message in {room:?}'s channel that no node wrote");
    let Some(nl) = payload.iter().position(|&b| b == b'\n') else { return foreign() };
    let (Ok(header), body) = (std::str::from_utf8(&payload[..nl]), &payload[nl + 1..]) else {
        return foreign();
    };
    let mut words = header.split(' ');
    match words.next() {
        Some("m") => {
            let (Some(seq), Some(epoch), Some(node), Some(except)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return foreign();
            };
            let Ok(seq) = seq.parse::<u64>() else { return foreign() };
            let record = Record::from_redis(room, seq, body);
            if !record.is_message() {
                // Another tool's PUBLISH: it takes no seq and reaches no member.
                return foreign();
            }
            let except = if node == c.node { except.parse().ok() } else { None };
            let m = Message { room, seq, epoch, body, except, record };
            let first = shared.rooms.with_room(room, false, |r| m.first(server, r));
            // The refill's read is made without the room's lock; the rest of
            // the message waits for it (this thread delivers nothing else
            // meanwhile, so the room's order holds).
            if let Ok(Some(need)) = first {
                let until = match need {
                    (Refill::Gap, seq) => Some(seq),
                    (Refill::Rewritten, _) => None,
                };
                let read = refill(shared, c, server, room, until);
                let _ = shared.rooms.with_room(room, false, |r| m.after_refill(server, r, need, read));
            }
        }
        Some("e") => {
            if words.next() == Some(c.node.as_str()) {
                return; // local members had it already
            }
            if let Ok(text) = std::str::from_utf8(body) {
                if !super::is_presence_event(text) {
                    let _ = server.broadcast(room, text.to_owned(), None);
                } else if shared.rules(room).announces_members() {
                    super::super::presence::announce(server, room, text.to_owned(), None);
                } // else the room's namespace sends no join/leave events
            }
        }
        _ => foreign(),
    }
}

/// A publish from a room's channel.
struct Message<'m> {
    room: &'m str,
    seq: u64,
    epoch: &'m str,
    body: &'m [u8],
    except: Option<crate::types::ConnId>,
    /// The message as members get it (built once, from `body`).
    record: Record,
}

/// Why a message waits for a refill of its room.
#[derive(Clone, Copy)]
enum Refill {
    /// Messages before it were skipped: read them, up to its seq.
    Gap,
    /// Another message at the seq delivered last: Redis lost writes.
    Rewritten,
}

impl Message<'_> {
    /// Delivers the message under the room's lock, unless a refill must come
    /// first (then nothing is delivered yet).
    fn first(&self, server: &ServerHandle, r: &mut RoomState) -> Option<(Refill, u64)> {
        let (room, seq, epoch) = (self.room, self.seq, self.epoch);
        if !r.cluster_synced {
            // A join reading the room now must know (`Before::holds`).
            r.cluster_skipped = Some((epoch.to_owned(), seq));
            r.watched(epoch, seq, || self.record.clone());
            return None;
        }
        if epoch != r.epoch {
            notify(server, room, r.seq, NEW_EPOCH);
            (r.epoch, r.seq, r.cluster_last) = (epoch.to_owned(), 0, None);
        }
        if seq < r.seq {
            return None;
        }
        if seq == r.seq {
            // Another message at the seq delivered last: Redis lost
            // writes while this connection stayed up (a primary
            // demoted without dying keeps its subscribers through
            // its resync), so no reconnect's refill will compare
            // them. This one does: it moves the room to a new epoch
            // and tells the members. A repeat of the same message
            // (a refill and the live channel both had it) is dropped.
            let rewritten =
                r.cluster_last.is_some_and(|(at, print)| at == seq && print != fingerprint(self.body));
            return rewritten.then_some((Refill::Rewritten, seq));
        }
        if seq > r.seq + 1 {
            return Some((Refill::Gap, seq));
        }
        self.send(server, r);
        None
    }

    /// The rest of [`Message::first`] once the refill it asked for ran
    /// (`read`: whether it could read Redis).
    fn after_refill(&self, server: &ServerHandle, r: &mut RoomState, (why, _): (Refill, u64), read: bool) {
        if !read {
            notify(server, self.room, r.seq, "redis could not be read");
        }
        match why {
            Refill::Rewritten => {}
            Refill::Gap => {
                // The refill found the room in a new epoch (this message is
                // of the old one), or the room was let go meanwhile.
                if r.cluster_synced && self.epoch == r.epoch && self.seq > r.seq {
                    self.send(server, r);
                }
            }
        }
    }

    fn send(&self, server: &ServerHandle, r: &mut RoomState) {
        let record = self.record.clone();
        r.watched(self.epoch, self.seq, || record.clone());
        r.seq = self.seq;
        r.cluster_last = Some((self.seq, fingerprint(self.body)));
        r.published_bytes += record.frame().len() as u64;
        sse::fan_out(server, r, self.room, &record, None);
        let _ = server.broadcast_frame(self.room, record.frame().clone(), self.except);
    }
}

/// A request from any node ([`Cluster::kick_client`], [`Cluster::kick_user`],
/// [`Cluster::share_ban`], [`Cluster::share_unban`]): closes the connections
/// it names on this node, or bans or unbans a user here.
fn kick(shared: &Shared, c: &Cluster, server: &ServerHandle, payload: &[u8]) {
    let Some(nl) = payload.iter().position(|&b| b == b'\n') else { return };
    let Ok(header) = std::str::from_utf8(&payload[..nl]) else { return };
    let mut words = header.split(' ');
    let (Some(kind), Some(Ok(number)), Some(Ok(len))) =
        (words.next(), words.next().map(str::parse::<u64>), words.next().map(str::parse::<usize>))
    else {
        return;
    };
    let rest = &payload[nl + 1..];
    let (Some(reason), Some(target)) = (rest.get(..len), rest.get(len..)) else { return };
    let (Ok(reason), Ok(target)) = (std::str::from_utf8(reason), std::str::from_utf8(target)) else { return };
    let code = u16::try_from(number).unwrap_or(0);
    match kind {
        "k" => {
            if let Some(Ok(conn)) = c.owner_of(target) {
                let _ = server.close(conn, code, reason);
            }
        }
        "u" => {
            bans::disconnect_user(shared, server, target, code, reason);
        }
        "b" => {
            bans::ban_until(shared, target, number);
            bans::disconnect_user(shared, server, target, bans::BANNED_CLOSE_CODE, bans::BANNED_REASON);
        }
        "n" => {
            shared.bans.unban(target, std::time::SystemTime::now());
        }
        _ => {}
    }
}

/// How this node follows a room: what a refill reads from and moves on.
#[derive(Clone, PartialEq)]
struct Follow {
    epoch: String,
    seq: u64,
    last: Option<(u64, u64)>,
}

/// What a refill does to a room once its reads are made, in order.
enum Step {
    Notify(u64, &'static str),
    /// A message read back, its seq and body's fingerprint.
    Deliver(Record, u64, u64),
}

/// Delivers from the room's stream what follows the room's seq, up to
/// `until` (exclusive) or the room's seq in Redis; what the stream no longer
/// holds is announced to the members. The reads are made without the
/// room's lock (a join's or a publish's turn on this node must not wait for
/// Redis behind it), then applied under it if the room still follows what
/// they were read from (a join may have moved it to a new epoch, or it was
/// let go meanwhile: then read again, a bounded number of times). This
/// thread delivers nothing else meanwhile, so no delivery of the room comes
/// between the read and its application. True when nothing is left to
/// refill (the room is not followed, or the refill was applied); false when
/// Redis could not be read (nothing changed).
fn refill(shared: &Shared, c: &Cluster, server: &ServerHandle, room: &str, until: Option<u64>) -> bool {
    for _ in 0..super::READ_ATTEMPTS {
        let before = shared.rooms.with_room(room, false, |r| {
            r.cluster_synced.then(|| {
                let follow = Follow { epoch: r.epoch.clone(), seq: r.seq, last: r.cluster_last };
                (follow, r.rules.history.count.max(1))
            })
        });
        let Ok(Some((before, limit))) = before else { return true };
        let mut follow = before.clone();
        let mut steps = Vec::new();
        if !plan(c, room, &mut follow, limit, until, true, &mut steps) {
            return false;
        }
        let applied = shared.rooms.with_room(room, false, |r| {
            let now = Follow { epoch: r.epoch.clone(), seq: r.seq, last: r.cluster_last };
            if !r.cluster_synced || now != before {
                return false;
            }
            // A join reading the room meanwhile reads again: the steps may
            // change its epoch and notify, which its watch does not note.
            r.cluster_watch = None;
            for step in steps {
                match step {
                    Step::Notify(seq, why) => notify(server, room, seq, why),
                    Step::Deliver(record, seq, print) => {
                        r.published_bytes += record.frame().len() as u64;
                        c.metrics.refilled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (r.seq, r.cluster_last) = (seq, Some((seq, print)));
                        sse::fan_out(server, r, room, &record, None);
                        let _ = server.broadcast_frame(room, record.frame().clone(), None);
                    }
                }
            }
            (r.epoch, r.seq, r.cluster_last) = (follow.epoch, follow.seq, follow.last);
            true
        });
        match applied {
            Ok(true) | Err(_) => return true,
            Ok(false) => continue,
        }
    }
    false
}

/// The reads of a refill of `room` as `f` follows it, and what they call
/// for (`steps`); `f` is moved on as the room will be. `again`: when the
/// room turns out to be in a new epoch, deliver that epoch's messages from
/// its first one (once). False when Redis could not be read.
fn plan(
    c: &Cluster,
    room: &str,
    f: &mut Follow,
    limit: usize,
    until: Option<u64>,
    again: bool,
    steps: &mut Vec<Step>,
) -> bool {
    let to = until.map(|u| u - 1);
    // The last message delivered is read back too: Redis may hold another
    // one at its seq (it lost writes, then a node that does not follow the
    // room published past the seq this node saw, so Redis is not behind it).
    let last = f.last.filter(|&(seq, _)| seq == f.seq && seq > 0);
    let from = if last.is_some() { f.seq } else { f.seq + 1 };
    let Ok((mut epoch, mut seq, mut entries, _)) =
        c.read(room, Some(from), to, limit, None, Some((&f.epoch, f.seq)), true)
    else {
        return false;
    };
    if let (true, Some((at, print))) = (epoch == f.epoch, last) {
        let rewritten = entries
            .iter()
            .filter_map(|(id, fields)| parse_entry(id, fields))
            .any(|(s, _, body)| s == at && fingerprint(body) != print);
        if rewritten {
            // Moves the room to a new epoch (unless another node did already).
            let Ok(read) = c.read(room, None, None, 1, None, Some((&f.epoch, u64::MAX)), true) else {
                return false;
            };
            (epoch, seq, entries) = (read.0, read.1, Vec::new());
        }
    }
    if epoch != f.epoch {
        steps.push(Step::Notify(f.seq, NEW_EPOCH));
        (f.epoch, f.seq, f.last) = (epoch, 0, None);
        // Messages another node published in the new epoch before this one
        // read it were acked: deliver them (a delivery's refill stops short
        // of its own message, which `deliver` then drops as of another epoch).
        if until.is_none() && again && seq > 0 {
            return plan(c, room, f, limit, None, false, steps);
        }
        if until.is_none() {
            f.seq = seq;
        }
        return true;
    }
    let target = to.unwrap_or(seq);
    for (id, fields) in entries.iter().rev() {
        let Some((seq, _, body)) = parse_entry(id, fields) else { continue };
        if seq <= f.seq || seq > target {
            continue;
        }
        if seq > f.seq + 1 {
            steps.push(Step::Notify(f.seq, "messages are no longer in history"));
        }
        let record = Record::from_redis(room, seq, body);
        let print = fingerprint(body);
        (f.seq, f.last) = (seq, Some((seq, print)));
        if !record.is_message() {
            log::warn!("redis: skipped an entry of {room:?}'s stream that no node wrote");
            continue;
        }
        steps.push(Step::Deliver(record, seq, print));
    }
    if f.seq < target {
        steps.push(Step::Notify(f.seq, "messages are no longer in history"));
        f.seq = target;
    }
    true
}

/// Why members are told after a room moved to a new epoch.
pub(super) const NEW_EPOCH: &str = "the room's history was lost in Redis (a new epoch)";

/// Tells a room's local members, and its event streams (an `error` event
/// with the same payload), they may have missed messages after `seq`: a
/// stream's ids start again from 1 in a new epoch.
pub(super) fn notify(server: &ServerHandle, room: &str, seq: u64, why: &str) {
    let message = format!("messages after seq {seq} may be missing ({why}): rejoin with since");
    let payload = json!({"code": "unavailable", "message": message, "room": room, "seq": seq});
    let event = sse::event(None, "error", &payload.to_string());
    let _ = server.broadcast_stream(&sse::shadow(room), crate::frame::shared(event));
    let _ = server.broadcast(room, frame("error", None, payload), None);
}
