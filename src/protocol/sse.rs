//! Server-Sent Events (docs/protocol.md, "Server-Sent Events"): `GET
//! /sse?room=R` streams one room, read-only, for networks where WebSocket
//! cannot pass.
//!
//! The engine runs a stream like a WebSocket connection of another kind
//! (`HttpResponse::event_stream`): the same upgrade checks (`on_upgrade`,
//! so Origin, token, bans and every cap), a writer thread that writes bytes
//! as they are given and `: ping` comments as heartbeats, a reader thread
//! that only waits for the client to go. This module owns the protocol's
//! side: the stream's join, its `connected` event and replay (under the
//! room's lock, like a WebSocket join), and the event-stream form of a
//! message.
//!
//! Fan-out: a stream is a member of the room's shadow room in the hub (a
//! name no client room can have), so the hub's one-shared-frame fan-out
//! serves streams too. `publish.rs` builds a message's event bytes once,
//! and only while the room has streams ([`RoomState::sse_streams`]).
//! A message's event is made from its record (`record.rs`, the one
//! encoder): a replay builds it once per stored message, and history keeps
//! that event for every later stream's replay.
//!
//! A stream opens through the broker (`broker.rs`), as a join does: on one
//! node under the room's lock (`local.rs`), with `--redis` with seq and
//! replay read from Redis before the room's lock is taken and sent under it
//! (`cluster/`), where the node's subscriber feeds the shadow room each
//! message it delivers.

use std::sync::Arc;

use serde_json::{json, Value};

use super::auth::Identity;
use super::broker::StreamOpen;
use super::caps::{Right, Rights};
use super::envelope::check_room;
use super::handler::Shared;
use super::record::Record;
use super::room::RoomState;
use crate::handler::Membership;
use crate::server::ServerHandle;
use crate::types::{ConnId, HttpResponse, RequestInfo};

/// The path of the event stream.
pub(crate) const PATH: &str = "/sse";

/// The hub room a room's streams are members of: the control character
/// keeps it apart from every room a client can name.
pub(crate) fn shadow(room: &str) -> String {
    format!("\u{1}sse\u{1}{room}")
}

/// What a stream request asks for, once its query and headers are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamRequest {
    pub room: String,
    /// The last seq the client saw: `Last-Event-ID`, else `since`.
    pub since: Option<u64>,
    /// The epoch of that seq, when the client said it (`<epoch>:<seq>`):
    /// another epoch than the room's recovers nothing.
    pub epoch: Option<String>,
}

/// The longest epoch a recovery point may carry (the server's are 16 hex digits).
const MAX_EPOCH: usize = 64;

/// A recovery point as a client gives it: a bare `<seq>` (an event's `id`,
/// what a reconnecting `EventSource` sends), or `<epoch>:<seq>` from a client
/// that kept the epoch of the `connected` event. A bare seq says no epoch:
/// one past the room's seq can only be of a lost epoch and recovers nothing,
/// but one within it cannot be told from the room's own.
fn parse_point(text: &str) -> Option<(Option<String>, u64)> {
    let text = text.trim();
    match text.rsplit_once(':') {
        Some((epoch, seq)) => {
            let fine = !epoch.is_empty() && epoch.len() <= MAX_EPOCH && !epoch.contains(char::is_whitespace);
            if !fine {
                return None;
            }
            Some((Some(epoch.to_owned()), seq.parse().ok()?))
        }
        None => Some((None, text.parse().ok()?)),
    }
}

/// Reads the room and the recovery point of a stream request.
pub(crate) fn parse(request: &RequestInfo) -> Result<StreamRequest, String> {
    let room = request.query_param("room").ok_or("missing room (GET /sse?room=R)")?;
    let room = check_room(room).map_err(|e| e.message)?;
    let (epoch, since) =
        match request.header("last-event-id").map(str::to_owned).or_else(|| request.query_param("since")) {
            None => (None, None),
            Some(s) if s.trim().is_empty() => (None, None),
            Some(s) => {
                let (epoch, seq) =
                    parse_point(&s).ok_or("Last-Event-ID / since must be <epoch>:<seq> or a seq (u64)")?;
                (epoch, Some(seq))
            }
        };
    Ok(StreamRequest { room, since, epoch })
}

/// The answer to `GET /sse`: the stream (the engine then runs the upgrade
/// checks), or 400 / 405.
pub(crate) fn route(request: &RequestInfo) -> HttpResponse {
    if request.method != "GET" {
        return HttpResponse::new(405, "text/plain; charset=utf-8", "GET only\n").with_header("Allow", "GET");
    }
    match parse(request) {
        Ok(_) => HttpResponse::event_stream(),
        Err(why) => HttpResponse::new(400, "text/plain; charset=utf-8", format!("{why}\n")),
    }
}

