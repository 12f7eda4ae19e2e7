//! The callbacks a C application plugs into `wshub_start`
//! (`wshub_callbacks`), their types and threads, and the kinds of message
//! they are handed. The adapter that calls them is `handler.rs`.

use std::ffi::{c_char, c_int, c_void};

use super::request::wshub_request;
use super::server::wshub_server;

/// A message kind: `WSHUB_TEXT` (UTF-8) or `WSHUB_BINARY`.
pub type wshub_message_kind = u32;
/// A text message: the bytes must be UTF-8.
pub const WSHUB_TEXT: wshub_message_kind = 1;
/// A binary message.
pub const WSHUB_BINARY: wshub_message_kind = 2;

/// on_upgrade: a client asks to open a WebSocket on the configured path; no
/// 101 has been sent yet. `conn` is the id the connection will have. Read the
/// request with the wshub_request_* functions (remote address, path, query,
/// headers); optionally attach an identity (`wshub_request_set_identity`) or
/// pick a subprotocol. Return 0 (or 101) to accept, or an HTTP status
/// 400-599 to refuse with it (any other value refuses with 500). `request` is
/// valid only during the call. Runs on the connection's reader thread.
pub type wshub_on_upgrade = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        request: *mut wshub_request,
    ) -> u16,
>;

/// on_connect: the connection is open (the 101 was sent). `request` is the
/// upgrade request, valid only during the call. Messages sent from here reach
/// the client before any reply to its messages. Runs on the connection's
/// reader thread.
pub type wshub_on_connect = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        request: *const wshub_request,
    ),
>;

/// on_message: a complete message arrived: `length` bytes at `data` (a NUL
/// byte follows them, so text can be printed directly), `kind` WSHUB_TEXT
/// (valid UTF-8) or WSHUB_BINARY. `data` is valid only during the call; copy
/// what you keep. The connection's next message is not read until this
/// returns. Runs on the connection's reader thread. Never called when the
/// built-in protocol is on (`wshub_config_set_protocol`): it handles every
/// message itself.
pub type wshub_on_message = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        data: *const u8,
        length: usize,
        kind: wshub_message_kind,
    ),
>;

/// on_close: the connection is gone and out of every room; sends to it fail
/// with WSHUB_NO_SUCH_CONNECTION. `code` is the peer's close code when it sent
/// one, the server's when it closed first, 1006 when the TCP connection ended
/// without a close frame; `reason` (never NULL) is valid only during the call.
/// Its user data (`wshub_conn_user_data`) is still readable here and is
/// forgotten when this returns: free what it points to here. Runs on the
/// connection's reader thread; it is the connection's last callback.
pub type wshub_on_close = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        code: u16,
        reason: *const c_char,
    ),
>;

/// `on_join`'s answer for a read-only member: it joins and receives, but
/// its publishes, binary publishes and typing get `error forbidden`.
pub const WSHUB_JOIN_READ_ONLY: c_int = 2;

/// on_join: protocol only (`wshub_config_set_protocol`): a client asks to
/// join `room` (`room:join`), and its token's `rooms` or `caps` claim, if
/// any, allows it. Return 0 to refuse with `error forbidden`,
/// `WSHUB_JOIN_READ_ONLY` to let it join read-only, any other value to let
/// it join with every right its token gives.
/// `user` is the token's `sub` (NULL when auth is off); `user` and `room` are
/// valid only during the call. Runs on the connection's reader thread, before
/// the join takes effect, for the first join of each room (not for a rejoin
/// of a room the connection is in). An event stream (`GET /sse?room=R`) asks
/// it too, once on_upgrade accepted it (so `wshub_conn_identity` and
/// `wshub_conn_user_data` answer as for a `room:join`) and before its `200`
/// (refused: `403`, and what on_upgrade attached is forgotten, as for a 101
/// that cannot be sent). A `presence:get` of a room the client is not in
/// (allowed by its token's `rooms` claim) asks it too. Not called in pull
/// mode (joins are allowed there).
pub type wshub_on_join = Option<
    extern "C" fn(
        user_data: *mut c_void,
        server: *mut wshub_server,
        conn: u64,
        user: *const c_char,
        room: *const c_char,
    ) -> c_int,
>;

