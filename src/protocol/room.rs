//! One room's protocol state: its sequence counter, epoch, bounded history and
//! presence list; and the table of rooms, which bounds how many rooms exist and
//! how many bytes of history all of them keep together.
//!
//! The engine's hub owns who receives a broadcast; this owns what the protocol
//! promises on top: `seq` order, recovery and presence. Whoever assigns a seq
//! must broadcast while holding the room's lock (see `publish.rs`), so seq
//! order is delivery order.
//!
//! History keeps each message as a [`Record`] around the frame that was
//! broadcast ([`SharedFrame`]), so a replay pushes the same bytes again (a
//! reference count, not a copy), and every other reading of it goes through
//! `record.rs`;
//! the message's event-stream form, once a stream's replay needed it, is kept
//! beside it and shared the same way.
//! Locks: a room's lock may be held while taking the table's `order` lock,
//! never the other way round, and no thread holds two rooms' locks.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::Value;

use super::namespace::{Namespaces, Rules};
use super::record::Record;
use crate::frame::SharedFrame;
use crate::types::ConnId;

/// Bytes a stored message counts for beyond its frame: the `Arc` and `Vec`
/// headers, its slots in the room's history and in the table's eviction order,
/// allocator headers (a unit test checks the sizes of those types fit). It
/// keeps many small messages bounded too.
pub(crate) const ENTRY_OVERHEAD: usize = 256;

/// How much history all rooms keep together, and how many rooms may exist
/// (each room's own bounds are its [`Rules`]' history).
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Bytes of all rooms together; past it the oldest message of any room goes.
    pub total_bytes: usize,
    /// Rooms with members or history.
    pub max_rooms: usize,
}

/// What every room's history shares: the limits, the byte total and the
/// counters of what the byte bounds dropped.
#[derive(Debug)]
pub(crate) struct Budget {
    pub limits: Limits,
    /// Bytes held by every room's history.
    pub total: AtomicUsize,
    /// Messages held by every room's history.
    entries: AtomicUsize,
    /// Messages dropped because their room was over `room_bytes`.
    pub evicted_room_bytes: AtomicU64,
    /// Messages dropped because all rooms together were over `total_bytes`.
    pub evicted_total_bytes: AtomicU64,
    /// Bytes of history dropped since the last [`take_freed`](Self::take_freed).
    freed: AtomicUsize,
}

impl Budget {
    fn new(limits: Limits) -> Self {
        Budget {
            limits,
            total: AtomicUsize::new(0),
            entries: AtomicUsize::new(0),
            evicted_room_bytes: AtomicU64::new(0),
            evicted_total_bytes: AtomicU64::new(0),
            freed: AtomicUsize::new(0),
        }
    }

    /// Bytes of history dropped since the last call.
    pub fn take_freed(&self) -> usize {
        self.freed.swap(0, Relaxed)
    }
}

/// How much one replay (a join's or an event stream's, on one node or
/// through Redis) sends at most: messages, and bytes. Half of each outbound
/// bound, so a replay into a queue that also holds live frames cannot make
/// a client that reads a slow consumer.
pub(crate) fn replay_bounds(protocol: &super::ProtocolConfig, server: &crate::Config) -> (usize, usize) {
    ((server.outbound_queue / 2).max(1), protocol.replay_max_bytes.min(server.outbound_max_bytes / 2))
}

/// One published message as kept for recovery: its record (with the exact
/// frame members got), and the idempotency key it was published with.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub seq: u64,
    pub at: Instant,
    pub record: Record,
    key: Option<Box<str>>,
    /// Its event-stream form (`sse.rs`), built by the first stream replay
    /// that needs it and shared by every later one (`None` inside: it has
    /// none). Its bytes count in the entry's cost from then on, so the
    /// history bounds hold what history really keeps.
    event: OnceLock<Option<SharedFrame>>,
}

impl Entry {
    fn cost(&self) -> usize {
        // A key is held twice: here and in the room's `keys`.
        self.record.frame().len()
            + ENTRY_OVERHEAD
            + self.key.as_ref().map_or(0, |k| 2 * k.len())
            + self.event_len()
    }

    /// Bytes of its event-stream form, once built.
    fn event_len(&self) -> usize {
        self.event.get().and_then(Option::as_ref).map_or(0, |f| f.len())
    }
}

