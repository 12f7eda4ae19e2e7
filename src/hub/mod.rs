//! The room hub thread: owns room membership and the hub's view of open
//! connections, and fans frames out to the connections' queues.
//!
//! Everything that changes or reads rooms arrives as a [`Cmd`] on one of two
//! bounded lanes (`order.rs`): sends, broadcasts, joins, leaves, closes and
//! queries on the ordered lane; the control commands (the stop's close and
//! the hub's shutdown, a connection's registration and end) on the control
//! lane, which the hub empties first, so a stop is not stuck behind a flood
//! of broadcasts. Either way the commands of one caller take effect in the
//! order they were sent. The hub never blocks on a connection: a queue at its bound makes that
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

use std::sync::atomic::Ordering::*;
use std::sync::Arc;

use crossbeam_channel::{Select, Sender, TryRecvError};

use crate::conn_map::IdMap;
use crate::connection::outbound::QueueLimits;
use crate::connection::ConnShared;
use crate::frame::SharedFrame;
use crate::stats::Stats;
use crate::types::ConnId;
use fanout::{Cork, Helper, MOST_COMMANDS};
use heartbeat::{Beat, Heartbeat};
use order::Ticketed;
pub(crate) use order::{lanes, nothing_pending, sent_so_far, submit, submit_untracked, HubRx, HubTx};
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

impl Cmd {
    /// Takes the control lane when its thread has nothing pending
    /// (`order.rs`): the stop's close and the shutdown, a connection's
    /// registration and end. Sends and broadcasts, and joins and leaves
    /// (they decide who gets a broadcast, and a join must not overtake a
    /// broadcast whose message its room's history already holds), keep
    /// their place on the ordered lane; so do a connection's close and the
    /// queries: a close or a query one thread makes after another thread's
    /// broadcast or join returned must see it take effect first (a close
    /// comes "after the frames already queued", a query counts the join),
    /// and only the ordered lane keeps that order between threads.
    pub(crate) fn is_control(&self) -> bool {
        match self {
            Cmd::Register(_) | Cmd::Unregister(_) | Cmd::CloseAll(..) | Cmd::Shutdown => true,
            Cmd::Join(..)
            | Cmd::Leave(..)
            | Cmd::Send(..)
            | Cmd::Broadcast { .. }
            | Cmd::Close(..)
            | Cmd::RoomSize(..)
            | Cmd::RoomsOf(..)
            | Cmd::RoomCount(_) => false,
        }
    }
}

/// A command's counter, bumped once it has taken effect (`order.rs`).
type Done = Option<Arc<std::sync::atomic::AtomicU64>>;

/// Sends and broadcasts gathered into one round at most: bounds what a round
/// holds and how long the first command of a round waits for its last. The
/// cork holds as many (a round past it would go out in two).
const ROUND_COMMANDS: usize = MOST_COMMANDS;

pub(crate) struct Hub {
    conns: IdMap<Arc<ConnShared>>,
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
            conns: IdMap::default(),
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
    pub(crate) fn run(mut self, rx: HubRx) {
        let mut gathered = Vec::with_capacity(ROUND_COMMANDS);
        loop {
            let mut ready = Select::new();
            ready.recv(&rx.control);
            ready.recv(&rx.ordered);
            let woken = match self.heartbeat.next() {
                Some(at) => ready.ready_deadline(at).is_ok(),
                None => {
                    ready.ready();
                    true
                }
            };
            if woken && !self.round(&rx, &mut gathered) {
                return;
            }
            self.beat();
        }
    }

    /// Carries out what waits on the lanes, a round: every control command
    /// as soon as it is seen, and up to [`ROUND_COMMANDS`] sends and
    /// broadcasts gathered from the ordered lane. False at `Shutdown`, or
    /// once every sender is gone and nothing is left.
    fn round(&mut self, rx: &HubRx, gathered: &mut Vec<Done>) -> bool {
        loop {
            let next = match gathered.len() < ROUND_COMMANDS {
                true => rx.ordered.try_recv(),
                false => Err(TryRecvError::Empty),
            };
            // Before the ordered command is carried out: a control command
            // its thread sent before it is on the control lane by now.
            let control_gone = loop {
                match rx.control.try_recv() {
                    Ok(cmd) => {
                        if !self.carry_out(cmd, gathered) {
                            return false;
                        }
                    }
                    Err(TryRecvError::Empty) => break false,
                    Err(TryRecvError::Disconnected) => break true,
                }
            };
            match next {
                Ok(cmd) => {
                    if !self.carry_out(cmd, gathered) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    if control_gone {
                        self.end_round(gathered);
                        return false;
                    }
                    break;
                }
            }
        }
        self.end_round(gathered);
        true
    }

