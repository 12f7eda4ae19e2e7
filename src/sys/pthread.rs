//! Connection threads as raw pthreads.
//!
//! `std::thread` gives every thread a signal stack for its stack-overflow
//! handler: two extra memory mappings (stack + guard page), four in all per
//! thread. With a reader and a writer per connection (a connection that is
//! backed up has both) that reaches
//! `vm.max_map_count` (65530 by default) near 8k connections, and past it std
//! aborts the whole process while mapping the signal stack. A raw pthread with an
//! explicit small stack and one guard page costs two mappings; on a stack from
//! [`stacks`] (guard markers, Linux 6.13+) it costs none of its own, as 32
//! stacks share one mapping. What is lost: a stack overflow on these threads is
//! reported as a plain SIGSEGV instead of std's message.

use std::cell::Cell;
use std::ffi::c_void;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};

use std::sync::atomic::{AtomicUsize, Ordering::*};
use std::sync::Arc;

use super::fork;
use super::stacks::{self, Stack};

type Job = Box<dyn FnOnce() + Send + 'static>;

thread_local! {
    /// The pooled stack this thread runs on (`None` on a glibc stack).
    static OWN_STACK: Cell<Option<Stack>> = const { Cell::new(None) };
}

/// What may still be live below the address of a local in
/// [`release_unused_stack`]: the rest of its frame, the calls it makes
/// (down to `madvise`'s return address) and the red zone, with room to spare.
const LIVE_BELOW_LOCAL: usize = 1024;

/// Gives the kernel back the pages of this thread's stack below the
/// caller's frame: what deeper calls touched and left behind (a handshake's
/// parsing, a callback's locals) stops counting as resident memory, and a
/// page faults back in (zeroed) only if a call reaches that deep again.
/// For a thread about to block for long with a shallow stack (an idle
/// connection's reader).
#[inline(never)]
pub(crate) fn release_unused_stack() {
    let here = 0u8;
    let at = std::hint::black_box(std::ptr::addr_of!(here)) as usize;
    let limit = at.saturating_sub(LIVE_BELOW_LOCAL);
    match OWN_STACK.with(Cell::get) {
        Some(stack) => stack.release_under(limit),
        None => release_glibc_stack_under(limit),
    }
}

