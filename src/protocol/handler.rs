//! [`ProtocolHandler`]: the wire protocol v1 as an engine [`Handler`].
//!
//! It owns each connection's protocol state (clientId, joined rooms, rate
//! limiter) and drives the rooms through the broker (`broker.rs`: the
//! room table of `room.rs` alone in `local.rs`, with Redis in `cluster/`;
//! publishes through `publish.rs`, the one way into a room). The engine's
//! hub still does all delivery; the rule that keeps `seq` order equal to
//! delivery order: every `broadcast` of a seq'd message, and every join with
//! its replay and ack, is issued while holding that room's lock, and the hub
//! applies one thread's commands in order.
//!
//! What one client may make the server hold is bounded here: rooms per client
//! and in all, history (in `room.rs`), replays in bytes, and big replies to a
//! client that does not read them (`max_reply_backlog`).

use std::collections::BTreeMap;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::Mutex;

use crate::conn_map::ConnMap;
use serde_json::{json, Value};

use super::admission::Admission;
use super::auth::{Identity, Rights};
use super::bans::{self, Bans};
use super::binary::parse_binary;
use super::broker::{self, Broker, Join};
use super::caps::Right;
use super::config::{ProtocolConfig, BIG_REPLY};
use super::envelope::{self, ack, frame, parse_text, ErrorCode, ErrorReply, RawJson, Request, RequestKind};
use super::http;
use super::metrics::Metrics;
use super::namespace::{Namespaces, Rules};
use super::presence;
use super::proxy::Proxy;
use super::publish::{self, Body, Publish, Published, Publisher};
use super::rate_limit::{RateLimiter, Verdict};
use super::room::{Limits, RoomTable};
use super::sse;
use crate::handler::{Handler, Membership};
use crate::server::ServerHandle;
use crate::sys::trim;
use crate::types::{ConnId, HttpResponse, Message, RequestInfo, Upgrade};

/// The subprotocols of docs/protocol.md; both accept text and binary frames.
pub const SUBPROTOCOLS: [&str; 2] = ["wshub.v1.json", "wshub.v1.bin"];

/// Serves wire protocol v1 (rooms with seq, history and recovery, presence,
/// typing, ping, binary publishes) and the HTTP routes (`/healthz`,
/// `/metrics`, `/`, `/client.js`) on top of the engine.
///
/// Cloning is cheap and every clone is the same handler, so an embedder can
/// keep one (e.g. to call [`begin_drain`](Self::begin_drain)) after giving
/// another to [`Server::start`](crate::Server::start).
///
/// ```no_run
/// use wshub::protocol::{ProtocolConfig, ProtocolHandler};
/// let handler = ProtocolHandler::new(ProtocolConfig::default());
/// let server = wshub::Server::start(wshub::Config::default(), handler.clone()).unwrap();
/// # server.stop();
/// ```
#[derive(Clone)]
pub struct ProtocolHandler {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for ProtocolHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProtocolHandler").field("config", &self.shared.config).finish()
    }
}

/// The state every clone of one handler shares.
pub(crate) struct Shared {
    pub config: ProtocolConfig,
    pub rooms: RoomTable,
    /// Read on every message, written on connect and close.
    conns: ConnMap<Arc<Mutex<ConnState>>>,
    pub metrics: Metrics,
    pub draining: AtomicBool,
    /// Origin, token and per-user checks at the upgrade.
    pub(super) admission: Admission,
    /// Each authenticated connection's user, for presence (read without
    /// taking that connection's state lock, which its own thread may hold).
    pub(super) users: ConnMap<Arc<str>>,
    /// The application's hooks (`with_app`): upgrade, connect, join, close.
    pub(super) app: Option<Arc<dyn Handler>>,
    /// Banned users (`bans.rs`).
    pub bans: Bans,
    /// Each open event stream's room (`sse.rs`).
    pub sse: ConnMap<Arc<str>>,
    /// An admitted event stream's rights in its room, from its upgrade's
    /// checks (`sse::decide`) until it opens.
    pub stream_rights: ConnMap<Rights>,
    /// Where rooms live (`broker.rs`): this node alone (`local.rs`), or
    /// every node through Redis (`--redis`, `cluster/`).
    pub broker: Box<dyn Broker>,
    /// Each room's rules, by its namespace (`namespace.rs`).
    pub namespaces: Arc<Namespaces>,
    /// The backend proxy (`proxy.rs`), when a proxy URL is set.
    pub proxy: Option<Arc<Proxy>>,
}

impl Shared {
    /// The rules `room` follows (its namespace's, else the top-level ones).
    pub(crate) fn rules(&self, room: &str) -> &Arc<Rules> {
        self.namespaces.rules(room)
    }

