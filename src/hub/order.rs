//! Per-thread order of hub commands, and the hub's two lanes.
//!
//! Every command a thread sends to the hub carries that thread's counter,
//! which the hub bumps once the command has taken effect. [`nothing_pending`]
//! is what lets a thread send a frame straight to a socket (see
//! `connection/outbound.rs`) without overtaking one of its own earlier
//! commands still waiting in the hub's queue.
//!
//! The hub reads two bounded channels ([`HubTx`], [`HubRx`]): the ordered
//! lane (`Config::hub_queue`), which carries sends, broadcasts, membership
//! changes, closes and queries, and the control lane, which the hub always
//! empties first ([`Cmd::is_control`]: the stop's close and the shutdown, a
//! connection's registration and end). A control command takes the control lane only when
//! its thread has nothing pending in the hub ([`submit`]), so it can
//! overtake other threads' broadcasts but never its own thread's earlier
//! commands; with something pending it queues behind them on the ordered
//! lane, as every command did before there were two lanes. The hub looks
//! at the control lane again after taking each command off the ordered lane
//! and before carrying it out, so a control command always takes effect
//! before any command its thread sent after it.
//!
//! The hub sleeps on a bell ([`HubRx::wait`]) that every send rings, not in
//! a blocking receive of the lanes.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendError, Sender};

use super::Cmd;
use crate::sys::futex::{futex_wait, futex_wake_all};

/// A command with the counter of the thread that sent it, which the hub bumps
/// once the command has taken effect. A command dropped before the hub took
/// it apart (behind a `Shutdown`, discarded with the hub's end of the
/// channel) will never take effect: dropping it bumps the counter, so its
/// thread does not wait on it for ever.
pub(crate) struct Ticketed {
    cmd: Cmd,
    done: Option<Arc<AtomicU64>>,
}

impl Ticketed {
    /// The command, and the counter to bump once it has taken effect.
    pub(super) fn into_parts(mut self) -> (Cmd, Option<Arc<AtomicU64>>) {
        let cmd = std::mem::replace(&mut self.cmd, Cmd::Shutdown);
        (cmd, self.done.take())
    }
}

impl Drop for Ticketed {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            done.fetch_add(1, Release);
        }
    }
}

/// Per thread: how many commands it has sent to a hub, and how many of them
/// a hub has carried out.
struct Tickets {
    sent: Cell<u64>,
    done: Arc<AtomicU64>,
}

thread_local! {
    static TICKETS: Tickets = Tickets { sent: Cell::new(0), done: Arc::new(AtomicU64::new(0)) };
}

/// Commands the control lane holds before their senders wait: the hub
/// empties it before each command of the ordered lane, so it stays short.
const CONTROL_LANE: usize = 1024;

/// The senders of a hub's two lanes (see the module comment).
pub(crate) struct HubTx {
    control: Sender<Ticketed>,
    ordered: Sender<Ticketed>,
    bell: Arc<Bell>,
}

/// The hub's ends of its two lanes.
pub(crate) struct HubRx {
    pub(super) control: Receiver<Ticketed>,
    pub(super) ordered: Receiver<Ticketed>,
    bell: Arc<Bell>,
}

/// How a sender wakes the hub: a futex word, [`ASLEEP`] while the hub
/// sleeps on it. Not crossbeam's blocking receive, which spins and then
/// yields the CPU several times before it sleeps: in a burst of handshakes
/// the hub's work is one registration per wake, and that spinning was most
/// of what the hub cost. A sender that finds the hub awake makes no syscall.
struct Bell {
    state: AtomicU32,
    /// `HubTx`es alive: with none left the hub must not sleep, as nothing
    /// could wake it (the lanes are closed, and it ends).
    senders: AtomicUsize,
}

const AWAKE: u32 = 0;
const ASLEEP: u32 = 1;

impl Bell {
    /// After a send (or a sender's end): wakes the hub if it sleeps.
    fn ring(&self) {
        // Pairs with the fence in `HubRx::wait`: either the hub sees what
        // was sent, or this sees it asleep.
        fence(SeqCst);
        if self.state.swap(AWAKE, SeqCst) == ASLEEP {
            futex_wake_all(&self.state);
        }
    }
}

impl Clone for HubTx {
    fn clone(&self) -> Self {
        self.bell.senders.fetch_add(1, SeqCst);
        HubTx { control: self.control.clone(), ordered: self.ordered.clone(), bell: self.bell.clone() }
    }
}

