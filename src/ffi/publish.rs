//! Publishing from C into the wire protocol's rooms: the same seq, history
//! and fan-out as a client's publish (`from: "api"`), so clients that rejoin
//! with `since` recover what the backend sent. `wshub_broadcast` stays the
//! engine's raw broadcast (no seq, no history).
//!
//! Both calls are safe from any thread and from inside any callback.

use std::ffi::c_char;

use super::error::wshub_result;
use super::server::wshub_server;
use crate::protocol::ProtocolHandler;
use crate::server::ServerHandle;

/// The server's protocol handler and engine handle: WSHUB_REFUSED when the
/// protocol is off (`wshub_config_set_protocol`), WSHUB_STOPPED once stopped.
pub(super) fn protocol(server: &wshub_server) -> Result<(&ProtocolHandler, ServerHandle), wshub_result> {
    let handle = server.handle()?;
    let protocol = server.protocol.get().ok_or(wshub_result::WSHUB_REFUSED)?;
    Ok((protocol, handle))
}

/// Writes `seq` to `*seq_out` (when not NULL) on success.
fn finish(result: Result<u64, wshub_result>, seq_out: *mut u64) -> wshub_result {
    match result {
        Ok(seq) => {
            if !seq_out.is_null() {
                // SAFETY: the caller passes NULL or a valid, writable u64.
                unsafe { *seq_out = seq };
            }
            wshub_result::WSHUB_OK
        }
        Err(code) => code,
    }
}

/// Protocol only: publishes `length` bytes of JSON at `data` (copied; any
/// JSON value, e.g. `{"status":"shipped"}`) into `room` as the backend.
/// Members get a `room:message` with `from: "api"` and the room's next seq,
/// stored in history like a client's publish; `*seq_out` (may be NULL)
/// gets that seq. Safe from any thread and from inside callbacks.
/// Errors: WSHUB_INVALID_ARGUMENT (not UTF-8 JSON), WSHUB_INVALID_ROOM,
/// WSHUB_REFUSED (the protocol is off, or the room table is full),
/// WSHUB_STOPPED.
#[no_mangle]
pub extern "C" fn wshub_publish(
    server: *mut wshub_server,
    room: *const c_char,
    data: *const u8,
    length: usize,
    seq_out: *mut u64,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        let data = try_bytes!(data, length);
        let result = (|| {
            let json = std::str::from_utf8(data).map_err(|_| wshub_result::WSHUB_INVALID_ARGUMENT)?;
            if serde_json::from_str::<&serde_json::value::RawValue>(json).is_err() {
                return Err(wshub_result::WSHUB_INVALID_ARGUMENT);
            }
            let (protocol, handle) = protocol(server)?;
            protocol.publish_json(&handle, room, json).map_err(wshub_result::from)
        })();
        finish(result, seq_out)
    }
}

/// Protocol only: publishes `length` opaque bytes at `data` (copied; NULL
/// when `length` is 0) into `room` as the backend: members get the binary
/// room message `[0x02][u16 room length][room][u64 seq][body]`, event
/// streams its base64. `*seq_out` (may be NULL) gets the seq. Safe from any
/// thread and from inside callbacks. Errors as `wshub_publish`.
#[no_mangle]
pub extern "C" fn wshub_publish_binary(
    server: *mut wshub_server,
    room: *const c_char,
    data: *const u8,
    length: usize,
    seq_out: *mut u64,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        let room = try_str!(room);
        let data = try_bytes!(data, length);
        let result = protocol(server)
            .and_then(|(protocol, handle)| protocol.publish_binary(&handle, room, data).map_err(wshub_result::from));
        finish(result, seq_out)
    }
}
