//! The client's own thread: reads one connection at a time, rejoins rooms and
//! resends publishes when a connection comes up, and waits out the backoff
//! between connections. Stops for good on `close()`, a 1000 close from the
//! server, a 401/403 at the handshake, or a certificate not accepted
//! (`docs/clients.md`, "When it stops").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::error::ProtocolError;
use tungstenite::Message;

use super::backoff::Jitter;
use super::conn::{self, Conn, OpenError, Out, Target};
use super::deflate;
use super::{Error, Event, RoomPos, Shared, Waiter, SMALL_EVENT};

/// How long a `close()` waits for the server's close reply, and how long the
/// reply to a server's close may take to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Messages of one room held while it is resynchronised after a reset (their
/// bytes are bounded too, over all rooms together, by
/// `Options::event_capacity_bytes`).
const MAX_HELD: usize = 4096;

/// A room being read again from seq 1 of its new epoch: what arrives is held
/// (by seq, so the replay and live copies count once) until the second ack.
struct Resync {
    previous_epoch: Option<String>,
    /// Each event with its size.
    held: BTreeMap<u64, (Event, usize)>,
    held_bytes: usize,
}

enum End {
    /// Reconnect; the connection had been online this long (zero if never).
    Lost(Duration),
    /// Stop for good, for this reason.
    Stop(String),
}

pub(crate) fn run(shared: Arc<Shared>, target: Target, first: Conn, mut jitter: Jitter) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    let mut at_least = Duration::ZERO;
    let reason = loop {
        if let Some(conn) = next.take() {
            match serve(&shared, conn) {
                End::Stop(reason) => break reason,
                // A connection that did not stay up keeps the count going: a
                // server that accepts and then drops everyone at once is not
                // hammered at the first attempt's rate.
                End::Lost(up) if up >= shared.options.backoff.max => attempt = 0,
                End::Lost(_) => {}
            }
        }
        if shared.stopping.load(Ordering::SeqCst) {
            break "closed by the application".to_owned();
        }
        attempt = attempt.saturating_add(1);
        // Retry-After is a floor; the jitter still spreads the clients past it.
        let delay = at_least + shared.options.backoff.delay(attempt, jitter.draw());
        at_least = Duration::ZERO;
        shared.emit(Event::Reconnecting { attempt, delay });
        if wait_for_stop(&shared, delay) {
            break "closed by the application".to_owned();
        }
        match conn::open(&target, &shared, shared.tls.as_ref()) {
            Ok(conn) => next = Some(conn),
            Err(OpenError::Tls(why)) => {
                shared.emit(Event::Error {
                    code: "tls".to_owned(),
                    message: format!("{why}: not retrying; check the CA file or the server's certificate"),
                });
                break format!("TLS: {why}");
            }
            Err(OpenError::Refused { status: status @ (401 | 403), .. }) => {
                let message = if status == 401 {
                    "the server refused the token (401): not retrying; set a valid token and connect again"
                } else {
                    "the server refused this client (403: origin not allowed or user banned): not retrying"
                };
                shared.emit(Event::Error { code: format!("http_{status}"), message: message.to_owned() });
                break format!("handshake refused with {status}");
            }
            Err(OpenError::Refused { status, retry_after }) => {
                at_least = Duration::from_secs(retry_after.unwrap_or(0).min(3600));
                log::debug!("wshub client: handshake refused with {status}, retry after {at_least:?}");
            }
            Err(OpenError::Failed(why)) => log::debug!("wshub client: reconnect failed: {why}"),
        }
    };
    finish(&shared, reason);
}

/// Sleeps `delay` unless `close()` comes first (then true).
fn wait_for_stop(shared: &Shared, delay: Duration) -> bool {
    let deadline = Instant::now() + delay;
    let mut st = shared.state.lock();
    while !st.closed {
        if shared.changed.wait_until(&mut st, deadline).timed_out() {
            return st.closed;
        }
    }
    true
}

