//! `wshub_namespace_options` and `wshub_config_add_namespace`: the C face of
//! [`Namespace`] (docs/protocol.md, "Namespaces and rights"). The rules and
//! their defaults stay in `src/protocol/namespace.rs`; this only reads the
//! caller's struct, as far as its `struct_size` says.

use std::ffi::c_char;
use std::time::Duration;

use super::config::wshub_config;
use super::error::wshub_result;
use crate::protocol::Namespace;

/// A `history_size` or `history_max_bytes` that takes the top-level setting
/// (`WSHUB_NAMESPACE_INHERIT`, `SIZE_MAX`, defined by build.rs: cbindgen
/// cannot write `usize::MAX` portably).
const WSHUB_NAMESPACE_INHERIT: usize = usize::MAX;

/// A `history_ttl_ms` that takes the top-level setting.
pub const WSHUB_NAMESPACE_INHERIT_MS: u64 = u64::MAX;

/// The rules of the rooms of one namespace (`wshub_config_add_namespace`).
/// Always initialize it with `WSHUB_NAMESPACE_OPTIONS_INIT`, which sets
/// `struct_size` and the rules of a room outside any namespace
/// (`wshub_namespace_options options = WSHUB_NAMESPACE_OPTIONS_INIT;`), then
/// change the rules you need. wshub reads only the fields `struct_size`
/// covers: a program built against an older header gets the defaults for
/// the fields it does not know.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct wshub_namespace_options {
    /// `sizeof(wshub_namespace_options)` in the header the application was
    /// built with; `WSHUB_NAMESPACE_OPTIONS_INIT` sets it.
    pub struct_size: usize,
    /// Whether clients may publish (false: only the backend API and
    /// `wshub_publish*` may; clients get `error forbidden`). Default true.
    pub client_publish: bool,
    /// Whether rooms have a member list (false: `presence:get` is
    /// `forbidden` and no `presence:join`/`leave` is sent). Default true.
    pub presence: bool,
    /// Whether members get `presence:join`/`leave` events. Default true.
    pub join_leave: bool,
    /// Whether `typing:start`/`typing:stop` are allowed. Default true.
    pub typing: bool,
    /// Messages each room keeps (0: no history); `WSHUB_NAMESPACE_INHERIT`
    /// (the default) takes `wshub_config_set_history_size`'s.
    pub history_size: usize,
    /// Bytes of history each room keeps (0: no history);
    /// `WSHUB_NAMESPACE_INHERIT` (the default) takes the top-level setting.
    pub history_max_bytes: usize,
    /// Milliseconds each room keeps a message (0: no history);
    /// `WSHUB_NAMESPACE_INHERIT_MS` (the default) takes the top-level setting.
    pub history_ttl_ms: u64,
    /// Members a room takes; one more join gets `error forbidden`. 0 (the
    /// default) = no limit.
    pub max_members: usize,
}

impl wshub_namespace_options {
    /// What `WSHUB_NAMESPACE_OPTIONS_INIT` sets.
    fn defaults() -> Self {
        let n = Namespace::new("");
        wshub_namespace_options {
            struct_size: std::mem::size_of::<Self>(),
            client_publish: n.client_publish,
            presence: n.presence,
            join_leave: n.join_leave,
            typing: n.typing,
            history_size: WSHUB_NAMESPACE_INHERIT,
            history_max_bytes: WSHUB_NAMESPACE_INHERIT,
            history_ttl_ms: WSHUB_NAMESPACE_INHERIT_MS,
            max_members: n.max_members,
        }
    }

    /// The caller's options over the defaults, as far as its `struct_size`
    /// says; `None` when `struct_size` is not a size this struct could have.
    ///
    /// # Safety
    /// `ptr` points to at least `struct_size` readable bytes, aligned for
    /// `wshub_namespace_options` (the C API's contract for the argument).
    unsafe fn read(ptr: *const wshub_namespace_options) -> Option<Self> {
        const FIELD: usize = std::mem::size_of::<usize>();
        const LARGEST: usize = 4096;
        // SAFETY: every version of the struct starts with `struct_size`.
        let size = unsafe { std::ptr::addr_of!((*ptr).struct_size).read() };
        if !(FIELD..=LARGEST).contains(&size) || size % FIELD != 0 {
            return None;
        }
        let covered = size.min(std::mem::size_of::<Self>());
        let mut ours = Self::defaults();
        // SAFETY: `covered` bytes are readable at `ptr` (at most the caller's
        // size) and writable in `ours` (at most our size); they do not
        // overlap. The copied bytes are whole fields the caller wrote as
        // these types; a `bool` the caller wrote is 0 or 1 in C.
        unsafe {
            std::ptr::copy_nonoverlapping(
                ptr.cast::<u8>(),
                std::ptr::addr_of_mut!(ours).cast::<u8>(),
                covered,
            )
        };
        ours.struct_size = std::mem::size_of::<Self>();
        Some(ours)
    }

    fn to_namespace(self, prefix: &str) -> Namespace {
        let mut n = Namespace::new(prefix)
            .client_publish(self.client_publish)
            .presence(self.presence)
            .join_leave(self.join_leave)
            .typing(self.typing)
            .max_members(self.max_members);
        if self.history_size != WSHUB_NAMESPACE_INHERIT {
            n = n.history_size(self.history_size);
        }
        if self.history_max_bytes != WSHUB_NAMESPACE_INHERIT {
            n = n.history_max_bytes(self.history_max_bytes);
        }
        if self.history_ttl_ms != WSHUB_NAMESPACE_INHERIT_MS {
            n = n.history_ttl(Duration::from_millis(self.history_ttl_ms));
        }
        n
    }
}

/// Protocol only: rooms whose name starts with `prefix` (copied; the
/// longest matching prefix wins) follow `options` (copied; NULL: the
/// defaults of `WSHUB_NAMESPACE_OPTIONS_INIT`) instead of the top-level
/// settings. A second namespace with the same prefix replaces the first.
/// Errors: WSHUB_NULL_PARAMETER (config or prefix), WSHUB_INVALID_ARGUMENT
/// (a `struct_size` that is not one, a prefix that is not UTF-8); an empty
/// prefix or a value over its bound makes `wshub_start` return
/// WSHUB_INVALID_CONFIG.
#[no_mangle]
pub extern "C" fn wshub_config_add_namespace(
    config: *mut wshub_config,
    prefix: *const c_char,
    options: *const wshub_namespace_options,
) -> wshub_result {
    ffi_boundary! {
        let config = try_out!(config);
        let prefix = try_str!(prefix);
        let options = if options.is_null() {
            wshub_namespace_options::defaults()
        } else {
            // SAFETY: not NULL; the C caller passes a struct that starts
            // with `struct_size` and is that many bytes long.
            match unsafe { wshub_namespace_options::read(options) } {
                Some(o) => o,
                None => return wshub_result::WSHUB_INVALID_ARGUMENT,
            }
        };
        config.protocol.namespaces.push(options.to_namespace(prefix));
        wshub_result::WSHUB_OK
    }
}
