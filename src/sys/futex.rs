//! Futexes: a reader's wait for its connection's writer thread to end (see
//! `connection/outbound.rs`), and the size of the process's futex hash,
//! which thousands of blocked connection threads share.

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Sleeps while `word` holds `expected`, for at most `timeout` (or until
/// [`futex_wake_all`], or spuriously).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a valid, aligned u32 for the call; the timespec lives on
    // this stack for the call. A private futex: only this process uses it.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// Wakes every thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; waking needs no memory but the word's address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG, i32::MAX)
    };
}

/// Gives the process a futex hash table sized for `threads` blocked threads.
///
/// Since Linux 6.16 a process gets a private futex hash whose default size
/// follows the number of CPUs, not of threads: 16 buckets on a 2-CPU machine.
/// A writer thread waiting for its queue waits on a futex, so with thousands
/// of connections backed up (each with its writer) each
/// bucket holds hundreds of waiters and every futex wake in the process (a
/// lock handed over, a channel send, a new thread's start) walks one of those
/// lists (benches/README.md's history has the measurement). Asks for
/// about one bucket per thread (64 bytes each), never shrinks a larger table,
/// and does
/// nothing on kernels without `PR_FUTEX_HASH` (their global hash is sized by
/// CPUs, the older trade-off). Returns the number of buckets now in use, when
/// the kernel says.
pub(crate) fn size_futex_hash(threads: usize) -> Option<usize> {
    const PR_FUTEX_HASH: libc::c_int = 78;
    const SET_SLOTS: libc::c_ulong = 1;
    const GET_SLOTS: libc::c_ulong = 2;
    const MAX_SLOTS: usize = 1 << 16;
    if super::kernel_fallback() {
        return None;
    }
    let want = threads.next_power_of_two().clamp(16, MAX_SLOTS);
    let get = || {
        // SAFETY: prctl with integer arguments only; unknown options fail with EINVAL.
        unsafe {
            libc::prctl(PR_FUTEX_HASH, GET_SLOTS, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
        }
    };
    let current = get();
    if current < 0 {
        return None; // no private futex hash on this kernel
    }
    // 0 means no private table yet (a single-threaded process; the first
    // thread allocates one) or the global hash by the process's own choice.
    let chose_global = current == 0 && std::fs::read_dir("/proc/self/task").map_or(true, |d| d.count() > 1);
    if chose_global || current as usize >= want {
        return Some(current as usize);
    }
    // SAFETY: as above.
    let rc = unsafe {
        libc::prctl(PR_FUTEX_HASH, SET_SLOTS, want as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong)
    };
    if rc != 0 {
        log::debug!("cannot resize the futex hash to {want}: {}", io::Error::last_os_error());
        return Some(current as usize);
    }
    let now = get();
    (now >= 0).then_some(now as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_futex_hash_grows_for_the_threads_asked_for() {
        match size_futex_hash(3000) {
            None => eprintln!("no PR_FUTEX_HASH on this kernel"),
            Some(0) => eprintln!("this process uses the global futex hash"),
            Some(n) => assert!(n >= 4096, "{n} buckets for 3000 threads"),
        }
        // Never shrinks.
        if let Some(n) = size_futex_hash(16).filter(|&n| n > 0) {
            assert!(n >= 4096);
        }
    }
}
