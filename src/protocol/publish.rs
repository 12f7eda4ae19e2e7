//! The one way a message enters a room, whoever publishes it: the
//! idempotency key scoped to its publisher, then the broker (`broker.rs`),
//! which assigns the next seq, keeps the history entry (with its key) and
//! fans out one shared frame to the room's members so that seq order is
//! delivery order (`local.rs` under the room's lock; `cluster/` in Redis).
//!
//! Callers check who may publish (membership, the token's rooms claim, the
//! reply backlog); this module does not. A client's `room:publish` and binary
//! publish (`handler.rs`) come here; so must every other publisher.

use std::sync::atomic::Ordering::Relaxed;

use serde_json::{json, Value};

use super::envelope::{now_ms, ErrorCode, ErrorReply, RawJson};
use super::handler::Shared;
use super::room::Miss;
use crate::server::ServerHandle;
use crate::types::ConnId;

/// What is published.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    /// Any JSON value: members get a `room:message` text frame.
    Json(&'a RawJson),
    /// Opaque bytes: members get a binary frame (docs/protocol.md, binary frames).
    Binary(&'a [u8]),
}

/// One publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Publish<'a> {
    pub room: &'a str,
    pub body: Body<'a>,
    /// The `from` members see: the publisher's clientId, or `api`.
    pub from: &'a str,
    /// Who publishes: the scope of `key`.
    pub publisher: Publisher<'a>,
    /// The idempotency key: a key the room's history still holds from the
    /// same publisher publishes nothing and answers with the first message's seq.
    pub key: Option<&'a str>,
    /// The connection that does not get the message (a sender without `echo`).
    pub except: Option<ConnId>,
}

/// Who publishes, as far as idempotency keys go (docs/protocol.md,
/// "Idempotent publish"): each publisher's keys live apart from the others'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Publisher<'a> {
    /// The backend API, or the embedding application (Rust or C `publish`).
    Server,
    /// A client with a user (the token's `sub`): every connection of that user.
    User(&'a str),
    /// A client without a user: that connection alone (its clientId).
    Client(&'a str),
}

impl Publisher<'_> {
    /// `key` as the room stores it (and the cluster's publish script):
    /// the publisher's scope first. The scope's length is written, so no two
    /// (scope, key) pairs store the same string.
    fn scoped(self, key: &str) -> String {
        match self {
            Publisher::Server => format!("s:{key}"),
            Publisher::User(user) => format!("u{}:{user}:{key}", user.len()),
            Publisher::Client(client) => format!("c{}:{client}:{key}", client.len()),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Published {
    /// The message's seq (the first one's, for a duplicate).
    pub seq: u64,
    /// True when the key was already in the room's history: nothing was sent.
    pub duplicate: bool,
}

impl Published {
    /// The ack's payload: `{room, seq}`, with `duplicate: true` for a duplicate.
    pub fn ack_payload(&self, room: &str) -> Value {
        let mut payload = json!({"room": room, "seq": self.seq});
        if self.duplicate {
            payload["duplicate"] = Value::Bool(true);
        }
        payload
    }
}

/// Publishes `p` into its room, creating the room if needed, through the
/// broker (`broker.rs`): the next seq, the history entry and the fan-out.
pub(crate) fn publish(
    shared: &Shared,
    server: &ServerHandle,
    p: Publish<'_>,
) -> Result<Published, ErrorReply> {
    let ts = now_ms();
    let scoped = p.key.map(|key| p.publisher.scoped(key));
    let p = Publish { key: scoped.as_deref(), ..p };
    let published = shared.broker.publish(shared, server, &p, ts)?;
    if published.duplicate {
        shared.metrics.duplicates.fetch_add(1, Relaxed);
    }
    Ok(published)
}

/// The error for a room the table could not give.
pub(crate) fn missed(shared: &Shared, miss: Miss) -> ErrorReply {
    match miss {
        Miss::Full => {
            shared.metrics.max_rooms.fetch_add(1, Relaxed);
            ErrorReply::new(
                ErrorCode::Forbidden,
                format!("the server has {} rooms, the most it keeps", shared.config.max_rooms),
            )
        }
        Miss::Absent | Miss::Busy => ErrorReply::new(ErrorCode::Internal, "room is busy, try again"),
    }
}

#[cfg(test)]
mod tests {
    use super::Publisher;

    #[test]
    fn scoped_keys_never_collide_across_publishers() {
        let stored = [
            Publisher::Server.scoped("k"),
            Publisher::User("a").scoped("k"),
            Publisher::Client("a").scoped("k"),
            // A user whose name looks like another scope's key.
            Publisher::User("a:k").scoped(""),
            Publisher::User("a").scoped("k:"),
        ];
        for (i, a) in stored.iter().enumerate() {
            for b in &stored[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(Publisher::User("a").scoped("k"), Publisher::User("a").scoped("k"));
    }
}