/// The callbacks of a server started with `wshub_start`. Any may be NULL
/// (on_upgrade NULL accepts every upgrade). Always initialize it with
/// `WSHUB_CALLBACKS_INIT`, which sets `struct_size` and every callback to
/// NULL (`wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;`), then set the
/// callbacks you use. wshub reads only the fields `struct_size` covers, so a program built
/// against an older header, whose struct ends earlier, keeps working: the
/// callbacks it does not know are taken as NULL.
///
/// Threads: every callback runs on the reader thread of its connection (one
/// thread per connection, never the thread that called wshub_start), so
/// callbacks of different connections run in parallel and must be thread-safe
/// with respect to each other; callbacks for one connection are never
/// concurrent with each other and come in the order on_upgrade, on_connect,
/// on_message..., on_close. Every on_connect is followed by exactly one
/// on_close; a refused upgrade gets no further callback, and neither does an
/// accepted one whose 101 cannot be sent (the client vanished) or whose
/// writer thread cannot be created: wshub then forgets the identity and user
/// data attached in on_upgrade itself, but cannot free what the user data
/// points to, so allocate per-connection resources in on_connect, not in
/// on_upgrade. Every wshub function may be called from inside
/// any callback, including wshub_stop. In a child process forked from one
/// that used wshub, every wshub function fails with WSHUB_FORKED. Callbacks must not throw C++
/// exceptions or longjmp out. The struct is copied by wshub_start.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct wshub_callbacks {
    /// `sizeof(wshub_callbacks)` in the header the application was built
    /// with; `WSHUB_CALLBACKS_INIT` sets it. `wshub_start` refuses a struct
    /// without it (WSHUB_INVALID_ARGUMENT): 0, not a multiple of a pointer's
    /// size, or over 4096 (the address of an `on_upgrade` from a header
    /// that had no `struct_size`).
    pub struct_size: usize,
    /// See `wshub_on_upgrade`.
    pub on_upgrade: wshub_on_upgrade,
    /// See `wshub_on_connect`.
    pub on_connect: wshub_on_connect,
    /// See `wshub_on_message`.
    pub on_message: wshub_on_message,
    /// See `wshub_on_close`.
    pub on_close: wshub_on_close,
    /// See `wshub_on_join` (protocol only; may be NULL: every join allowed).
    pub on_join: wshub_on_join,
}

impl wshub_callbacks {
    /// The caller's callbacks, read as far as its `struct_size` says: fields
    /// past it (a program built against an older header) are NULL, fields
    /// this library does not know (a newer header) are not read. `None` when
    /// `struct_size` is not a size this struct could have.
    ///
    /// # Safety
    /// `ptr` points to at least `struct_size` readable bytes, aligned for
    /// `wshub_callbacks` (the C API's contract for the argument).
    pub(super) unsafe fn read(ptr: *const wshub_callbacks) -> Option<wshub_callbacks> {
        const FIELD: usize = std::mem::size_of::<usize>();
        // No header will ever declare a struct this large, and no function
        // is mapped this low: a program built against the header from
        // before `struct_size`, whose struct starts with `on_upgrade`,
        // passes a code address here, refused rather than taken as a size.
        const LARGEST: usize = 4096;
        // SAFETY: the caller's struct starts with `struct_size` (every
        // version of the header that has it has it first).
        let size = unsafe { std::ptr::addr_of!((*ptr).struct_size).read() };
        if !(FIELD..=LARGEST).contains(&size) || size % FIELD != 0 {
            return None;
        }
        let covered = size.min(std::mem::size_of::<wshub_callbacks>());
        let mut ours = std::mem::MaybeUninit::<wshub_callbacks>::zeroed();
        // SAFETY: `covered` bytes are readable at `ptr` (at most the caller's
        // size) and writable in `ours` (at most our size); they do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), ours.as_mut_ptr().cast::<u8>(), covered) };
        // SAFETY: all-zero bytes are a valid `usize` and a valid NULL (`None`)
        // for every callback; the copied fields are whole fields the caller
        // wrote as these types.
        let mut ours = unsafe { ours.assume_init() };
        ours.struct_size = std::mem::size_of::<wshub_callbacks>();
        Some(ours)
    }
}

/// The application's `user_data`, handed back to every callback.
#[derive(Clone, Copy)]
pub(super) struct UserData(pub(super) *mut c_void);

// SAFETY: wshub never dereferences it; the header tells the application that
// it is passed to callbacks on wshub's threads.
unsafe impl Send for UserData {}
// SAFETY: as above.
unsafe impl Sync for UserData {}

/// The answer to an upgrade.
#[derive(Debug)]
pub(crate) enum Decision {
    Accept { identity: Option<String>, subprotocol: Option<String> },
    Reject(u16),
}

impl Decision {
    /// 0 or 101 accept; 400-599 refuse with that status; anything else refuses with 500.
    pub(crate) fn from_status(status: u16) -> Self {
        match status {
            0 | 101 => Decision::Accept { identity: None, subprotocol: None },
            400..=599 => Decision::Reject(status),
            _ => Decision::Reject(500),
        }
    }
}
