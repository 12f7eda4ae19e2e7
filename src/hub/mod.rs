//! The room hub thread: owns room membership and the hub's view of open
//! connections, and fans frames out to the connections' queues.
//!
//! Everything that changes or reads rooms arrives as a [`Cmd`] on one bounded
//! channel, so the commands of one caller take effect in the order they were
//! sent. The hub never blocks on a connection: a queue at its bound makes that
//! connection a slow consumer (closed with 1013); it runs no application code,
//! so any thread, including a callback, may wait on its replies.
//!
//! The hub works in rounds, corked: it takes the command that woke it and
//! whatever else is already waiting (up to [`ROUND_COMMANDS`]), gathers every
//! frame the sends and broadcasts among them have for each member, then hands
//! each member its frames at once (`hub/fanout.rs`): one non-blocking `writev`
//! straight to its socket when it has nothing queued, no thread woken, else
//! its queue. Any other command ends the round there: the frames gathered so
//! far go out first, so every command still takes effect in order. A thread's
//! commands count as carried out ([`order`]) once their round has gone out.
//!
//! Between rounds, and when no command comes, the hub sends the heartbeat
//! pings that are due ([`heartbeat`]).

pub mod rooms;

mod fanout;
mod heartbeat;
mod order;

use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::connection::outbound::QueueLimits;
use crate::connection::ConnShared;
use crate::frame::SharedFrame;
use crate::stats::Stats;
use crate::types::ConnId;
use fanout::{deliver_all, Cork, Half, Helper, SPLIT_AT};
use heartbeat::Heartbeat;
pub(crate) use order::{nothing_pending, submit, submit_untracked, Ticketed};
use rooms::Rooms;

/// A request to the hub.
pub(crate) enum Cmd {
    Register(Arc<ConnShared>),
    Unregister(ConnId),
    Join(ConnId, String),
    Leave(ConnId, String),
    Send(ConnId, SharedFrame),
    Broadcast {
        room: String,
        frame: SharedFrame,
        except: Option<ConnId>,
    },
    Close(ConnId, u16, String),
    /// Close every registered connection (the graceful stop).
    CloseAll(u16, String),
    RoomSize(String, Sender<usize>),
    RoomsOf(ConnId, Sender<Vec<String>>),
    RoomCount(Sender<usize>),
    Shutdown,
}

/// Sends and broadcasts gathered into one round at most: bounds what a round
/// holds and how long the first command of a round waits for its last.
const ROUND_COMMANDS: usize = 64;

pub(crate) struct Hub {
    conns: HashMap<ConnId, Arc<ConnShared>>,
    rooms: Rooms,
    limits: QueueLimits,
    stats: Arc<Stats>,
    helper: Option<Helper>,
    /// The frames of the current round, per member.
    cork: Cork,
    /// When each connection's next ping is due.
    heartbeat: Heartbeat,
}

impl Hub {
    /// `heartbeat`: how often every open connection gets a ping.
    pub(crate) fn new(limits: QueueLimits, stats: Arc<Stats>, heartbeat: std::time::Duration) -> Self {
        Hub {
            conns: HashMap::new(),
            rooms: Rooms::default(),
            limits,
            stats,
            helper: None,
            cork: Cork::default(),
            heartbeat: Heartbeat::new(heartbeat),
        }
    }

    /// Starts the fan-out helper thread (before the server counts as started,
    /// so its thread is there from the first moment).
    pub(crate) fn start_helper(&mut self) {
        match Helper::start(self.limits, self.stats.clone()) {
            Ok(helper) => self.helper = Some(helper),
            Err(e) => log::warn!("no fan-out helper thread ({e}); the hub fans out alone"),
        }
    }

