//! The client's own thread: reads one connection at a time, rejoins rooms and
//! resends publishes when a connection comes up, and waits out the backoff
//! between connections. Stops for good on `close()`, a 1000 close from the
//! server, or a 401/403 at the handshake (`docs/clients.md`, "When it stops").

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::Message;

use super::backoff::Jitter;
use super::conn::{self, Conn, OpenError, Out, Target};
use super::{Error, Event, RoomPos, Shared, Waiter};

/// How long a `close()` waits for the server's close reply.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Messages of one room held while it is resynchronised after a reset.
const MAX_HELD: usize = 4096;

/// A room being read again from seq 1 of its new epoch: what arrives is held
/// (by seq, so the replay and live copies count once) until the second ack.
struct Resync {
    previous_epoch: Option<String>,
    held: BTreeMap<u64, Event>,
}

enum End {
    /// Reconnect.
    Lost,
    /// Stop for good, for this reason.
    Stop(String),
}

pub(crate) fn run(shared: Arc<Shared>, target: Target, first: Conn, mut jitter: Jitter) {
    let mut next = Some(first);
    let mut attempt = 0u32;
    let mut at_least = Duration::ZERO;
    let reason = loop {
        if let Some(conn) = next.take() {
            attempt = 0;
            if let End::Stop(reason) = serve(&shared, conn) {
                break reason;
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
        match conn::open(&target, &shared) {
            Ok(conn) => next = Some(conn),
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
    shared.emit(Event::Closed { reason });
}

/// One connection's life: `connected`, rejoins, buffered publishes, then
/// frames until it ends.
fn serve(shared: &Shared, conn: Conn) -> End {
    let Conn { mut reader, writer } = conn;
    let timeout = shared.options.request_timeout;
    let mut s = Session {
        shared,
        writer,
        client_id: String::new(),
        rejoining: 0,
        rejoin_deadline: Instant::now() + timeout,
        online: false,
        heartbeat: Duration::from_secs(30),
        last_frame: Instant::now(),
        close_sent_at: None,
        resyncing: HashMap::new(),
    };
    let (code, why) = s.read_loop(&mut reader);
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
        End::Lost
    }
}

struct Session<'a> {
    shared: &'a Shared,
    writer: crossbeam_channel::Sender<Out>,
    client_id: String,
    rejoining: usize,
    rejoin_deadline: Instant,
    online: bool,
    heartbeat: Duration,
    last_frame: Instant,
    close_sent_at: Option<Instant>,
    resyncing: HashMap<String, Resync>,
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
                    match message {
                        Message::Text(text) => {
                            let Ok(env) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                            if !got_connected {
                                if env["type"] != "connected" {
                                    return (1002, "the first frame was not `connected`".into());
                                }
                                got_connected = true;
                                self.on_connected(&env["payload"]);
                                continue;
                            }
                            self.on_envelope(env);
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
                                let _ = self.writer.send(Out::Close(1000));
                            }
                            return (code, reason);
                        }
                    }
                }
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
                {
                    if let Some(end) = self.tick(got_connected) {
                        return end;
                    }
                }
                Err(e) => return (1006, e.to_string()),
            }
        }
    }

    /// Periodic checks between reads: deadlines, `close()`, silence.
    fn tick(&mut self, got_connected: bool) -> Option<(u16, String)> {
        let now = Instant::now();
        if self.shared.stopping.load(Ordering::SeqCst) {
            let sent = *self.close_sent_at.get_or_insert(now);
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
        self.shared.changed.notify_all();
        drop(st);
        self.shared.emit(Event::Connected { client_id: self.client_id.clone() });
    }

    fn on_envelope(&mut self, mut env: Value) {
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
                self.deliver(Event::Message { room, seq, from, data });
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
    fn deliver(&mut self, event: Event) {
        let (room, seq) = match &event {
            Event::Message { room, seq, .. } | Event::Binary { room, seq, .. } => (room.clone(), *seq),
            _ => return,
        };
        if let Some(resync) = self.resyncing.get_mut(&room) {
            // Past MAX_HELD the newest are dropped: the app already gets
            // `recovered: false` for this room and must refetch anyway.
            if resync.held.len() < MAX_HELD || resync.held.contains_key(&seq) {
                resync.held.insert(seq, event);
            }
            return;
        }
        if self.is_new(&room, seq) {
            self.shared.emit(event);
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
        self.deliver(Event::Binary { room: room.to_owned(), seq, body });
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
        let mut events = Vec::new();
        {
            let mut st = self.shared.state.lock();
            if !ok {
                st.rooms.remove(&room);
                self.resyncing.remove(&room);
                let e = server_error(payload);
                let code = match &e {
                    Error::Server { code, .. } => code.clone(),
                    _ => "internal".into(),
                };
                events.push(Event::Error { code, message: format!("rejoining {room:?}: {e}") });
            } else if resync {
                let now = position(payload);
                let held = self.resyncing.remove(&room);
                let mut last = now.seq;
                let mut previous_epoch = None;
                if let Some(held) = held {
                    previous_epoch = held.previous_epoch;
                    for (seq, event) in held.held {
                        last = last.max(seq);
                        events.push(event);
                    }
                }
                st.rooms.insert(room.clone(), RoomPos { seq: last, epoch: now.epoch.clone() });
                events.insert(
                    0,
                    Event::Recovery {
                        room: room.clone(),
                        recovered: false,
                        epoch: now.epoch.unwrap_or_default(),
                        previous_epoch,
                    },
                );
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
                    self.resyncing
                        .insert(room, Resync { previous_epoch: before.epoch, held: BTreeMap::new() });
                    let _ = self.writer.send(Out::Text(frame));
                    return; // still rejoining: the second reply finishes this room
                }
                st.rooms.insert(room.clone(), now.clone());
                if !recovered {
                    events.push(Event::Recovery {
                        room,
                        recovered,
                        epoch: now.epoch.unwrap_or_default(),
                        previous_epoch: before.epoch,
                    });
                }
            }
        }
        // The Recovery event comes before the messages it recovered.
        for event in events {
            self.shared.emit(event);
        }
        self.rejoining = self.rejoining.saturating_sub(1);
        if self.rejoining == 0 && !self.online {
            let st = self.shared.state.lock();
            self.go_online(st);
        }
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
