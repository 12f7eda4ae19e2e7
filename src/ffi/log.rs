//! `wshub_set_log_callback`: where a C host's wshub log lines go (the sink
//! itself is `logging.rs`).

use std::ffi::{c_char, c_void, CString};

use log::{Level, LevelFilter};

use super::callbacks::UserData;
use super::error::wshub_result;

/// How much wshub logs: a record is passed on when its level is at or below
/// the level set (WSHUB_LOG_WARN passes warnings and errors).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum wshub_log_level {
    /// Nothing at all.
    WSHUB_LOG_OFF = 0,
    /// Errors: a thread could not be created, a callback panicked, ...
    WSHUB_LOG_ERROR = 1,
    /// Warnings: refused handshakes, peers over a limit, slow shutdowns. The default.
    WSHUB_LOG_WARN = 2,
    /// Start, stop, TLS reloads, protocol API calls.
    WSHUB_LOG_INFO = 3,
    /// Per-connection detail (why a connection ended, refused tokens' reasons).
    WSHUB_LOG_DEBUG = 4,
    /// Everything.
    WSHUB_LOG_TRACE = 5,
}

impl wshub_log_level {
    fn filter(self) -> LevelFilter {
        match self {
            wshub_log_level::WSHUB_LOG_OFF => LevelFilter::Off,
            wshub_log_level::WSHUB_LOG_ERROR => LevelFilter::Error,
            wshub_log_level::WSHUB_LOG_WARN => LevelFilter::Warn,
            wshub_log_level::WSHUB_LOG_INFO => LevelFilter::Info,
            wshub_log_level::WSHUB_LOG_DEBUG => LevelFilter::Debug,
            wshub_log_level::WSHUB_LOG_TRACE => LevelFilter::Trace,
        }
    }

    fn from_u32(raw: u32) -> Option<wshub_log_level> {
        use wshub_log_level::*;
        [WSHUB_LOG_OFF, WSHUB_LOG_ERROR, WSHUB_LOG_WARN, WSHUB_LOG_INFO, WSHUB_LOG_DEBUG, WSHUB_LOG_TRACE]
            .into_iter()
            .find(|l| *l as u32 == raw)
    }

    fn of(level: Level) -> wshub_log_level {
        match level {
            Level::Error => wshub_log_level::WSHUB_LOG_ERROR,
            Level::Warn => wshub_log_level::WSHUB_LOG_WARN,
            Level::Info => wshub_log_level::WSHUB_LOG_INFO,
            Level::Debug => wshub_log_level::WSHUB_LOG_DEBUG,
            Level::Trace => wshub_log_level::WSHUB_LOG_TRACE,
        }
    }
}

/// Receives one log record: its level, its target (the wshub module that
/// logged it, e.g. "wshub::connection::reader") and the message, one line
/// without a trailing newline. Both strings are NUL-terminated and valid only
/// during the call.
pub type wshub_log_fn = Option<
    extern "C" fn(
        user_data: *mut c_void,
        level: wshub_log_level,
        target: *const c_char,
        message: *const c_char,
    ),
>;

/// Sets how much wshub logs and where it goes. `level` is a wshub_log_level
/// (WSHUB_INVALID_ARGUMENT otherwise); WSHUB_LOG_OFF silences
/// wshub entirely. `callback` NULL: lines go to stderr, one line each:
/// "2026-12-01T00:41:07.123Z wshub WARN wshub::connection::reader: conn 7
/// (127.0.0.1:51234): request refused with 403" (UTC time, "wshub", level
/// ERROR/WARN/INFO/DEBUG/TRACE, target, message; no line breaks inside).
/// Without any call, a program using the C API gets warnings and errors on
/// stderr in this format from its first `wshub_start*` on.
///
/// May be called at any time, before `wshub_start` or while servers run; the
/// setting is per process, for every server. When it returns, the previous
/// callback is not running and is never called again, so its `user_data`
/// may be freed: it waits for the calls of the previous callback under way
/// on other threads, so do not hold a lock that your callback takes while
/// calling this. From inside the log callback it returns WSHUB_WRONG_MODE
/// and changes nothing.
///
/// Threads: the callback runs on whichever thread logs (wshub's connection
/// threads, the hub, the acceptor, ..., or yours inside a wshub call),
/// possibly on several at once, and no wshub lock is held while it runs. It
/// must be thread-safe and return quickly, and should not call wshub
/// functions: what wshub would log from inside it is dropped (never passed
/// to it again), and wshub may hold its own locks while it logs. No log line
/// contains a token, an API key or a query string. A panic inside wshub (a
/// bug) is logged as an error, never printed on stderr by itself.
///
/// When the process already has a Rust logger (a Rust program that also uses
/// the C API), that logger keeps receiving everything and this only records
/// the setting.
#[no_mangle]
pub extern "C" fn wshub_set_log_callback(
    level: u32,
    callback: wshub_log_fn,
    user_data: *mut c_void,
) -> wshub_result {
    ffi_boundary! {
        if crate::logging::in_sink() {
            // It would wait for the call it is part of to return.
            super::error::failed_because("wshub_set_log_callback was called from inside the log callback");
            return wshub_result::WSHUB_WRONG_MODE;
        }
        // A plain integer, not the enum type: C may pass any value.
        let Some(level) = wshub_log_level::from_u32(level) else {
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        };
        let sink = callback.map(|f| {
            let user_data = UserData(user_data);
            Box::new(move |level: Level, target: &str, message: &str| {
                let target = c_string(target);
                let message = c_string(message);
                let user_data = &user_data;
                f(user_data.0, wshub_log_level::of(level), target.as_ptr(), message.as_ptr());
            }) as crate::logging::Sink
        });
        crate::logging::set_sink(level.filter(), sink);
        wshub_result::WSHUB_OK
    }
}

/// `s` as a C string, without the NUL bytes it may contain.
fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}