/// Fails everything still waiting and tells the application the client stopped.
fn finish(shared: &Shared, reason: String) {
    {
        let mut st = shared.state.lock();
        st.closed = true;
        st.online = false;
        st.conn = None;
        for out in st.outbox.drain(..) {
            let _ = out.reply.send(Err(Error::Closed));
        }
        for (_, waiter) in st.waiters.drain() {
            if let Waiter::Request { reply, .. } = waiter {
                let _ = reply.send(Err(Error::Closed));
            }
        }
        shared.changed.notify_all();
    }
    shared.emit_closed(reason);
}

/// One connection's life: `connected`, rejoins, buffered publishes, then
/// frames until it ends.
fn serve(shared: &Shared, conn: Conn) -> End {
    let Conn { mut reader, writer, writer_done, deadline } = conn;
    let mut s = Session {
        shared,
        writer,
        client_id: String::new(),
        rejoining: 0,
        rejoin_deadline: deadline,
        online: false,
        online_since: None,
        heartbeat: Duration::from_secs(30),
        last_frame: Instant::now(),
        close_sent_at: None,
        resyncing: HashMap::new(),
        rejoin_failed: None,
    };
    let (code, why) = s.read_loop(&mut reader);
    let up = s.online_since.map_or(Duration::ZERO, |t| t.elapsed());
    if s.close_sent_at.is_some() {
        // Let the writer put the close frame on the wire before the socket
        // goes: the writer ends right after it (bounded by its write timeout).
        drop(s);
        let _ = writer_done.recv_timeout(CLOSE_WAIT);
    } else {
        drop(s);
    }
    reader.get_ref().shutdown();
    drop(reader);
    {
        let mut st = shared.state.lock();
        st.conn = None;
        st.online = false;
        // Sent publishes go back to waiting: they are resent, with their key, after the rejoin.
        for out in st.outbox.iter_mut() {
            out.deadline = None;
        }
        let waiters: Vec<_> = st.waiters.drain().collect();
        for (_, waiter) in waiters {
            if let Waiter::Request { reply, .. } = waiter {
                let _ = reply.send(Err(Error::Disconnected));
            }
        }
        shared.changed.notify_all();
    }
    shared.emit(Event::Disconnected { code, reason: why });
    if shared.stopping.load(Ordering::SeqCst) {
        End::Stop("closed by the application".to_owned())
    } else if code == 1000 {
        End::Stop("the server closed the connection normally (1000)".to_owned())
    } else {
        End::Lost(up)
    }
}

struct Session<'a> {
    shared: &'a Shared,
    writer: crossbeam_channel::Sender<Out>,
    client_id: String,
    rejoining: usize,
    rejoin_deadline: Instant,
    online: bool,
    /// When every room was rejoined on this connection.
    online_since: Option<Instant>,
    heartbeat: Duration,
    last_frame: Instant,
    close_sent_at: Option<Instant>,
    resyncing: HashMap<String, Resync>,
    /// A rejoin refused for now (`unavailable`, `rate_limited`, ...): this
    /// connection is given up and the room rejoined on the next one.
    rejoin_failed: Option<String>,
}

