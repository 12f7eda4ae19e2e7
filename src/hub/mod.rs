//! The room hub thread: owns room membership and the hub's view of open
//! connections, and fans frames out to the connections' queues.
//!
//! Everything that changes or reads rooms arrives as a [`Cmd`] on one bounded
//! channel, so the commands of one caller take effect in the order they were
//! sent. The hub never blocks on a connection: a queue at its bound makes that
//! connection a slow consumer (closed with 1013); it runs no application code,
//! so any thread, including a callback, may wait on its replies.
//!
//! While it keeps up (at most [`KEEPING_UP_BACKLOG`] commands waiting), the hub sends
//! each frame straight to a member's socket when that member has nothing queued
//! (one non-blocking `send`, no thread woken); once commands pile up it stops
//! doing syscalls and only queues, so the writers batch many frames per
//! `writev`. A broadcast to a large room looks again every [`CHECK_EVERY`]
//! members, so it switches mid-room when publishes arrive faster than it sends.

pub mod rooms;

mod fanout;
mod order;

use std::collections::HashMap;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::connection::outbound::QueueLimits;
use crate::connection::ConnShared;
use crate::frame::SharedFrame;
use crate::stats::Stats;
use crate::types::ConnId;
use fanout::{deliver, Half, Helper, SPLIT_AT};
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

/// Members a broadcast serves between two looks at the command queue.
const CHECK_EVERY: usize = 32;
/// Commands that may wait while the hub still counts as keeping up. Not zero:
/// a publish arrives as a broadcast with its ack right behind it, so even a
/// hub with nothing else to do nearly always sees one command waiting.
const KEEPING_UP_BACKLOG: usize = 4;

pub(crate) struct Hub {
    conns: HashMap<ConnId, Arc<ConnShared>>,
    rooms: Rooms,
    limits: QueueLimits,
    stats: Arc<Stats>,
    helper: Option<Helper>,
}

impl Hub {
    pub(crate) fn new(limits: QueueLimits, stats: Arc<Stats>) -> Self {
        Hub { conns: HashMap::new(), rooms: Rooms::default(), limits, stats, helper: None }
    }

    /// Starts the fan-out helper thread (before the server counts as started,
    /// so its thread is there from the first moment).
    pub(crate) fn start_helper(&mut self) {
        match Helper::start(self.limits, self.stats.clone()) {
            Ok(helper) => self.helper = Some(helper),
            Err(e) => log::warn!("no fan-out helper thread ({e}); the hub fans out alone"),
        }
    }

