//! Stacks for connection threads, carved out of large mappings and reused.
//!
//! glibc gives every new thread its own stack mapping: an `mmap`, an
//! `mprotect` for the guard page (which splits it into two mappings), and
//! first-touch page faults, all under the process's mmap lock. During a burst
//! of connections that lock is where the threads queue: measured here, 20,000
//! glibc threads start at ~51k/s from two threads, 20,000 threads on
//! preallocated stacks at ~83k/s; and the two mappings per thread are what
//! cap a process at ~16k connections under the default
//! `vm.max_map_count` (65530).
//!
//! Here stacks come from chunks of [`STACKS_PER_CHUNK`], one mapping per
//! chunk (adjacent chunks merge into one), and each stack's guard page is a
//! guard *marker* (`MADV_GUARD_INSTALL`, Linux 6.13+): touching it faults like
//! a `PROT_NONE` page, but it splits no mapping and takes the mmap lock only
//! for reading. A thread's stack goes back to the pool once the thread is
//! joined; a detached thread queues itself as a *zombie* as its last act and
//! the next [`take`] reaps it with `pthread_tryjoin_np`. An exiting detached
//! thread first gives back the pages below its stack pointer (as glibc does
//! for its own stacks), and a stack whose thread is gone is emptied whole
//! (`MADV_DONTNEED`) before it is free again, so free stacks hold no memory.
//!
//! On a kernel without guard markers [`take`] returns `None` and threads get
//! glibc's stacks with a classic guard page, as before.

use std::ffi::c_void;

use parking_lot::Mutex;

/// Stacks mapped at once for one stack size.
pub(crate) const STACKS_PER_CHUNK: usize = 32;
const MADV_GUARD_INSTALL: libc::c_int = 102;
/// The page size the stacks (and their guard pages) are laid out in.
pub(crate) const PAGE: usize = 4096;
/// The guard below each stack. A frame larger than the guard (a C callback
/// with a big local array, built without `-fstack-clash-protection`) can
/// jump a one-page guard and write into the stack below, whose top holds a
/// thread descriptor. Guard markers cost no memory and no mapping, so the
/// guard is 16 pages.
pub(crate) const GUARD: usize = 64 * 1024;

/// A stack from the pool: `size` usable bytes above a [`GUARD`] at `low`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stack {
    low: usize,
    size: usize,
}

impl Stack {
    /// The lowest usable address (`pthread_attr_setstack`'s `stackaddr`).
    pub(crate) fn base(&self) -> *mut c_void {
        (self.low + GUARD) as *mut c_void
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// On the thread running on this stack, as it exits: returns the pages
    /// below `sp` (less one page of margin) to the kernel.
    pub(crate) fn release_below(&self, sp: usize) {
        self.release_under((sp & !(PAGE - 1)).saturating_sub(PAGE));
    }

    /// On the thread running on this stack: returns the whole pages below
    /// `limit` to the kernel. Nothing live may lie below `limit` (the caller
    /// leaves room for its own frame and the calls it still makes).
    pub(crate) fn release_under(&self, limit: usize) {
        let low = self.low + GUARD;
        let high = limit & !(PAGE - 1);
        if high > low && high < low + self.size {
            // SAFETY: [low, high) lies inside this thread's own stack, below
            // `limit`, under which nothing is live. DONTNEED keeps the mapping
            // (and the guard marker below it); the pages read back as zeros.
            unsafe { libc::madvise(low as *mut c_void, high - low, libc::MADV_DONTNEED) };
        }
    }
}

struct Pool {
    /// None until the first chunk is mapped; false when guard markers are unsupported.
    supported: Option<bool>,
    /// Free stacks by size.
    free: Vec<(usize, Vec<usize>)>,
    /// Exited (or exiting) detached threads whose stacks return once joined.
    zombies: Vec<(libc::pthread_t, Stack)>,
    /// Chunks mapped, by stack size.
    chunks: Vec<(usize, usize)>,
}

static POOL: Mutex<Pool> =
    Mutex::new(Pool { supported: None, free: Vec::new(), zombies: Vec::new(), chunks: Vec::new() });

impl Pool {
    fn free_list(&mut self, size: usize) -> &mut Vec<usize> {
        match self.free.iter().position(|(s, _)| *s == size) {
            Some(i) => &mut self.free[i].1,
            None => {
                self.free.push((size, Vec::new()));
                &mut self.free.last_mut().expect("just pushed").1
            }
        }
    }

