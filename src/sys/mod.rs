//! Calls going out to the operating system that std does not offer: the
//! engine's threads and their stacks, futexes, and socket calls. With `ffi/`
//! (calls coming in from C), the only place `unsafe` is allowed.
//!
//! - [`pthread`]: connection threads as raw pthreads.
//! - [`stacks`]: the pool of thread stacks those threads run on.
//! - [`futex`]: futex wait and wake, and the size of the process's futex hash.
//! - [`sock`]: `send`/`sendmsg` with `MSG_NOSIGNAL`, the listen backlog,
//!   waking a blocked `accept`.
//! - [`trim`]: giving freed heap memory back to the system (`malloc_trim`).
//! - [`poll`]: `poll(2)` over many sockets, for the overflow thread.
//! - [`fd`]: a listening socket passed by number (systemd's `LISTEN_FDS`).
//! - [`fork`]: whether this is a forked child, where nothing of wshub runs.
//! - [`signals`]: every thread wshub starts blocks the process's signals.
#![allow(unsafe_code)]

use std::sync::OnceLock;

pub(crate) mod fd;
pub(crate) mod fork;
pub(crate) mod futex;
pub(crate) mod poll;
pub(crate) mod pthread;
pub(crate) mod signals;
pub(crate) mod sock;
pub(crate) mod stacks;
pub(crate) mod trim;

/// The environment variable that makes wshub take the path older kernels
/// take: glibc stacks with a guard page instead of the stack pool's guard
/// markers (Linux 6.13+), and the futex hash left as the kernel sized it
/// (`PR_FUTEX_HASH`, Linux 6.16+). For testing that path on a new kernel.
pub(crate) const KERNEL_FALLBACK_ENV: &str = "WSHUB_KERNEL_FALLBACK";

/// True when [`KERNEL_FALLBACK_ENV`] is set to anything but empty or `0`.
/// Read once, at the first call: the pool and the futex hash are per process.
pub(crate) fn kernel_fallback() -> bool {
    static FALLBACK: OnceLock<bool> = OnceLock::new();
    *FALLBACK.get_or_init(|| {
        let on = std::env::var_os(KERNEL_FALLBACK_ENV).is_some_and(|v| !v.is_empty() && v != "0");
        if on {
            log::info!(
                "{KERNEL_FALLBACK_ENV} is set: glibc thread stacks, the futex hash as the kernel sized it"
            );
        }
        on
    })
}