/// [`release_unused_stack`] on a stack glibc allocated (the kernel fallback
/// path): its bounds come from `pthread_getattr_np`.
fn release_glibc_stack_under(limit: usize) {
    // SAFETY: `attr` is filled by pthread_getattr_np for this very thread
    // and destroyed once; the released range lies inside this thread's own
    // stack, at or above its lowest usable address and below `limit`, under
    // which nothing is live. DONTNEED keeps the mapping; the pages read back
    // as zeros.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let (mut addr, mut size) = (std::ptr::null_mut(), 0);
        let rc = libc::pthread_attr_getstack(&attr, &mut addr, &mut size);
        libc::pthread_attr_destroy(&mut attr);
        let low = (addr as usize).next_multiple_of(stacks::PAGE);
        let high = limit & !(stacks::PAGE - 1);
        if rc == 0 && high > low && high < addr as usize + size {
            libc::madvise(low as *mut c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}

/// What `start` runs, and what it does with the thread's pooled stack after.
struct Start {
    job: Job,
    stack: Option<Stack>,
    /// Nobody will join this thread: it hands its stack to the pool's reaper,
    /// then counts itself out of this.
    detached: Option<Arc<AtomicUsize>>,
}

/// A spawned, joinable pthread. Dropping it without [`RawThread::join`] detaches it.
#[derive(Debug)]
pub(crate) struct RawThread {
    id: libc::pthread_t,
    stack: Option<Stack>,
    joined: bool,
}

extern "C" fn start(arg: *mut c_void) -> *mut c_void {
    // SAFETY: `arg` is the `Box<Start>` leaked by `spawn_inner` for exactly this
    // thread, and it is reclaimed exactly once, here.
    let Start { job, stack, detached } = *unsafe { Box::from_raw(arg.cast::<Start>()) };
    OWN_STACK.with(|own| own.set(stack));
    // A panic must not unwind through this `extern "C"` frame (that aborts).
    if catch_unwind(AssertUnwindSafe(job)).is_err() {
        log::error!("a connection thread panicked; its connection is dropped");
    }
    if let (Some(stack), Some(_)) = (stack, &detached) {
        // Until the reaper gets to it, the stack keeps only its top pages.
        // (A joined thread's stack is emptied as soon as it is joined.)
        let here = 0u8;
        stack.release_below(std::ptr::addr_of!(here) as usize);
        // The last thing this thread does with the pool; glibc's exit path
        // still runs on the stack, and the reaper's tryjoin waits for it.
        // SAFETY: pthread_self has no preconditions.
        stacks::when_gone(unsafe { libc::pthread_self() }, stack);
    }
    if let Some(live) = detached {
        live.fetch_sub(1, AcqRel);
    }
    std::ptr::null_mut()
}

/// Starts `f` on a new joinable pthread with `stack_size` bytes of stack for
/// its own use (plus what glibc keeps at the top, see [`usable_stack`]) above
/// a guard of [`stacks::GUARD`] bytes; the stack comes from [`stacks`] when
/// the kernel allows. Connection threads are detached ([`spawn_detached`]);
/// only the tests here join one.
#[cfg(test)]
pub(crate) fn spawn<F>(name: &str, stack_size: usize, f: F) -> io::Result<RawThread>
where
    F: FnOnce() + Send + 'static,
{
    spawn_inner(name, stack_size, None, Box::new(f))
}

/// Like [`spawn`] for a thread nobody joins. `live` counts it until it has
/// handed its stack back (see [`reap_detached`]).
pub(crate) fn spawn_detached<F>(
    name: &str,
    stack_size: usize,
    live: &Arc<AtomicUsize>,
    f: F,
) -> io::Result<()>
where
    F: FnOnce() + Send + 'static,
{
    live.fetch_add(1, AcqRel);
    let thread = match spawn_inner(name, stack_size, Some(live.clone()), Box::new(f)) {
        Ok(thread) => thread,
        Err(e) => {
            live.fetch_sub(1, AcqRel);
            return Err(e);
        }
    };
    if thread.stack.is_none() {
        // SAFETY: a joinable thread just created and not joined: detaching lets
        // it free itself on exit.
        unsafe { libc::pthread_detach(thread.id) };
    }
    // With a pooled stack the thread hands itself to the reaper as it exits.
    std::mem::forget(thread);
    Ok(())
}

fn spawn_inner(
    name: &str,
    stack_size: usize,
    detached: Option<Arc<AtomicUsize>>,
    f: Job,
) -> io::Result<RawThread> {
    let named = {
        // Linux limits thread names to 15 bytes.
        let short: String = name.chars().take(15).collect();
        std::ffi::CString::new(short).ok()
    };
    let job: Job = Box::new(move || {
        if let Some(name) = named {
            // SAFETY: `name` is a valid NUL-terminated string of at most 15 bytes,
            // and pthread_self() is this thread.
            unsafe { libc::pthread_setname_np(libc::pthread_self(), name.as_ptr()) };
        }
        f()
    });
    // SAFETY: attr is initialised by pthread_attr_init before any other use and
    // destroyed once; a pooled stack is ours alone until the thread is joined;
    // `arg` is a leaked Box handed to `start`, or reclaimed here when
    // pthread_create fails (then no thread owns it, and the stack goes back).
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let rc = libc::pthread_attr_init(&mut attr);
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        let Some(size) = usable_stack(stack_size, &attr) else {
            libc::pthread_attr_destroy(&mut attr);
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "thread stack size out of range"));
        };
        let stack = stacks::take(size);
        let mut rc = match stack {
            // glibc adds no guard to a stack it is given: the pool's guard marker is it.
            Some(stack) => libc::pthread_attr_setstack(&mut attr, stack.base(), stack.size()),
            None => match libc::pthread_attr_setstacksize(&mut attr, size) {
                0 => libc::pthread_attr_setguardsize(&mut attr, stacks::GUARD),
                rc => rc,
            },
        };
        let masked = rc == 0 && super::signals::set_start_mask(&mut attr);
        let arg = Box::into_raw(Box::new(Start { job, stack, detached })).cast::<c_void>();
        let mut id: libc::pthread_t = std::mem::zeroed();
        if rc == 0 {
            // Without a start mask in `attr`, the new thread inherits this one's.
            let _blocked = (!masked).then(super::signals::block_all);
            rc = libc::pthread_create(&mut id, &attr, start, arg);
        }
        libc::pthread_attr_destroy(&mut attr);
        if rc != 0 {
            drop(Box::from_raw(arg.cast::<Start>()));
            if let Some(stack) = stack {
                stacks::give_back(stack);
            }
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(RawThread { id, stack, joined: false })
    }
}