impl Session<'_> {
    /// Reads until the connection ends; its close code and reason.
    fn read_loop(&mut self, reader: &mut tungstenite::WebSocket<conn::ReadHalf>) -> (u16, String) {
        let mut got_connected = false;
        let mut last_tick = Instant::now();
        loop {
            // Under steady traffic reads never time out: tick by the clock too.
            if last_tick.elapsed() >= conn::TICK {
                last_tick = Instant::now();
                if let Some(end) = self.tick(got_connected) {
                    return end;
                }
            }
            match reader.read() {
                Ok(message) => {
                    self.last_frame = Instant::now();
                    self.pass_tls_records(reader);
                    match message {
                        Message::Text(text) => {
                            let size = text.len();
                            let Ok(env) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                            if !got_connected {
                                if env["type"] != "connected" {
                                    return self.close_with(1002, "the first frame was not `connected`");
                                }
                                got_connected = true;
                                if let Some(limit) = env["payload"]["maxMessageBytes"].as_u64() {
                                    // What the server takes: a room message published at
                                    // that size arrives longer, in its envelope.
                                    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                                    let limit = limit.saturating_add(super::ENVELOPE_ROOM);
                                    let limit = limit.min(self.shared.options.max_message_bytes);
                                    reader.set_config(|c| {
                                        c.max_message_size = Some(limit);
                                        c.max_frame_size = Some(limit);
                                    });
                                    reader.get_mut().set_inflate_limit(limit);
                                }
                                self.on_connected(&env["payload"]);
                                continue;
                            }
                            self.on_envelope(env, size);
                            if let Some(why) = self.rejoin_failed.take() {
                                return self.close_with(1011, &why);
                            }
                        }
                        Message::Binary(bytes) => self.on_binary(&bytes),
                        Message::Ping(p) => {
                            let _ = self.writer.send(Out::Pong(p.to_vec()));
                        }
                        Message::Pong(_) | Message::Frame(_) => {}
                        Message::Close(frame) => {
                            let (code, reason) = frame
                                .map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.to_string()));
                            if self.close_sent_at.is_none() {
                                // The reply echoes the server's code (RFC 6455, 5.5.1);
                                // a close without one is answered with 1000.
                                let reply = if code == 1005 { 1000 } else { code };
                                self.send_close(reply);
                            }
                            return (code, reason);
                        }
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    self.pass_tls_records(reader);
                    if let Some(end) = self.tick(got_connected) {
                        return end;
                    }
                }
                // A compressed message refused on its way in (`client/deflate.rs`).
                Err(tungstenite::Error::Io(e)) if deflate::refusal(&e).is_some() => {
                    let (code, why) = deflate::refusal(&e).map_or((1002, ""), |r| (r.code, r.why));
                    return self
                        .close_with(code, &format!("the server sent a bad compressed message: {why}"));
                }
                Err(tungstenite::Error::Capacity(e)) => {
                    return self.close_with(1009, &format!("a message from the server was too big: {e}"))
                }
                // The socket ended without a close frame (the server was
                // killed, a proxy cut it): no close to send, nothing broken.
                Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                    return (1006, "the connection ended without a close".to_owned())
                }
                // Text (or a close reason) that is not UTF-8: failed with
                // 1007 (RFC 6455, 8.1), answered rather than dropped.
                Err(tungstenite::Error::Utf8(e)) => {
                    return self.close_with(1007, &format!("the server sent text that is not UTF-8: {e}"))
                }
                Err(tungstenite::Error::Protocol(e)) => {
                    return self.close_with(1002, &format!("the server broke the protocol: {e}"))
                }
                Err(e) => return (1006, e.to_string()),
            }
        }
    }

    /// TLS records that reading produced go out through the writer (the only
    /// thread that writes to the socket).
    fn pass_tls_records(&self, reader: &mut tungstenite::WebSocket<conn::ReadHalf>) {
        if reader.get_ref().wants_flush {
            reader.get_mut().wants_flush = false;
            let _ = self.writer.send(Out::Flush);
        }
    }

    /// Queues a close frame for the writer (once per connection).
    fn send_close(&mut self, code: u16) {
        if self.close_sent_at.is_none() {
            self.close_sent_at = Some(Instant::now());
            let _ = self.writer.send_timeout(Out::Close(code), conn::TICK);
        }
    }

    /// Ends the connection from this side with `code`; what the session reports.
    fn close_with(&mut self, code: u16, why: &str) -> (u16, String) {
        self.send_close(code);
        (code, why.to_owned())
    }

    /// Periodic checks between reads: deadlines, `close()`, silence.
    fn tick(&mut self, got_connected: bool) -> Option<(u16, String)> {
        let now = Instant::now();
        if self.shared.stopping.load(Ordering::SeqCst) {
            // close() queued the close frame itself when the connection was
            // up; before that, this is the first the session hears of it.
            let sent = *self.close_sent_at.get_or_insert(now);
            if !self.online && !got_connected {
                return Some((1006, "closed by the application while connecting".into()));
            }
            if now.duration_since(sent) > CLOSE_WAIT {
                return Some((1006, "no close reply from the server".into()));
            }
        }
        if !self.online && now > self.rejoin_deadline {
            let what = if got_connected { "rejoining the rooms" } else { "waiting for `connected`" };
            return Some((1006, format!("{what} took too long")));
        }
        if now.duration_since(self.last_frame) > self.heartbeat + self.shared.options.request_timeout {
            return Some((1006, "the server went silent".into()));
        }
        let mut st = self.shared.state.lock();
        st.waiters.retain(|_, w| match w {
            Waiter::Request { reply, deadline, .. } if *deadline <= now => {
                let _ = reply.send(Err(Error::Timeout));
                false
            }
            _ => true,
        });
        st.outbox.retain(|out| match out.deadline {
            Some(d) if d <= now => {
                let _ = out.reply.send(Err(Error::Timeout));
                false
            }
            _ => true,
        });
        None
    }

    fn on_connected(&mut self, payload: &Value) {
        self.client_id = payload["clientId"].as_str().unwrap_or_default().to_owned();
        if let Some(ms) = payload["heartbeatMs"].as_u64() {
            self.heartbeat = Duration::from_millis(ms);
        }
        let mut st = self.shared.state.lock();
        st.conn = Some(self.writer.clone());
        let rooms: Vec<(String, RoomPos)> = st.rooms.iter().map(|(r, p)| (r.clone(), p.clone())).collect();
        for (room, pos) in rooms {
            let id = self.shared.next_id();
            let payload = match &pos.epoch {
                Some(epoch) => json!({"room": room, "since": pos.seq, "epoch": epoch}),
                None => json!({"room": room, "since": pos.seq}),
            };
            let frame = json!({"type": "room:join", "id": id, "payload": payload}).to_string();
            st.waiters.insert(id, Waiter::Rejoin { room, resync: false });
            let _ = self.writer.send(Out::Text(frame));
            self.rejoining += 1;
        }
        self.rejoin_deadline = Instant::now() + self.shared.options.request_timeout;
        if self.rejoining == 0 {
            self.go_online(st);
        }
    }

    /// Every room is rejoined: send what waited, in order, then let the
    /// application's calls through.
    fn go_online(&mut self, mut st: parking_lot::MutexGuard<'_, super::State>) {
        let deadline = Instant::now() + self.shared.options.request_timeout;
        for out in st.outbox.iter_mut() {
            let _ = self.writer.send(out.frame.clone());
            out.deadline = Some(deadline);
        }
        st.online = true;
        self.online = true;
        self.online_since = Some(Instant::now());
        self.shared.changed.notify_all();
        drop(st);
        self.shared.emit(Event::Connected { client_id: self.client_id.clone() });
    }

    /// One envelope after `connected`; `size` is its frame's length (a
    /// message counts for what its parsed data holds when that is more).
    fn on_envelope(&mut self, mut env: Value, size: usize) {
        let payload = env["payload"].take();
        let kind = env["type"].as_str().unwrap_or_default();
        let id = env["id"].as_str();
        match (kind, id) {
            ("ack" | "error", Some(id)) => self.on_reply(id, kind == "ack", payload),
            ("error", None) => self.shared.emit(server_error_event(&payload)),
            ("room:message", _) => {
                let room = payload["room"].as_str().unwrap_or_default().to_owned();
                let Some(seq) = payload["seq"].as_u64() else { return };
                let from = payload["from"].as_str().unwrap_or_default().to_owned();
                let mut payload = payload;
                let data = payload["data"].take();
                let size = size.max(held_bytes(&data));
                self.deliver(Event::Message { room, seq, from, data }, size);
            }
            ("presence:join" | "presence:leave", _) => self.shared.emit(Event::Presence {
                room: payload["room"].as_str().unwrap_or_default().to_owned(),
                client_id: payload["clientId"].as_str().unwrap_or_default().to_owned(),
                user: payload["user"].as_str().map(str::to_owned),
                joined: kind == "presence:join",
            }),
            ("room:left", _) => {
                let room = payload["room"].as_str().unwrap_or_default().to_owned();
                self.shared.state.lock().rooms.remove(&room);
                self.resyncing.remove(&room);
                let reason = payload["reason"].as_str().unwrap_or_default().to_owned();
                self.shared.emit(Event::Left { room, reason });
            }
            ("typing", _) => self.shared.emit(Event::Typing {
                room: payload["room"].as_str().unwrap_or_default().to_owned(),
                client_id: payload["clientId"].as_str().unwrap_or_default().to_owned(),
                active: payload["active"].as_bool().unwrap_or(false),
            }),
            _ => {}
        }
    }

    /// Emits a room's message once: held while the room resynchronises,
    /// dropped when its seq was already seen.
    fn deliver(&mut self, event: Event, size: usize) {
        let (room, seq) = match &event {
            Event::Message { room, seq, .. } | Event::Binary { room, seq, .. } => (room.clone(), *seq),
            _ => return,
        };
        // The byte bound is over every room held, not per room.
        let held_bytes: usize = self.resyncing.values().map(|r| r.held_bytes).sum();
        if let Some(resync) = self.resyncing.get_mut(&room) {
            // Past MAX_HELD messages or the byte bound the newest are dropped:
            // the app already gets `recovered: false` for this room and must
            // refetch anyway. A seq held already is not held twice.
            let fits =
                resync.held.len() < MAX_HELD && held_bytes + size <= self.shared.options.event_capacity_bytes;
            if fits && !resync.held.contains_key(&seq) {
                resync.held.insert(seq, (event, size));
                resync.held_bytes += size;
            }
            return;
        }
        if self.is_new(&room, seq) {
            self.shared.emit_sized(event, size);
        }
    }

    /// Whether `seq` is past the last one seen in `room` (and records it).
    fn is_new(&self, room: &str, seq: u64) -> bool {
        let mut st = self.shared.state.lock();
        match st.rooms.get_mut(room) {
            Some(pos) if seq <= pos.seq => false,
            Some(pos) => {
                pos.seq = seq;
                true
            }
            None => true,
        }
    }

    fn on_binary(&mut self, b: &[u8]) {
        if b.len() < 11 || b[0] != 0x02 {
            return;
        }
        let room_len = u16::from_be_bytes([b[1], b[2]]) as usize;
        if b.len() < 11 + room_len {
            return;
        }
        let Ok(room) = std::str::from_utf8(&b[3..3 + room_len]) else { return };
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&b[3 + room_len..11 + room_len]);
        let seq = u64::from_be_bytes(seq_bytes);
        let body = b[11 + room_len..].to_vec();
        self.deliver(Event::Binary { room: room.to_owned(), seq, body }, b.len());
    }

    fn on_reply(&mut self, id: &str, ok: bool, payload: Value) {
        let result = if ok { Ok(payload.clone()) } else { Err(server_error(&payload)) };
        let mut st = self.shared.state.lock();
        if let Some(waiter) = st.waiters.remove(id) {
            match waiter {
                Waiter::Request { reply, join, .. } => {
                    if let (Some(room), true) = (join, ok) {
                        st.rooms.insert(room, position(&payload));
                    }
                    let _ = reply.send(result);
                }
                Waiter::Rejoin { room, resync } => {
                    drop(st);
                    self.on_rejoin(room, resync, ok, &payload);
                }
            }
            return;
        }
        if let Some(at) = st.outbox.iter().position(|o| o.id == id) {
            if let Some(out) = st.outbox.remove(at) {
                let _ = out.reply.send(result);
            }
            return;
        }
        drop(st);
        if !ok {
            self.shared.emit(server_error_event(&payload));
        }
    }
}

