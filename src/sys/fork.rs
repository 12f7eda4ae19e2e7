//! Whether this process is a child forked from one that ran wshub. Imports
//! nothing from the crate, so both [`super::stacks`] and [`super::pthread`]
//! can read it; [`super::pthread::watch_fork`] sets it.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

static FORKED_CHILD: AtomicBool = AtomicBool::new(false);

/// True in a child forked from a process that ran wshub: none of the
/// parent's wshub threads exist there, so nothing of wshub may be used.
pub(crate) fn in_forked_child() -> bool {
    FORKED_CHILD.load(Relaxed)
}

/// Called by the `fork` child handler only.
pub(super) fn mark_forked_child() {
    FORKED_CHILD.store(true, Relaxed);
}