    /// Serves commands, a round at a time, until `Shutdown` or until every
    /// sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Ticketed>) {
        let mut gathered = Vec::with_capacity(ROUND_COMMANDS);
        loop {
            let got = match self.heartbeat.next() {
                Some(at) => rx.recv_deadline(at),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            let first = match got {
                Ok(first) => first,
                Err(RecvTimeoutError::Timeout) => {
                    self.beat();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut next = Some(first);
            while let Some((cmd, done)) = next.take().map(Ticketed::into_parts) {
                if let Cmd::Shutdown = cmd {
                    self.end_round(&mut gathered);
                    if let Some(done) = done {
                        done.fetch_add(1, Release);
                    }
                    // What waits behind it is dropped with `rx`, each
                    // command counted as done (see `Ticketed`).
                    return;
                }
                if self.gather(cmd) {
                    gathered.push(done);
                    if gathered.len() < ROUND_COMMANDS {
                        next = rx.try_recv().ok();
                    }
                } else {
                    // Not a frame: what was gathered goes out before it takes effect.
                    self.end_round(&mut gathered);
                    if let Some(done) = done {
                        done.fetch_add(1, Release);
                    }
                    next = rx.try_recv().ok();
                }
            }
            self.end_round(&mut gathered);
            self.beat();
        }
    }

    /// Sends the heartbeats that are due to the connections still registered.
    fn beat(&mut self) {
        let (conns, stats) = (&self.conns, &self.stats);
        self.heartbeat.run_due(std::time::Instant::now(), |id| match conns.get(&id) {
            Some(conn) => {
                conn.send_heartbeat(stats);
                true
            }
            None => false,
        });
    }

    /// Sends the round's frames, then counts its commands as carried out.
    fn end_round(&mut self, gathered: &mut Vec<Option<Arc<std::sync::atomic::AtomicU64>>>) {
        self.flush();
        for done in gathered.drain(..).flatten() {
            done.fetch_add(1, Release);
        }
    }

    /// Hands every member of the round its frames, half of a large round's
    /// members on the helper thread.
    fn flush(&mut self) {
        if self.cork.is_empty() {
            return;
        }
        let mut members = self.cork.take();
        let mut helped = false;
        if let (true, Some(helper)) = (members.len() > SPLIT_AT, &self.helper) {
            let second = members.split_off(members.len() / 2);
            match helper.jobs.send(Half { members: second }) {
                Ok(()) => helped = true,
                Err(crossbeam_channel::SendError(half)) => members.extend(half.members),
            }
        }
        for (conn, frames) in members {
            deliver_all(&conn, frames, self.limits, &self.stats);
        }
        if helped {
            if let Some(helper) = &self.helper {
                let _ = helper.done.recv();
            }
        }
    }

    /// Adds the frames of a send or broadcast to the round (true); carries
    /// out any other command at once (false), after sending the round.
    fn gather(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Send(id, frame) => {
                if let Some(conn) = self.conns.get(&id) {
                    self.cork.next_command();
                    self.cork.add(conn, frame);
                }
                return true;
            }
            Cmd::Broadcast { room, frame, except } => {
                self.cork.next_command();
                for &id in self.rooms.members(&room) {
                    if Some(id) != except {
                        if let Some(conn) = self.conns.get(&id) {
                            self.cork.add(conn, frame.clone());
                        }
                    }
                }
                return true;
            }
            _ => self.flush(),
        }
        match cmd {
            Cmd::Register(conn) => {
                self.heartbeat.add(conn.id, std::time::Instant::now());
                self.conns.insert(conn.id, conn);
            }
            Cmd::Unregister(id) => {
                self.rooms.leave_all(id);
                self.conns.remove(&id);
            }
            Cmd::Join(id, room) => {
                if self.conns.contains_key(&id) {
                    self.rooms.join(id, &room);
                }
            }
            Cmd::Leave(id, room) => {
                self.rooms.leave(id, &room);
            }
            // Gathered above: never here.
            Cmd::Send(..) | Cmd::Broadcast { .. } => {}
            Cmd::Close(id, code, reason) => {
                if let Some(conn) = self.conns.get(&id) {
                    conn.push_close(code, &reason);
                }
            }
            Cmd::CloseAll(code, reason) => {
                for conn in self.conns.values() {
                    conn.push_close(code, &reason);
                }
            }
            Cmd::RoomSize(room, reply) => {
                let _ = reply.send(self.rooms.members(&room).len());
            }
            Cmd::RoomsOf(id, reply) => {
                let _ = reply.send(self.rooms.rooms_of(id));
            }
            Cmd::RoomCount(reply) => {
                let _ = reply.send(self.rooms.count());
            }
            Cmd::Shutdown => {}
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{outbound::Out, test_support::loopback_conn};
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    const HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(30);

    fn limits(frames: usize) -> QueueLimits {
        QueueLimits { frames, bytes: usize::MAX }
    }

    impl Hub {
        /// Carries out one command as a round of its own.
        fn handle(&mut self, cmd: Cmd) {
            if self.gather(cmd) {
                self.flush();
            }
        }
    }

    #[test]
    fn a_large_room_is_split_with_the_helper_and_every_member_gets_every_frame_in_order() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(16), stats.clone(), HEARTBEAT);
        hub.helper = Some(Helper::start(limits(16), stats.clone()).unwrap());
        let members = 2 * SPLIT_AT + 11;
        let conns: Vec<_> = (1..=members as ConnId).map(loopback_conn).collect();
        for (c, _) in &conns {
            hub.handle(Cmd::Register(c.clone()));
            hub.handle(Cmd::Join(c.id, "big".into()));
        }
        let frames: Vec<SharedFrame> = (0..3u8)
            .map(|i| crate::frame::shared(crate::frame::encode(crate::frame::OP_BINARY, &[i; 10])))
            .collect();
        for f in &frames {
            hub.handle(Cmd::Broadcast { room: "big".into(), frame: f.clone(), except: Some(5) });
        }
        let want: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        for (c, peer) in conns.iter().filter(|(c, _)| c.id != 5) {
            let mut got = vec![0u8; want.len()];
            let mut peer = peer.try_clone().unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            peer.read_exact(&mut got).unwrap();
            assert_eq!(got, want, "member {}", c.id);
        }
        assert_eq!(stats.direct_sends.load(Relaxed), 3 * (members as u64 - 1));
        drop(hub); // stops and joins the helper
    }

    /// Runs a hub over `cmds` (then Shutdown) on this thread, the commands
    /// all waiting before it starts, as when publishes arrive faster than it
    /// sends: each stretch of sends and broadcasts is one round.
    fn run_waiting(hub: Hub, cmds: Vec<Cmd>) {
        let (tx, rx) = crossbeam_channel::bounded(cmds.len() + 1);
        for cmd in cmds {
            submit(&tx, cmd).ok().unwrap();
        }
        submit_untracked(&tx, Cmd::Shutdown);
        assert!(!nothing_pending());
        hub.run(rx);
        assert!(nothing_pending(), "every command counts as carried out once its round went out");
    }

    /// The thread that stops a server sends the hub its `Shutdown`, and
    /// other threads may have commands still waiting behind it: none of them
    /// will ever take effect, and none may count as pending for ever (the
    /// thread could never again send straight to a socket, to any server).
    #[test]
    fn commands_a_hub_never_carries_out_do_not_stay_pending() {
        let hub = Hub::new(limits(4), Arc::new(Stats::default()), HEARTBEAT);
        let (tx, rx) = crossbeam_channel::unbounded();
        submit(&tx, Cmd::RoomCount(crossbeam_channel::bounded(1).0)).ok().unwrap();
        submit(&tx, Cmd::Shutdown).ok().unwrap();
        // Behind the Shutdown: dropped with the hub's end of the channel.
        submit(&tx, Cmd::Leave(1, "r".into())).ok().unwrap();
        assert!(!nothing_pending());
        hub.run(rx);
        assert!(nothing_pending(), "the Shutdown and what waited behind it no longer count");
        // The channel is closed now: a command sent to it fails, and is not pending either.
        assert!(submit(&tx, Cmd::Leave(1, "r".into())).is_err());
        assert!(nothing_pending());
    }

    #[test]
    fn waiting_broadcasts_go_out_corked_straight_to_each_member_in_command_order() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(4), stats.clone(), HEARTBEAT);
        hub.start_helper();
        // More members than SPLIT_AT: the helper takes half of each round.
        let members = SPLIT_AT as ConnId + 40;
        let conns: Vec<_> = (1..=members).map(loopback_conn).collect();
        let late = loopback_conn(members + 1);
        let receivers: Vec<_> = conns.iter().map(|(c, _)| c.take_receiver().unwrap()).collect();
        let late_rx = late.0.take_receiver().unwrap();
        let mut cmds = vec![Cmd::Register(late.0.clone())];
        for (c, _) in &conns {
            cmds.push(Cmd::Register(c.clone()));
            cmds.push(Cmd::Join(c.id, "r".into()));
        }
        let frame = |i: u8| crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b'a' + i; 3]));
        // Round one: ten broadcasts and a send to member 1 between them; far
        // more than each queue's bound of 4, so any frame queued would close
        // its member as a slow consumer. Then a join ends the round: the late
        // member gets only round two.
        for i in 0..10 {
            cmds.push(Cmd::Broadcast { room: "r".into(), frame: frame(i), except: Some(2) });
            if i == 4 {
                cmds.push(Cmd::Send(1, frame(20)));
            }
        }
        cmds.push(Cmd::Join(late.0.id, "r".into()));
        for i in 10..14 {
            cmds.push(Cmd::Broadcast { room: "r".into(), frame: frame(i), except: None });
        }
        run_waiting(hub, cmds);

        let expect = |id: ConnId| -> Vec<u8> {
            let mut v = Vec::new();
            for i in 0..10 {
                if id != 2 {
                    v.extend_from_slice(&frame(i));
                }
                if i == 4 && id == 1 {
                    v.extend_from_slice(&frame(20));
                }
            }
            (10..14).for_each(|i| v.extend_from_slice(&frame(i)));
            v
        };
        for (c, peer) in &conns {
            let want = expect(c.id);
            let mut got = vec![0u8; want.len()];
            let mut peer = peer.try_clone().unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            peer.read_exact(&mut got).unwrap();
            assert_eq!(got, want, "member {}", c.id);
            assert!(!c.is_closing(), "member {} closed", c.id);
        }
        let want: Vec<u8> = (10..14).flat_map(|i| frame(i).to_vec()).collect();
        let mut got = vec![0u8; want.len()];
        late.1.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        (&late.1).read_exact(&mut got).unwrap();
        assert_eq!(got, want, "the late member: only what came after its join");
        assert!(receivers.iter().chain([&late_rx]).all(|rx| rx.is_empty()), "nothing went through a queue");
        let frames = (members - 1) * 10 + 1 + (members + 1) * 4;
        assert_eq!(stats.direct_sends.load(Relaxed), frames);
        assert_eq!(stats.dropped_slow_consumer.load(Relaxed), 0);
    }

    #[test]
    fn an_idle_member_gets_frames_straight_from_the_hub_and_a_backlogged_one_through_its_queue() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(16), stats.clone(), HEARTBEAT);
        let (conn, mut peer) = loopback_conn(1);
        let rx = conn.take_receiver().unwrap();
        hub.handle(Cmd::Register(conn.clone()));
        hub.handle(Cmd::Join(1, "r".into()));
        let frame = |b: &[u8]| -> SharedFrame {
            crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, b))
        };

        // Nothing queued: on the wire at once, no queue entry.
        hub.handle(Cmd::Broadcast { room: "r".into(), frame: frame(b"one"), except: None });
        let mut got = vec![0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, *frame(b"one"));
        assert!(rx.try_recv().is_err());
        assert_eq!(stats.direct_sends.load(Relaxed), 1);

        // Something queued (its writer is behind): the next frame must queue
        // behind it (order), not overtake it on the socket.
        conn.push_frame(frame(b"two"), limits(16), &stats).unwrap();
        hub.handle(Cmd::Send(1, frame(b"three")));
        assert_eq!(stats.direct_sends.load(Relaxed), 1);
        assert_eq!(conn.queue_depth(), 2);
        for want in [b"two".as_slice(), b"three"] {
            match rx.try_recv().unwrap() {
                Out::Frame(f) => assert_eq!(*f, *frame(want)),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_broadcast_shares_one_frame_and_a_full_queue_drops_only_that_member() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(2), stats.clone(), HEARTBEAT);
        let conns: Vec<_> = (1..=3).map(loopback_conn).collect();
        let receivers: Vec<_> = conns.iter().map(|(c, _)| c.take_receiver().unwrap()).collect();
        for (c, _) in &conns {
            hub.handle(Cmd::Register(c.clone()));
            hub.handle(Cmd::Join(c.id, "r".into()));
            // A pong waits in each queue (writers behind): frames queue behind it.
            c.push_control(vec![0x8a, 0]);
        }
        let frame: SharedFrame = crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, b"hi"));
        hub.handle(Cmd::Broadcast { room: "r".into(), frame: frame.clone(), except: Some(3) });
        for rx in &receivers[..2] {
            assert!(matches!(rx.try_recv().unwrap(), Out::Control(_)), "the pong first");
            match rx.try_recv().unwrap() {
                Out::Frame(f) => assert!(Arc::ptr_eq(&f, &frame), "the same bytes, not a copy"),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(receivers[2].try_recv().unwrap(), Out::Control(_)));
        assert!(receivers[2].try_recv().is_err(), "the excepted member got nothing");

        // Members 1 and 3 drain their queues, member 2 does not: with a bound of
        // 2 the third broadcast finds its queue full and closes it, and only it.
        let drain = |i: usize| {
            while let Ok(item) = receivers[i].try_recv() {
                conns[i].0.done(&item);
            }
        };
        drain(0);
        for _ in 0..3 {
            hub.handle(Cmd::Broadcast { room: "r".into(), frame: frame.clone(), except: None });
            drain(0);
            drain(2);
        }
        assert_eq!(stats.dropped_slow_consumer.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(!conns[0].0.is_closing() && conns[1].0.is_closing() && !conns[2].0.is_closing());
        assert!(conns[1].0.discards());
    }
}