impl Drop for HubTx {
    /// The last sender going closes the lanes, which the hub must wake to
    /// see (it then ends): the channel senders go first, then the count and
    /// the bell.
    fn drop(&mut self) {
        drop(std::mem::replace(&mut self.control, crossbeam_channel::bounded(0).0));
        drop(std::mem::replace(&mut self.ordered, crossbeam_channel::bounded(0).0));
        self.bell.senders.fetch_sub(1, SeqCst);
        self.bell.ring();
    }
}

impl HubRx {
    /// Sleeps until a command is sent, every sender is gone, or `until`
    /// (the next heartbeat) comes; at once if a lane holds a command or no
    /// sender is left.
    pub(super) fn wait(&self, until: Option<Instant>) {
        let timeout = match until {
            Some(at) => at.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(3600),
        };
        if timeout.is_zero() {
            return;
        }
        self.bell.state.store(ASLEEP, SeqCst);
        fence(SeqCst);
        let idle = self.control.is_empty() && self.ordered.is_empty();
        if idle && self.bell.senders.load(SeqCst) > 0 {
            futex_wait(&self.bell.state, ASLEEP, timeout);
        }
        self.bell.state.store(AWAKE, SeqCst);
    }
}

impl Drop for HubRx {
    /// The hub has returned: what still waits on the lanes will never take
    /// effect. Dropped here, each command counts as done (see [`Ticketed`]);
    /// a bounded channel would keep them until its last sender goes.
    fn drop(&mut self) {
        while self.control.try_recv().is_ok() || self.ordered.try_recv().is_ok() {}
    }
}

/// A hub's lanes: the ordered one holds `ordered_bound` commands
/// (`Config::hub_queue`), the control one [`CONTROL_LANE`].
pub(crate) fn lanes(ordered_bound: usize) -> (HubTx, HubRx) {
    let (control, control_rx) = crossbeam_channel::bounded(CONTROL_LANE);
    let (ordered, ordered_rx) = crossbeam_channel::bounded(ordered_bound);
    let bell = Arc::new(Bell { state: AtomicU32::new(AWAKE), senders: AtomicUsize::new(1) });
    (HubTx { control, ordered, bell: bell.clone() }, HubRx { control: control_rx, ordered: ordered_rx, bell })
}

/// Sends `cmd` to the hub, counted against the calling thread: on the
/// control lane when it is a control command and nothing of this thread's
/// is pending there, else on the ordered lane.
pub(crate) fn submit(tx: &HubTx, cmd: Cmd) -> Result<(), SendError<Cmd>> {
    let lane = if cmd.is_control() && nothing_pending() { &tx.control } else { &tx.ordered };
    TICKETS.with(|t| {
        t.sent.set(t.sent.get() + 1);
        lane.send(Ticketed { cmd, done: Some(t.done.clone()) }).map_err(|SendError(e)| {
            // Never sent: uncounted, not counted as done.
            t.sent.set(t.sent.get() - 1);
            SendError(e.into_parts().0)
        })
    })?;
    tx.bell.ring();
    Ok(())
}

/// Sends a command that cannot reorder frames (registering a connection), so
/// it does not keep the thread's next `send` from going straight out. On the
/// control lane: it takes effect before anything the thread sends after it.
pub(crate) fn submit_untracked(tx: &HubTx, cmd: Cmd) {
    if tx.control.send(Ticketed { cmd, done: None }).is_ok() {
        tx.bell.ring();
    }
}

/// What the calling thread has sent to the hub so far, for another thread
/// to wait on ([`Sent::wait`]): the stop a callback asks for runs on the
/// stopper thread, and must not overtake that callback's broadcasts.
pub(crate) struct Sent {
    done: Arc<AtomicU64>,
    upto: u64,
}

/// See [`Sent`].
pub(crate) fn sent_so_far() -> Sent {
    TICKETS.with(|t| Sent { done: t.done.clone(), upto: t.sent.get() })
}

impl Sent {
    /// Waits until every command counted in it has taken effect (or was
    /// dropped with the hub), or `most` has passed.
    pub(crate) fn wait(&self, most: std::time::Duration) {
        let until = std::time::Instant::now() + most;
        while self.done.load(Acquire) < self.upto && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

/// True when every command this thread sent has taken effect: then a frame it
/// sends straight to a socket cannot overtake one of its own earlier commands.
pub(crate) fn nothing_pending() -> bool {
    TICKETS.with(|t| t.done.load(Acquire) == t.sent.get())
}