    /// The user of an authenticated connection (WebSocket or event stream).
    pub(crate) fn user_of(&self, conn: ConnId) -> Option<Arc<str>> {
        self.users.get(conn)
    }

    /// Refuses one more reader of `room` (a `room:join` or an event stream)
    /// past its namespace's `max_members`, the one check both make before
    /// they take the seat (each checks again, counting the same way, under
    /// the room's lock where it takes the seat: readers that came meanwhile
    /// on this node count there).
    /// Members and event streams count; with Redis, the members on every node
    /// (the room's Redis presence) and this node's streams.
    pub(crate) fn check_seat(&self, room: &str) -> Result<(), ErrorReply> {
        let rules = self.rules(room);
        if rules.max_members == 0 {
            return Ok(());
        }
        let streams = self.rooms.with_room(room, false, |r| r.sse_streams).unwrap_or(0);
        let members = self.broker.member_count(self, room)?;
        rules.check_members(room, members + streams)
    }

    /// The open connections of `user` (WebSocket and event streams).
    pub(crate) fn connections_of_user(&self, user: &str) -> Vec<ConnId> {
        let mut conns = Vec::new();
        self.users.for_each_entry(|conn, u| {
            if &**u == user {
                conns.push(conn);
            }
        });
        conns
    }
}

/// One connection's protocol state. Only its own reader thread touches it.
struct ConnState {
    client_id: String,
    /// The rooms it is in, each with the room's `published_bytes` when it
    /// joined (what it was sent since is the difference).
    rooms: BTreeMap<String, u64>,
    limiter: RateLimiter,
    /// Closed for abuse: later messages are ignored.
    closed: bool,
    /// Bytes of the messages it sent (what its reads and parses allocated).
    bytes_in: usize,
    /// Bytes replayed to it, and of big replies sent to it.
    bytes_replied: usize,
    /// What its token grants, when auth is on.
    identity: Option<Identity>,
    /// What the join hook or the join proxy decided at its join of a room,
    /// where either did.
    granted: BTreeMap<String, Grant>,
}

/// What a room's join decided about a member's rights.
#[derive(Debug, Clone, Copy)]
struct Grant {
    /// The join proxy's `allow`, in place of the token's rights; `None`:
    /// the token's, as they are now (an `auth:refresh` changes them).
    rights: Option<Rights>,
    /// The join hook made it read-only: `publish` is taken away.
    read_only: bool,
}

impl ProtocolHandler {
    /// A handler with these settings. An unusable JWT key is logged and
    /// refuses every upgrade (401); check the settings first with
    /// [`ProtocolConfig::validate`] to fail early instead.
    pub fn new(config: ProtocolConfig) -> Self {
        Self::build(config, None)
    }

    /// A handler that also consults `app`: its `on_upgrade` runs after the
    /// protocol's checks (the request's `user` set from the token) and may
    /// still refuse; its `on_join` may refuse a join (`error forbidden`); its
    /// `on_connect` and `on_close` follow the protocol's. Messages and plain
    /// HTTP requests stay the protocol's alone.
    pub fn with_app(config: ProtocolConfig, app: impl Handler) -> Self {
        Self::build(config, Some(Arc::new(app)))
    }

    fn build(config: ProtocolConfig, app: Option<Arc<dyn Handler>>) -> Self {
        let limits = Limits { total_bytes: config.history_total_max_bytes, max_rooms: config.max_rooms };
        let broker = broker::for_config(&config);
        let bans = Bans::new(config.max_bans);
        let namespaces = Arc::new(config.namespace_rules());
        let proxy = Proxy::new(&config, broker.node()).map(Arc::new);
        ProtocolHandler {
            shared: Arc::new(Shared {
                broker,
                bans,
                admission: Admission::new(&config, proxy.clone()),
                proxy,
                rooms: RoomTable::new(limits, namespaces.clone()),
                namespaces,
                config,
                conns: ConnMap::default(),
                metrics: Metrics::default(),
                draining: AtomicBool::new(false),
                users: ConnMap::default(),
                app,
                sse: ConnMap::default(),
                stream_rights: ConnMap::default(),
            }),
        }
    }

    /// The protocol's upgrade checks alone (drain, Origin, token, per-user
    /// cap, bans; for an event stream every check a `room:join` of its room
    /// passes, the application's join hook included), for an embedder that
    /// composes its own decision with them: on success the request with
    /// `user` set from the token. An upgrade admitted here and then refused
    /// must be given back with [`forget`](Self::forget).
    pub fn admit(
        &self,
        server: &ServerHandle,
        conn: ConnId,
        request: &RequestInfo,
    ) -> Result<RequestInfo, HttpResponse> {
        let admitted = self.admit_user(conn, request)?;
        self.admit_stream(server, conn, request)?;
        Ok(admitted)
    }

