//! permessage-deflate (RFC 7692): the negotiation at the upgrade, and
//! compressing one outbound message.
//!
//! The server always answers with `server_no_context_takeover` and
//! `client_no_context_takeover`: every message is a DEFLATE stream of its
//! own, so one compressed frame is the same bytes for every member of a room
//! (`frame.rs` keeps it next to the plain one), and a connection keeps no
//! compressor or inflater between messages.
//!
//! A client's `server_max_window_bits=N` is met without a smaller window: a
//! message is sent compressed to it only when its payload is at most 2^N
//! bytes, because a DEFLATE stream never refers back further than its own
//! start. Larger messages go to it uncompressed (RSV1 clear), which RFC 7692
//! allows for any message.

use flate2::{Compress, Compression, FlushCompress};

/// What a connection agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Agreed {
    /// Largest payload sent compressed to this client: 2 to the power of its
    /// `server_max_window_bits`; any size without one.
    pub max_payload: usize,
    /// The `server_max_window_bits` the client asked for, echoed in the answer.
    window_bits: Option<u8>,
}

impl Agreed {
    /// The `Sec-WebSocket-Extensions` value of the 101.
    pub(crate) fn response(&self) -> String {
        let mut out = "permessage-deflate; server_no_context_takeover; client_no_context_takeover".to_owned();
        if let Some(bits) = self.window_bits {
            out.push_str(&format!("; server_max_window_bits={bits}"));
        }
        out
    }
}

/// Picks the first offer in the request's `Sec-WebSocket-Extensions` headers
/// that the server can meet; `None` (answer without the extension) when
/// there is none. Never fails the handshake.
pub(crate) fn negotiate<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Option<Agreed> {
    headers
        .into_iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .flat_map(|(_, value)| value.split(','))
        .find_map(offer)
}

/// One offer: `permessage-deflate` with parameters each given at most once,
/// each known, each value valid (RFC 7692 section 7.1).
fn offer(text: &str) -> Option<Agreed> {
    let mut parts = text.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<String> = Vec::new();
    let mut window_bits = None;
    for part in parts {
        let (name, value) = match part.split_once('=') {
            Some((n, v)) => (n.trim().to_ascii_lowercase(), Some(v.trim().trim_matches('"'))),
            None => (part.to_ascii_lowercase(), None),
        };
        if seen.contains(&name) {
            return None;
        }
        let bits = |v: Option<&str>| -> Option<u8> {
            let v = v?;
            // RFC 7692 section 7.1.2: 8 to 15 written without a leading zero.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || v.len() > 2 || v.starts_with('0') {
                return None;
            }
            v.parse().ok().filter(|b| (8..=15).contains(b))
        };
        match (name.as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("server_max_window_bits", v) => window_bits = Some(bits(v)?),
            // A hint about the client's own window: any size inflates here.
            ("client_max_window_bits", None) => {}
            ("client_max_window_bits", v) => {
                bits(v)?;
            }
            _ => return None,
        }
        seen.push(name);
    }
    let max_payload = window_bits.map_or(usize::MAX, |b| 1usize << b);
    Some(Agreed { max_payload, window_bits })
}

/// Compressors kept for reuse, reset after every message (so no message
/// sees another's data): process-wide, not per connection, and at most this many.
const POOL_MAX: usize = 8;
static POOL: parking_lot::Mutex<Vec<Compress>> = parking_lot::Mutex::new(Vec::new());

/// A compressor from the pool, or a new one made on a thread of its own with
/// a large stack: miniz_oxide builds its hash tables (some 300 KiB) on the
/// stack before boxing them when unoptimised, more than a connection thread
/// has. `None` when that thread cannot be spawned.
fn compressor() -> Option<Compress> {
    if let Some(c) = POOL.lock().pop() {
        return Some(c);
    }
    std::thread::Builder::new()
        .name("wshub-deflate".into())
        .stack_size(8 << 20)
        .spawn(|| Compress::new(Compression::default(), false))
        .ok()?
        .join()
        .ok()
}

/// Compresses one message's payload as RFC 7692 section 7.2.1 says: a DEFLATE
/// stream ended by a sync flush, its final `00 00 ff ff` removed. `None`
/// when no compressor could be had (the message then goes uncompressed).
pub(crate) fn compress(payload: &[u8]) -> Option<Vec<u8>> {
    let mut deflater = compressor()?;
    // Room for the worst case (stored blocks: 5 bytes per 64 KiB, and the
    // flush), so the stream is written in one call: miniz_oxide is not
    // trusted to resume a sync flush cut short by a full buffer.
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 128);
    let mut input = payload;
    loop {
        if out.len() == out.capacity() {
            out.reserve(out.capacity().max(64));
        }
        let before = deflater.total_in();
        // Only an allocation failure or misuse makes this fail, and neither
        // happens with a reset compressor and room in `out`.
        let _ = deflater.compress_vec(input, &mut out, FlushCompress::Sync);
        input = &input[(deflater.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
    }
    deflater.reset();
    let mut pool = POOL.lock();
    if pool.len() < POOL_MAX {
        pool.push(deflater);
    }
    drop(pool);
    if out.ends_with(&[0x00, 0x00, 0xff, 0xff]) {
        out.truncate(out.len() - 4);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(value: &str) -> Option<Agreed> {
        negotiate([("Sec-WebSocket-Extensions", value)])
    }

    #[test]
    fn a_browser_offer_is_accepted_with_no_context_takeover_both_ways() {
        let a = ext("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(
            a.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        assert_eq!(a.max_payload, usize::MAX);
    }

    #[test]
    fn server_window_bits_are_echoed_and_bound_what_goes_compressed() {
        let a = ext("permessage-deflate; server_max_window_bits=10").unwrap();
        assert!(a.response().ends_with("; server_max_window_bits=10"));
        assert_eq!(a.max_payload, 1024);
    }

    #[test]
    fn offers_it_cannot_meet_are_skipped_for_the_next_one() {
        for bad in [
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; client_max_window_bits=08",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(ext(bad), None, "{bad}");
            let both = format!("{bad}, permessage-deflate");
            assert!(ext(&both).is_some(), "{both}");
        }
        assert_eq!(negotiate([("Host", "x")]), None);
    }

    #[test]
    fn incompressible_payloads_round_trip_whole() {
        // Pseudo-random bytes: the compressed stream is longer than the payload.
        let mut seed = 1u64;
        for len in [1000usize, 65535, 65536, 200_000] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            let packed = compress(&data).unwrap();
            assert_eq!(crate::connection::inflate::inflate(&packed, len).unwrap(), data, "{len}");
        }
    }

    #[test]
    fn compressed_output_drops_the_sync_tail() {
        let packed = compress(b"hello").unwrap();
        assert!(!packed.ends_with(&[0x00, 0x00, 0xff, 0xff]));
        // RFC 7692 section 7.2.3.1's example: "Hello" compressed.
        let hello = compress(b"Hello").unwrap();
        assert_eq!(crate::connection::inflate::inflate(&hello, 5).unwrap(), b"Hello");
    }
}
