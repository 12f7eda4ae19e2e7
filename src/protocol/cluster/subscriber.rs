//! The node's one subscriber connection: it subscribes to the channels of
//! rooms with local members (on request of a join, dropping them when the last
//! local member leaves), and delivers what arrives to the local members with
//! the hub, in seq order, under each room's lock.
//!
//! When the connection breaks it reconnects with backoff, subscribes again
//! and reads what the channels skipped meanwhile from each room's stream; a
//! room whose stream no longer reaches back gets a notice (`error
//! unavailable` with `room` and `seq`: rejoin with `since`).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::json;

use super::{frame_of, parse_entry, Cluster, Control, TIMEOUT};
use crate::protocol::envelope::frame;
use crate::protocol::handler::Shared;
use crate::protocol::room::RoomState;
use crate::server::{ServerHandle, WeakServerHandle};

/// How long the subscriber waits for a message before it looks at its requests.
const POLL: Duration = Duration::from_millis(10);
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Holds the server weakly: a stop must not wait for this thread, which may
/// be sleeping in a backoff or connecting to an unreachable Redis.
pub(super) fn run(weak: Weak<Shared>, server: WeakServerHandle) {
    let mut backoff = MIN_BACKOFF;
    let mut first = true;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let Some(cluster) = shared.cluster.as_ref() else { return };
        match cluster.connect() {
            Ok(mut conn) => {
                backoff = MIN_BACKOFF;
                if !first {
                    cluster.metrics.reconnects.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    log::info!("redis: the subscriber is connected again");
                }
                first = false;
                match session(&shared, cluster, &server, &mut conn) {
                    Ok(()) => return,
                    Err(e) => {
                        // Not a sign that Redis is down (the heartbeat and
                        // the calls tell that): publishes go on, and what the
                        // channel skips now is read back from the streams.
                        log::warn!("redis: the subscriber connection failed: {e}");
                        cluster.mark_failed(false);
                    }
                }
            }
            Err(e) => {
                log::debug!("redis: cannot connect the subscriber: {e}");
                refuse_pending(&shared, cluster);
                drop(shared);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Answers what waits while there is no connection: subscriptions fail,
/// releases happen (only subscribed rooms are subscribed again).
fn refuse_pending(shared: &Shared, c: &Cluster) {
    while let Ok(ctl) = c.control.1.try_recv() {
        match ctl {
            Control::Subscribe(_, done) => {
                let _ = done.send(false);
            }
            Control::Unsubscribe(room) => {
                release_if_idle(shared, c, &room);
            }
        }
    }
}

/// Serves one connection until it fails (or the handler is gone: `Ok`).
fn session(
    shared: &Arc<Shared>,
    c: &Cluster,
    server: &WeakServerHandle,
    conn: &mut redis::Connection,
) -> redis::RedisResult<()> {
    let mut pubsub = conn.as_pubsub();
    pubsub.set_read_timeout(Some(TIMEOUT))?;
    let rooms: Vec<String> = c.subscribed.lock().iter().cloned().collect();
    for room in &rooms {
        pubsub.subscribe(c.channel(room))?;
    }
    if let Some(server) = server.upgrade() {
        for room in &rooms {
            let _ = shared.rooms.with_room(room, false, |r| {
                if r.cluster_synced {
                    refill(c, &server, room, r, None);
                }
            });
        }
    }
    pubsub.set_read_timeout(Some(POLL))?;
    loop {
        if Arc::strong_count(shared) == 1 || server.upgrade().is_none() {
            return Ok(()); // the handler or the server was dropped
        }
        while let Ok(ctl) = c.control.1.try_recv() {
            match ctl {
                Control::Subscribe(room, done) => {
                    if !c.subscribed.lock().contains(&room) {
                        pubsub.set_read_timeout(Some(TIMEOUT))?;
                        if let Err(e) = pubsub.subscribe(c.channel(&room)) {
                            let _ = done.send(false);
                            return Err(e);
                        }
                        pubsub.set_read_timeout(Some(POLL))?;
                        c.subscribed.lock().insert(room.clone());
                    }
                    // A join that gave up waiting leaves no subscription behind.
                    if done.send(true).is_err() && release_if_idle(shared, c, &room) {
                        pubsub.set_read_timeout(Some(TIMEOUT))?;
                        pubsub.unsubscribe(c.channel(&room))?;
                        pubsub.set_read_timeout(Some(POLL))?;
                    }
                }
                Control::Unsubscribe(room) => {
                    if release_if_idle(shared, c, &room) {
                        pubsub.set_read_timeout(Some(TIMEOUT))?;
                        pubsub.unsubscribe(c.channel(&room))?;
                        pubsub.set_read_timeout(Some(POLL))?;
                    }
                }
            }
        }
        match pubsub.get_message() {
            Ok(msg) => {
                if let Some(room) = c.room_of(msg.get_channel_name()) {
                    let Some(server) = server.upgrade() else { return Ok(()) }; // stopped
                    deliver(shared, c, &server, room, msg.get_payload_bytes());
                }
            }
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e),
        }
    }
}

/// Drops the room from the subscribed set if it has no local member, under
/// its lock (so a join holding the lock sees either the room subscribed or not).
fn release_if_idle(shared: &Shared, c: &Cluster, room: &str) -> bool {
    let released = shared
        .rooms
        .with_room(room, true, |r| {
            let idle = r.members.is_empty();
            if idle {
                r.cluster_synced = false;
                c.subscribed.lock().remove(room);
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
    let Some(nl) = payload.iter().position(|&b| b == b'\n') else { return };
    let (Ok(header), body) = (std::str::from_utf8(&payload[..nl]), &payload[nl + 1..]) else { return };
    let mut words = header.split(' ');
    match words.next() {
        Some("m") => {
            let (Some(seq), Some(epoch), Some(node), Some(except)) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return;
            };
            let Ok(seq) = seq.parse::<u64>() else { return };
            let except = if node == c.node { except.parse().ok() } else { None };
            let _ = shared.rooms.with_room(room, false, |r| {
                if !r.cluster_synced {
                    return;
                }
                if epoch != r.epoch {
                    notify(server, room, r.seq, "the room's history was lost in Redis (a new epoch)");
                    (r.epoch, r.seq) = (epoch.to_owned(), 0);
                }
                if seq <= r.seq {
                    return;
                }
                if seq > r.seq + 1 {
                    refill(c, server, room, r, Some(seq));
                }
                let frame = frame_of(room, seq, body);
                r.seq = seq;
                r.published_bytes += frame.len() as u64;
                let _ = server.broadcast_frame(room, frame, except);
            });
        }
        Some("e") => {
            if words.next() == Some(c.node.as_str()) {
                return; // local members had it already
            }
            if let Ok(text) = std::str::from_utf8(body) {
                let _ = server.broadcast(room, text.to_owned(), None);
            }
        }
        _ => {}
    }
}

/// Delivers from the room's stream what follows `r.seq`, up to `until`
/// (exclusive) or the room's seq; what the stream no longer holds is
/// announced to the members.
fn refill(c: &Cluster, server: &ServerHandle, room: &str, r: &mut RoomState, until: Option<u64>) {
    let to = until.map(|u| u - 1);
    let limit = c.history_count.max(1);
    let Ok((epoch, seq, entries, _)) = c.read(room, Some(r.seq + 1), to, limit, None, true) else {
        notify(server, room, r.seq, "redis could not be read");
        return;
    };
    if epoch != r.epoch {
        notify(server, room, r.seq, "the room's history was lost in Redis (a new epoch)");
        (r.epoch, r.seq) = (epoch, if until.is_some() { 0 } else { seq });
        return;
    }
    let target = to.unwrap_or(seq);
    for (id, fields) in entries.iter().rev() {
        let Some((seq, _, body)) = parse_entry(id, fields) else { continue };
        if seq <= r.seq || seq > target {
            continue;
        }
        if seq > r.seq + 1 {
            notify(server, room, r.seq, "messages are no longer in history");
        }
        let frame = frame_of(room, seq, body);
        r.seq = seq;
        r.published_bytes += frame.len() as u64;
        c.metrics.refilled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = server.broadcast_frame(room, frame, None);
    }
    if r.seq < target {
        notify(server, room, r.seq, "messages are no longer in history");
        r.seq = target;
    }
}

/// Tells a room's local members they may have missed messages after `seq`.
fn notify(server: &ServerHandle, room: &str, seq: u64, why: &str) {
    let message = format!("messages after seq {seq} may be missing ({why}): rejoin with since");
    let text =
        frame("error", None, json!({"code": "unavailable", "message": message, "room": room, "seq": seq}));
    let _ = server.broadcast(room, text, None);
}
