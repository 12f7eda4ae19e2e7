//! `wshub_request`: the upgrade request as C sees it, in `on_upgrade` and
//! `on_connect` and in pull-mode events. Every string is an owned,
//! NUL-terminated copy, so the pointers handed out stay valid as long as the
//! request does.

use std::ffi::{c_char, CString};

use parking_lot::Mutex;

use super::error::wshub_result;
use crate::types::RequestInfo;

/// An HTTP upgrade request. Borrowed: in a callback it is valid until the
/// callback returns; from an event until `wshub_event_free`. Never free it.
pub struct wshub_request {
    info: RequestInfo,
    remote_addr: CString,
    path: CString,
    query: CString,
    headers: Vec<CString>,
    /// The authenticated user, when the protocol verified a token.
    user: Option<CString>,
    /// The client certificate's subject (TLS with a client CA).
    tls_client_subject: Option<CString>,
    /// Decoded query parameters handed out so far; kept so their pointers stay valid.
    params: Mutex<Vec<CString>>,
    /// Set by the application before accepting.
    pub(crate) identity: Mutex<Option<String>>,
    pub(crate) subprotocol: Mutex<Option<String>>,
}

/// A C string from Rust text, cut at an interior NUL (which HTTP never carries).
pub(crate) fn c_string(s: &str) -> CString {
    let bytes = s.as_bytes();
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    CString::new(&bytes[..end]).unwrap_or_default()
}

impl wshub_request {
    pub(crate) fn new(info: &RequestInfo) -> Self {
        wshub_request {
            remote_addr: c_string(&info.remote_addr.to_string()),
            path: c_string(&info.path),
            query: c_string(&info.query),
            headers: info.headers.iter().map(|(_, v)| c_string(v)).collect(),
            user: info.user.as_deref().map(c_string),
            tls_client_subject: info.tls_client_subject.as_deref().map(c_string),
            info: info.clone(),
            params: Mutex::new(Vec::new()),
            identity: Mutex::new(None),
            subprotocol: Mutex::new(None),
        }
    }
}

/// The peer's address as "IP:port" (e.g. "127.0.0.1:51234"). NULL if `request` is NULL.
#[no_mangle]
pub extern "C" fn wshub_request_remote_addr(request: *const wshub_request) -> *const c_char {
    ffi_boundary! { try_ref!(request).remote_addr.as_ptr() }
}

/// The request path without the query, e.g. "/ws". NULL if `request` is NULL.
#[no_mangle]
pub extern "C" fn wshub_request_path(request: *const wshub_request) -> *const c_char {
    ffi_boundary! { try_ref!(request).path.as_ptr() }
}

/// The raw query string without '?' ("" when there is none). NULL if `request` is NULL.
#[no_mangle]
pub extern "C" fn wshub_request_query(request: *const wshub_request) -> *const c_char {
    ffi_boundary! { try_ref!(request).query.as_ptr() }
}

/// Over TLS with client certificates (`wshub_config_set_tls_client_ca_*`):
/// the subject of the client's certificate, e.g. "CN=alice,O=Example".
/// NULL without one (or when `request` is NULL).
#[no_mangle]
pub extern "C" fn wshub_request_tls_client_subject(request: *const wshub_request) -> *const c_char {
    ffi_boundary! {
        match &try_ref!(request).tls_client_subject {
            Some(s) => s.as_ptr(),
            None => std::ptr::null(),
        }
    }
}

/// The value of the first header with this name (ASCII case-insensitive), or
/// NULL when there is none (or an argument is NULL).
#[no_mangle]
pub extern "C" fn wshub_request_header(request: *const wshub_request, name: *const c_char) -> *const c_char {
    ffi_boundary! {
        let request = try_ref!(request);
        let name = try_str!(name);
        match request.info.headers.iter().position(|(n, _)| n.eq_ignore_ascii_case(name)) {
            Some(i) => request.headers[i].as_ptr(),
            None => std::ptr::null(),
        }
    }
}

/// The first query parameter with this name, percent-decoded ('+' is a space),
/// or NULL when there is none (or an argument is NULL). Valid as long as the request.
#[no_mangle]
pub extern "C" fn wshub_request_query_param(
    request: *const wshub_request,
    name: *const c_char,
) -> *const c_char {
    ffi_boundary! {
        let request = try_ref!(request);
        let name = try_str!(name);
        match request.info.query_param(name) {
            Some(value) => {
                let value = c_string(&value);
                let ptr = value.as_ptr();
                // The CString's heap buffer does not move when the Vec grows.
                request.params.lock().push(value);
                ptr
            }
            None => std::ptr::null(),
        }
    }
}

/// The authenticated user: the `sub` of the token the built-in protocol
/// verified before this callback (auth on: `wshub_config_set_jwt_secret` or
/// `wshub_config_set_jwt_public_key_pem`), or NULL (auth off, or NULL
/// `request`). on_upgrade runs only for requests whose token passed, so the
/// application decides with the user known; unless it attaches another
/// identity, `wshub_conn_identity` returns this one. Valid as long as the request.
#[no_mangle]
pub extern "C" fn wshub_request_user(request: *const wshub_request) -> *const c_char {
    ffi_boundary! {
        match &try_ref!(request).user {
            Some(user) => user.as_ptr(),
            None => std::ptr::null(),
        }
    }
}

/// Attaches an identity string (a user name, a token's subject) to the
/// connection this request opens, readable later with `wshub_conn_identity`.
/// Only meaningful before the upgrade is accepted. The string is copied.
#[no_mangle]
pub extern "C" fn wshub_request_set_identity(
    request: *mut wshub_request,
    identity: *const c_char,
) -> wshub_result {
    ffi_boundary! {
        let request = try_ref!(request);
        *request.identity.lock() = Some(try_str!(identity).to_owned());
        wshub_result::WSHUB_OK
    }
}

/// Chooses the subprotocol echoed in Sec-WebSocket-Protocol when the upgrade is
/// accepted; it must be one the client offered (see the
/// "Sec-WebSocket-Protocol" header). The string is copied.
#[no_mangle]
pub extern "C" fn wshub_request_set_subprotocol(
    request: *mut wshub_request,
    subprotocol: *const c_char,
) -> wshub_result {
    ffi_boundary! {
        let request = try_ref!(request);
        *request.subprotocol.lock() = Some(try_str!(subprotocol).to_owned());
        wshub_result::WSHUB_OK
    }
}