    /// The checks before the application's `on_upgrade`: drain, Origin,
    /// token, per-user cap, bans. Refused: nothing stays reserved.
    pub(crate) fn admit_user(
        &self,
        conn: ConnId,
        request: &RequestInfo,
    ) -> Result<RequestInfo, HttpResponse> {
        let admitted = self.shared.admission.admit(&self.shared.draining, conn, request)?;
        // Bans: after the token is known, before anything is opened.
        if admitted.user.as_deref().is_some_and(|u| self.shared.bans.is_banned(u, SystemTime::now())) {
            self.forget(conn);
            return Err(HttpResponse::new(403, "text/plain; charset=utf-8", "this user is banned\n"));
        }
        Ok(admitted)
    }

    /// For an event stream, the checks a `room:join` of its room passes (the
    /// token's claim, the application's join hook, the room cap); nothing for
    /// a WebSocket. Run once the application's `on_upgrade` accepted, so the
    /// join hook sees the connection as `on_upgrade` left it, as a
    /// `room:join` does. Refused: `403`, and what [`admit_user`](Self::admit_user)
    /// reserved is given back.
    pub(crate) fn admit_stream(
        &self,
        server: &ServerHandle,
        conn: ConnId,
        request: &RequestInfo,
    ) -> Result<(), HttpResponse> {
        // The WebSocket path wins over `/sse` (the engine upgrades it): an
        // upgrade there is a WebSocket, whose rights come with its joins.
        if request.path != sse::PATH || request.path == server.config().path {
            return Ok(());
        }
        let identity = self.shared.admission.pending(conn);
        match sse::decide(&self.shared, server, conn, identity.as_ref(), request) {
            Ok(rights) => {
                self.shared.stream_rights.insert(conn, rights);
                Ok(())
            }
            Err(why) => {
                self.forget(conn);
                Err(HttpResponse::new(403, "text/plain; charset=utf-8", why))
            }
        }
    }

    /// Gives back what [`admit`](Self::admit) reserved for an upgrade that was
    /// refused afterwards.
    pub fn forget(&self, conn: ConnId) {
        self.shared.admission.forget(conn);
        self.shared.stream_rights.remove(conn);
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ProtocolConfig {
        &self.shared.config
    }

    /// Starts announcing the shutdown before it happens: `/healthz` answers 503
    /// and new WebSocket upgrades get 503 with `Retry-After`, while open
    /// connections go on. Call [`ServerHandle::stop`] after it.
    pub fn begin_drain(&self) {
        self.shared.draining.store(true, SeqCst);
    }

    /// The clientId of a connection on a single node: its id in decimal.
    /// With Redis (`redis_urls`) clients get `<node>-<id>` instead, unique
    /// across nodes (docs/protocol.md, "Scaling out").
    pub fn client_id(conn: ConnId) -> String {
        conn.to_string()
    }
}

impl Default for ProtocolHandler {
    fn default() -> Self {
        ProtocolHandler::new(ProtocolConfig::default())
    }
}

/// Picks the first subprotocol the client offered that wshub speaks.
pub fn choose_subprotocol(offered: &[String]) -> Option<String> {
    offered.iter().find(|p| SUBPROTOCOLS.contains(&p.as_str())).cloned()
}

impl Handler for ProtocolHandler {
    /// Starts the Redis threads (with Redis; a no-op otherwise), so a
    /// node heartbeats, reaps and fans out before its first request.
    /// `on_upgrade` and `on_http` start them too (a no-op once they run), for
    /// a host that wraps this handler without forwarding `on_start`.
    fn on_start(&self, server: &ServerHandle) {
        self.shared.broker.start(&self.shared, server);
    }

    /// Interrupts the backend proxy's calls in flight (and fails later ones),
    /// so no connection thread holds the stop up for `proxy_timeout`; then
    /// the application's `on_stop`.
    fn on_stop(&self, server: &ServerHandle) {
        if let Some(proxy) = &self.shared.proxy {
            proxy.shutdown();
        }
        if let Some(app) = &self.shared.app {
            app.on_stop(server);
        }
    }