impl Session<'_> {
    /// A rejoin's reply. A room whose epoch changed (the server lost its
    /// history, e.g. restarted) is joined a second time with `since: 0` in the
    /// new epoch, so the messages of the new epoch published before this
    /// client came back are recovered too; the application gets
    /// `Recovery { recovered: false }` with both epochs.
    fn on_rejoin(&mut self, room: String, resync: bool, ok: bool, payload: &Value) {
        let mut events: Vec<(Event, usize)> = Vec::new();
        {
            let mut st = self.shared.state.lock();
            if !ok {
                self.resyncing.remove(&room);
                let e = server_error(payload);
                let code = match &e {
                    Error::Server { code, .. } => code.clone(),
                    _ => "internal".into(),
                };
                if !matches!(code.as_str(), "forbidden" | "bad_request" | "not_found" | "too_large") {
                    // Refused for now (a backend down, a rate): the room is
                    // kept and rejoined on the next connection, after the
                    // backoff, rather than left for good.
                    self.rejoin_failed = Some(format!("rejoining {room:?} failed for now: {e}"));
                    return;
                }
                st.rooms.remove(&room);
                events
                    .push((Event::Error { code, message: format!("rejoining {room:?}: {e}") }, SMALL_EVENT));
            } else if resync {
                let now = position(payload);
                let held = self.resyncing.remove(&room);
                let mut last = now.seq;
                let mut previous_epoch = None;
                if let Some(held) = held {
                    previous_epoch = held.previous_epoch;
                    for (seq, held) in held.held {
                        last = last.max(seq);
                        events.push(held);
                    }
                }
                st.rooms.insert(room.clone(), RoomPos { seq: last, epoch: now.epoch.clone() });
                let recovery = Event::Recovery {
                    room: room.clone(),
                    recovered: false,
                    epoch: now.epoch.unwrap_or_default(),
                    previous_epoch,
                };
                events.insert(0, (recovery, SMALL_EVENT));
            } else {
                let now = position(payload);
                let before = st.rooms.get(&room).cloned().unwrap_or_default();
                let recovered = payload["recovered"].as_bool().unwrap_or(true);
                if before.epoch.is_some() && before.epoch != now.epoch && now.epoch.is_some() {
                    let id = self.shared.next_id();
                    let frame = json!({"type": "room:join", "id": id,
                        "payload": {"room": room, "since": 0, "epoch": now.epoch}})
                    .to_string();
                    st.rooms.insert(room.clone(), RoomPos { seq: 0, epoch: now.epoch.clone() });
                    st.waiters.insert(id, Waiter::Rejoin { room: room.clone(), resync: true });
                    self.resyncing.insert(
                        room,
                        Resync { previous_epoch: before.epoch, held: BTreeMap::new(), held_bytes: 0 },
                    );
                    let _ = self.writer.send(Out::Text(frame));
                    return; // still rejoining: the second reply finishes this room
                }
                st.rooms.insert(room.clone(), now.clone());
                if !recovered {
                    let recovery = Event::Recovery {
                        room,
                        recovered,
                        epoch: now.epoch.unwrap_or_default(),
                        previous_epoch: before.epoch,
                    };
                    events.push((recovery, SMALL_EVENT));
                }
            }
        }
        // The Recovery event comes before the messages it recovered.
        for (event, size) in events {
            self.shared.emit_sized(event, size);
        }
        self.rejoining = self.rejoining.saturating_sub(1);
        if self.rejoining == 0 && !self.online {
            let st = self.shared.state.lock();
            self.go_online(st);
        }
    }
}

