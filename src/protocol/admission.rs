//! Who may open a WebSocket: the checks made on the upgrade request, before
//! the 101 (docs/protocol.md, "Handshake rules"), never after.
//!
//! Today only the drain announcement refuses. Token auth (401), the Origin
//! allow-list (403) and per-IP caps (503 with `Retry-After`) belong here, each
//! as one more check in [`admit`]; none of them may touch a connection's state.

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};

use crate::types::{HttpResponse, RequestInfo};

/// Decides whether `request` may upgrade; the refusal to send otherwise.
pub(crate) fn admit(draining: &AtomicBool, request: &RequestInfo) -> Result<(), HttpResponse> {
    let _ = request; // auth and Origin checks will read it
    if draining.load(SeqCst) {
        return Err(draining_response());
    }
    Ok(())
}

/// The answer while the server announces its stop: to upgrades and to `/healthz`.
pub(crate) fn draining_response() -> HttpResponse {
    HttpResponse::new(503, "text/plain; charset=utf-8", "draining\n").with_header("Retry-After", "5")
}
