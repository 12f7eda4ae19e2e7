//! `wshub_result`, the C API's error codes, and the functions that describe
//! them: `wshub_error_message` (a code's meaning) and `wshub_last_error` (why
//! this thread's last call failed). The values are part of the ABI: a code
//! keeps its number forever, new codes take new numbers, and a retired one is
//! never reused.

use std::cell::RefCell;
use std::ffi::c_char;

use crate::error::{
    invalid_close_code_text, invalid_room_text, no_such_connection_text, stopped_text, Error,
};

/// What a wshub function reports. `WSHUB_OK` is 0; every other value is an
/// error, described by `wshub_error_message`. The numbers never change.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_result {
    /// Success.
    WSHUB_OK = 0,
    /// A required pointer argument was NULL.
    WSHUB_NULL_PARAMETER = 1,
    /// An argument was not acceptable: a string that is not UTF-8, a bind
    /// address that does not parse, text that is not UTF-8, an unknown kind.
    WSHUB_INVALID_ARGUMENT = 2,
    /// `wshub_start` refused the configuration (a zero limit, a size, count
    /// or duration over its bound, a path without a leading '/', a stack
    /// below 64 KiB or above 256 MiB); `wshub_last_error` says which.
    WSHUB_INVALID_CONFIG = 3,
    /// An operating-system error: binding the port, creating a thread or an
    /// eventfd.
    WSHUB_IO = 4,
    /// The server is stopped or stopping; start a new one.
    WSHUB_STOPPED = 5,
    /// No open connection has this id: it closed, or it never existed.
    WSHUB_NO_SUCH_CONNECTION = 6,
    /// Room names are 1 to 128 bytes of UTF-8 without control characters.
    WSHUB_INVALID_ROOM = 7,
    /// A close code that may not be sent (use 1000-1003, 1007-1014 or
    /// 3000-4999), or a reason longer than 123 bytes.
    WSHUB_INVALID_CLOSE_CODE = 8,
    /// `wshub_poll_event` found no event within the timeout.
    WSHUB_TIMEOUT = 9,
    /// The caller's buffer is too small; the out-length says how much is needed.
    WSHUB_BUFFER_TOO_SMALL = 10,
    /// The function does not apply to this server or event: polling a server
    /// started with callbacks, answering an event that is not an upgrade.
    WSHUB_WRONG_MODE = 11,
    /// This upgrade event was already answered (or timed out).
    WSHUB_ALREADY_ANSWERED = 12,
    /// The value asked for does not exist (e.g. no identity was attached).
    WSHUB_NOT_FOUND = 13,
    /// Called in a child process forked from one that used wshub: the
    /// parent's wshub threads do not exist there, so no wshub function works
    /// in the child (only `wshub_error_message` and `wshub_version` answer).
    /// Start servers after `fork`, or `exec` in the child.
    WSHUB_FORKED = 14,
    /// The wire protocol refused a backend call (`wshub_publish`, `wshub_ban`):
    /// data that is not JSON, the room table or the ban list full, or the
    /// protocol is not on.
    WSHUB_REFUSED = 15,
    /// wshub hit an internal bug (a Rust panic); it was contained, but the
    /// operation did not happen.
    WSHUB_PANIC = 99,
}

impl From<Error> for wshub_result {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidConfig(why) => {
                log::warn!("wshub_start: {why}");
                failed_because(format!("invalid configuration: {why}"));
                wshub_result::WSHUB_INVALID_CONFIG
            }
            Error::Io(e) => {
                log::warn!("wshub: {e}");
                failed_because(e.to_string());
                wshub_result::WSHUB_IO
            }
            Error::Stopped => wshub_result::WSHUB_STOPPED,
            Error::NoSuchConnection => wshub_result::WSHUB_NO_SUCH_CONNECTION,
            Error::InvalidRoom => wshub_result::WSHUB_INVALID_ROOM,
            Error::InvalidCloseCode => wshub_result::WSHUB_INVALID_CLOSE_CODE,
            Error::Refused(why) => {
                log::warn!("wshub: {why}");
                failed_because(why);
                wshub_result::WSHUB_REFUSED
            }
        }
    }
}

thread_local! {
    /// Why the current call fails, when it says more than its code.
    static DETAIL: RefCell<Option<String>> = const { RefCell::new(None) };
    /// This thread's last failure, for `wshub_last_error`.
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Records why the running call fails (its code alone would say less): what
/// `wshub_last_error` returns once the call has returned its error.
pub(crate) fn failed_because(why: impl Into<String>) {
    DETAIL.with(|d| *d.borrow_mut() = Some(why.into()));
}

/// Called by the boundary (`panic.rs`) as a call starts.
pub(crate) fn call_started() {
    DETAIL.with(|d| d.borrow_mut().take());
}

/// Called by the boundary as a call returns `code` (any `wshub_result`
/// other than WSHUB_OK): the thread's last error becomes the recorded reason,
/// or the code's message.
pub(crate) fn call_failed(code: u32) {
    let why = DETAIL.with(|d| d.borrow_mut().take()).unwrap_or_else(|| {
        let text = message(code);
        String::from_utf8_lossy(&text[..text.len() - 1]).into_owned()
    });
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(why));
}