    /// Serves commands until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Ticketed>) {
        while let Ok(Ticketed { cmd, done }) = rx.recv() {
            if let Cmd::Shutdown = cmd {
                break;
            }
            self.handle(cmd, &|| rx.len() <= KEEPING_UP_BACKLOG);
            if let Some(done) = done {
                done.fetch_add(1, Release);
            }
        }
    }

    /// Carries out one command; `keeping_up` tells whether sending directly is
    /// affordable right now.
    fn handle(&mut self, cmd: Cmd, keeping_up: &dyn Fn() -> bool) {
        match cmd {
            Cmd::Register(conn) => {
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
            Cmd::Send(id, frame) => {
                if let Some(conn) = self.conns.get(&id) {
                    deliver(conn, frame, keeping_up(), self.limits, &self.stats);
                }
            }
            Cmd::Broadcast { room, frame, except } => {
                let mut direct = keeping_up();
                let members = self.rooms.members(&room);
                let mut mine = members;
                let mut helped = false;
                if let (true, true, Some(helper)) = (direct, members.len() > SPLIT_AT, &self.helper) {
                    let (first, second) = members.split_at(members.len() / 2);
                    let others: Vec<_> = second
                        .iter()
                        .filter(|&&id| Some(id) != except)
                        .filter_map(|id| self.conns.get(id).cloned())
                        .collect();
                    if helper.jobs.send(Half { frame: frame.clone(), members: others }).is_ok() {
                        mine = first;
                        helped = true;
                    }
                }
                for (i, &id) in mine.iter().enumerate() {
                    if direct && i % CHECK_EVERY == CHECK_EVERY - 1 {
                        direct = keeping_up();
                    }
                    if Some(id) != except {
                        if let Some(conn) = self.conns.get(&id) {
                            deliver(conn, frame.clone(), direct, self.limits, &self.stats);
                        }
                    }
                }
                if helped {
                    if let Some(helper) = &self.helper {
                        let _ = helper.done.recv();
                    }
                }
            }
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{outbound::Out, test_support::loopback_conn};
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    fn limits(frames: usize) -> QueueLimits {
        QueueLimits { frames, bytes: usize::MAX }
    }

    impl Hub {
        /// As when commands are waiting: everything goes through the queues.
        fn handle_queued(&mut self, cmd: Cmd) {
            self.handle(cmd, &|| false);
        }
    }

    #[test]
    fn a_large_room_is_split_with_the_helper_and_every_member_gets_every_frame_in_order() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(16), stats.clone());
        hub.helper = Some(Helper::start(limits(16), stats.clone()).unwrap());
        let members = 2 * SPLIT_AT + 11;
        let conns: Vec<_> = (1..=members as ConnId).map(loopback_conn).collect();
        for (c, _) in &conns {
            hub.handle_queued(Cmd::Register(c.clone()));
            hub.handle_queued(Cmd::Join(c.id, "big".into()));
        }
        let frames: Vec<SharedFrame> = (0..3u8)
            .map(|i| crate::frame::shared(crate::frame::encode(crate::frame::OP_BINARY, &[i; 10])))
            .collect();
        for f in &frames {
            hub.handle(Cmd::Broadcast { room: "big".into(), frame: f.clone(), except: Some(5) }, &|| true);
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

    #[test]
    fn an_idle_member_gets_frames_straight_from_the_hub_and_a_backlogged_one_through_its_queue() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(16), stats.clone());
        let (conn, mut peer) = loopback_conn(1);
        let rx = conn.take_receiver().unwrap();
        hub.handle_queued(Cmd::Register(conn.clone()));
        hub.handle_queued(Cmd::Join(1, "r".into()));
        let frame = |b: &[u8]| -> SharedFrame {
            crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, b))
        };

        // Keeping up, nothing queued: on the wire at once, no queue entry.
        hub.handle(Cmd::Broadcast { room: "r".into(), frame: frame(b"one"), except: None }, &|| true);
        let mut got = vec![0u8; 5];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(got, *frame(b"one"));
        assert!(rx.try_recv().is_err());
        assert_eq!(stats.direct_sends.load(Relaxed), 1);

        // Falling behind: queued. Then, though keeping up again, the next frame
        // must queue behind it (order), not overtake it on the socket.
        hub.handle_queued(Cmd::Send(1, frame(b"two")));
        hub.handle(Cmd::Send(1, frame(b"three")), &|| true);
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
        let mut hub = Hub::new(limits(2), stats.clone());
        let conns: Vec<_> = (1..=3).map(loopback_conn).collect();
        let receivers: Vec<_> = conns.iter().map(|(c, _)| c.take_receiver().unwrap()).collect();
        for (c, _) in &conns {
            hub.handle_queued(Cmd::Register(c.clone()));
            hub.handle_queued(Cmd::Join(c.id, "r".into()));
        }
        let frame: SharedFrame = crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, b"hi"));
        hub.handle_queued(Cmd::Broadcast { room: "r".into(), frame: frame.clone(), except: Some(3) });
        for rx in &receivers[..2] {
            match rx.try_recv().unwrap() {
                Out::Frame(f) => assert!(Arc::ptr_eq(&f, &frame), "the same bytes, not a copy"),
                other => panic!("{other:?}"),
            }
        }
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
            hub.handle_queued(Cmd::Broadcast { room: "r".into(), frame: frame.clone(), except: None });
            drain(0);
            drain(2);
        }
        assert_eq!(stats.dropped_slow_consumer.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(!conns[0].0.is_closing() && conns[1].0.is_closing() && !conns[2].0.is_closing());
        assert!(conns[1].0.discards());
    }
}