/// What a `since` asks for, given the history.
#[derive(Debug)]
pub(crate) struct Recovery<T = SharedFrame> {
    /// The messages after `since` still in history, in order (their frames,
    /// their event-stream forms, or their records).
    pub replay: Vec<T>,
    /// False when history no longer reaches back to `since + 1`, the replay
    /// was cut, or `since` belongs to another epoch.
    pub recovered: bool,
    /// True when the byte cap (not the count cap) cut the replay.
    pub cut_by_bytes: bool,
}

/// The protocol state of one room.
#[derive(Debug)]
pub(crate) struct RoomState {
    /// The seq of the last published message (0 before the first).
    pub seq: u64,
    /// Names this incarnation of the room's history.
    pub epoch: String,
    history: VecDeque<Entry>,
    /// Bytes `history` counts for.
    history_bytes: usize,
    /// The seq of each keyed message still in `history`, by key.
    keys: HashMap<Box<str>, u64>,
    /// Members by connection (in clientId order, not join order): meta each.
    pub members: BTreeMap<ConnId, Value>,
    /// Bytes of every message published here (members receive this much).
    pub published_bytes: u64,
    /// Server-Sent Events streams on this room (`sse.rs`): while there are
    /// any, each message is also built once in the event-stream format.
    pub sse_streams: usize,
    /// Set when the table dropped this room; its holder must look it up again.
    dead: bool,
    /// With Redis (`cluster/`): `seq` and `epoch` are the last message this
    /// node delivered, in step with the room's Redis stream.
    pub cluster_synced: bool,
    /// With Redis: the seq and a fingerprint of the body of the last
    /// message this node delivered, when it delivered one in this epoch (a
    /// reconnect checks that Redis still holds that very message there).
    pub cluster_last: Option<(u64, u64)>,
    /// With Redis, while the room is not synced: the epoch and seq of the
    /// last message the subscriber passed over (it follows no seq yet). A
    /// join that read Redis meanwhile learns from it whether a message
    /// newer than its read went by (`cluster/mod.rs`, `Before`).
    pub cluster_skipped: Option<(String, u64)>,
    /// With Redis, while a join or stream open of this node reads the room
    /// from Redis (`cluster/mod.rs`, `Before`; one at a time per room): each
    /// message the subscriber delivered or passed over meanwhile, with its
    /// epoch and seq (at most `WATCHED` of them), for the replay of a read
    /// that the subscriber overtook. `None` when none reads, or a refill
    /// moved the room meanwhile.
    pub cluster_watch: Option<Vec<(String, u64, Record)>>,
    /// Its namespace's rules, resolved when the room was created.
    pub rules: Arc<Rules>,
    budget: Arc<Budget>,
}

/// Messages a join's read may fall behind by ([`RoomState::cluster_watch`]).
pub(crate) const WATCHED: usize = 256;

impl RoomState {
    /// Notes a message the subscriber delivered or passed over while a
    /// join reads the room ([`RoomState::cluster_watch`]).
    pub(crate) fn watched(&mut self, epoch: &str, seq: u64, record: impl FnOnce() -> Record) {
        if let Some(watch) = self.cluster_watch.as_mut().filter(|w| w.len() < WATCHED) {
            watch.push((epoch.to_owned(), seq, record()));
        }
    }

    /// Who reads this room on this node, as `max_members` counts them:
    /// its members and its event streams.
    pub fn readers(&self) -> usize {
        self.members.len() + self.sse_streams
    }

    fn new(epoch: String, budget: Arc<Budget>, rules: Arc<Rules>) -> Self {
        RoomState {
            seq: 0,
            epoch,
            history: VecDeque::new(),
            history_bytes: 0,
            keys: HashMap::new(),
            members: BTreeMap::new(),
            published_bytes: 0,
            sse_streams: 0,
            dead: false,
            cluster_synced: false,
            cluster_last: None,
            cluster_skipped: None,
            cluster_watch: None,
            rules,
            budget,
        }
    }

