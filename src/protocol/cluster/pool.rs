//! The connections reader threads share for their Redis calls: at most
//! [`POOL_MAX`] open at once (idle or in use); a caller finding none idle and
//! the bound reached waits for one to come back, up to the call timeout,
//! instead of opening a connection of its own (a TCP connect and an AUTH per
//! call under load).
//!
//! Each slot belongs to a generation: [`Pool::clear`] starts a new one (the
//! shard went down, or its primary changed), and a connection of an older
//! generation, still out with a caller then, is closed when it comes back
//! instead of serving another call (it may be connected to a demoted
//! primary).

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Connections open at once, idle or in use.
pub(super) const POOL_MAX: usize = 32;

#[derive(Default)]
struct State {
    idle: Vec<redis::Connection>,
    /// Connections of this generation open: idle, in use, or being connected.
    open: usize,
    generation: u64,
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

/// A slot taken from the pool, with the generation it belongs to.
pub(super) struct Taken {
    pub slot: Slot,
    pub generation: u64,
}

impl Pool {
    /// An idle connection, or a slot to open one, waiting up to `wait`;
    /// `None` when neither came in time.
    pub fn take(&self, wait: Duration) -> Option<Taken> {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock();
        loop {
            let generation = state.generation;
            if let Some(conn) = state.idle.pop() {
                return Some(Taken { slot: Slot::Idle(conn), generation });
            }
            if state.open < POOL_MAX {
                state.open += 1;
                return Some(Taken { slot: Slot::Open, generation });
            }
            if self.returned.wait_until(&mut state, deadline).timed_out() {
                return None;
            }
        }
    }

    /// Puts back a connection that still works; one of an older generation
    /// is closed instead.
    pub fn give_back(&self, conn: redis::Connection, generation: u64) {
        let mut state = self.state.lock();
        if generation == state.generation {
            state.idle.push(conn);
        }
        drop(state);
        self.returned.notify_one();
    }

    /// Gives up a slot whose connection broke or could not be opened.
    pub fn forget(&self, generation: u64) {
        let mut state = self.state.lock();
        if generation == state.generation {
            state.open = state.open.saturating_sub(1);
        }
        drop(state);
        self.returned.notify_one();
    }

    /// Closes every idle connection and starts a new generation: the
    /// connections out with callers now are closed when they come back.
    pub fn clear(&self) {
        let mut state = self.state.lock();
        state.idle.clear();
        state.open = 0;
        state.generation += 1;
        drop(state);
        self.returned.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slot taken before a clear does not count against the new
    /// generation's bound, and what it hands back is not pooled.
    #[test]
    fn a_clear_starts_a_generation_that_old_slots_do_not_reach() {
        let pool = Pool::default();
        let old: Vec<Taken> = (0..POOL_MAX).map(|_| pool.take(Duration::ZERO).expect("a slot")).collect();
        assert!(pool.take(Duration::ZERO).is_none(), "the bound holds");
        pool.clear();
        let fresh = pool.take(Duration::ZERO).expect("a slot of the new generation");
        assert_eq!(fresh.generation, old[0].generation + 1);
        for taken in &old {
            pool.forget(taken.generation);
        }
        // The old slots' forgets did not free the new generation's slots.
        let more = (1..POOL_MAX).filter(|_| pool.take(Duration::ZERO).is_some()).count();
        assert_eq!(more, POOL_MAX - 1);
        assert!(pool.take(Duration::ZERO).is_none());
    }
}
