//! With `--redis`, `room:join`s and event streams that take a seat in a
//! `max_members` room at the same moment on one node take no more seats than
//! the room has: each passes the first check (`Shared::check_seat`) before
//! any of them has its seat, so the join and the stream's opening check
//! again under the room's lock, as a single node does. The refused joins get
//! `error forbidden`; the refused streams `event: error`, and they end.

mod api_common;
mod cluster_common;

use std::sync::{Arc, Barrier};

use api_common::Sse;
use cluster_common::*;
use serde_json::json;

const SEATS: usize = 2;
const STREAMS: usize = 16;

fn seats_config(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("wshub-cluster-seats-{tag}-{}.toml", std::process::id()));
    std::fs::write(&path, format!("[[namespace]]\nprefix = \"cap:\"\nmax_members = {SEATS}\n")).unwrap();
    path
}

#[test]
fn joins_at_once_on_one_node_get_at_most_the_seats() {
    let redis = Redis::start();
    let config = seats_config("joins");
    let server = node(&redis, &["--config", config.to_str().unwrap(), "--max-handshakes-per-ip", "64"]);
    let clients: Vec<Client> = (0..STREAMS).map(|_| server.client()).collect();
    let start = Arc::new(Barrier::new(STREAMS));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let start = start.clone();
            std::thread::spawn(move || {
                start.wait();
                let reply = client.request("room:join", json!({"room": "cap:x"}));
                (reply["type"].as_str().unwrap_or_default().to_owned(), client)
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let joined = results.iter().filter(|(kind, _)| kind == "ack").count();
    assert!((1..=SEATS).contains(&joined), "{joined} members joined a room of {SEATS} seats");
    let _ = std::fs::remove_file(config);
}

#[test]
fn streams_opening_at_once_on_one_node_get_at_most_the_seats() {
    let redis = Redis::start();
    let config = seats_config("streams");
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