    /// One command: a send or broadcast joins the round; any other ends the
    /// round (what was gathered goes out first) and takes effect. False at
    /// `Shutdown`: what still waits on the lanes is dropped with them, each
    /// command counted as done (see `Ticketed`).
    fn carry_out(&mut self, cmd: Ticketed, gathered: &mut Vec<Done>) -> bool {
        let (cmd, done) = cmd.into_parts();
        let shutdown = matches!(cmd, Cmd::Shutdown);
        if !shutdown && self.gather(cmd) {
            gathered.push(done);
            return true;
        }
        self.end_round(gathered);
        if let Some(done) = done {
            done.fetch_add(1, Release);
        }
        !shutdown
    }

    /// Sends the heartbeats that are due to the connections still registered.
    fn beat(&mut self) {
        let (conns, stats) = (&self.conns, &self.stats);
        self.heartbeat.run_due(std::time::Instant::now(), |id, may_defer| match conns.get(&id) {
            Some(conn) if conn.send_heartbeat(stats, may_defer) => Beat::Done,
            Some(_) => Beat::Busy,
            None => Beat::Gone,
        });
    }

    /// Sends the round's frames, then counts its commands as carried out.
    fn end_round(&mut self, gathered: &mut Vec<Done>) {
        self.flush();
        for done in gathered.drain(..).flatten() {
            done.fetch_add(1, Release);
        }
    }

    /// Hands every member of the round its frames, half of a large round's
    /// members on the helper thread.
    fn flush(&mut self) {
        if !self.cork.is_empty() {
            self.cork.flush(self.helper.as_ref(), self.limits, &self.stats);
        }
    }