    /// Drops the oldest message; false when there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some(e) = self.history.pop_front() else { return false };
        if let Some(key) = &e.key {
            self.keys.remove(key);
        }
        let cost = e.cost();
        self.history_bytes -= cost;
        self.budget.total.fetch_sub(cost, Relaxed);
        self.budget.entries.fetch_sub(1, Relaxed);
        self.budget.freed.fetch_add(cost, Relaxed);
        true
    }

    /// Drops what is past the count or byte limit or older than the ttl.
    pub fn prune(&mut self, now: Instant) {
        let history = &self.rules.history;
        let (count, ttl, room_bytes) = (history.count, history.ttl, history.bytes);
        while self.history.len() > count {
            self.pop_oldest();
        }
        while self.history_bytes > room_bytes && self.pop_oldest() {
            self.budget.evicted_room_bytes.fetch_add(1, Relaxed);
        }
        while self.history.front().is_some_and(|e| now.saturating_duration_since(e.at) > ttl) {
            self.pop_oldest();
        }
    }

    /// Drops this room's messages up to `seq`, the oldest across rooms (the
    /// table's budget); how many went.
    fn evict_through(&mut self, seq: u64) -> u64 {
        let mut n = 0;
        while self.history.front().is_some_and(|e| e.seq <= seq) && self.pop_oldest() {
            n += 1;
        }
        n
    }

    /// The seq of the message published with `key`, while history holds it.
    pub fn keyed(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Assigns the next seq and keeps the record `make` builds from it, with
    /// its idempotency key (a key already held is the caller's to check with
    /// [`keyed`](Self::keyed) first).
    pub fn publish(
        &mut self,
        now: Instant,
        key: Option<&str>,
        make: impl FnOnce(u64) -> Record,
    ) -> (u64, Record) {
        self.seq += 1;
        let record = make(self.seq);
        self.published_bytes += record.frame().len() as u64;
        if self.rules.history.keeps() {
            let key: Option<Box<str>> = key.map(Box::from);
            if let Some(key) = &key {
                self.keys.insert(key.clone(), self.seq);
            }
            let entry = Entry { seq: self.seq, at: now, record: record.clone(), key, event: OnceLock::new() };
            let cost = entry.cost();
            self.history.push_back(entry);
            self.history_bytes += cost;
            self.budget.total.fetch_add(cost, Relaxed);
            self.budget.entries.fetch_add(1, Relaxed);
        }
        self.prune(now);
        (self.seq, record)
    }

    /// What a client that last saw `since` (in `epoch`, when it says) missed,
    /// at most the newest `max_replay` messages and `max_bytes` bytes (more
    /// would overflow its outbound queue and get it closed as a slow consumer).
    pub fn recover(&self, since: u64, epoch: Option<&str>, max_replay: usize, max_bytes: usize) -> Recovery {
        self.recover_as(since, epoch, max_replay, max_bytes, |e| Some(e.record.frame().clone()))
    }

    /// [`recover`](Self::recover) as records (for the history reads).
    pub fn recover_records(
        &self,
        since: u64,
        epoch: Option<&str>,
        max_replay: usize,
        max_bytes: usize,
    ) -> Recovery<Record> {
        self.recover_as(since, epoch, max_replay, max_bytes, |e| Some(e.record.clone()))
    }

    /// [`recover`](Self::recover) for an event stream: each message in its
    /// event-stream form, built by `to_event` from the stored record the first
    /// time any stream needs it and kept with the entry, so every stream's
    /// replay shares the same bytes. A record `to_event` cannot convert is
    /// left out. The forms built here count toward the history's bytes (then
    /// pruned as any publish prunes: a room over its bound drops its oldest
    /// messages), so streams cannot make history hold more than its bounds.
    pub fn recover_events(
        &mut self,
        since: u64,
        epoch: Option<&str>,
        max_replay: usize,
        max_bytes: usize,
        to_event: impl Fn(&Record) -> Option<SharedFrame>,
    ) -> Recovery {
        let mut built = 0;
        let recovery = self.recover_as(since, epoch, max_replay, max_bytes, |e| {
            e.event
                .get_or_init(|| {
                    let event = to_event(&e.record);
                    built += event.as_ref().map_or(0, |f| f.len());
                    event
                })
                .clone()
        });
        if built > 0 {
            self.history_bytes += built;
            self.budget.total.fetch_add(built, Relaxed);
            self.prune(Instant::now());
        }
        recovery
    }

    fn recover_as<T>(
        &self,
        since: u64,
        epoch: Option<&str>,
        max_replay: usize,
        max_bytes: usize,
        mut form: impl FnMut(&Entry) -> Option<T>,
    ) -> Recovery<T> {
        // A room without history never recovers, even a client that missed nothing.
        if epoch.is_some_and(|e| e != self.epoch) || since > self.seq || !self.rules.history.keeps() {
            return Recovery { replay: Vec::new(), recovered: false, cut_by_bytes: false };
        }
        let oldest = self.history.front().map_or(self.seq + 1, |e| e.seq);
        let missed = self.history.iter().rev().take_while(|e| e.seq > since);
        let (mut replay, mut bytes, mut cut, mut cut_by_bytes) = (Vec::new(), 0usize, false, false);
        for e in missed {
            if replay.len() == max_replay {
                cut = true;
                break;
            }
            let len = e.record.frame().len();
            if bytes + len > max_bytes {
                (cut, cut_by_bytes) = (true, true);
                break;
            }
            bytes += len;
            if let Some(item) = form(e) {
                replay.push(item);
            }
        }
        replay.reverse();
        Recovery { replay, recovered: oldest <= since + 1 && !cut, cut_by_bytes }
    }

    fn is_idle(&self) -> bool {
        self.members.is_empty() && self.history.is_empty() && self.sse_streams == 0
    }
}

