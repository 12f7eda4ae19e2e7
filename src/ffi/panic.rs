//! The plumbing every exported function goes through: one boundary macro that
//! keeps panics on the Rust side, and the argument macros that turn a NULL or
//! malformed argument into an error value instead of undefined behaviour.
//!
//! What a function returns when it cannot do its work depends on its return
//! type, through [`FfiDefault`]: a `wshub_result` says why, a pointer is NULL, a
//! number is 0, `void` is nothing.

use super::error::wshub_result;

/// The value an exported function returns when it was given a NULL or invalid
/// argument, or when its body panicked.
pub(crate) trait FfiDefault {
    /// For a NULL pointer argument.
    fn null_parameter() -> Self;
    /// For an argument that is not NULL but not acceptable either (bad UTF-8, ...).
    fn invalid_argument() -> Self;
    /// For a panic caught at the boundary.
    fn panicked() -> Self;
    /// For a call in a forked child (see `WSHUB_FORKED`).
    fn forked() -> Self
    where
        Self: Sized,
    {
        Self::panicked()
    }
    /// The error code this value reports, when it is a failed `wshub_result`.
    fn failure(&self) -> Option<u32> {
        None
    }
}

impl FfiDefault for wshub_result {
    fn null_parameter() -> Self {
        wshub_result::WSHUB_NULL_PARAMETER
    }
    fn invalid_argument() -> Self {
        wshub_result::WSHUB_INVALID_ARGUMENT
    }
    fn panicked() -> Self {
        wshub_result::WSHUB_PANIC
    }
    fn forked() -> Self {
        wshub_result::WSHUB_FORKED
    }
    fn failure(&self) -> Option<u32> {
        (*self != wshub_result::WSHUB_OK).then_some(*self as u32)
    }
}

macro_rules! zero_default {
    ($($t:ty => $v:expr),* $(,)?) => {
        $(impl FfiDefault for $t {
            fn null_parameter() -> Self { $v }
            fn invalid_argument() -> Self { $v }
            fn panicked() -> Self { $v }
        })*
    };
}

zero_default! {
    () => (),
    u16 => 0,
    u32 => 0,
    u64 => 0,
    usize => 0,
    i32 => -1,
}

impl<T> FfiDefault for *const T {
    fn null_parameter() -> Self {
        std::ptr::null()
    }
    fn invalid_argument() -> Self {
        std::ptr::null()
    }
    fn panicked() -> Self {
        std::ptr::null()
    }
}

impl<T> FfiDefault for *mut T {
    fn null_parameter() -> Self {
        std::ptr::null_mut()
    }
    fn invalid_argument() -> Self {
        std::ptr::null_mut()
    }
    fn panicked() -> Self {
        std::ptr::null_mut()
    }
}

/// Runs `body`; a panic becomes [`FfiDefault::panicked`] and never unwinds into C.
/// In a forked child `body` does not run (unless `even_after_fork`): the
/// call returns [`FfiDefault::forked`].
pub(crate) fn boundary<T: FfiDefault>(even_after_fork: bool, body: impl FnOnce() -> T) -> T {
    if !even_after_fork && crate::sys::fork::in_forked_child() {
        return T::forked();
    }
    super::error::call_started();
    let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("no message");
            log::error!("wshub: a panic was caught at the C boundary: {what}");
            super::error::failed_because(format!("internal error in wshub (a panic was contained): {what}"));
            T::panicked()
        }
    };
    if let Some(code) = result.failure() {
        super::error::call_failed(code);
    }
    result
}

/// The body of every `extern "C"` function: `ffi_boundary! {{ ... }}`. Inside,
/// `return` leaves the function with a value, and the argument macros below may
/// be used.
macro_rules! ffi_boundary {
    (even_after_fork: $($body:tt)*) => {
        $crate::ffi::panic::boundary(true, move || { $($body)* })
    };
    ($($body:tt)*) => {
        $crate::ffi::panic::boundary(false, move || { $($body)* })
    };
}

/// `try_ref!(ptr)`: `&T` from a C pointer, or return the NULL-parameter value.
/// Only for pointers the C API documents as "a valid handle from wshub or NULL".
macro_rules! try_ref {
    ($ptr:expr) => {{
        let ptr = $ptr;
        if ptr.is_null() {
            return $crate::ffi::panic::FfiDefault::null_parameter();
        }
        // SAFETY: not NULL, and the C API requires it to be a live handle that
        // wshub gave out (or a pointer to a live object of this type).
        unsafe { &*ptr }
    }};
}

/// `try_out!(ptr)`: `&mut T` for an out-parameter, or return the NULL-parameter value.
macro_rules! try_out {
    ($ptr:expr) => {{
        let ptr = $ptr;
        if ptr.is_null() {
            return $crate::ffi::panic::FfiDefault::null_parameter();
        }
        // SAFETY: not NULL; the C caller passes a pointer to writable storage of
        // this type that lives for the duration of the call.
        unsafe { &mut *ptr }
    }};
}

/// `try_str!(ptr)`: `&str` from a NUL-terminated C string, or return the
/// NULL-parameter value (NULL) or the invalid-argument value (not UTF-8).
macro_rules! try_str {
    ($ptr:expr) => {{
        let ptr: *const std::ffi::c_char = $ptr;
        if ptr.is_null() {
            return $crate::ffi::panic::FfiDefault::null_parameter();
        }
        // SAFETY: not NULL; the C caller passes a NUL-terminated string that
        // lives for the duration of the call.
        let cstr = unsafe { std::ffi::CStr::from_ptr(ptr) };
        match cstr.to_str() {
            Ok(s) => s,
            Err(_) => return $crate::ffi::panic::FfiDefault::invalid_argument(),
        }
    }};
}

/// `try_bytes!(ptr, len)`: `&[u8]` from a pointer and a length; NULL is
/// accepted only with length 0.
macro_rules! try_bytes {
    ($ptr:expr, $len:expr) => {{
        let (ptr, len): (*const u8, usize) = ($ptr, $len);
        if len == 0 {
            &[][..]
        } else if ptr.is_null() {
            return $crate::ffi::panic::FfiDefault::null_parameter();
        } else if len > isize::MAX as usize {
            return $crate::ffi::panic::FfiDefault::invalid_argument();
        } else {
            // SAFETY: not NULL, and the C caller passes `len` readable bytes that
            // live for the duration of the call.
            unsafe { std::slice::from_raw_parts(ptr, len) }
        }
    }};
}

/// `to_result!(expr)`: evaluates a `Result<(), wshub_result>` into a `wshub_result`.
macro_rules! to_result {
    ($e:expr) => {
        match $e {
            Ok(()) => $crate::ffi::error::wshub_result::WSHUB_OK,
            Err(code) => code,
        }
    };
}
