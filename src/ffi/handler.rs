//! `FfiHandler`: the engine's [`Handler`] for a C application. It calls the
//! application's callbacks (`callbacks.rs`) or queues events for pull mode
//! (`event.rs`), with wire protocol v1 composed in when the config turns it on.

use std::sync::Arc;

use super::callbacks::{wshub_message_kind, Decision, WSHUB_BINARY, WSHUB_JOIN_READ_ONLY, WSHUB_TEXT};
use super::event::wshub_event;
use super::request::{c_string, wshub_request};
use super::server::{wshub_server, ConnState, Mode, CLOSING};
use crate::handler::{Handler, Membership};
use crate::protocol::ProtocolHandler;
use crate::server::ServerHandle;
use crate::types::{ConnId, HttpResponse, Message, RequestInfo, Upgrade};

/// The engine's view of the C application, composed with the built-in
/// protocol when the config turned it on.
pub(super) struct FfiHandler {
    pub(super) server: Arc<wshub_server>,
    /// Wire protocol v1, when on: it owns messages and HTTP routes, and sees
    /// upgrades (after the application), connects and closes (before it).
    pub(super) protocol: Option<ProtocolHandler>,
}

impl FfiHandler {
    /// Callbacks can run before `wshub_start` has stored the handle; the engine
    /// passes it to every callback, so take it from there.
    fn adopt(&self, handle: &ServerHandle) {
        let mut slot = self.server.slot.lock();
        if slot.handle.is_none() && !slot.stopped {
            slot.handle = Some(handle.clone());
        }
    }
}

impl Drop for FfiHandler {
    fn drop(&mut self) {
        *self.server.handler_gone.lock() = true;
        self.server.handler_gone_changed.notify_all();
    }
}

/// Payload bytes with a NUL after them, and their kind.
fn nul_terminated(message: Message) -> (Vec<u8>, wshub_message_kind) {
    let (mut bytes, kind) = match message {
        Message::Text(s) => (s.into_bytes(), WSHUB_TEXT),
        Message::Binary(b) => (b, WSHUB_BINARY),
    };
    bytes.push(0);
    (bytes, kind)
}

impl Handler for FfiHandler {
    /// The protocol's Redis threads start with the server, so cross-node
    /// fan-out works before the first request.
    fn on_start(&self, handle: &ServerHandle) {
        if let Some(protocol) = &self.protocol {
            protocol.on_start(handle);
        }
    }

    /// The protocol's backend calls in flight end with the stop.
    fn on_stop(&self, handle: &ServerHandle) {
        if let Some(protocol) = &self.protocol {
            protocol.on_stop(handle);
        }
    }

    fn on_upgrade(&self, handle: &ServerHandle, conn: ConnId, info: &RequestInfo) -> Upgrade {
        self.adopt(handle);
        // The protocol's checks (drain, Origin, token, per-user cap, bans)
        // come first, so the application decides knowing the user; an event
        // stream's join checks come after it accepted (below).
        let admitted = match &self.protocol {
            Some(protocol) => match protocol.admit_user(conn, info) {
                Ok(admitted) => Some(admitted),
                Err(refusal) => return Upgrade::Reject(refusal),
            },
            None => None,
        };
        let info = admitted.as_ref().unwrap_or(info);
        let server = &self.server;
        server.conns.insert(conn, ConnState::default());
        let request = wshub_request::new(info);
        let decision = match &server.mode {
            Mode::Callbacks(callbacks, user_data) => match callbacks.on_upgrade {
                None => Decision::from_status(0),
                Some(f) => {
                    let status =
                        f(user_data.0, server.as_ptr(), conn, (&request as *const wshub_request).cast_mut());
                    match Decision::from_status(status) {
                        Decision::Accept { .. } => Decision::Accept {
                            identity: request.identity.lock().clone(),
                            subprotocol: request.subprotocol.lock().clone(),
                        },
                        reject => reject,
                    }
                }
            },
            Mode::Polling(queue) => queue.ask_upgrade(conn, request, server.upgrade_timeout),
        };
        let upgrade = match decision {
            Decision::Accept { identity, subprotocol } => {
                server.conns.with_mut(conn, |state| {
                    if let Some(state) = state {
                        // Unless the application attached its own, the token's user.
                        state.identity = identity.or_else(|| info.user.clone());
                    }
                });
                // The protocol admitted it before the application; its
                // subprotocol choice stands unless the application chose one
                // (a `bearer.<token>` entry is never echoed).
                let ours = subprotocol.filter(|p| !p.starts_with("bearer."));
                match &self.protocol {
                    Some(_) => Upgrade::Accept {
                        subprotocol: ours
                            .or_else(|| crate::protocol::choose_subprotocol(&info.subprotocols())),
                    },
                    None => Upgrade::Accept { subprotocol: ours },
                }
            }
            Decision::Reject(status) => Upgrade::reject(status),
        };
        // An event stream asks on_join once on_upgrade accepted it, so the
        // hook reads what on_upgrade attached (wshub_conn_identity,
        // wshub_conn_user_data), as for a `room:join`. Refused: 403, and the
        // attachments are forgotten as for a 101 that could not be sent.
        let upgrade = match (&upgrade, &self.protocol) {
            (Upgrade::Accept { .. }, Some(protocol)) => match protocol.admit_stream(handle, conn, info) {
                Ok(()) => upgrade,
                Err(refusal) => Upgrade::Reject(refusal),
            },
            _ => upgrade,
        };
        if matches!(upgrade, Upgrade::Reject(_)) {
            server.conns.remove(conn);
            if let Some(protocol) = &self.protocol {
                protocol.forget(conn);
            }
        }
        upgrade
    }

