//! Handing frames to members: [`Cork`] gathers what one round of the hub
//! has for each member, [`deliver_round`] hands each member its frames
//! (straight to its socket in one `writev`, or to its queue), and the
//! fan-out [`Helper`] thread takes half of the members of a large round.
//!
//! A round holds each command's frame once, and each member the set of the
//! round's commands that have a frame for it (one bit per command): the
//! frames a member gets are borrowed for its one `writev`, with no
//! allocation and no reference count of their own; only a frame queued for
//! it (the socket full, a backlog), the rest of a partly sent one, and a
//! permessage-deflate member's forms (a `Vec` per member) take a reference.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::conn_map::IdMap;
use crate::connection::outbound::QueueLimits;
use crate::connection::{ConnShared, PushError};
use crate::frame::SharedFrame;
use crate::stats::Stats;

/// A round for more members than this is split with the helper.
pub(super) const SPLIT_AT: usize = 128;

/// Which of a round's commands have a frame for a member: bit `i` for the
/// round's command `i`.
type Commands = u64;

/// The most commands one round holds (one bit each in [`Commands`]).
pub(super) const MOST_COMMANDS: usize = Commands::BITS as usize;

/// What one round of the hub has for each member, members in the order they
/// first got a frame, each member's frames in command order.
#[derive(Default)]
pub(super) struct Cork {
    /// Each command's frame, in command order.
    frames: Vec<SharedFrame>,
    /// Each member and the commands with a frame for it.
    members: Vec<(Arc<ConnShared>, Commands)>,
    /// Where each member is in `members`; built at the first member a
    /// command names out of the order it was first seen in.
    index: IdMap<usize>,
    indexed: bool,
    /// Where in `members` the current command's next member likely is: a
    /// room lists its members in the same order every time.
    cursor: usize,
}

impl Cork {
    /// Starts gathering the next command, whose members all get `frame`.
    /// The caller sends the round first when it [`Cork::is_full`].
    pub(super) fn next_command(&mut self, frame: SharedFrame) {
        debug_assert!(!self.is_full());
        self.frames.push(frame);
        self.cursor = 0;
    }

    /// The round holds [`MOST_COMMANDS`]: it must go out before the next.
    pub(super) fn is_full(&self) -> bool {
        self.frames.len() >= MOST_COMMANDS
    }

    /// `conn` gets the current command's frame. One command names each
    /// member once (a room's members are a set), so the first command of a
    /// round, often the only one, adds its members without looking them up.
    pub(super) fn add(&mut self, conn: &Arc<ConnShared>) {
        let Some(command) = self.frames.len().checked_sub(1) else { return };
        let bit: Commands = 1 << command;
        match self.find(conn, command) {
            Some(at) => self.members[at].1 |= bit,
            None => {
                if self.indexed {
                    self.index.insert(conn.id, self.members.len());
                }
                self.members.push((conn.clone(), bit));
            }
        }
    }

    /// Where `conn` is in `members`, if an earlier command of the round
    /// named it. The likely place is checked by pointer, without reading the
    /// connection itself.
    fn find(&mut self, conn: &Arc<ConnShared>, command: usize) -> Option<usize> {
        if command == 0 {
            return None;
        }
        if self.members.get(self.cursor).is_some_and(|(c, _)| Arc::ptr_eq(c, conn)) {
            self.cursor += 1;
            return Some(self.cursor - 1);
        }
        if !self.indexed {
            self.indexed = true;
            self.index.extend(self.members.iter().enumerate().map(|(i, (c, _))| (c.id, i)));
        }
        let at = self.index.get(&conn.id).copied()?;
        self.cursor = at + 1;
        Some(at)
    }

    /// No command gathered since the last flush.
    pub(super) fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Hands every member of the round its frames, half of a large round's
    /// members on the `helper` thread, and waits for it: the cork is empty
    /// after, every frame written or queued.
    pub(super) fn flush(&mut self, helper: Option<&Helper>, limits: QueueLimits, stats: &Stats) {
        let mut helped = false;
        if let (true, Some(helper)) = (self.members.len() > SPLIT_AT, helper) {
            let second = self.members.split_off(self.members.len() / 2);
            match helper.jobs.send(Half { frames: self.frames.clone(), members: second }) {
                Ok(()) => helped = true,
                Err(crossbeam_channel::SendError(half)) => self.members.extend(half.members),
            }
        }
        deliver_round(&self.frames, self.members.drain(..), limits, stats);
        if let (true, Some(helper)) = (helped, helper) {
            let _ = helper.done.recv();
        }
        self.frames.clear();
        self.index.clear();
        self.indexed = false;
        self.cursor = 0;
    }
}

/// Half of a large round's members, for the fan-out helper thread.
pub(super) struct Half {
    frames: Vec<SharedFrame>,
    members: Vec<(Arc<ConnShared>, Commands)>,
}