    /// Adds the frames of a send or broadcast to the round (true); carries
    /// out any other command at once (false), after sending the round.
    fn gather(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Send(id, frame) => {
                if self.cork.is_full() {
                    self.flush();
                }
                if let Some(conn) = self.conns.get(&id) {
                    self.cork.next_command(frame);
                    self.cork.add(conn);
                }
                return true;
            }
            Cmd::Broadcast { room, frame, except } => {
                if self.cork.is_full() {
                    self.flush();
                }
                self.cork.next_command(frame);
                for &id in self.rooms.members(&room) {
                    if Some(id) != except {
                        if let Some(conn) = self.conns.get(&id) {
                            self.cork.add(conn);
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
    use crate::config::Config;
    use crate::connection::outbound::{Out, WriterHome};
    use crate::connection::test_support::loopback_conn;
    use crate::connection::writer::{starter, WriterEnv};
    use fanout::SPLIT_AT;
    use std::collections::HashMap;
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

    /// Runs a hub over `cmds` on this thread until they are all carried out
    /// and the lanes' senders are gone, the commands all waiting before it
    /// starts, as when publishes arrive faster than it sends: each stretch
    /// of sends and broadcasts is one round.
    fn run_waiting(hub: Hub, cmds: Vec<Cmd>) {
        let (tx, rx) = lanes(cmds.len() + 1);
        for cmd in cmds {
            submit(&tx, cmd).ok().unwrap();
        }
        drop(tx);
        assert!(!nothing_pending());
        hub.run(rx);
        assert!(nothing_pending(), "every command counts as carried out once its round went out");
    }

    /// A command sent while the hub sleeps (or just as it goes to sleep)
    /// wakes it, every time.
    #[test]
    fn every_command_sent_while_the_hub_sleeps_wakes_it() {
        let hub = Hub::new(limits(4), Arc::new(Stats::default()), HEARTBEAT);
        let (tx, rx) = lanes(8);
        let running = std::thread::spawn(move || hub.run(rx));
        for i in 0..2000 {
            let (reply, count) = crossbeam_channel::bounded(1);
            submit(&tx, Cmd::RoomCount(reply)).ok().unwrap();
            let answer = count.recv_timeout(std::time::Duration::from_secs(10));
            assert_eq!(answer, Ok(0), "query {i} not answered: the hub missed its wake-up");
            if i % 100 == 0 {
                // Let it fall asleep properly now and then.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        drop(tx);
        running.join().unwrap();
    }

    /// Its last sender going ends a sleeping hub at once, not at its next
    /// heartbeat: nothing could wake it any more.
    #[test]
    fn a_sleeping_hub_ends_when_its_last_sender_goes() {
        let hub = Hub::new(limits(4), Arc::new(Stats::default()), HEARTBEAT);
        let (tx, rx) = lanes(8);
        let (ended_tx, ended) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            hub.run(rx);
            let _ = ended_tx.send(());
        });
        let other = tx.clone();
        std::thread::sleep(std::time::Duration::from_millis(50));
        drop(tx);
        assert!(ended.recv_timeout(std::time::Duration::from_millis(200)).is_err(), "one sender is left");
        drop(other);
        assert!(
            ended.recv_timeout(std::time::Duration::from_secs(10)).is_ok(),
            "the hub still sleeps with no sender left (its heartbeat is {HEARTBEAT:?} away)"
        );
    }

    /// The thread that stops a server sends the hub its `Shutdown`, and
    /// other threads may have commands still waiting behind it: none of them
    /// will ever take effect, and none may count as pending for ever (the
    /// thread could never again send straight to a socket, to any server).
    #[test]
    fn commands_a_hub_never_carries_out_do_not_stay_pending() {
        let hub = Hub::new(limits(4), Arc::new(Stats::default()), HEARTBEAT);
        let (tx, rx) = lanes(8);
        submit(&tx, Cmd::RoomCount(crossbeam_channel::bounded(1).0)).ok().unwrap();
        submit(&tx, Cmd::Shutdown).ok().unwrap();
        // Behind the Shutdown: dropped with the hub's ends of the lanes.
        submit(&tx, Cmd::Leave(1, "r".into())).ok().unwrap();
        assert!(!nothing_pending());
        hub.run(rx);
        assert!(nothing_pending(), "the Shutdown and what waited behind it no longer count");
        // The lanes are closed now: a command sent to them fails, and is not pending either.
        assert!(submit(&tx, Cmd::Leave(1, "r".into())).is_err());
        assert!(nothing_pending());
    }

    /// A loopback member opened as the engine opens one: what is queued for
    /// it starts a writer thread, which writes it to the peer.
    fn opened_member(id: ConnId, env: &Arc<WriterEnv>) -> (Arc<ConnShared>, std::net::TcpStream) {
        let (conn, peer) = loopback_conn(id);
        conn.open_writer(WriterHome { start: starter(env.clone()), conn: Arc::downgrade(&conn) });
        (conn, peer)
    }

    /// Reads unmasked frames (payloads under 126 bytes) until a close: how
    /// many data frames came before it, and the close's code.
    fn data_frames_before_close(peer: &mut std::net::TcpStream, most: usize) -> (usize, u16) {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        for seen in 0..=most {
            let mut head = [0u8; 2];
            peer.read_exact(&mut head).unwrap();
            let mut payload = vec![0u8; usize::from(head[1] & 0x7f)];
            peer.read_exact(&mut payload).unwrap();
            if head[0] & 0x0f == crate::frame::OP_CLOSE {
                return (seen, u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        panic!("no close after {most} data frames");
    }

    /// A stop while another thread's broadcasts fill the hub's queue: the
    /// stop's close reaches every member first, and the broadcasts that
    /// waited in the queue find the members closing (dropped, not sent).
    #[test]
    fn a_stop_overtakes_the_broadcasts_other_threads_have_waiting() {
        const QUEUED: usize = 64;
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(4 * QUEUED), stats.clone(), HEARTBEAT);
        let env = Arc::new(WriterEnv::new(&Config::default(), stats.clone()));
        let mut members: Vec<_> = (1..=8).map(|id| opened_member(id, &env)).collect();
        for (c, _) in &members {
            hub.handle(Cmd::Register(c.clone()));
            hub.handle(Cmd::Join(c.id, "r".into()));
        }
        let (tx, rx) = lanes(QUEUED);
        // Another thread's broadcasts fill the queue; none has taken effect.
        let flood = {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..QUEUED {
                    let frame =
                        crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b'a'; 20]));
                    assert!(
                        submit(&tx, Cmd::Broadcast { room: "r".into(), frame, except: None }).is_ok(),
                        "{i}"
                    );
                }
            })
        };
        flood.join().unwrap();
        // The stop's close, from this thread, which has nothing waiting.
        assert!(nothing_pending());
        assert!(submit(&tx, Cmd::CloseAll(1001, "server shutting down".into())).is_ok());
        drop(tx);
        hub.run(rx);
        for (c, peer) in &mut members {
            let (before, code) = data_frames_before_close(peer, QUEUED);
            assert_eq!(
                (before, code),
                (0, 1001),
                "member {}: broadcasts went out before the stop's close",
                c.id
            );
            c.end_writer();
        }
        assert_eq!(stats.messages_out.load(Relaxed), 0);
    }

    /// A thread's close waits behind that thread's own broadcasts still in
    /// the queue (it takes the ordered lane while they are pending): its
    /// members get them first.
    #[test]
    fn a_close_keeps_its_place_behind_its_own_threads_broadcasts() {
        const QUEUED: usize = 16;
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(4 * QUEUED), stats.clone(), HEARTBEAT);
        let env = Arc::new(WriterEnv::new(&Config::default(), stats.clone()));
        let (conn, mut peer) = opened_member(1, &env);
        hub.handle(Cmd::Register(conn.clone()));
        hub.handle(Cmd::Join(1, "r".into()));
        let (tx, rx) = lanes(QUEUED + 1);
        for _ in 0..QUEUED {
            let frame = crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b'a'; 20]));
            assert!(submit(&tx, Cmd::Broadcast { room: "r".into(), frame, except: None }).is_ok());
        }
        assert!(submit(&tx, Cmd::Close(1, 1000, String::new())).is_ok());
        drop(tx);
        hub.run(rx);
        assert_eq!(data_frames_before_close(&mut peer, QUEUED), (QUEUED, 1000));
        conn.end_writer();
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
    fn a_round_holds_each_frame_once_however_many_members_it_goes_to() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(16), stats.clone(), HEARTBEAT);
        let conns: Vec<_> = (1..=50).map(loopback_conn).collect();
        for (c, _) in &conns {
            hub.handle(Cmd::Register(c.clone()));
            hub.handle(Cmd::Join(c.id, "r".into()));
        }
        let frames: Vec<SharedFrame> = (0..3u8)
            .map(|i| crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b'a' + i; 4])))
            .collect();
        for f in &frames {
            assert!(hub.gather(Cmd::Broadcast { room: "r".into(), frame: f.clone(), except: None }));
        }
        for f in &frames {
            // Ours and the round's: no reference (no atomic count) per member.
            assert_eq!(Arc::strong_count(f), 2);
        }
        hub.flush();
        let want: Vec<u8> = frames.iter().flat_map(|f| f.to_vec()).collect();
        for (c, peer) in &conns {
            let mut got = vec![0u8; want.len()];
            let mut peer = peer.try_clone().unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            peer.read_exact(&mut got).unwrap();
            assert_eq!(got, want, "member {}", c.id);
        }
        assert!(frames.iter().all(|f| Arc::strong_count(f) == 1), "the round let go of its frames");
    }

    #[test]
    fn a_round_of_more_commands_than_a_cork_holds_reaches_every_member_in_order() {
        let stats = Arc::new(Stats::default());
        let mut hub = Hub::new(limits(4), stats.clone(), HEARTBEAT);
        let conns: Vec<_> = (1..=6).map(loopback_conn).collect();
        for (c, _) in &conns {
            hub.handle(Cmd::Register(c.clone()));
        }
        // Rooms that list their members in different orders, and sends.
        for id in [1, 2, 3, 4, 5] {
            hub.handle(Cmd::Join(id, "a".into()));
        }
        for id in [5, 3, 6, 1] {
            hub.handle(Cmd::Join(id, "b".into()));
        }
        let frame = |i: usize| {
            crate::frame::shared(crate::frame::encode(crate::frame::OP_BINARY, &(i as u32).to_be_bytes()))
        };
        let mut want: HashMap<ConnId, Vec<u8>> = HashMap::new();
        // Broadcasts to a room nobody is in count as commands too.
        for _ in 0..ROUND_COMMANDS + 1 {
            let f = frame(usize::MAX);
            assert!(hub.gather(Cmd::Broadcast { room: "nobody".into(), frame: f, except: None }));
        }
        for i in 0..3 * ROUND_COMMANDS + 5 {
            let f = frame(i);
            let (cmd, to): (Cmd, Vec<ConnId>) = match i % 3 {
                0 => {
                    (Cmd::Broadcast { room: "a".into(), frame: f.clone(), except: Some(2) }, vec![1, 3, 4, 5])
                }
                1 => (Cmd::Broadcast { room: "b".into(), frame: f.clone(), except: None }, vec![5, 3, 6, 1]),
                _ => (Cmd::Send((i / 3 % 6) as ConnId + 1, f.clone()), vec![(i / 3 % 6) as ConnId + 1]),
            };
            to.iter().for_each(|id| want.entry(*id).or_default().extend_from_slice(&f));
            assert!(hub.gather(cmd));
        }
        hub.flush();
        for (c, peer) in &conns {
            let want = &want[&c.id];
            let mut got = vec![0u8; want.len()];
            let mut peer = peer.try_clone().unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            peer.read_exact(&mut got).unwrap();
            assert!(&got == want, "member {}", c.id);
            assert!(!c.is_closing(), "member {} closed", c.id);
        }
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

/// Random rounds against a model: rooms with members in overlapping sets,
/// broadcasts (some with an exception, some reusing the previous frame, as
/// one message to two rooms), sends (some to nobody), joins and leaves that
/// end a round, all waiting before the hub starts so rounds run up to the
/// cork's 64 commands; more members than the helper's split, or big frames
/// that fill sockets (partial `writev`s, queued rests). Every member must get
/// exactly its frames in command order, and `messages_out` count them.
#[cfg(test)]
mod cork_model {
    use super::*;
    use crate::config::Config;
    use crate::connection::outbound::WriterHome;
    use crate::connection::test_support::loopback_conn;
    use crate::connection::writer::{starter, WriterEnv};
    use std::collections::{BTreeSet, HashMap};
    use std::io::Read;
    use std::sync::atomic::Ordering::Relaxed;

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            self.0 >> 33
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn tagged(tag: u32, pad: usize) -> SharedFrame {
        let mut p = tag.to_be_bytes().to_vec();
        p.resize(4 + pad, b'x');
        crate::frame::shared(crate::frame::encode(crate::frame::OP_BINARY, &p))
    }

    fn read_tags(peer: &mut std::net::TcpStream, n: usize) -> Vec<u32> {
        peer.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let mut h = [0u8; 2];
            peer.read_exact(&mut h).unwrap();
            assert_eq!(h[0], 0x82, "a binary frame, not {:#x}", h[0]);
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    peer.read_exact(&mut l).unwrap();
                    u16::from_be_bytes(l) as usize
                }
                l => l as usize,
            };
            let mut p = vec![0u8; len];
            peer.read_exact(&mut p).unwrap();
            out.push(u32::from_be_bytes(p[..4].try_into().unwrap()));
        }
        out
    }

    fn run_model(seed: u64, members: u64, rooms: u64, cmds_n: usize, pad_max: u64, helper: bool) {
        let mut rng = Lcg(seed);
        let stats = Arc::new(Stats::default());
        let lim = QueueLimits { frames: 1 << 20, bytes: usize::MAX };
        let mut hub = Hub::new(lim, stats.clone(), std::time::Duration::from_secs(30));
        if helper {
            hub.start_helper();
        }
        let env = Arc::new(WriterEnv::new(&Config::default(), stats.clone()));
        let conns: Vec<_> = (1..=members)
            .map(|id| {
                let (c, p) = loopback_conn(id * 7919);
                c.open_writer(WriterHome { start: starter(env.clone()), conn: Arc::downgrade(&c) });
                (c, p)
            })
            .collect();
        let mut cmds = Vec::new();
        let mut in_room: Vec<BTreeSet<u64>> = vec![BTreeSet::new(); rooms as usize];
        for (c, _) in &conns {
            cmds.push(Cmd::Register(c.clone()));
        }
        // Random initial joins, recorded into the model as they'd apply.
        let mut want: HashMap<u64, Vec<u32>> = HashMap::new();
        let mut tag = 0u32;
        let mut last: Option<(SharedFrame, u32)> = None;
        for (c, _) in &conns {
            for r in 0..rooms {
                if rng.below(2) == 0 {
                    cmds.push(Cmd::Join(c.id, format!("r{r}")));
                    in_room[r as usize].insert(c.id);
                }
            }
        }
        for _ in 0..cmds_n {
            let k = rng.below(100);
            let (frame, t) = match (&last, rng.below(10)) {
                // The same frame again (two rooms, one message).
                (Some((f, t)), 0) => (f.clone(), *t),
                _ => {
                    tag += 1;
                    (tagged(tag, rng.below(pad_max + 1) as usize), tag)
                }
            };
            last = Some((frame.clone(), t));
            let pick = |rng: &mut Lcg| (rng.below(members) + 1) * 7919;
            if k < 70 {
                let r = rng.below(rooms);
                let except = match rng.below(3) {
                    0 => Some(pick(&mut rng)),
                    _ => None,
                };
                for id in &in_room[r as usize] {
                    if Some(*id) != except {
                        want.entry(*id).or_default().push(t);
                    }
                }
                cmds.push(Cmd::Broadcast { room: format!("r{r}"), frame, except });
            } else if k < 95 {
                let id = match rng.below(20) {
                    0 => 424242, // nobody
                    _ => pick(&mut rng),
                };
                if id != 424242 {
                    want.entry(id).or_default().push(t);
                }
                cmds.push(Cmd::Send(id, frame));
            } else if k < 98 {
                let (id, r) = (pick(&mut rng), rng.below(rooms));
                in_room[r as usize].insert(id);
                cmds.push(Cmd::Join(id, format!("r{r}")));
            } else {
                let (id, r) = (pick(&mut rng), rng.below(rooms));
                in_room[r as usize].remove(&id);
                cmds.push(Cmd::Leave(id, format!("r{r}")));
            }
        }
        let (tx, rx) = lanes(cmds.len() + 1);
        for cmd in cmds {
            submit(&tx, cmd).ok().unwrap();
        }
        drop(tx);
        // Nobody reads until the hub is done: sockets fill, rests queue.
        hub.run(rx);
        let readers: Vec<_> = conns
            .iter()
            .map(|(c, p)| {
                let n = want.get(&c.id).map_or(0, Vec::len);
                let mut p = p.try_clone().unwrap();
                std::thread::spawn(move || read_tags(&mut p, n))
            })
            .collect();
        let mut total = 0u64;
        for ((c, _), r) in conns.iter().zip(readers) {
            let got = r.join().unwrap();
            let w = want.remove(&c.id).unwrap_or_default();
            total += w.len() as u64;
            assert!(
                got == w,
                "seed {seed} member {}: got {} frames want {}; first diff at {:?}",
                c.id,
                got.len(),
                w.len(),
                got.iter().zip(&w).position(|(a, b)| a != b)
            );
            assert!(!c.is_closing());
        }
        // Every frame went out: settle the writers, then compare the counter.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while stats.messages_out.load(Relaxed) < total && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(stats.messages_out.load(Relaxed), total, "seed {seed}: messages_out");
        if pad_max > 1000 {
            assert!(stats.direct_sends.load(Relaxed) < total, "seed {seed}: some frames waited in a queue");
        }
        for (c, _) in &conns {
            c.end_writer();
        }
    }

    #[test]
    fn random_rounds_split_with_the_helper_reach_every_member_in_command_order() {
        for seed in 1..=6 {
            run_model(seed, 150, 5, 3000, 8, true);
        }
    }

    #[test]
    fn random_rounds_of_big_frames_through_full_sockets_reach_every_member_in_command_order() {
        for seed in 100..=104 {
            run_model(seed, 12, 4, 1500, 20_000, true);
        }
    }
}