/// The stack to give a thread for `requested` bytes of its own: glibc puts
/// the thread descriptor and the static TLS at the top of the stack it is
/// given (docs/operations.md, "Deploying"), so what the thread may use is what is left. As in Rust's std, glibc's
/// `__pthread_get_minstack` says how much that is (it includes
/// `PTHREAD_STACK_MIN`); it is added to the request, which is what
/// `reader_stack_size` promises the code running on the thread. Rounded up to
/// whole pages; `None` when that overflows.
fn usable_stack(requested: usize, attr: &libc::pthread_attr_t) -> Option<usize> {
    type MinStack = unsafe extern "C" fn(*const libc::pthread_attr_t) -> libc::size_t;
    static MIN_STACK: std::sync::OnceLock<Option<MinStack>> = std::sync::OnceLock::new();
    let f = MIN_STACK.get_or_init(|| {
        // SAFETY: dlsym with a NUL-terminated name; a non-null result is
        // glibc's `size_t __pthread_get_minstack(const pthread_attr_t *)`.
        let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__pthread_get_minstack".as_ptr()) };
        // SAFETY: as above: the symbol has exactly this signature.
        (!sym.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, MinStack>(sym) })
    });
    // SAFETY: `attr` is an initialised attribute object; the function only reads it.
    let overhead = f.map_or(libc::PTHREAD_STACK_MIN, |f| unsafe { f(attr) });
    let page = stacks::PAGE;
    requested.checked_add(overhead)?.checked_next_multiple_of(page)
}

/// Installs the `fork` handlers once per process (see [`fork::in_forked_child`]
/// and [`stacks::lock_for_fork`]).
pub(crate) fn watch_fork() {
    extern "C" fn prepare() {
        stacks::lock_for_fork();
    }
    extern "C" fn parent() {
        stacks::unlock_after_fork();
    }
    extern "C" fn child() {
        fork::mark_forked_child();
        stacks::unlock_after_fork();
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: three handlers that take or release one lock and store a
        // flag: async-signal-safe enough for the child, which runs them
        // before anything else.
        let rc = unsafe {
            libc::pthread_atfork(Some(prepare as unsafe extern "C" fn()), Some(parent), Some(child))
        };
        if rc != 0 {
            log::warn!("pthread_atfork failed: {}", io::Error::from_raw_os_error(rc));
        }
    });
}

/// Once the threads counted by `live` have run their course: waits (until
/// `deadline`) for them to hand back their stacks and joins every exited
/// detached thread, so none is left unjoined when a server stops (valgrind
/// counts an unjoined thread's TLS as possibly lost).
pub(crate) fn reap_detached(live: &AtomicUsize, deadline: std::time::Instant) {
    while live.load(Acquire) > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    stacks::reap_all(deadline);
}

impl RawThread {
    /// Waits for the thread to finish.
    #[cfg(test)]
    pub(crate) fn join(mut self) {
        self.joined = true;
        // SAFETY: `id` is a joinable thread created by `spawn` that has not been
        // joined or detached (both consume `self`).
        unsafe { libc::pthread_join(self.id, std::ptr::null_mut()) };
        if let Some(stack) = self.stack.take() {
            stacks::give_back(stack); // the thread is gone: its stack is free
        }
    }
}