    fn on_upgrade(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) -> Upgrade {
        self.shared.broker.start(&self.shared, server);
        let admitted = match self.admit_user(conn, request) {
            Ok(admitted) => admitted,
            Err(refusal) => return Upgrade::Reject(refusal),
        };
        let ours = choose_subprotocol(&request.subprotocols());
        let Some(app) = &self.shared.app else {
            return match self.admit_stream(server, conn, request) {
                Ok(()) => Upgrade::Accept { subprotocol: ours },
                Err(refusal) => Upgrade::Reject(refusal),
            };
        };
        match app.on_upgrade(server, conn, &admitted) {
            // A `bearer.<token>` entry is never echoed back.
            Upgrade::Accept { subprotocol } => match self.admit_stream(server, conn, request) {
                Ok(()) => Upgrade::Accept {
                    subprotocol: subprotocol
                        .filter(|p| !p.starts_with(super::auth::BEARER_SUBPROTOCOL))
                        .or(ours),
                },
                // Accepted by the application, then refused: it releases what
                // its on_upgrade attached, as for a 101 that could not be sent.
                Err(refusal) => {
                    app.on_upgrade_failed(server, conn);
                    Upgrade::Reject(refusal)
                }
            },
            refusal => {
                self.forget(conn);
                refusal
            }
        }
    }

    /// An upgrade accepted here whose 101 (or stream head) could not be sent:
    /// no `on_connect` or `on_close` will come, so its per-user slot goes now.
    fn on_upgrade_failed(&self, server: &ServerHandle, conn: ConnId) {
        self.forget(conn);
        if let Some(app) = &self.shared.app {
            app.on_upgrade_failed(server, conn);
        }
    }

    fn on_http(&self, server: &ServerHandle, request: &RequestInfo) -> HttpResponse {
        self.shared.broker.start(&self.shared, server);
        http::route(&self.shared, server, request)
    }

    /// Only the backend API's POSTs take a body, with the right key.
    fn on_body(&self, server: &ServerHandle, request: &RequestInfo) -> Result<usize, HttpResponse> {
        http::body_limit(&self.shared, server, request)
    }

    /// The text `/metrics` serves.
    fn metrics_text(&self, server: &ServerHandle) -> Option<String> {
        Some(http::metrics_text(&self.shared, server))
    }

    fn on_connect(&self, server: &ServerHandle, conn: ConnId, request: &RequestInfo) {
        let c = &self.shared.config;
        let identity = self.shared.admission.take(conn);
        if server.is_event_stream(conn) {
            return self.stream_opened(server, conn, request, identity);
        }
        let state = ConnState {
            client_id: self.shared.broker.client_id(conn),
            rooms: BTreeMap::new(),
            limiter: RateLimiter::new(c.rate_limit, c.rate_burst, Instant::now()),
            closed: false,
            bytes_in: 0,
            bytes_replied: 0,
            identity,
            granted: BTreeMap::new(),
        };
        let mut payload = json!({
            "clientId": state.client_id,
            "protocol": 1,
            "heartbeatMs": server.config().heartbeat_interval.as_millis() as u64,
            "maxMessageBytes": server.config().max_message_size,
        });
        if let Some(identity) = &state.identity {
            payload["user"] = Value::String(identity.user.clone());
            self.shared.users.insert(conn, Arc::from(identity.user.as_str()));
            // The session ends at the token's exp, to the moment.
            let _ = server.close_at(conn, identity.expires_at(), 1008, "token expired");
            bans::close_if_banned(&self.shared, server, conn, &identity.user);
        }
        self.shared.conns.insert(conn, Arc::new(Mutex::new(state)));
        let _ = server.send(conn, frame("connected", None, payload));
        if let Some(app) = &self.shared.app {
            let mut request = request.clone();
            request.user = self.shared.users.get(conn).map(|u| u.to_string());
            app.on_connect(server, conn, &request);
        }
    }

    fn on_message(&self, server: &ServerHandle, conn: ConnId, message: Message) {
        let Some(state) = self.shared.conns.get(conn) else { return };
        let mut state = state.lock();
        if state.closed {
            return;
        }
        state.bytes_in = state.bytes_in.saturating_add(message.as_bytes().len());
        match state.limiter.check(Instant::now()) {
            Verdict::Allow => {}
            Verdict::Limited => {
                self.shared.metrics.rate_limited.fetch_add(1, Relaxed);
                let id = match &message {
                    Message::Text(t) => envelope::peek_id(t),
                    Message::Binary(_) => None,
                };
                let e =
                    ErrorReply { id, code: ErrorCode::RateLimited, message: "rate limit exceeded".into() };
                let _ = server.send(conn, e.to_text());
                return;
            }
            Verdict::Abuse => {
                self.shared.metrics.rate_limited.fetch_add(1, Relaxed);
                state.closed = true;
                let _ = server.close(conn, 1008, "rate limit abuse");
                return;
            }
        }
        let mut session = Session { shared: &self.shared, server, conn, state: &mut state };
        let reply = match &message {
            Message::Text(text) => parse_text(text).and_then(|r| session.handle(r)),
            Message::Binary(bytes) => {
                parse_binary(bytes).and_then(|p| session.publish_binary(&p.room, p.body, p.key.as_deref()))
            }
        };
        match reply {
            Ok(Some(text)) => {
                let _ = server.send(conn, text);
            }
            Ok(None) => {}
            Err(e) => {
                let _ = server.send(conn, e.to_text());
            }
        }
    }