impl Drop for RoomState {
    fn drop(&mut self) {
        while self.pop_oldest() {}
    }
}

/// A stored message in publication order across rooms, for the total budget.
/// Weak, so it keeps neither its room nor its frame alive; stale once its room
/// dropped it.
#[derive(Debug)]
struct Stored {
    room: Weak<Mutex<RoomState>>,
    seq: u64,
    frame: Weak<crate::frame::Frame>,
}

/// Why [`RoomTable::with_room`] did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// The room does not exist (and was not to be created).
    Absent,
    /// Creating it would pass [`Limits::max_rooms`].
    Full,
    /// It was dropped again and again while we looked it up.
    Busy,
}

/// Every room with members or history.
#[derive(Debug)]
pub(crate) struct RoomTable {
    rooms: Mutex<HashMap<String, Arc<Mutex<RoomState>>>>,
    last_sweep: Mutex<Instant>,
    epochs: RandomState,
    epoch_counter: AtomicU64,
    budget: Arc<Budget>,
    /// Every stored message, oldest first (plus stale ones, compacted as it grows).
    order: Mutex<VecDeque<Stored>>,
    /// Each new room's rules come from here.
    namespaces: Arc<Namespaces>,
}

impl RoomTable {
    pub fn new(limits: Limits, namespaces: Arc<Namespaces>) -> Self {
        RoomTable {
            namespaces,
            rooms: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
            epochs: RandomState::new(),
            epoch_counter: AtomicU64::new(0),
            budget: Arc::new(Budget::new(limits)),
            order: Mutex::new(VecDeque::new()),
        }
    }

    /// The history limits and counters every room shares.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// A fresh epoch: random per process (RandomState's keys), unique per room incarnation.
    fn new_epoch(&self) -> String {
        let mut h = self.epochs.build_hasher();
        h.write_u64(self.epoch_counter.fetch_add(1, Relaxed));
        format!("{:016x}", h.finish())
    }

    /// Runs `f` on `room`'s state under its lock, creating the room when
    /// `create` (unless that would pass `max_rooms`). Then, without the lock,
    /// drops the oldest messages of any room while all history is over the
    /// total budget.
    pub fn with_room<T>(
        &self,
        room: &str,
        create: bool,
        f: impl FnOnce(&mut RoomState) -> T,
    ) -> Result<T, Miss> {
        let mut f = Some(f);
        // A room found dead was dropped between the lookup and the lock: look again.
        for attempt in 0..8 {
            let state = {
                let mut rooms = self.rooms.lock();
                match rooms.get(room) {
                    Some(s) => s.clone(),
                    None if !create => return Err(Miss::Absent),
                    None if rooms.len() >= self.budget.limits.max_rooms => {
                        drop(rooms);
                        if attempt == 0 && self.sweep_now() > 0 {
                            continue; // idle rooms went: there may be space now
                        }
                        return Err(Miss::Full);
                    }
                    None => {
                        let rules = self.namespaces.rules(room).clone();
                        let s = Arc::new(Mutex::new(RoomState::new(
                            self.new_epoch(),
                            self.budget.clone(),
                            rules,
                        )));
                        rooms.insert(room.to_owned(), s.clone());
                        s
                    }
                }
            };
            let mut guard = state.lock();
            if guard.dead {
                continue;
            }
            let newest_before = guard.history.back().map(|e| e.seq);
            let out = f.take().map(|f| f(&mut guard));
            self.record_order(&state, &guard, newest_before);
            drop(guard);
            if self.budget.total.load(Relaxed) > self.budget.limits.total_bytes {
                self.enforce_total_budget();
            }
            return out.ok_or(Miss::Busy);
        }
        Err(Miss::Busy)
    }

