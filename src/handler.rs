//! What an application plugs into the engine: the [`Handler`] callbacks.
//!
//! Nothing here touches a socket or a thread; the connection module calls these.

use crate::server::ServerHandle;
use crate::types::{ConnId, HttpResponse, Message, RequestInfo, Upgrade};

/// The application's side of the server. Every method has a default, so a
/// handler implements only what it needs.
///
/// Threads: [`on_upgrade`](Handler::on_upgrade), [`on_http`](Handler::on_http),
/// [`on_connect`](Handler::on_connect), [`on_message`](Handler::on_message) and
/// [`on_close`](Handler::on_close) run on the connection's reader thread, so the
/// callbacks of one connection never run concurrently with each other, and a slow
/// callback slows only its own connection's reads. One exception:
/// [`on_http`](Handler::on_http) also runs on the overflow thread, for plain
/// requests on sockets the acceptor could not give a reader thread (over a
/// handshake bound or a per-address cap); there a slow answer delays the other
/// sockets that thread holds. Every [`ServerHandle`] method
/// may be called from inside any callback. A panic inside a callback closes that
/// connection with 1011; the server lives on.
pub trait Handler: Send + Sync + 'static {
    /// Runs once when the server has started, on the thread that called
    /// start, before start returns (connections may already be arriving):
    /// for work that must not wait for the first request, such as the
    /// protocol's Redis threads. Default: nothing.
    fn on_start(&self, server: &ServerHandle) {
        let _ = server;
    }

    /// Runs once when the server's stop begins, on the thread performing
    /// the stop, after new connections stop being accepted and before open
    /// ones are closed: for ending what would hold the stop up, such as
    /// calls to other services that connection threads wait for. It must not
    /// block; a [`ServerHandle::stop`] called from it returns at once (the
    /// stop is under way), and a panic in it is logged and the stop goes on.
    /// Default: nothing.
    fn on_stop(&self, server: &ServerHandle) {
        let _ = server;
    }

    /// Decides whether an upgrade request on the WebSocket path becomes a
    /// connection, or a request [`on_http`](Handler::on_http) answered with
    /// [`HttpResponse::event_stream`] a stream. Runs before the 101 (or the
    /// stream's 200) is sent. `conn` is the id the connection
    /// will have if accepted (so state attached here can be found in
    /// `on_connect`); a refused id is never used again. Default: accept.
    fn on_upgrade(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) -> Upgrade {
        let _ = (server, conn, request);
        Upgrade::accept()
    }

    /// Answers a plain HTTP request (anything that is not a WebSocket upgrade on
    /// the configured path). Default: 404.
    fn on_http(&self, server: &ServerHandle, request: &RequestInfo) -> HttpResponse {
        let _ = (server, request);
        HttpResponse::not_found()
    }

    /// A plain request declares a body (a `Content-Length` above 0): decides,
    /// on its head and before a byte of the body is read, whether to read
    /// it. `Ok(n)`: read it if it is at most `n` bytes (and at most the max
    /// message size; else 413), then [`on_http`](Handler::on_http) gets it
    /// in [`RequestInfo::body`]; `Err(response)`: answer with that, the body
    /// unread. Bodies being read count against
    /// [`Config::request_body_budget`](crate::Config::request_body_budget).
    /// Default: at most the max message size.
    fn on_body(&self, server: &ServerHandle, request: &RequestInfo) -> Result<usize, HttpResponse> {
        let _ = request;
        Ok(server.config().max_message_size)
    }

    /// An upgrade [`on_upgrade`](Handler::on_upgrade) accepted never became a
    /// connection: the 101 could not be sent (the peer was gone), its writer
    /// thread could not be created, (an event stream) the protocol's join
    /// checks refused it after `on_upgrade`, or `on_upgrade` panicked (then
    /// `500`). No `on_connect` or `on_close` follows; release here whatever
    /// `on_upgrade` attached to `conn`.
    fn on_upgrade_failed(&self, server: &ServerHandle, conn: ConnId) {
        let _ = (server, conn);
    }

    /// A connection is open: the 101 is sent and the connection is registered.
    /// Frames sent from here reach the client before any reply to its messages.
    fn on_connect(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) {
        let _ = (server, conn, request);
    }

    /// A complete message arrived. The next message of this connection is not
    /// read until this returns.
    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        let _ = (server, conn, message);
    }

    /// Wire protocol only: a client asks to join `room` (`room:join`, after
    /// the token's `rooms` claim allowed it). Return false to refuse it with
    /// `error forbidden`. `user` is the token's `sub` when auth is on. Called by
    /// [`ProtocolHandler`](crate::protocol::ProtocolHandler) on the handler it
    /// was given with [`with_app`](crate::protocol::ProtocolHandler::with_app),
    /// on the connection's reader thread, before the join takes effect. An
    /// event stream (`GET /sse?room=R`) asks it too, with the upgrade, once
    /// [`on_upgrade`](Handler::on_upgrade) accepted it (so it sees what
    /// `on_upgrade` attached, as a `room:join` does) and before its `200`:
    /// false answers `403`, with [`on_upgrade_failed`](Handler::on_upgrade_failed).
    /// A `presence:get` of a room the client is not in (allowed by its
    /// token's `rooms` claim) asks it too: false answers `error forbidden`.
    /// Default: allow.
    fn on_join(&self, server: &ServerHandle, conn: ConnId, user: Option<&str>, room: &str) -> bool {
        let _ = (server, conn, user, room);
        true
    }

    /// [`on_join`](Handler::on_join) with a third answer: a read-only
    /// membership ([`Membership::ReadOnly`]: the member receives but its
    /// publishes and typing get `error forbidden`). Called instead of
    /// `on_join` wherever the protocol asks; the default asks `on_join`
    /// (true: a full member), so a handler implements one or the other.
    fn on_join_as(&self, server: &ServerHandle, conn: ConnId, user: Option<&str>, room: &str) -> Membership {
        if self.on_join(server, conn, user, room) {
            Membership::Member
        } else {
            Membership::Refused
        }
    }

    /// The connection is gone and out of every room. `code` is the peer's close
    /// code when it sent one, the server's when it closed first, 1006 when the
    /// TCP connection ended without a close frame.
    fn on_close(&self, server: &ServerHandle, conn: ConnId, code: u16, reason: &str) {
        let _ = (server, conn, code, reason);
    }

    /// The Prometheus text [`ServerHandle::metrics_text`] returns, when this
    /// handler keeps counters of its own (the protocol's, which it also
    /// serves at `/metrics`). Default `None`: the engine's counters.
    fn metrics_text(&self, server: &ServerHandle) -> Option<String> {
        let _ = server;
        None
    }
}

/// What [`Handler::on_join_as`] lets a client be in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Not a member: `error forbidden` (`403` for an event stream).
    Refused,
    /// A member with every right its token gives.
    Member,
    /// A member that may not publish or send typing events.
    ReadOnly,
}