/// The message for each code, NUL-terminated so C can use it directly.
fn message(code: u32) -> &'static [u8] {
    use wshub_result::*;
    const ALL: [wshub_result; 17] = [
        WSHUB_OK,
        WSHUB_NULL_PARAMETER,
        WSHUB_INVALID_ARGUMENT,
        WSHUB_INVALID_CONFIG,
        WSHUB_IO,
        WSHUB_STOPPED,
        WSHUB_NO_SUCH_CONNECTION,
        WSHUB_INVALID_ROOM,
        WSHUB_INVALID_CLOSE_CODE,
        WSHUB_TIMEOUT,
        WSHUB_BUFFER_TOO_SMALL,
        WSHUB_WRONG_MODE,
        WSHUB_ALREADY_ANSWERED,
        WSHUB_NOT_FOUND,
        WSHUB_FORKED,
        WSHUB_REFUSED,
        WSHUB_PANIC,
    ];
    match ALL.iter().find(|r| **r as u32 == code) {
        None => b"unknown wshub error code\0",
        Some(WSHUB_OK) => b"success\0",
        Some(WSHUB_NULL_PARAMETER) => b"a required pointer argument was NULL\0",
        Some(WSHUB_INVALID_ARGUMENT) => b"invalid argument (not UTF-8, unparsable address, or unknown kind)\0",
        Some(WSHUB_INVALID_CONFIG) => b"invalid configuration (a zero limit, a value over its bound, a path without '/', or a stack outside 64 KiB to 256 MiB)\0",
        Some(WSHUB_IO) => b"operating-system error (bind, thread or eventfd creation)\0",
        Some(WSHUB_STOPPED) => concat!(stopped_text!(), "\0").as_bytes(),
        Some(WSHUB_NO_SUCH_CONNECTION) => concat!(no_such_connection_text!(), "\0").as_bytes(),
        Some(WSHUB_INVALID_ROOM) => concat!(invalid_room_text!(), "\0").as_bytes(),
        Some(WSHUB_INVALID_CLOSE_CODE) => concat!(invalid_close_code_text!(), "\0").as_bytes(),
        Some(WSHUB_TIMEOUT) => b"no event within the timeout\0",
        Some(WSHUB_BUFFER_TOO_SMALL) => b"buffer too small\0",
        Some(WSHUB_WRONG_MODE) => b"not available for this server or event\0",
        Some(WSHUB_ALREADY_ANSWERED) => b"this upgrade was already answered\0",
        Some(WSHUB_NOT_FOUND) => b"not found\0",
        Some(WSHUB_FORKED) => b"wshub cannot be used in a child forked from a process that used it\0",
        Some(WSHUB_REFUSED) => b"the protocol refused it (data not JSON, room table or ban list full, or the protocol is off)\0",
        Some(WSHUB_PANIC) => b"internal error in wshub (a panic was contained)\0",
    }
}

/// A static, NUL-terminated English description of a `wshub_result` code
/// (any number: unknown codes get a generic message). Never NULL; never free it.
#[no_mangle]
pub extern "C" fn wshub_error_message(code: u32) -> *const c_char {
    ffi_boundary! { even_after_fork: message(code).as_ptr().cast::<c_char>() }
}

/// Why the calling thread's last failed call failed, as one English sentence
/// (e.g. "invalid configuration: hub_queue must be at most 1048576", "cannot
/// bind 127.0.0.1:9001: Address in use (os error 98)", a TLS file that does
/// not parse). Only calls returning a wshub_result other than WSHUB_OK set
/// it; later successful calls leave it. Writes it NUL-terminated into `buf`
/// (at most `len` bytes, cut at a character boundary when longer; `buf` may
/// be NULL when `len` is 0) and returns its full length without the NUL, as
/// snprintf does: 0 when this thread has had no failure. Any thread.
#[no_mangle]
pub extern "C" fn wshub_last_error(buf: *mut c_char, len: usize) -> usize {
    ffi_boundary! { even_after_fork:
        LAST_ERROR.with(|e| {
            let last = e.borrow();
            let Some(text) = last.as_deref() else {
                if !buf.is_null() && len > 0 {
                    // SAFETY: not NULL and at least one writable byte.
                    unsafe { *buf = 0 };
                }
                return 0;
            };
            if !buf.is_null() && len > 0 {
                let mut keep = text.len().min(len - 1);
                while !text.is_char_boundary(keep) {
                    keep -= 1;
                }
                // SAFETY: `buf` is not NULL and the caller guarantees `len`
                // writable bytes; `keep + 1 <= len` are written, from a
                // separate allocation.
                unsafe {
                    std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, keep);
                    *buf.add(keep) = 0;
                }
            }
            text.len()
        })
    }
}

/// The library's version, e.g. "0.1.0", as a static NUL-terminated string; it
/// matches the WSHUB_VERSION macro of the header the application was built with
/// when the library and header agree.
#[no_mangle]
pub extern "C" fn wshub_version() -> *const c_char {
    ffi_boundary! { even_after_fork: concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast::<c_char>() }
}
