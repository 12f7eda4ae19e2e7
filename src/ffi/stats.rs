//! `wshub_stats` and `wshub_metrics_text`: a running server's counters for a
//! host that reports them itself (the Rust side: `ServerHandle::stats`,
//! `ServerHandle::metrics_text`).

use std::ffi::c_char;

use super::error::wshub_result;
use super::server::wshub_server;

/// A server's counters, filled by `wshub_stats`. Set `size` to
/// `sizeof(wshub_server_stats)` before the call: fields may be added at the end in
/// later versions, and wshub writes only the first `size` bytes (and sets
/// `size` to how many it wrote), so a program built against an older header
/// keeps working. Counters named `_total` only grow; the others are gauges.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct wshub_server_stats {
    /// In: the caller's `sizeof(wshub_server_stats)`. Out: the bytes wshub wrote.
    pub size: usize,
    /// Open WebSocket connections.
    pub connections: u64,
    /// WebSocket connections opened since the start.
    pub connections_total: u64,
    /// Rooms with at least one member.
    pub rooms: u64,
    /// Data messages received from peers.
    pub messages_in_total: u64,
    /// Data frames written to peers.
    pub messages_out_total: u64,
    /// Payload bytes received in data messages.
    pub bytes_in_total: u64,
    /// Bytes written to sockets after the handshake (frames of every kind).
    pub bytes_out_total: u64,
    /// Sockets in their handshake now (HTTP request not yet answered).
    pub handshakes_in_progress: u64,
    /// Connections closed with 1013: their outbound queue was full (frames).
    pub dropped_slow_consumer_total: u64,
    /// Connections closed with 1013: their outbound queue was full (bytes).
    pub dropped_outbound_bytes_total: u64,
    /// Connections closed with 1008 for sending frames too fast.
    pub dropped_frame_rate_total: u64,
    /// Connections closed with 1009 for a message in too many frames.
    pub dropped_fragments_total: u64,
    /// Requests refused instead of upgraded, all statuses (the sum of the
    /// `rejects_*` fields below).
    pub rejects_total: u64,
    /// Sockets dropped without any response (over every bound).
    pub rejects_dropped_total: u64,
    /// Refused with 400 Bad Request.
    pub rejects_400_total: u64,
    /// Refused with 401 Unauthorized (token missing or invalid).
    pub rejects_401_total: u64,
    /// Refused with 403 Forbidden (Origin not allowed, or the application said so).
    pub rejects_403_total: u64,
    /// Refused with 404 Not Found (an upgrade on another path).
    pub rejects_404_total: u64,
    /// Refused with 408 Request Timeout (no complete request in time).
    pub rejects_408_total: u64,
    /// Refused with 429 Too Many Requests (connect rate).
    pub rejects_429_total: u64,
    /// Refused with 431 (request head too large).
    pub rejects_431_total: u64,
    /// Refused with 503 Service Unavailable (a cap, or stopping).
    pub rejects_503_total: u64,
    /// Refused with any other status.
    pub rejects_other_total: u64,
    /// Sockets answered by the overflow thread: over the per-IP connect rate.
    pub overflow_connect_rate_total: u64,
    /// ... over the per-IP connection cap.
    pub overflow_connections_per_ip_total: u64,
    /// ... over the per-IP handshake cap.
    pub overflow_handshakes_per_ip_total: u64,
    /// ... over the server's handshake cap.
    pub overflow_handshakes_total: u64,
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures_total: u64,
    /// The deepest any outbound queue has been (frames).
    pub queue_depth_max: u64,
}

/// Fills `*stats` with the server's counters now (see `wshub_server_stats`'s
/// `size` rule). WSHUB_INVALID_ARGUMENT when `stats->size` is smaller than
/// the `size` field itself. Any thread, also inside callbacks.
#[no_mangle]
pub extern "C" fn wshub_stats(server: *mut wshub_server, stats: *mut wshub_server_stats) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        if stats.is_null() {
            return wshub_result::WSHUB_NULL_PARAMETER;
        }
        // SAFETY: not NULL; the caller passes a struct at least `size` bytes
        // long whose first field is `size` (the header's rule).
        let size = unsafe { std::ptr::addr_of!((*stats).size).read_unaligned() };
        if size < std::mem::size_of::<usize>() {
            return wshub_result::WSHUB_INVALID_ARGUMENT;
        }
        let handle = match server.handle() {
            Ok(h) => h,
            Err(code) => return code,
        };
        let filled = fill(&handle);
        let n = size.min(std::mem::size_of::<wshub_server_stats>());
        let filled = wshub_server_stats { size: n, ..filled };
        // SAFETY: `stats` points to at least `size` >= `n` writable bytes
        // (the caller's promise), and `filled` is a plain-data struct of at
        // least `n` bytes; the two do not overlap.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(filled).cast::<u8>(),
                stats.cast::<u8>(),
                n,
            )
        };
        wshub_result::WSHUB_OK
    }
}