    fn on_close(&self, server: &ServerHandle, conn: ConnId, code: u16, reason: &str) {
        self.shared.metrics.count_disconnect(code);
        if server.is_draining() {
            // The stop waits for this connection's leaves.
            self.shared.broker.begin_stop();
        }
        let user = self.shared.users.remove(conn);
        if let Some(user) = &user {
            self.shared.admission.release(user);
        }
        sse::close(&self.shared, conn);
        if let Some(state) = self.shared.conns.remove(conn) {
            let state = state.lock();
            // What it was sent, and sent us: all of it is free once its queue is
            // (a client that stopped reading may have had all of it queued).
            let mut traffic = state.bytes_in.saturating_add(state.bytes_replied);
            for (room, joined_at) in &state.rooms {
                // The engine drops a closed connection from the hub's rooms itself.
                let published =
                    leave_room(&self.shared, server, room, conn, &state.client_id, user.as_deref(), false);
                let sent = published.map_or(0, |p| p.saturating_sub(*joined_at));
                traffic = traffic.saturating_add(usize::try_from(sent).unwrap_or(usize::MAX));
            }
            self.shared.rooms.sweep();
            // Its outbound queue is freed by its writer just after this returns:
            // a trim comes shortly after (see sys/trim.rs).
            if code == 1013 || server.queued_frames(conn) >= LARGE_BACKLOG {
                trim::soon();
            }
            if traffic >= LARGE_TRAFFIC {
                trim::note_freed(traffic);
            }
            trim::note_freed(self.shared.rooms.budget().take_freed());
        }
        if let Some(app) = &self.shared.app {
            app.on_close(server, conn, code, reason);
        }
    }
}

/// What a member leaving `room` does, whether it asked (`room:leave`) or
/// closed: out of the room's members, `presence:leave` to the others, the
/// cluster told, the room dropped when idle. With `hub` it also leaves the
/// hub's room. The room's `published_bytes` then, when the room was there.
fn leave_room(
    shared: &Shared,
    server: &ServerHandle,
    room: &str,
    conn: ConnId,
    client_id: &str,
    user: Option<&str>,
    hub: bool,
) -> Option<u64> {
    let found = shared.rooms.with_room(room, false, |r| {
        r.members.remove(&conn);
        if hub {
            let _ = server.leave(conn, room);
        }
        if r.rules.announces_members() {
            let event = presence::event("presence:leave", room, client_id, user);
            presence::announce(server, room, event, Some(conn));
            if hub {
                presence::listen(server, conn, room, false);
            }
        }
        (r.members.is_empty(), r.published_bytes)
    });
    shared.broker.left(room, client_id, conn, user, found.as_ref().map_or(true, |(last, _)| *last));
    shared.rooms.remove_if_idle(room);
    found.ok().map(|(_, published)| published)
}

/// One message being handled for one connection.
struct Session<'a> {
    shared: &'a Shared,
    server: &'a ServerHandle,
    conn: ConnId,
    state: &'a mut ConnState,
}

/// The reply to send (an ack, when the request had an id), or an error.
type Reply = Result<Option<String>, ErrorReply>;

/// `room:left`'s reason when the token no longer allows the room.
const LEFT_FORBIDDEN: &str = "forbidden";

/// `room:left` (docs/protocol.md): the server removed the client from `room`.
fn room_left(room: &str, reason: &str) -> String {
    frame("room:left", None, json!({"room": room, "reason": reason}))
}

fn forbidden(room: &str) -> ErrorReply {
    ErrorReply::new(ErrorCode::Forbidden, format!("the token does not allow room {room:?}"))
}

fn internal(_: crate::Error) -> ErrorReply {
    ErrorReply::new(ErrorCode::Internal, "the server is stopping")
}