    /// Joins the zombies that have finished exiting and returns their stacks
    /// (to be scrubbed, then freed, outside the lock).
    fn reap(&mut self) -> Vec<Stack> {
        let mut gone = Vec::new();
        let mut i = 0;
        while i < self.zombies.len() {
            let (thread, _) = self.zombies[i];
            // SAFETY: `thread` is a joinable thread created by pthread::spawn that
            // nobody else joins or detaches (its RawThread handed it over).
            if unsafe { libc::pthread_tryjoin_np(thread, std::ptr::null_mut()) } == 0 {
                gone.push(self.zombies.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
        gone
    }
}

/// Returns a stack whose thread is gone to the kernel's zero pages (its glibc
/// thread descriptor and TLS at the top included), then to the free list: a
/// free stack holds no memory, so RSS falls back after connections end.
fn free(stacks: Vec<Stack>) {
    if stacks.is_empty() {
        return;
    }
    for stack in &stacks {
        // SAFETY: the whole usable range of a stack no thread runs on any more.
        unsafe { libc::madvise(stack.base(), stack.size, libc::MADV_DONTNEED) };
    }
    let mut pool = POOL.lock();
    for stack in stacks {
        pool.free_list(stack.size).push(stack.low);
    }
}

/// A stack of `size` bytes (a multiple of the page size) with a guard
/// below it, or `None` when the kernel cannot install guard markers, memory
/// is short, or this is a forked child (the caller then lets glibc allocate
/// the stack).
pub(crate) fn take(size: usize) -> Option<Stack> {
    debug_assert_eq!(size % PAGE, 0);
    if super::kernel_fallback() {
        return None;
    }
    if super::fork::in_forked_child() {
        return None;
    }
    let gone = POOL.lock().reap();
    free(gone);
    // Stacks mapped before guard markers failed stay usable.
    let (low, supported) = {
        let mut pool = POOL.lock();
        (pool.free_list(size).pop(), pool.supported)
    };
    if let Some(low) = low {
        return Some(Stack { low, size });
    }
    if supported == Some(false) {
        return None;
    }
    let mapped = map_chunk(size);
    let mut pool = POOL.lock();
    match mapped {
        Ok(mut lows) => {
            pool.supported = Some(true);
            match pool.chunks.iter_mut().find(|(s, _)| *s == size) {
                Some((_, n)) => *n += 1,
                None => pool.chunks.push((size, 1)),
            }
            let low = lows.pop()?;
            pool.free_list(size).extend(lows);
            Some(Stack { low, size })
        }
        Err(Unsupported::GuardMarkers) => {
            log::debug!("no MADV_GUARD_INSTALL on this kernel: connection threads get glibc stacks");
            pool.supported = Some(false);
            None
        }
        Err(Unsupported::NoMemory) => None,
    }
}

/// The stack of a thread that has been joined.
pub(crate) fn give_back(stack: Stack) {
    free(vec![stack]);
}

/// The stack of a detached `thread` that is exiting or will exit: it returns
/// to the pool once `pthread_tryjoin_np` says the thread is gone.
/// First reaps the threads that went before it, so that after a wave of
/// disconnects only the last few stacks wait for a reaper.
pub(crate) fn when_gone(thread: libc::pthread_t, stack: Stack) {
    let gone = {
        let mut pool = POOL.lock();
        let gone = pool.reap();
        pool.zombies.push((thread, stack));
        gone
    };
    free(gone);
}

/// Joins exited detached threads until none is left or `deadline` passes.
pub(crate) fn reap_all(deadline: std::time::Instant) {
    loop {
        let (gone, left) = {
            let mut pool = POOL.lock();
            let gone = pool.reap();
            (gone, pool.zombies.len())
        };
        free(gone);
        if left == 0 || std::time::Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Chunks mapped so far for stacks of `size` (for tests).
#[cfg(test)]
pub(crate) fn chunks_of(size: usize) -> usize {
    POOL.lock().chunks.iter().find(|(s, _)| *s == size).map_or(0, |(_, n)| *n)
}

enum Unsupported {
    GuardMarkers,
    NoMemory,
}

/// Maps [`STACKS_PER_CHUNK`] stacks of `size` bytes, each above a guard
/// marker, and returns their low ends.
fn map_chunk(size: usize) -> Result<Vec<usize>, Unsupported> {
    let stride = size.checked_add(GUARD).ok_or(Unsupported::NoMemory)?;
    let len = stride.checked_mul(STACKS_PER_CHUNK).ok_or(Unsupported::NoMemory)?;
    // SAFETY: a fresh anonymous private mapping; no existing memory is touched.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(Unsupported::NoMemory);
    }
    let start = ptr as usize;
    // No transparent huge pages: one touched stack page would cost 2 MiB.
    // SAFETY: the range is the mapping just created; madvise moves no memory.
    unsafe { libc::madvise(ptr, len, libc::MADV_NOHUGEPAGE) };
    let mut lows = Vec::with_capacity(STACKS_PER_CHUNK);
    for i in 0..STACKS_PER_CHUNK {
        let low = start + i * stride;
        // SAFETY: [low, low + GUARD) lies inside the mapping just created,
        // which no thread uses yet; a guard marker only makes it fault.
        if unsafe { libc::madvise(low as *mut c_void, GUARD, MADV_GUARD_INSTALL) } != 0 {
            let error = std::io::Error::last_os_error();
            // SAFETY: unmaps exactly the mapping created above, which nothing uses yet.
            unsafe { libc::munmap(ptr, len) };
            return Err(if error.raw_os_error() == Some(libc::EINVAL) && !guard_markers_work() {
                Unsupported::GuardMarkers
            } else {
                // ENOMEM, or EINVAL on a locked mapping (an embedder's
                // `mlockall(MCL_FUTURE)`): not now, perhaps later.
                log::debug!("cannot install guard markers: {error}; this thread gets a glibc stack");
                Unsupported::NoMemory
            });
        }
        lows.push(low);
    }
    Ok(lows)
}

/// Whether this kernel knows `MADV_GUARD_INSTALL` at all: tried on a fresh
/// page that is not locked (EINVAL also means "locked", and `mlockall`'s
/// `MCL_FUTURE` locks every new mapping).
fn guard_markers_work() -> bool {
    // SAFETY: a fresh anonymous private mapping of one page, unlocked, advised
    // and unmapped here; nothing else uses it.
    unsafe {
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            return true; // no answer: assume they work and try again later
        }
        libc::munlock(ptr, PAGE);
        let works = libc::madvise(ptr, PAGE, MADV_GUARD_INSTALL) == 0;
        libc::munmap(ptr, PAGE);
        works
    }
}

/// Handlers for `fork`: the pool's lock is taken around it, so the child
/// never inherits it held; the child then never uses the pool (its zombies
/// are the parent's threads, which it does not have).
pub(crate) fn lock_for_fork() {
    std::mem::forget(POOL.lock());
}

/// After `fork`, in the parent and in the child: undoes [`lock_for_fork`].
pub(crate) fn unlock_after_fork() {
    // SAFETY: the lock was taken and forgotten by `lock_for_fork` on this
    // thread (the one that forked, the only thread in the child).
    unsafe { POOL.force_unlock() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_is_reused_and_its_guard_page_faults() {
        let Some(stack) = take(64 * 1024) else {
            eprintln!("no guard markers on this kernel: nothing to test");
            return;
        };
        assert_eq!(stack.size(), 64 * 1024);
        // The usable part is writable from end to end.
        // SAFETY: both addresses are inside the stack just taken, used by nobody.
        unsafe {
            std::ptr::write_volatile(stack.base().cast::<u8>(), 1);
            std::ptr::write_volatile((stack.base() as usize + stack.size() - 1) as *mut u8, 1);
        }
        // The guard's top and bottom fault: a child process touches them and
        // must die of SIGSEGV.
        for guard in [stack.base() as usize - 1, stack.base() as usize - GUARD] {
            expect_segv(guard);
        }

        give_back(stack);
        assert_eq!(take(64 * 1024), Some(stack), "a freed stack is taken first");
        give_back(stack);
    }

    /// Forks a child that writes one byte at `guard`: it must die of SIGSEGV.
    fn expect_segv(guard: usize) {
        // SAFETY: the child only writes one byte and exits without unwinding.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the child, a deliberate write to the guard, which must
            // kill it with SIGSEGV before `_exit` runs.
            unsafe {
                std::ptr::write_volatile(guard as *mut u8, 1);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFSIGNALED(status), "writing the guard page did not fault: status {status}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGSEGV, "at {guard:#x}");
    }

    /// `mlockall(MCL_FUTURE)` makes guard markers fail with EINVAL on new
    /// mappings: that costs the threads started meanwhile a glibc stack, not
    /// the pool for good, and stacks mapped before stay in use. Runs in a
    /// child process (this test binary again), as mlockall is process-wide.
    #[test]
    fn a_locked_process_loses_new_chunks_for_a_while_not_the_pool() {
        const NAME: &str = "sys::stacks::tests::a_locked_process_loses_new_chunks_for_a_while_not_the_pool";
        if std::env::var_os("WSHUB_TEST_MLOCK_CHILD").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--test-threads=1", "--nocapture"])
                .env("WSHUB_TEST_MLOCK_CHILD", "1")
                .output()
                .unwrap();
            let text =
                String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        const SIZE: usize = 100 * 1024; // a size no other test uses
        let Some(first) = take(SIZE) else {
            eprintln!("no guard markers on this kernel: nothing to test");
            return;
        };
        // SAFETY: mlockall/munlockall take flags only; this is a child process
        // of its own.
        assert_eq!(unsafe { libc::mlockall(libc::MCL_FUTURE) }, 0, "{}", std::io::Error::last_os_error());
        let rest: Vec<_> = (1..STACKS_PER_CHUNK).map(|_| take(SIZE)).collect();
        assert!(rest.iter().all(Option::is_some), "stacks mapped before the lock stay in use");
        assert_eq!(take(SIZE), None, "a new chunk cannot get guard markers while locked");
        // SAFETY: as above.
        unsafe { libc::munlockall() };
        let again = take(SIZE);
        assert!(again.is_some(), "the pool must work again once the process is unlocked");
        rest.into_iter().flatten().chain([first]).chain(again).for_each(give_back);
    }

    #[test]
    fn pages_below_the_stack_pointer_are_released() {
        let Some(stack) = take(128 * 1024) else { return };
        let base = stack.base() as usize;
        // SAFETY: inside the stack just taken.
        unsafe { std::ptr::write_bytes(stack.base().cast::<u8>(), 7, stack.size()) };
        stack.release_below(base + 64 * 1024 + 100);
        // SAFETY: as above; released pages read back as zeros, the rest keeps its bytes.
        unsafe {
            assert_eq!(std::ptr::read_volatile(base as *const u8), 0);
            assert_eq!(std::ptr::read_volatile((base + 60 * 1024 - 1) as *const u8), 0);
            // One page of margin below the stack pointer's page is kept.
            assert_eq!(std::ptr::read_volatile((base + 60 * 1024) as *const u8), 7);
            assert_eq!(std::ptr::read_volatile((base + 64 * 1024) as *const u8), 7);
        }
        give_back(stack);
    }
}
