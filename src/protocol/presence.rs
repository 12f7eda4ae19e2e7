//! Who hears a room's `presence:join` / `presence:leave` events: the members
//! with the `presence` right (docs/protocol.md, "Rights in tokens"), in a
//! room whose namespace announces members.
//!
//! Those members are also in the room's listeners room in the hub (a name no
//! client room can have, like the event streams' shadow rooms), and every
//! presence event, local or from another node, is broadcast there, so the
//! hub's one-shared-frame fan-out skips the members without the right. This
//! module owns that room's name, who is in it, and the events themselves
//! ([`event`]), whichever broker sends them.

use serde_json::{json, Value};

use super::envelope::frame;
use crate::server::ServerHandle;
use crate::types::ConnId;

/// A `presence:join` / `presence:leave` event, with `user` when there is one.
pub(crate) fn event(kind: &str, room: &str, client_id: &str, user: Option<&str>) -> String {
    frame(kind, None, payload(room, client_id, user))
}

/// The payload of a presence event: `{room, clientId, user?}`.
pub(crate) fn payload(room: &str, client_id: &str, user: Option<&str>) -> Value {
    let mut payload = json!({"room": room, "clientId": client_id});
    if let Some(user) = user {
        payload["user"] = Value::String(user.to_owned());
    }
    payload
}

/// The hub room of `room`'s presence listeners: the control character keeps
/// it apart from every room a client can name.
fn listeners(room: &str) -> String {
    format!("\u{1}presence\u{1}{room}")
}

/// Sends a presence event of `room` to its listeners but `except`.
pub(crate) fn announce(server: &ServerHandle, room: &str, event: String, except: Option<ConnId>) {
    let _ = server.broadcast_internal(&listeners(room), event, except);
}

/// Makes `conn`, a member of `room`, hear the room's presence events or
/// stop hearing them.
pub(crate) fn listen(server: &ServerHandle, conn: ConnId, room: &str, hears: bool) {
    let hub_room = listeners(room);
    let _ = if hears { server.join_stream(conn, &hub_room) } else { server.leave_internal(conn, &hub_room) };
}