impl Session<'_> {
    fn handle(&mut self, request: Request) -> Reply {
        let id = request.id.as_deref();
        let ack_with = |payload: Value| Ok(id.map(|id| ack(id, payload)));
        let result = match request.kind {
            RequestKind::Join { room, since, epoch } => self.join(id, &room, since, epoch.as_deref()),
            RequestKind::Leave { room } => self.leave(&room).and_then(|()| ack_with(json!({"room": room}))),
            RequestKind::Publish { room, data, echo, key } => {
                self.publish(&room, &data, echo, key.as_deref()).and_then(|p| ack_with(p.ack_payload(&room)))
            }
            RequestKind::Typing { room, active } => {
                self.typing(&room, active).and_then(|()| ack_with(json!({"room": room})))
            }
            RequestKind::PresenceGet { room } => self.presence_ack(id, &room),
            RequestKind::Ping { payload } => self.ping_ack(id, &payload),
            RequestKind::AuthRefresh { token } => {
                self.refresh(&token).and_then(|exp| ack_with(json!({"exp": exp})))
            }
        };
        result.map_err(|mut e| {
            e.id = request.id.clone();
            e
        })
    }

    /// `presence:get`'s ack, refused while big replies wait unread.
    fn presence_ack(&mut self, id: Option<&str>, room: &str) -> Reply {
        let presence = self.presence(room)?;
        let big = presence.members.len() * PRESENCE_ENTRY_BYTES > BIG_REPLY;
        if big && id.is_some() {
            self.refuse_if_backlogged()?;
        }
        Ok(id.map(|id| ack(id, presence.payload(room))))
    }

    /// `ping`'s ack (its payload echoed), refused while big replies wait unread.
    fn ping_ack(&mut self, id: Option<&str>, payload: &RawJson) -> Reply {
        if payload.get().len() > BIG_REPLY && id.is_some() {
            self.refuse_if_backlogged()?;
            self.state.bytes_replied = self.state.bytes_replied.saturating_add(payload.get().len());
        }
        Ok(id.map(|id| ack(id, payload)))
    }

    /// Refuses a reply over [`BIG_REPLY`] bytes while the client has not read
    /// what was already sent to it (`max_reply_backlog` frames wait in its
    /// outbound queue): a client that asks for big replies and never reads
    /// them would otherwise make the server hold each one.
    fn refuse_if_backlogged(&self) -> Result<(), ErrorReply> {
        let waiting = self.server.queued_frames(self.conn);
        if waiting < self.shared.config.max_reply_backlog {
            return Ok(());
        }
        self.shared.metrics.reply_backlog.fetch_add(1, Relaxed);
        Err(ErrorReply::new(
            ErrorCode::RateLimited,
            format!("{waiting} frames still wait for this client: read them before asking for more than {BIG_REPLY} bytes"),
        ))
    }

    /// Its rights in `room`: the join proxy's when it decided them, else its
    /// token's (every right without a token); without `publish` where the
    /// join hook made it read-only.
    fn rights(&self, room: &str) -> Rights {
        let token = || self.state.identity.as_ref().map_or(Rights::ALL, |i| i.rights(room));
        match self.state.granted.get(room) {
            Some(Grant { rights, read_only: true }) => rights.unwrap_or_else(token).without(Right::Publish),
            Some(Grant { rights, read_only: false }) => rights.unwrap_or_else(token),
            None => token(),
        }
    }

    /// A first join of `room` asks the application's join hook, then the
    /// join proxy: either may refuse; the proxy's `allow` replaces the
    /// token's rights, and a read-only answer from the hook takes `publish` away.
    fn grant(&mut self, room: &str, user: Option<&str>) -> Result<(), ErrorReply> {
        let membership = match &self.shared.app {
            Some(app) => app.on_join_as(self.server, self.conn, user, room),
            None => Membership::Member,
        };
        if membership == Membership::Refused {
            return Err(ErrorReply::new(ErrorCode::Forbidden, format!("joining {room:?} was refused")));
        }
        let from_backend =
            match self.shared.proxy.as_ref().and_then(|p| p.join(user, &self.state.client_id, room)) {
                Some(answer) => answer?,
                None => None,
            };
        let read_only = membership == Membership::ReadOnly;
        if read_only || from_backend.is_some() {
            self.state.granted.insert(room.to_owned(), Grant { rights: from_backend, read_only });
        }
        Ok(())
    }

    /// Refuses what its rights in `room` do not include.
    fn require(&self, room: &str, right: Right) -> Result<(), ErrorReply> {
        if self.rights(room).has(right) {
            return Ok(());
        }
        Err(match right {
            Right::Join => forbidden(room),
            _ => ErrorReply::new(ErrorCode::Forbidden, format!("no {right:?} right in room {room:?}")),
        })
    }

    /// `presence:get`: for members, or for a token whose `rooms` claim names
    /// the room (no claim is not enough: presence is not public) and whom the
    /// application's join hook and the join proxy would let join it (a room
    /// either refuses to a user shows that user its members no more than its
    /// messages; a proxy `allow` without `presence` refuses it too).
    fn presence(&self, room: &str) -> Result<super::reads::Presence, ErrorReply> {
        self.require(room, Right::Presence)?;
        self.shared.rules(room).check_presence(room)?;
        if !self.state.rooms.contains_key(room) {
            let identity = self.state.identity.as_ref().filter(|i| i.names_rooms());
            let Some(identity) = identity else {
                return self.require_member(room).map(|()| Default::default());
            };
            if let Some(app) = &self.shared.app {
                if app.on_join_as(self.server, self.conn, Some(&identity.user), room) == Membership::Refused {
                    return Err(ErrorReply::new(
                        ErrorCode::Forbidden,
                        format!("joining {room:?} was refused"),
                    ));
                }
            }
            let user = Some(identity.user.as_str());
            if let Some(answer) =
                self.shared.proxy.as_ref().and_then(|p| p.join(user, &self.state.client_id, room))
            {
                if answer?.is_some_and(|rights| !rights.has(Right::Presence)) {
                    return Err(ErrorReply::new(
                        ErrorCode::Forbidden,
                        format!("no Presence right in room {room:?}"),
                    ));
                }
            }
        }
        super::reads::presence(self.shared, room)
    }

    /// `auth:refresh`: a fresh token for the same user moves the session's
    /// end to its `exp`, and its `rooms` claim replaces the old one (joined
    /// rooms it no longer allows are left, with `room:left`). A bad or
    /// foreign token changes nothing.
    fn refresh(&mut self, token: &str) -> Result<u64, ErrorReply> {
        let Some(current) = &self.state.identity else {
            return Err(ErrorReply::new(ErrorCode::Forbidden, "this connection has no token to refresh"));
        };
        let Some(fresh) = self.shared.admission.verify(token) else {
            return Err(ErrorReply::new(ErrorCode::Forbidden, "the token was refused"));
        };
        if fresh.user != current.user {
            return Err(ErrorReply::new(ErrorCode::Forbidden, "the token is for another user"));
        }
        if bans::close_if_banned(self.shared, self.server, self.conn, &fresh.user) {
            return Err(ErrorReply::new(ErrorCode::Forbidden, "this user is banned"));
        }
        self.server.close_at(self.conn, fresh.expires_at(), 1008, "token expired").map_err(internal)?;
        let exp = fresh.exp.unwrap_or_default();
        // Rooms the new claim no longer allows are left now, each with
        // `room:left` (after the room's last message to this client: both go
        // through the hub, in order).
        let forbidden: Vec<String> = self.state.rooms.keys().filter(|r| !fresh.allows(r)).cloned().collect();
        self.state.identity = Some(fresh);
        for room in forbidden {
            self.leave(&room)?;
            let _ = self.server.send(self.conn, room_left(&room, LEFT_FORBIDDEN));
        }
        // The presence right may have come or gone in the rooms it stays in.
        for room in self.state.rooms.keys() {
            if self.shared.rules(room).announces_members() {
                presence::listen(self.server, self.conn, room, self.rights(room).has(Right::Presence));
            }
        }
        Ok(exp)
    }

    fn require_member(&self, room: &str) -> Result<(), ErrorReply> {
        if self.state.rooms.contains_key(room) {
            Ok(())
        } else {
            Err(ErrorReply::new(ErrorCode::Forbidden, format!("join {room:?} first")))
        }
    }

    /// Join, presence, replay and ack, through the broker (`broker.rs`),
    /// which keeps them in `seq` order with the room's publishes.
    fn join(&mut self, id: Option<&str>, room: &str, since: Option<u64>, epoch: Option<&str>) -> Reply {
        self.require(room, Right::Join)?;
        let (server, conn, config) = (self.server, self.conn, &self.shared.config);
        let newly = !self.state.rooms.contains_key(room);
        if newly && self.state.rooms.len() >= config.max_rooms_per_client {
            self.shared.metrics.max_rooms_per_client.fetch_add(1, Relaxed);
            return Err(ErrorReply::new(
                ErrorCode::Forbidden,
                format!("already in {} rooms, the most one client may join", config.max_rooms_per_client),
            ));
        }
        let client_id = self.state.client_id.clone();
        let user = self.state.identity.as_ref().map(|i| i.user.clone());
        if newly {
            self.grant(room, user.as_deref())?;
        }
        // Without the history right a `since` is answered, never replayed;
        // without the presence right no presence event reaches it.
        let history = self.rights(room).has(Right::History);
        let hears = self.rights(room).has(Right::Presence);
        let (max_replay, max_bytes) = super::room::replay_bounds(config, server.config());
        let j = Join {
            conn,
            id,
            room,
            since,
            epoch,
            newly,
            history,
            presence: hears,
            client_id: &client_id,
            user: user.as_deref(),
            max_replay,
            max_bytes,
        };
        let (published_bytes, replayed) =
            self.shared.broker.join(self.shared, server, &j).inspect_err(|_| {
                if newly {
                    self.state.granted.remove(room);
                }
            })?;
        self.state.bytes_replied = self.state.bytes_replied.saturating_add(replayed);
        self.state.rooms.entry(room.to_owned()).or_insert(published_bytes);
        Ok(None)
    }

    fn leave(&mut self, room: &str) -> Result<(), ErrorReply> {
        if self.state.rooms.remove(room).is_none() {
            return Err(ErrorReply::new(ErrorCode::NotFound, format!("not in room {room:?}")));
        }
        self.state.granted.remove(room);
        let user = self.state.identity.as_ref().map(|i| i.user.as_str());
        leave_room(self.shared, self.server, room, self.conn, &self.state.client_id, user, true);
        self.shared.rooms.sweep();
        trim::note_freed(self.shared.rooms.budget().take_freed());
        Ok(())
    }

    fn publish(
        &mut self,
        room: &str,
        data: &RawJson,
        echo: bool,
        key: Option<&str>,
    ) -> Result<Published, ErrorReply> {
        self.require_member(room)?;
        self.require(room, Right::Publish)?;
        self.shared.rules(room).check_client_publish(room)?;
        let user = self.state.identity.as_ref().map(|i| i.user.as_str());
        let max = self.server.config().max_message_size;
        let replaced = match self
            .shared
            .proxy
            .as_ref()
            .and_then(|p| p.publish(user, &self.state.client_id, room, data, max))
        {
            Some(answer) => answer?,
            None => None,
        };
        let data = replaced.as_ref().unwrap_or(data);
        if echo && data.get().len() > BIG_REPLY {
            self.refuse_if_backlogged()?;
        }
        let except = if echo { None } else { Some(self.conn) };
        let (from, publisher) = (&self.state.client_id, self.publisher());
        publish::publish(
            self.shared,
            self.server,
            Publish { room, body: Body::Json(data), from, publisher, key, except },
        )
    }

    /// A binary publish; one with a key is acked by a text `ack` whose `id`
    /// is the key (binary frames carry no id of their own).
    fn publish_binary(&mut self, room: &str, body: &[u8], key: Option<&str>) -> Reply {
        self.require_member(room)?;
        self.require(room, Right::Publish)
            .and_then(|()| self.shared.rules(room).check_client_publish(room))
            .and_then(|()| match &self.shared.proxy {
                Some(proxy) if proxy.checks_publishes() => Err(ErrorReply::new(
                    ErrorCode::Forbidden,
                    "binary publishes cannot pass the publish proxy: publish JSON",
                )),
                _ => Ok(()),
            })
            .map_err(|mut e| {
                e.id = key.map(str::to_owned);
                e
            })?;
        let (from, publisher) = (&self.state.client_id, self.publisher());
        let p = Publish { room, body: Body::Binary(body), from, publisher, key, except: Some(self.conn) };
        let published = publish::publish(self.shared, self.server, p).map_err(|mut e| {
            e.id = key.map(str::to_owned);
            e
        })?;
        Ok(key.map(|key| ack(key, published.ack_payload(room))))
    }

    /// Whose keys this connection's publishes use: its user's, else its own.
    fn publisher(&self) -> Publisher<'_> {
        match &self.state.identity {
            Some(identity) => Publisher::User(&identity.user),
            None => Publisher::Client(&self.state.client_id),
        }
    }

    fn typing(&mut self, room: &str, active: bool) -> Result<(), ErrorReply> {
        self.require_member(room)?;
        self.require(room, Right::Publish)?;
        self.shared.rules(room).check_typing(room)?;
        let event =
            frame("typing", None, json!({"room": room, "clientId": self.state.client_id, "active": active}));
        self.shared.broker.relay(room, self.conn, &event)?;
        self.server.broadcast(room, event, Some(self.conn)).map_err(internal)
    }
}

/// Frames queued for a closing client past which its close schedules a
/// memory trim (its queue, freed by its writer, may be large).
const LARGE_BACKLOG: usize = 64;

/// Bytes a client sent and was sent past which its close counts toward a
/// memory trim (that much was allocated for it, and is free now).
const LARGE_TRAFFIC: usize = 1 << 20;

/// Bytes one member adds to a `presence:get` ack, at most (clientId up to 20
/// digits, the keys, `{}` meta and punctuation).
const PRESENCE_ENTRY_BYTES: usize = 48;