impl Drop for RawThread {
    fn drop(&mut self) {
        if !self.joined {
            match self.stack.take() {
                // Still running, perhaps: the reaper joins it once it has exited.
                Some(stack) => stacks::when_gone(self.id, stack),
                // SAFETY: as in `join`; detaching lets the thread free itself on exit.
                None => unsafe {
                    libc::pthread_detach(self.id);
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_joins_and_survives_a_panic() {
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        spawn("t-ok", 64 * 1024, move || {
            n2.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
        .join();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        spawn("t-panic", 64 * 1024, || panic!("boom")).unwrap().join();
    }

    /// Writes `depth` bytes of stack below the caller, in 16 KiB frames.
    #[inline(never)]
    fn touch_stack(depth: usize) {
        let mut frame = [1u8; 16 * 1024];
        std::hint::black_box(&mut frame);
        if depth > frame.len() {
            touch_stack(depth - frame.len());
        }
    }

    /// Pages of `stack` in memory, by `mincore`.
    fn resident_pages(stack: Stack) -> usize {
        let mut pages = vec![0u8; stack.size() / stacks::PAGE];
        // SAFETY: the range is a whole pooled stack (page-aligned, mapped),
        // and `pages` has one byte per page of it.
        let rc = unsafe { libc::mincore(stack.base(), stack.size(), pages.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", io::Error::last_os_error());
        pages.iter().filter(|&&p| p & 1 == 1).count()
    }

    #[test]
    fn pages_touched_below_the_caller_are_released_on_request() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("t-release", 256 * 1024, move || {
            let Some(stack) = OWN_STACK.with(Cell::get) else {
                let _ = tx.send(None); // a glibc stack: nothing to release
                return;
            };
            touch_stack(96 * 1024);
            let before = resident_pages(stack);
            release_unused_stack();
            let after = resident_pages(stack);
            // The stack still works below the released pages (they read as zeros).
            touch_stack(96 * 1024);
            let _ = tx.send(Some((before, after, resident_pages(stack))));
        })
        .unwrap()
        .join();
        let Some((before, after, again)) = rx.recv().unwrap() else {
            eprintln!("no guard markers on this kernel: nothing to test");
            return;
        };
        assert!(before >= 24, "the thread touched {before} pages");
        // What is left: glibc's descriptor and TLS, this test's frames.
        assert!(after <= 4, "{after} of {before} pages still resident after the release");
        assert!(again >= 24, "touched again: {again} pages");
    }

    /// This thread's signal mask.
    fn own_mask() -> libc::sigset_t {
        // SAFETY: reads the calling thread's mask into a zeroed set.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
            mask
        }
    }

    #[test]
    fn a_connection_thread_blocks_sigint_but_not_faults_and_its_creator_is_unchanged() {
        let (tx, rx) = std::sync::mpsc::channel();
        spawn("t-mask", 64 * 1024, move || {
            let _ = tx.send(own_mask());
        })
        .unwrap()
        .join();
        let mask = rx.recv().unwrap();
        // SAFETY: sigismember reads initialised sets.
        unsafe {
            assert_eq!(libc::sigismember(&mask, libc::SIGINT), 1);
            assert_eq!(libc::sigismember(&mask, libc::SIGTERM), 1);
            assert_eq!(libc::sigismember(&mask, libc::SIGSEGV), 0);
            assert_eq!(libc::sigismember(&own_mask(), libc::SIGINT), 0, "the creator's mask changed");
        }
    }

    #[test]
    fn a_stack_size_that_overflows_is_an_error_not_a_panic() {
        for size in [usize::MAX, usize::MAX - 4096, isize::MAX as usize + 1] {
            assert!(spawn("t-huge", size, || {}).is_err(), "{size}");
        }
    }

    #[test]
    fn pooled_stacks_return_after_join_and_after_a_detached_exit() {
        const SIZE: usize = 96 * 1024; // a size no other test uses
        const EACH: usize = 40;
        for round in 0..6 {
            let done = Arc::new(AtomicUsize::new(0));
            let joinable: Vec<_> = (0..EACH)
                .map(|_| {
                    let d = done.clone();
                    spawn("t-pool", SIZE, move || {
                        d.fetch_add(1, Ordering::SeqCst);
                    })
                    .unwrap()
                })
                .collect();
            let live = Arc::new(AtomicUsize::new(0));
            for _ in 0..EACH {
                let d = done.clone();
                spawn_detached("t-pool-d", SIZE, &live, move || {
                    d.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
            }
            joinable.into_iter().for_each(RawThread::join);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while done.load(Ordering::SeqCst) < 2 * EACH {
                assert!(std::time::Instant::now() < deadline, "round {round}: threads did not finish");
                std::thread::yield_now();
            }
        }
        // SAFETY: an attribute object initialised before use and destroyed after.
        let pooled = unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            let size = usable_stack(SIZE, &attr).unwrap();
            libc::pthread_attr_destroy(&mut attr);
            size
        };
        if stacks::chunks_of(pooled) > 0 {
            // 6 rounds of 80 threads with no reuse would map 15 chunks of 32;
            // with reuse the first round's 3, plus one or two for detached
            // threads still on their way out when the next round starts.
            assert!(
                stacks::chunks_of(pooled) <= 6,
                "{} chunks: stacks are not reused",
                stacks::chunks_of(pooled)
            );
        }
    }
}