    /// Appends the messages `room` stored after `newest_before` to the order
    /// across rooms. Called with the room's lock held.
    fn record_order(&self, state: &Arc<Mutex<RoomState>>, room: &RoomState, newest_before: Option<u64>) {
        let is_new = |e: &&Entry| newest_before.is_none_or(|n| e.seq > n);
        let added = room.history.iter().rev().take_while(is_new).count();
        if added == 0 {
            return;
        }
        let mut order = self.order.lock();
        for e in room.history.iter().skip(room.history.len() - added) {
            order.push_back(Stored {
                room: Arc::downgrade(state),
                seq: e.seq,
                frame: Arc::downgrade(e.record.frame()),
            });
        }
        // Messages their rooms dropped by count, age or room bytes stay here
        // until popped; keep them from outnumbering the live ones.
        if order.len() > 2 * self.budget.entries.load(Relaxed) + 1024 {
            order.retain(|s| s.frame.strong_count() > 0 && s.room.strong_count() > 0);
        }
    }

    /// Drops the oldest stored message of any room until all history fits
    /// the total budget. Holds no room's lock when called.
    fn enforce_total_budget(&self) {
        while self.budget.total.load(Relaxed) > self.budget.limits.total_bytes {
            let Some(oldest) = self.order.lock().pop_front() else { break };
            let Some(room) = oldest.room.upgrade() else { continue };
            let evicted = room.lock().evict_through(oldest.seq);
            self.budget.evicted_total_bytes.fetch_add(evicted, Relaxed);
        }
    }

    /// The names of up to `max` rooms (in no particular order), and whether
    /// there were more.
    pub fn names(&self, max: usize) -> (Vec<String>, bool) {
        let rooms = self.rooms.lock();
        (rooms.keys().take(max).cloned().collect(), rooms.len() > max)
    }

    /// Drops `room` now if it has neither members nor history (so its slot
    /// under `max_rooms` is free again at once).
    pub fn remove_if_idle(&self, room: &str) {
        let mut rooms = self.rooms.lock();
        let idle = rooms.get(room).and_then(|s| {
            s.try_lock().map(|mut s| {
                let idle = s.is_idle();
                s.dead |= idle;
                idle
            })
        });
        if idle == Some(true) {
            rooms.remove(room);
        }
    }

    /// Drops rooms with no members whose history has expired (at most once a
    /// second, so callers may call it often).
    pub fn sweep(&self) {
        let now = Instant::now();
        {
            let mut last = self.last_sweep.lock();
            if now.saturating_duration_since(*last) < Duration::from_secs(1) {
                return;
            }
            *last = now;
        }
        self.sweep_now();
    }

