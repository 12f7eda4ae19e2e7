//! What a backend calls on [`ProtocolHandler`] in Rust (the C API and the
//! HTTP API go through the same paths): publish into a room with seq and
//! history, disconnect, ban; and the protocol's side of an event stream
//! opening.
//!
//! Every call may come from any thread, including from inside a callback.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::value::RawValue;
use serde_json::Value;

use super::api::FROM_API;
use super::auth::Identity;
use super::bans;
use super::envelope::{ErrorCode, ErrorReply, RawJson};
use super::handler::ProtocolHandler;
use super::publish::{self, Body, Publish, Publisher};
use super::sse;
use crate::error::{Error, Result};
use crate::frame::is_sendable_close_code;
use crate::hub::rooms::is_valid_room;
use crate::server::ServerHandle;
use crate::types::{ConnId, RequestInfo};

impl ProtocolHandler {
    /// Publishes `data` into `room` as the backend: members (and event
    /// streams) get a `room:message` with `from: "api"` and the room's next
    /// seq, stored in history like a client's publish, so clients that
    /// rejoin with `since` recover it. Returns the seq.
    ///
    /// ```no_run
    /// use wshub::protocol::ProtocolHandler;
    /// let handler = ProtocolHandler::default();
    /// let server = wshub::Server::start(wshub::Config::default(), handler.clone()).unwrap();
    /// let seq = handler.publish(&server, "orders", &serde_json::json!({"status": "shipped"})).unwrap();
    /// # let _ = seq; server.stop();
    /// ```
    pub fn publish(&self, server: &ServerHandle, room: &str, data: &Value) -> Result<u64> {
        let text = serde_json::to_string(data).map_err(|e| Error::Refused(e.to_string()))?;
        self.publish_json(server, room, &text)
    }

    /// [`publish`](Self::publish) of JSON text (checked, sent as written).
    pub fn publish_json(&self, server: &ServerHandle, room: &str, json: &str) -> Result<u64> {
        let raw = RawValue::from_string(json.to_owned())
            .map_err(|e| Error::Refused(format!("data is not JSON: {e}")))?;
        self.publish_body(server, room, Body::Json(&RawJson::from_raw(raw)))
    }

    /// Publishes opaque bytes into `room`: members get the binary room
    /// message (docs/protocol.md, binary frames), event streams its base64.
    pub fn publish_binary(&self, server: &ServerHandle, room: &str, data: &[u8]) -> Result<u64> {
        self.publish_body(server, room, Body::Binary(data))
    }

    fn publish_body(&self, server: &ServerHandle, room: &str, body: Body<'_>) -> Result<u64> {
        if !is_valid_room(room) {
            return Err(Error::InvalidRoom);
        }
        if server.is_draining() {
            return Err(Error::Stopped);
        }
        let p = Publish { room, body, from: FROM_API, publisher: Publisher::Server, key: None, except: None };
        publish::publish(&self.shared, server, p).map(|p| p.seq).map_err(refused)
    }

    /// Closes this node's connection `conn` with `code` and `reason`; how
    /// many were closed (0 or 1). See
    /// [`disconnect_client_id`](Self::disconnect_client_id) for a clientId.
    pub fn disconnect_client(
        &self,
        server: &ServerHandle,
        conn: ConnId,
        code: u16,
        reason: &str,
    ) -> Result<usize> {
        check_close(code, reason)?;
        Ok(bans::disconnect_client(server, &conn.to_string(), code, reason))
    }

    /// Closes the connection with this clientId as `connected` gave it: with
    /// Redis a node-prefixed id (`<node>-<conn>`) closes that connection on
    /// whichever node holds it (as `/api/disconnect` does); how many were
    /// closed on this node (0 or 1: another node's is counted there).
    pub fn disconnect_client_id(
        &self,
        server: &ServerHandle,
        client_id: &str,
        code: u16,
        reason: &str,
    ) -> Result<usize> {
        check_close(code, reason)?;
        Ok(bans::disconnect_client_id(&self.shared, server, client_id, code, reason))
    }

    /// Closes every open connection (WebSocket and event stream) of `user`
    /// (a token's `sub`); how many on this node. With Redis every other node
    /// closes the user's connections too (counted there).
    pub fn disconnect_user(
        &self,
        server: &ServerHandle,
        user: &str,
        code: u16,
        reason: &str,
    ) -> Result<usize> {
        check_close(code, reason)?;
        Ok(bans::disconnect_user_everywhere(&self.shared, server, user, code, reason))
    }

    /// Bans `user` for `duration` (at most ten years): their open
    /// connections close with 4003 and new ones get 403 until it ends.
    /// With Redis the ban holds on every node (and on nodes started later).
    /// Returns when it ends. Refused when the ban list is full
    /// ([`ProtocolConfig::max_bans`](super::ProtocolConfig::max_bans)).
    pub fn ban(&self, server: &ServerHandle, user: &str, duration: Duration) -> Result<SystemTime> {
        let secs = duration.as_secs().max(1);
        bans::ban_everywhere(&self.shared, server, user, secs).map_err(|e| Error::Refused(e.to_string()))
    }

    /// Lifts a ban (with Redis, on every node); false when `user` was not
    /// banned on this node.
    pub fn unban(&self, user: &str) -> bool {
        bans::unban_everywhere(&self.shared, user)
    }

    /// Whether `user` is banned now.
    pub fn is_banned(&self, user: &str) -> bool {
        self.shared.bans.is_banned(user, SystemTime::now())
    }

    /// The protocol's side of an event stream that opened (from `on_connect`).
    pub(super) fn stream_opened(
        &self,
        server: &ServerHandle,
        conn: ConnId,
        request: &RequestInfo,
        identity: Option<Identity>,
    ) {
        let shared = &self.shared;
        if let Some(identity) = &identity {
            shared.users.insert(conn, Arc::from(identity.user.as_str()));
            let _ = server.close_at(conn, identity.expires_at(), 1008, "token expired");
            bans::close_if_banned(shared, server, conn, &identity.user);
        }
        let user = identity.as_ref().map(|i| i.user.as_str());
        sse::open(shared, server, conn, request, user);
        if let Some(app) = &shared.app {
            let mut request = request.clone();
            request.user = user.map(str::to_owned);
            app.on_connect(server, conn, &request);
        }
    }
}

fn check_close(code: u16, reason: &str) -> Result<()> {
    if is_sendable_close_code(code) && reason.len() <= 123 {
        Ok(())
    } else {
        Err(Error::InvalidCloseCode)
    }
}

fn refused(e: ErrorReply) -> Error {
    match e.code {
        ErrorCode::Internal if e.message.contains("stopping") => Error::Stopped,
        _ => Error::Refused(e.message),
    }
}