/// About the memory a parsed JSON value holds: a frame's length understates
/// it many times over (`[0,0,…]` is 2 bytes an element on the wire, a
/// `Value` each in memory), and the byte bounds are about memory.
fn held_bytes(v: &Value) -> usize {
    const NODE: usize = std::mem::size_of::<Value>();
    NODE + match v {
        Value::String(s) => s.capacity(),
        Value::Array(a) => a.iter().map(held_bytes).sum::<usize>() + (a.capacity() - a.len()) * NODE,
        Value::Object(m) => {
            m.iter().map(|(k, v)| std::mem::size_of::<String>() + k.capacity() + held_bytes(v)).sum()
        }
        _ => 0,
    }
}

fn position(ack: &Value) -> RoomPos {
    RoomPos { seq: ack["seq"].as_u64().unwrap_or(0), epoch: ack["epoch"].as_str().map(str::to_owned) }
}

fn server_error(payload: &Value) -> Error {
    Error::Server {
        code: payload["code"].as_str().unwrap_or("internal").to_owned(),
        message: payload["message"].as_str().unwrap_or_default().to_owned(),
    }
}

fn server_error_event(payload: &Value) -> Event {
    Event::Error {
        code: payload["code"].as_str().unwrap_or("internal").to_owned(),
        message: payload["message"].as_str().unwrap_or_default().to_owned(),
    }
}
