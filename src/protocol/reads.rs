//! What the backend API and the event streams read about rooms: presence,
//! history and the room list, each one small function over the broker
//! (`broker.rs`: presence and history) or the room table (the room list is
//! this node's rooms). A stream's replay is sent under the room's lock with its
//! join (`sse.rs`), like a WebSocket join's (with Redis, read from it before
//! the lock is taken, and sent only if the room did not move meanwhile: `cluster/`).

use serde_json::{json, Value};

use super::envelope::ErrorReply;
use super::handler::Shared;
use super::record::Record;

/// The most members one presence read lists (`presence:get`, the join
/// hook's reads, `GET /api/presence`); the read's `count` says how many the
/// room has. A room of any size costs one bounded read, on one node or in Redis.
pub(crate) const PRESENCE_MAX: usize = 1000;

/// A presence read: at most [`PRESENCE_MAX`] members and the room's count.
#[derive(Debug, Default)]
pub(crate) struct Presence {
    /// `{clientId, user?, meta}` each: on one node by connection (clientId); with
    /// `--redis` sorted by clientId.
    pub members: Vec<Value>,
    /// Every member of the room, listed or not.
    pub count: usize,
}

impl Presence {
    /// The payload of a `presence:get` ack and of `GET /api/presence`.
    pub(crate) fn payload(self, room: &str) -> Value {
        json!({"room": room, "members": self.members, "count": self.count})
    }
}

/// The members of `room` (none when it does not exist), bounded by
/// [`PRESENCE_MAX`].
pub(crate) fn presence(shared: &Shared, room: &str) -> Result<Presence, ErrorReply> {
    shared.broker.presence(shared, room)
}

/// Up to `limit` messages of `room`'s history after seq `since`, oldest
/// first, as `{seq, from, data}` (a binary message: `{seq, binary}` in
/// base64), with the room's epoch (`None`: no such room).
pub(crate) fn history(
    shared: &Shared,
    room: &str,
    since: u64,
    limit: usize,
) -> Result<(Option<String>, Vec<Value>), ErrorReply> {
    let (epoch, records) = shared.broker.history(shared, room, since, limit)?;
    if epoch.is_none() {
        return Ok((None, Vec::new()));
    }
    let messages = records.iter().filter_map(Record::api_entry).collect();
    Ok((epoch, messages))
}

/// Up to `max` rooms as `{room, members, seq}`, sorted by name, and whether
/// there were more.
pub(crate) fn rooms(shared: &Shared, max: usize) -> (Vec<Value>, bool) {
    let (mut names, more) = shared.rooms.names(max);
    names.sort_unstable();
    let list = names
        .iter()
        .filter_map(|name| {
            shared
                .rooms
                .with_room(name, false, |r| json!({"room": name, "members": r.members.len(), "seq": r.seq}))
                .ok()
        })
        .collect();
    (list, more)
}
