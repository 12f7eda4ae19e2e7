//! Issue 14, item 6 (JSON amplification): parsing a client's envelope costs
//! about its own size, not a tree of values many times larger; a refused
//! (rate-limited) message is read only for its `id`.
//!
//! A counting allocator measures the peak of heap bytes in use while parsing a
//! 1 MiB envelope built to amplify (an array of small objects).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Relaxed) + layout.size();
        PEAK.fetch_max(now, Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak bytes allocated while `f` runs, above what was in use before.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = IN_USE.load(Relaxed);
    PEAK.store(base, Relaxed);
    f();
    PEAK.load(Relaxed) - base
}

fn amplifying_envelope(kind: &str) -> String {
    let mut data = String::from("[");
    while data.len() < 1_000_000 {
        data.push_str(r#"{"a":[0,1]},"#);
    }
    data.push_str("{}]");
    format!(r#"{{"type":"{kind}","payload":{{"room":"r","data":{data}}},"id":"the-id"}}"#)
}

// One test function: the counters are process-wide, and the harness runs
// tests on parallel threads.
#[test]
fn a_1_mib_envelope_costs_about_its_size() {
    let publish = amplifying_envelope("room:publish");
    let ping = amplifying_envelope("ping");
    let len = publish.len();
    assert!(len < 1 << 20);
    let mut parsed = None;
    let full = peak_during(|| parsed = Some(wshub::protocol::envelope::parse_text(&publish)));
    assert!(parsed.unwrap().is_ok());
    let pinged = peak_during(|| drop(wshub::protocol::envelope::parse_text(&ping)));
    let mut id = None;
    let peeked = peak_during(|| id = wshub::protocol::envelope::peek_id(&publish));
    assert_eq!(id.as_deref(), Some("the-id"));
    eprintln!(
        "envelope {len} bytes: parse_text peak {full} bytes (ping {pinged}), peek_id peak {peeked} bytes"
    );
    assert!(full < 2 * len, "parsing a {len}-byte publish allocated up to {full} bytes");
    assert!(pinged < 2 * len, "parsing a {len}-byte ping allocated up to {pinged} bytes");
    assert!(peeked < 4096, "reading only the id allocated up to {peeked} bytes");
}
