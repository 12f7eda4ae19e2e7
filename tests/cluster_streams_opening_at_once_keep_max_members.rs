//! With `--redis`, event streams that open a `max_members` room at the same
//! moment on one node take no more seats than the room has: each passes the
//! upgrade's check (`Shared::check_seat`) before any of them has its seat, so
//! the opening checks again under the room's lock, as a single node does.
//! The refused ones get `event: error` and the stream ends.

mod api_common;
mod cluster_common;

use std::sync::{Arc, Barrier};

use api_common::Sse;
use cluster_common::*;

const SEATS: usize = 2;
const STREAMS: usize = 16;

#[test]
fn streams_opening_at_once_on_one_node_get_at_most_the_seats() {
    let redis = Redis::start();
    let config = std::env::temp_dir().join(format!("wshub-cluster-seats-{}.toml", std::process::id()));
    std::fs::write(&config, format!("[[namespace]]\nprefix = \"cap:\"\nmax_members = {SEATS}\n")).unwrap();
    let server = node(&redis, &["--config", config.to_str().unwrap(), "--max-handshakes-per-ip", "64"]);
    let addr = server.addr;
    let start = Arc::new(Barrier::new(STREAMS));
    let threads: Vec<_> = (0..STREAMS)
        .map(|_| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let mut stream = Sse::open(addr, "room=cap:x", &[]);
                let first = (stream.status == 200).then(|| stream.next()).flatten();
                (first.map(|e| e.event), stream)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let opened = results.iter().filter(|(first, _)| first.as_deref() == Some("connected")).count();
    assert!((1..=SEATS).contains(&opened), "{opened} streams opened a room of {SEATS} seats");
    let _ = std::fs::remove_file(config);
}