/// The fan-out helper: a second thread that sends to half of a large round's
/// members while the hub sends to the other half, so on two cores a round
/// reaches its last member in about half the time. The hub waits for it
/// before its next command, so every member still gets frames in command
/// order; the helper never blocks on a member (non-blocking sends, queue pushes).
pub(super) struct Helper {
    jobs: Sender<Half>,
    done: Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Helper {
    pub(super) fn start(limits: QueueLimits, stats: Arc<Stats>) -> std::io::Result<Helper> {
        let (jobs, job_rx) = crossbeam_channel::bounded::<Half>(1);
        let (done_tx, done) = crossbeam_channel::bounded(1);
        let builder = std::thread::Builder::new().name("wshub-fanout".into());
        let thread = crate::sys::signals::spawn(builder, move || {
            for half in job_rx {
                deliver_round(&half.frames, half.members.into_iter(), limits, &stats);
                if done_tx.send(()).is_err() {
                    break;
                }
            }
        })?;
        Ok(Helper { jobs, done, thread: Some(thread) })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the job channel ends the helper's loop.
        let (closed, _) = crossbeam_channel::bounded(0);
        self.jobs = closed;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Hands each of `members` the frames of the round's commands it is in,
/// borrowed from `frames`.
fn deliver_round(
    frames: &[SharedFrame],
    members: impl Iterator<Item = (Arc<ConnShared>, Commands)>,
    limits: QueueLimits,
    stats: &Stats,
) {
    let mut mine: Vec<&SharedFrame> = Vec::with_capacity(frames.len());
    for (conn, commands) in members {
        mine.clear();
        let mut left = commands;
        while left != 0 {
            mine.extend(frames.get(left.trailing_zeros() as usize));
            left &= left - 1;
        }
        deliver_all(&conn, &mine, limits, stats);
    }
}

/// Hands one member the frames a round has for it: as many as its socket
/// takes straight away in one `writev` when that keeps order (nothing queued),
/// the rest to its writer's queue behind them.
fn deliver_all(conn: &ConnShared, frames: &[&SharedFrame], limits: QueueLimits, stats: &Stats) {
    let sent = conn.try_send_direct_many(frames, stats);
    for &frame in frames.iter().skip(sent) {
        if !queue(conn, frame.clone(), limits, stats) {
            break;
        }
    }
}

/// Puts `frame` on a member's queue; a full queue makes it a slow consumer
/// (closed with 1013, false), and nobody waits for it.
fn queue(conn: &ConnShared, frame: SharedFrame, limits: QueueLimits, stats: &Stats) -> bool {
    let (what, counter) = match conn.push_frame(frame, limits, stats) {
        Ok(()) => return true,
        Err(PushError::Full) => (format!("{} frames", limits.frames), &stats.dropped_slow_consumer),
        Err(PushError::OverBytes) => (format!("{} bytes", limits.bytes), &stats.dropped_outbound_bytes),
    };
    log::warn!("conn {} ({}): outbound queue full at {what}; closing it with 1013", conn.id, conn.addr());
    Stats::add(counter, 1);
    conn.close_slow_consumer();
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::test_support::loopback_conn;

    #[test]
    fn a_cork_keeps_one_entry_per_member_and_its_frames_in_command_order() {
        let conns: Vec<_> = (1..=4).map(loopback_conn).collect();
        let frame = |b: u8| crate::frame::shared(crate::frame::encode(crate::frame::OP_TEXT, &[b]));
        let stats = Stats::default();
        let limits = QueueLimits { frames: 16, bytes: usize::MAX };
        let mut cork = Cork::default();
        // A send to member 2 first, then broadcasts naming the members in
        // different orders, the last one with a member new to the round.
        cork.next_command(frame(0));
        cork.add(&conns[1].0);
        for (b, order) in [(1, [0, 1, 2]), (2, [2, 0, 1]), (3, [1, 2, 3])] {
            cork.next_command(frame(b));
            order.iter().for_each(|&i| cork.add(&conns[i].0));
        }
        let ids: Vec<crate::types::ConnId> = cork.members.iter().map(|(c, _)| c.id).collect();
        assert_eq!(ids, [2, 1, 3, 4]);
        cork.flush(None, limits, &stats);
        assert!(cork.is_empty());
        for (conn, want) in conns.iter().zip([&[1u8, 2][..], &[0, 1, 2, 3], &[1, 2, 3], &[3]]) {
            let mut peer = conn.1.try_clone().unwrap();
            peer.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
            let mut got = vec![0u8; 3 * want.len()];
            std::io::Read::read_exact(&mut peer, &mut got).unwrap();
            let payloads: Vec<u8> = got.chunks(3).map(|f| f[2]).collect();
            assert_eq!(payloads, want, "member {}", conn.0.id);
        }
        // The next round starts without an index.
        cork.next_command(frame(9));
        cork.add(&conns[0].0);
        assert!(!cork.indexed && cork.members.len() == 1);
    }
}