    fn on_upgrade_failed(&self, handle: &ServerHandle, conn: ConnId) {
        // No on_connect and no on_close will come: what on_upgrade attached
        // (identity, user_data) goes now, or it would stay for every peer
        // that resets before its 101.
        self.server.conns.remove(conn);
        if let Some(protocol) = &self.protocol {
            protocol.on_upgrade_failed(handle, conn);
        }
    }

    fn on_http(&self, handle: &ServerHandle, request: &RequestInfo) -> HttpResponse {
        match &self.protocol {
            Some(protocol) => protocol.on_http(handle, request),
            None => HttpResponse::not_found(),
        }
    }

    fn on_body(&self, handle: &ServerHandle, request: &RequestInfo) -> Result<usize, HttpResponse> {
        match &self.protocol {
            Some(protocol) => protocol.on_body(handle, request),
            None => Err(HttpResponse::no_body_taken()), // C sees no bodies
        }
    }

    fn metrics_text(&self, handle: &ServerHandle) -> Option<String> {
        self.protocol.as_ref().and_then(|protocol| protocol.metrics_text(handle))
    }

    fn on_connect(&self, handle: &ServerHandle, conn: ConnId, info: &RequestInfo) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            // First, so that `connected` is the client's first frame.
            protocol.on_connect(handle, conn, info);
        }
        let server = &self.server;
        let request = wshub_request::new(info);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                if let Some(f) = callbacks.on_connect {
                    f(user_data.0, server.as_ptr(), conn, &request);
                }
            }
            Mode::Polling(queue) => queue.push(wshub_event::connect(conn, request)),
        }
    }

    fn on_message(&self, handle: &ServerHandle, conn: ConnId, message: Message) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            // Protocol traffic is the protocol's alone (documented in the header).
            protocol.on_message(handle, conn, message);
            return;
        }
        let server = &self.server;
        let (data, kind) = nul_terminated(message);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                if let Some(f) = callbacks.on_message {
                    f(user_data.0, server.as_ptr(), conn, data.as_ptr(), data.len() - 1, kind);
                }
            }
            Mode::Polling(queue) => queue.push(wshub_event::message(conn, data, kind)),
        }
    }

    fn on_close(&self, handle: &ServerHandle, conn: ConnId, code: u16, reason: &str) {
        self.adopt(handle);
        if let Some(protocol) = &self.protocol {
            protocol.on_close(handle, conn, code, reason);
        }
        let server = &self.server;
        let reason = c_string(reason);
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => {
                // Out of the map before the callback, so that anyone who learns
                // of the close from inside it sees the connection gone; only the
                // callback itself still reads the pointer, to free what it holds.
                let state = server.conns.remove(conn);
                let closing = state.map_or(0, |s| s.user_data);
                CLOSING.with(|c| c.set(Some((conn, closing))));
                if let Some(f) = callbacks.on_close {
                    f(user_data.0, server.as_ptr(), conn, code, reason.as_ptr());
                }
                CLOSING.with(|c| c.set(None));
            }
            Mode::Polling(queue) => {
                let user_data = server.conns.remove(conn).map_or(0, |s| s.user_data);
                queue.push(wshub_event::close(conn, code, reason, user_data));
            }
        }
    }
}

/// The C application's join hook, as the protocol layer calls it. Weak: the
/// protocol lives inside the engine's handler, which the server owns.
pub(super) struct JoinHook {
    pub(super) server: std::sync::Weak<wshub_server>,
}

impl Handler for JoinHook {
    fn on_join(&self, handle: &ServerHandle, conn: ConnId, user: Option<&str>, room: &str) -> bool {
        self.on_join_as(handle, conn, user, room) != Membership::Refused
    }

    fn on_join_as(&self, _handle: &ServerHandle, conn: ConnId, user: Option<&str>, room: &str) -> Membership {
        let Some(server) = self.server.upgrade() else { return Membership::Refused };
        match &server.mode {
            Mode::Callbacks(callbacks, user_data) => match callbacks.on_join {
                Some(f) => {
                    let user = user.map(c_string);
                    let room = c_string(room);
                    let user_ptr = user.as_ref().map_or(std::ptr::null(), |u| u.as_ptr());
                    match f(user_data.0, server.as_ptr(), conn, user_ptr, room.as_ptr()) {
                        0 => Membership::Refused,
                        WSHUB_JOIN_READ_ONLY => Membership::ReadOnly,
                        _ => Membership::Member,
                    }
                }
                None => Membership::Member,
            },
            Mode::Polling(_) => Membership::Member,
        }
    }
}
