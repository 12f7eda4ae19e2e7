//! The connections reader threads share for their Redis calls: at most
//! [`POOL_MAX`] open at once (idle or in use); a caller finding none idle and
//! the bound reached waits for one to come back, up to the call timeout,
//! instead of opening a connection of its own (a TCP connect and an AUTH per
//! call under load).

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Connections open at once, idle or in use.
pub(super) const POOL_MAX: usize = 32;

#[derive(Default)]
struct State {
    idle: Vec<redis::Connection>,
    /// Connections open: idle, in use, or being connected.
    open: usize,
}

/// The bounded pool.
#[derive(Default)]
pub(super) struct Pool {
    state: Mutex<State>,
    returned: Condvar,
}

/// What [`Pool::take`] gives: an idle connection, or leave to open one.
pub(super) enum Slot {
    Idle(redis::Connection),
    /// Open one, then [`Pool::give_back`] it or [`Pool::forget`] the slot.
    Open,
}

impl Pool {
    /// An idle connection, or a slot to open one, waiting up to `wait`;
    /// `None` when neither came in time.
    pub fn take(&self, wait: Duration) -> Option<Slot> {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Some(Slot::Idle(conn));
            }
            if state.open < POOL_MAX {
                state.open += 1;
                return Some(Slot::Open);
            }
            if self.returned.wait_until(&mut state, deadline).timed_out() {
                return None;
            }
        }
    }

    /// Puts back a connection that still works.
    pub fn give_back(&self, conn: redis::Connection) {
        self.state.lock().idle.push(conn);
        self.returned.notify_one();
    }

    /// Gives up a slot whose connection broke or could not be opened.
    pub fn forget(&self) {
        let mut state = self.state.lock();
        state.open = state.open.saturating_sub(1);
        drop(state);
        self.returned.notify_one();
    }

    /// Closes every idle connection (Redis went down: they are all broken).
    pub fn clear(&self) {
        let mut state = self.state.lock();
        let closed = state.idle.len();
        state.idle.clear();
        state.open = state.open.saturating_sub(closed);
        drop(state);
        self.returned.notify_all();
    }
}