    /// Prunes every room and drops the idle ones; how many went.
    fn sweep_now(&self) -> usize {
        let now = Instant::now();
        let mut rooms = self.rooms.lock();
        let before = rooms.len();
        rooms.retain(|_, state| match state.try_lock() {
            Some(mut s) => {
                s.prune(now);
                if s.is_idle() {
                    s.dead = true;
                    false
                } else {
                    true
                }
            }
            None => true,
        });
        before - rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a stored message holds besides its frame's bytes fits in the
    /// overhead it is counted for: the entry in the room's history, its slot
    /// in the eviction order, the frame's own header and the `Arc`'s counts.
    #[test]
    fn entry_overhead_covers_what_a_message_holds_besides_its_frame() {
        let held = std::mem::size_of::<Entry>()
            + std::mem::size_of::<Stored>()
            + std::mem::size_of::<crate::frame::Frame>()
            + 2 * std::mem::size_of::<usize>();
        assert!(held <= ENTRY_OVERHEAD, "a stored message holds {held} bytes besides its frame");
    }

    /// Every room's history bounds, and the limits of all rooms together.
    fn limits(
        count: usize,
        ttl: Duration,
        room_bytes: usize,
        total_bytes: usize,
    ) -> (Arc<Namespaces>, Limits) {
        let config = crate::protocol::ProtocolConfig::default()
            .history_size(count)
            .history_ttl(ttl)
            .history_max_bytes(room_bytes);
        (Arc::new(config.namespace_rules()), Limits { total_bytes, max_rooms: 100 })
    }

    fn room((namespaces, limits): (Arc<Namespaces>, Limits)) -> RoomState {
        RoomState::new("e".into(), Arc::new(Budget::new(limits)), namespaces.rules("r").clone())
    }

    fn table((namespaces, limits): (Arc<Namespaces>, Limits)) -> RoomTable {
        RoomTable::new(limits, namespaces)
    }

    fn text(seq: u64) -> SharedFrame {
        crate::frame::shared(seq.to_string().into_bytes())
    }

    fn rec(seq: u64) -> Record {
        Record::opaque(seq, text(seq))
    }

    fn ten_bytes(seq: u64) -> Record {
        Record::opaque(seq, crate::frame::shared(vec![0; 10]))
    }

    fn frames(r: &Recovery) -> Vec<SharedFrame> {
        r.replay.clone()
    }

    #[test]
    fn recovery_replays_exactly_what_was_missed() {
        let mut r = room(limits(3, Duration::from_secs(60), usize::MAX, usize::MAX));
        let now = Instant::now();
        for _ in 0..5 {
            r.publish(now, None, rec);
        }
        let all = r.recover(2, None, 100, usize::MAX);
        assert!(all.recovered);
        assert_eq!(frames(&all), vec![text(3), text(4), text(5)]);
        let gap = r.recover(1, None, 100, usize::MAX);
        assert!(!gap.recovered);
        assert_eq!(gap.replay.len(), 3);
        assert!(
            r.recover(5, None, 100, usize::MAX).recovered
                && r.recover(5, None, 100, usize::MAX).replay.is_empty()
        );
        assert!(!r.recover(6, None, 100, usize::MAX).recovered);
        assert!(!r.recover(4, Some("other"), 100, usize::MAX).recovered);
        assert!(r.recover(4, Some("e"), 100, usize::MAX).recovered);
        let capped = r.recover(2, None, 2, usize::MAX);
        assert!(!capped.recovered && !capped.cut_by_bytes);
        assert_eq!(frames(&capped), vec![text(4), text(5)]);
        let by_bytes = r.recover(2, None, 100, 1);
        assert!(!by_bytes.recovered && by_bytes.cut_by_bytes);
        assert_eq!(frames(&by_bytes), vec![text(5)]);
    }

    #[test]
    fn a_replay_shares_the_stored_frame() {
        let mut r = room(limits(10, Duration::from_secs(60), usize::MAX, usize::MAX));
        let (_, published) = r.publish(Instant::now(), None, rec);
        let replayed = r.recover(0, None, 10, usize::MAX).replay.remove(0);
        assert!(Arc::ptr_eq(published.frame(), &replayed));
    }

    #[test]
    fn history_expires_by_age() {
        let mut r = room(limits(10, Duration::from_secs(1), usize::MAX, usize::MAX));
        let t0 = Instant::now();
        r.publish(t0, None, rec);
        r.prune(t0 + Duration::from_secs(2));
        assert!(!r.recover(0, None, 100, usize::MAX).recovered);
        assert!(r.is_idle());
        assert_eq!(r.budget.total.load(Relaxed), 0);
    }

    #[test]
    fn history_is_bounded_in_bytes_per_room() {
        let per = 10 + ENTRY_OVERHEAD;
        let mut r = room(limits(100, Duration::from_secs(60), 3 * per, usize::MAX));
        let now = Instant::now();
        for _ in 0..5 {
            r.publish(now, None, ten_bytes);
        }
        assert_eq!(r.history.len(), 3);
        assert_eq!(r.history_bytes, 3 * per);
        assert_eq!(r.budget.total.load(Relaxed), 3 * per);
        assert_eq!(r.budget.evicted_room_bytes.load(Relaxed), 2);
    }

    #[test]
    fn the_total_budget_drops_the_oldest_message_of_any_room() {
        let per = 10 + ENTRY_OVERHEAD;
        let t = table(limits(100, Duration::from_secs(60), usize::MAX, 3 * per));
        let publish = |room: &str| t.with_room(room, true, |r| r.publish(Instant::now(), None, ten_bytes).0);
        assert_eq!(publish("a"), Ok(1));
        assert_eq!(publish("b"), Ok(1));
        assert_eq!(publish("a"), Ok(2));
        assert_eq!(publish("b"), Ok(2)); // a's seq 1 goes
        let a = t.with_room("a", false, |r| r.recover(0, None, 10, usize::MAX)).unwrap();
        assert!(!a.recovered);
        assert_eq!(a.replay.len(), 1);
        let b = t.with_room("b", false, |r| r.recover(0, None, 10, usize::MAX)).unwrap();
        assert!(b.recovered && b.replay.len() == 2);
        assert_eq!(t.budget.total.load(Relaxed), 3 * per);
        assert_eq!(t.budget.evicted_total_bytes.load(Relaxed), 1);
    }

    #[test]
    fn no_room_is_created_past_max_rooms() {
        let (namespaces, limits) = limits(10, Duration::from_secs(60), 1000, 1000);
        let t = RoomTable::new(Limits { max_rooms: 2, ..limits }, namespaces);
        t.with_room("a", true, |r| r.members.insert(1, Value::Null)).unwrap();
        t.with_room("b", true, |r| r.members.insert(1, Value::Null)).unwrap();
        assert_eq!(t.with_room("c", true, |_| ()), Err(Miss::Full));
        assert_eq!(t.with_room("c", false, |_| ()), Err(Miss::Absent));
        t.with_room("b", false, |r| r.members.clear()).unwrap();
        t.remove_if_idle("b");
        assert_eq!(t.with_room("c", true, |_| ()), Ok(()));
    }

    #[test]
    fn epochs_differ_per_incarnation() {
        let t = table(limits(1, Duration::from_secs(1), 1, 1));
        assert_ne!(t.new_epoch(), t.new_epoch());
    }

    /// A stream replay's event forms are history's bytes too: counted in the
    /// room and the total budget, built once, pruned by the room's bound, and
    /// given back in full when their message goes.
    #[test]
    fn event_forms_count_toward_the_history_bounds() {
        let one = text(1).len() + ENTRY_OVERHEAD;
        let mut r = room(limits(100, Duration::from_secs(60), 3 * one + 200, 1 << 20));
        let now = Instant::now();
        for _ in 0..3 {
            r.publish(now, None, rec);
        }
        assert_eq!(r.budget.total.load(Relaxed), 3 * one);
        let event = |_: &Record| Some(crate::frame::shared(vec![b'e'; 100]));
        let replay = r.recover_events(0, None, 100, usize::MAX, event);
        assert_eq!(replay.replay.len(), 3, "the replay is built before the bound is applied");
        // 3 events of 100 bytes on top of 3 messages: over the room's bound
        // by 100, so the oldest message (and its event) goes.
        assert_eq!(r.history.len(), 2);
        assert_eq!(r.history_bytes, 2 * (one + 100));
        assert_eq!(r.budget.total.load(Relaxed), 2 * (one + 100), "the total counts the events");
        assert_eq!(r.budget.take_freed(), one + 100);
        r.recover_events(0, None, 100, usize::MAX, event);
        assert_eq!(r.history_bytes, 2 * (one + 100), "built once: a second replay adds nothing");
        r.evict_through(u64::MAX);
        assert_eq!((r.history_bytes, r.budget.total.load(Relaxed)), (0, 0));
        assert_eq!(r.budget.take_freed(), 2 * (one + 100));
    }

    #[test]
    fn a_key_is_kept_exactly_as_long_as_its_message() {
        let mut r = room(limits(2, Duration::from_secs(60), 10_000, 10_000));
        let now = Instant::now();
        r.publish(now, Some("k1"), rec);
        r.publish(now, None, rec);
        assert_eq!(r.keyed("k1"), Some(1));
        assert_eq!(r.keyed("k2"), None);
        r.publish(now, Some("k3"), rec);
        assert_eq!(r.keyed("k1"), None, "message 1 left the history, and its key with it");
        assert_eq!(r.keyed("k3"), Some(3));
        while r.pop_oldest() {}
        assert!(r.keys.is_empty());
        assert_eq!(r.budget.total.load(Relaxed), 0, "a key's bytes are counted in and out the same");
    }
}
