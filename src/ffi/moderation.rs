//! Kick and ban from C (docs/protocol.md, "Backend HTTP API"); the settings
//! of the backend API and the ban list are `wshub_config` setters
//! (`config.rs`). The calls act like
//! `POST /api/disconnect`, `/api/ban` and `/api/unban` (with Redis, on every
//! node); all are safe from any thread and from inside callbacks.

use std::ffi::c_char;
use std::time::{Duration, UNIX_EPOCH};

use super::error::wshub_result;
use super::publish::protocol;
use super::server::wshub_server;

/// Protocol only: closes every open connection (WebSocket and SSE stream)
/// of `user` (a token's `sub`) with `code` (1000-1003, 1007-1014 or
/// 3000-4999; the API's default is 4000) and `reason` (NULL: none).
/// `*count_out` (may be NULL) gets how many on this node (with Redis, every
/// other node closes the user's connections too). Errors: WSHUB_INVALID_CLOSE_CODE,
/// WSHUB_REFUSED (the protocol is off), WSHUB_STOPPED.
#[no_mangle]
pub extern "C" fn wshub_disconnect_user(
    server: *mut wshub_server,
    user: *const c_char,
    code: u16,
    reason: *const c_char,
    count_out: *mut usize,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let user = try_str!(user);
        let reason = if reason.is_null() { "" } else { try_str!(reason) };
        let result = protocol(server).and_then(|(protocol, handle)| {
            protocol.disconnect_user(&handle, user, code, reason).map_err(wshub_result::from)
        });
        match result {
            Ok(n) => {
                if !count_out.is_null() {
                    // SAFETY: the caller passes NULL or a valid, writable size_t.
                    unsafe { *count_out = n };
                }
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// Protocol only: bans `user` for `seconds` (1 to ten years): their open
/// connections close with 4003, new ones get 403 until it ends (with Redis,
/// on every node). `*until_ms_out` (may be NULL) gets its end in milliseconds since the
/// Unix epoch. Errors: WSHUB_INVALID_ARGUMENT (0 seconds), WSHUB_REFUSED (the
/// protocol is off, or the ban list is full: `wshub_config_set_max_bans`),
/// WSHUB_STOPPED.
#[no_mangle]
pub extern "C" fn wshub_ban(
    server: *mut wshub_server,
    user: *const c_char,
    seconds: u64,
    until_ms_out: *mut u64,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let user = try_str!(user);
        if seconds == 0 || user.is_empty() {
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        }
        let result = protocol(server).and_then(|(protocol, handle)| {
            protocol.ban(&handle, user, Duration::from_secs(seconds)).map_err(wshub_result::from)
        });
        match result {
            Ok(until) => {
                if !until_ms_out.is_null() {
                    let ms = until.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                    // SAFETY: the caller passes NULL or a valid, writable u64.
                    unsafe { *until_ms_out = ms };
                }
                wshub_result::WSHUB_OK
            }
            Err(code) => code,
        }
    }
}

/// Protocol only: lifts `user`'s ban (with Redis, on every node; not banned
/// is not an error).
/// Errors: WSHUB_REFUSED (the protocol is off), WSHUB_STOPPED.
#[no_mangle]
pub extern "C" fn wshub_unban(server: *mut wshub_server, user: *const c_char) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let user = try_str!(user);
        to_result!(protocol(server).map(|(protocol, _)| {
            protocol.unban(user);
        }))
    }
}