/// Whether a stream may read its room: its rights there when it may (the
/// join proxy's `allow` when it answered one, else the token's), else why
/// not. Checked with the upgrade, before the 200, and the same checks a
/// `room:join` of that room passes (the token's claim, the application's
/// join hook, the join proxy, the room cap, the namespace's `max_members`;
/// bans are the upgrade's own).
pub(crate) fn decide(
    shared: &Shared,
    server: &ServerHandle,
    conn: ConnId,
    identity: Option<&Identity>,
    request: &RequestInfo,
) -> Result<Rights, String> {
    // A request that does not parse was answered 400 by `route`.
    let Ok(req) = parse(request) else { return Ok(Rights::NONE) };
    if identity.is_some_and(|i| !i.allows(&req.room)) {
        return Err("the token does not allow this room\n".to_owned());
    }
    if let Some(app) = &shared.app {
        if app.on_join_as(server, conn, identity.map(|i| i.user.as_str()), &req.room) == Membership::Refused {
            return Err(format!("joining {:?} was refused\n", req.room));
        }
    }
    let user = identity.map(|i| i.user.as_str());
    // The clientId the stream is given in `connected`, as a member's join call has it.
    let client_id = shared.broker.client_id(conn);
    let from_backend = match shared.proxy.as_ref().and_then(|p| p.join(user, &client_id, &req.room)) {
        Some(Err(e)) => return Err(format!("{}\n", e.message)),
        Some(Ok(allow)) => allow,
        None => None,
    };
    shared.check_seat(&req.room).map_err(|e| format!("{}\n", e.message))?;
    // Would opening it create one room past `max_rooms`? (A room made here
    // and left empty goes again at once.)
    let fits = shared.rooms.with_room(&req.room, true, |_| ());
    shared.rooms.remove_if_idle(&req.room);
    if let Err(miss) = fits {
        return Err(format!("{}\n", super::publish::missed(shared, miss).message));
    }
    Ok(from_backend.unwrap_or_else(|| identity.map_or(Rights::ALL, |i| i.rights(&req.room))))
}

/// A stream opened (`on_connect`): joins the room's shadow room, sends
/// `connected` and replays what the client missed, all under the room's
/// lock, so a message published meanwhile comes after them, exactly once.
pub(crate) fn open(
    shared: &Shared,
    server: &ServerHandle,
    conn: ConnId,
    request: &RequestInfo,
    user: Option<&str>,
) {
    let Ok(req) = parse(request) else {
        // on_http checked it; a changed request cannot get here.
        let _ = server.close(conn, 1008, "bad stream request");
        return;
    };
    shared.sse.insert(conn, Arc::from(req.room.as_str()));
    // Without the history right a `Last-Event-ID` / `since` is answered
    // `recovered: false`, never replayed, as a join's `since` is.
    let history = shared.stream_rights.remove(conn).is_some_and(|rights| rights.has(Right::History));
    let (max_replay, replay_bytes) = super::room::replay_bounds(&shared.config, server.config());
    let mut connected = json!({"clientId": shared.broker.client_id(conn), "room": req.room});
    if let Some(user) = user {
        connected["user"] = Value::String(user.to_owned());
    }
    let opened = shared.broker.open_stream(
        shared,
        server,
        StreamOpen {
            conn,
            room: &req.room,
            since: req.since,
            epoch: req.epoch.as_deref(),
            history,
            max_replay,
            max_bytes: replay_bytes,
            connected,
        },
    );
    if let Err(e) = opened {
        refuse(shared, server, conn, &e);
    }
}

/// A stream that could not open its room: says why, and ends the stream.
fn refuse(shared: &Shared, server: &ServerHandle, conn: ConnId, e: &super::envelope::ErrorReply) {
    shared.sse.remove(conn); // not counted in its room: `close` leaves the count alone
    let body = json!({"code": e.code.as_str(), "message": e.message}).to_string();
    let _ = server.send_frame(conn, crate::frame::shared(event(None, "error", &body)));
    let _ = server.close(conn, 1008, "room refused");
}

/// A stream ended (`on_close`): out of its room's count.
pub(crate) fn close(shared: &Shared, conn: ConnId) -> bool {
    let Some(room) = shared.sse.remove(conn) else { return false };
    let idle = shared.rooms.with_room(&room, false, |r| {
        r.sse_streams = r.sse_streams.saturating_sub(1);
        r.members.is_empty() && r.sse_streams == 0
    });
    if let Ok(true) = idle {
        shared.broker.release(&room); // with Redis the subscriber drops the room if still idle then
    }
    shared.rooms.remove_if_idle(&room);
    true
}

/// Open streams (the `wshub_sse_streams` gauge).
pub(crate) fn streams(shared: &Shared) -> usize {
    shared.sse.len()
}

/// Sends a just-delivered message to the room's streams, if it has any:
/// its event (`record.rs`) built once, shared by every stream. Called under
/// the room's lock after the WebSocket fan-out, by `local.rs` as it
/// publishes (with `from`, which a binary message's event names then) and
/// by the cluster's subscriber as it delivers.
pub(crate) fn fan_out(server: &ServerHandle, r: &RoomState, room: &str, record: &Record, from: Option<&str>) {
    if r.sse_streams == 0 {
        return;
    }
    if let Some(event) = record.sse_event(room, from) {
        let _ = server.broadcast_stream(&shadow(room), event);
    }
}

/// One event: `id` (when given), `event`, and `data` split at line breaks
/// (a JSON text's line breaks are whitespace, so the client's rejoined data
/// parses the same).
pub(crate) fn event(id: Option<u64>, kind: &str, data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + kind.len() + 40);
    if let Some(id) = id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    out.extend_from_slice(format!("event: {kind}\n").as_bytes());
    for line in data.split(['\n', '\r']) {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

/// Standard base64 with padding (RFC 4648 section 4): the few lines it
/// takes are shorter than a dependency.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn recovery_points_are_a_bare_seq_or_an_epoch_and_seq() {
        assert_eq!(parse_point("ab12:7"), Some((Some("ab12".to_owned()), 7)));
        assert_eq!(parse_point(" 7 "), Some((None, 7)));
        let long = format!("{}:1", "e".repeat(MAX_EPOCH + 1));
        for bad in [":3", "e:", "e:x", "x", "-1", "a b:1", long.as_str()] {
            assert_eq!(parse_point(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn events_split_data_at_line_breaks() {
        assert_eq!(
            event(Some(3), "room:message", "{\"a\":\n1}"),
            b"id: 3\nevent: room:message\ndata: {\"a\":\ndata: 1}\n\n"
        );
        assert_eq!(event(None, "connected", "{}"), b"event: connected\ndata: {}\n\n");
    }
}
