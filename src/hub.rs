//! The room hub thread: owns room membership and the hub's view of open
//! connections, and fans frames out to the connections' queues.
//!
//! Everything that changes or reads rooms arrives as a [`Cmd`] on one bounded
//! channel, so the commands of one caller take effect in the order they were
//! sent. The hub never blocks on a connection: a queue at its bound makes that
//! connection a slow consumer (closed with 1013); it runs no application code,
//! so any thread, including a callback, may wait on its replies.

use std::collections::HashMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::connection::{ConnShared, PushError};
use crate::frame::SharedFrame;
use crate::handler::ConnId;
use crate::rooms::Rooms;
use crate::stats::Stats;

/// A request to the hub.
pub(crate) enum Cmd {
    Register(Arc<ConnShared>),
    Unregister(ConnId),
    Join(ConnId, String),
    Leave(ConnId, String),
    Send(ConnId, SharedFrame),
    Broadcast { room: String, frame: SharedFrame, except: Option<ConnId> },
    Close(ConnId, u16, String),
    /// Close every registered connection (the graceful stop).
    CloseAll(u16, String),
    RoomSize(String, Sender<usize>),
    RoomsOf(ConnId, Sender<Vec<String>>),
    RoomCount(Sender<usize>),
    Shutdown,
}

pub(crate) struct Hub {
    conns: HashMap<ConnId, Arc<ConnShared>>,
    rooms: Rooms,
    queue_bound: usize,
    stats: Arc<Stats>,
}

impl Hub {
    pub(crate) fn new(queue_bound: usize, stats: Arc<Stats>) -> Self {
        Hub { conns: HashMap::new(), rooms: Rooms::default(), queue_bound, stats }
    }

    /// Serves commands until `Shutdown` or until every sender is gone.
    pub(crate) fn run(mut self, rx: Receiver<Cmd>) {
        while let Ok(cmd) = rx.recv() {
            if let Cmd::Shutdown = cmd {
                break;
            }
            self.handle(cmd);
        }
    }

    fn handle(&mut self, cmd: Cmd) {
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
                    self.push(conn, frame);
                }
            }
            Cmd::Broadcast { room, frame, except } => {
                for &id in self.rooms.members(&room) {
                    if Some(id) != except {
                        if let Some(conn) = self.conns.get(&id) {
                            self.push(conn, frame.clone());
                        }
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

    fn push(&self, conn: &ConnShared, frame: SharedFrame) {
        if let Err(PushError::Full) = conn.push_frame(frame, self.queue_bound, &self.stats) {
            log::warn!(
                "conn {} ({}): outbound queue full at {} frames; closing it with 1013",
                conn.id,
                conn.remote,
                self.queue_bound
            );
            Stats::add(&self.stats.dropped_slow_consumer, 1);
            conn.close_slow_consumer();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{test_support::loopback_conn, Out};

    #[test]
    fn a_broadcast_shares_one_frame_and_a_full_queue_drops_only_that_member() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(2, stats.clone());
        let conns: Vec<_> = (1..=3).map(loopback_conn).collect();
        let receivers: Vec<_> = conns.iter().map(|(c, _)| c.take_receiver().unwrap()).collect();
        for (c, _) in &conns {
            hub.handle(Cmd::Register(c.clone()));
            hub.handle(Cmd::Join(c.id, "r".into()));
        }
        let frame: SharedFrame = Arc::new(crate::frame::encode(crate::frame::OP_TEXT, b"hi"));
        hub.handle(Cmd::Broadcast { room: "r".into(), frame: frame.clone(), except: Some(3) });
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
            while let Ok(Out::Frame(_)) = receivers[i].try_recv() {
                conns[i].0.frame_dequeued();
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
