//! Calls going out to the operating system that std does not offer: the
//! engine's threads and their stacks, futexes, and socket calls. With `ffi/`
//! (calls coming in from C), the only place `unsafe` is allowed.
//!
//! - [`pthread`]: connection threads as raw pthreads.
//! - [`stacks`]: the pool of thread stacks those threads run on.
//! - [`futex`]: futex wait and wake, and the size of the process's futex hash.
//! - [`sock`]: `send`/`sendmsg` with `MSG_NOSIGNAL`, the listen backlog,
//!   waking a blocked `accept`.
#![allow(unsafe_code)]

pub(crate) mod futex;
pub(crate) mod pthread;
pub(crate) mod sock;
pub(crate) mod stacks;
