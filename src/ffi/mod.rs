//! Everything that crosses a foreign-function boundary, and the only place
//! `unsafe` is allowed.
//!
//! - [`pthread`]: outward, to libc: connection threads as raw pthreads.
pub(crate) mod pthread;