fn fill(handle: &crate::ServerHandle) -> wshub_server_stats {
    let s = handle.stats();
    let by = |status: u16| {
        s.handshake_rejects_by_status.iter().find(|(st, _)| *st == status).map_or(0, |(_, n)| *n)
    };
    const NAMED: [u16; 9] = [0, 400, 401, 403, 404, 408, 429, 431, 503];
    let other =
        s.handshake_rejects_by_status.iter().filter(|(st, _)| !NAMED.contains(st)).map(|(_, n)| *n).sum();
    let overflow = |reason: &str| {
        s.handshake_overflow_by_reason.iter().find(|(r, _)| *r == reason).map_or(0, |(_, n)| *n)
    };
    wshub_server_stats {
        size: 0,
        connections: s.connections,
        connections_total: s.connections_total,
        rooms: handle.room_count().unwrap_or(0) as u64,
        messages_in_total: s.messages_in,
        messages_out_total: s.messages_out,
        bytes_in_total: s.bytes_in,
        bytes_out_total: s.bytes_out,
        handshakes_in_progress: s.handshakes_in_progress,
        dropped_slow_consumer_total: s.dropped_slow_consumer,
        dropped_outbound_bytes_total: s.dropped_outbound_bytes,
        dropped_frame_rate_total: s.dropped_frame_rate,
        dropped_fragments_total: s.dropped_fragments,
        rejects_total: s.handshake_rejects,
        rejects_dropped_total: by(0),
        rejects_400_total: by(400),
        rejects_401_total: by(401),
        rejects_403_total: by(403),
        rejects_404_total: by(404),
        rejects_408_total: by(408),
        rejects_429_total: by(429),
        rejects_431_total: by(431),
        rejects_503_total: by(503),
        rejects_other_total: other,
        overflow_connect_rate_total: overflow("connect_rate_per_ip"),
        overflow_connections_per_ip_total: overflow("connections_per_ip"),
        overflow_handshakes_per_ip_total: overflow("handshakes_per_ip"),
        overflow_handshakes_total: overflow("handshakes"),
        tls_handshake_failures_total: s.tls_handshake_failures,
        queue_depth_max: s.queue_depth_max,
    }
}

/// Writes the server's counters as Prometheus text (exposition format
/// 0.0.4), NUL-terminated, into `buf` (`len` bytes), for a host that serves
/// them on its own admin port. With the protocol on
/// (`wshub_config_set_protocol`) it is exactly what `GET /metrics` returns;
/// without it, the engine's counters under the same metric names and in the
/// same format.
///
/// `*needed_out` (when not NULL) is always set to the bytes the text needs,
/// NUL included. When `len` is smaller, nothing is written to `buf` and the
/// call returns WSHUB_BUFFER_TOO_SMALL: call again with a larger buffer.
/// `buf` may be NULL when `len` is 0 (to ask for the size). Any thread.
#[no_mangle]
pub extern "C" fn wshub_metrics_text(
    server: *mut wshub_server,
    buf: *mut c_char,
    len: usize,
    needed_out: *mut usize,
) -> wshub_result {
    ffi_boundary! {
        let server = try_ref!(server);
        if buf.is_null() && len > 0 {
            return wshub_result::WSHUB_NULL_PARAMETER;
        }
        let handle = match server.handle() {
            Ok(h) => h,
            Err(code) => return code,
        };
        let text = handle.metrics_text();
        let needed = text.len() + 1;
        if !needed_out.is_null() {
            // SAFETY: not NULL; the caller passes writable storage for a size_t.
            unsafe { needed_out.write(needed) };
        }
        if len < needed {
            return wshub_result::WSHUB_BUFFER_TOO_SMALL;
        }
        // SAFETY: `buf` is not NULL (len >= needed > 0) and holds `len` >=
        // `needed` writable bytes (the caller's promise).
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf.cast::<u8>(), text.len());
            buf.add(text.len()).write(0);
        }
        wshub_result::WSHUB_OK
    }
}
