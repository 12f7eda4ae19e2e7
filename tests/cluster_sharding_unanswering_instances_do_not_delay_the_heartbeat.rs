//! Sharding with some instances that accept connections but never answer
//! (a stopped or wedged Redis, a host gone silent): each heartbeat on such a
//! shard waits out its 1 s timeout. The heartbeat of every shard must still
//! refresh the node's key within its TTL (5 s) on the shards that answer;
//! when the shards were beaten one after the other in one thread, six
//! silent ones made the round 7 s, the node's key expired between beats on
//! the healthy instance, and the other nodes reaped its live members there
//! (`presence:leave` for connected clients, then `presence:join` when it
//! put them back).

mod cluster_common;
use cluster_common::*;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Silent shards: six made a round of beats last past the key's TTL.
const SILENT: usize = 6;

#[test]
fn a_node_key_never_expires_on_an_answering_shard_while_others_are_silent() {
    let redis = Redis::start();
    // One listener that accepts and never answers, for every silent shard (a
    // database each, so the list has distinct entries).
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let stop = Arc::new(AtomicBool::new(false));
    let holder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let mut urls = vec![redis.url()];
    urls.extend((1..=SILENT).map(|db| format!("redis://127.0.0.1:{port}/{db}")));
    let mut args = vec!["--rate-limit", "0"];
    for url in &urls {
        args.extend(["--redis", url.as_str()]);
    }
    let (_a, _b) = (Wshub::start(&args), Wshub::start(&args));
    // Both nodes' keys on the answering instance.
    let deadline = Instant::now() + WAIT;
    let nodes: Vec<String> = loop {
        if let Ok(redis::Value::Array(ids)) = redis.query(&["SMEMBERS", "wshub:nodes"]) {
            let ids: Vec<String> = ids
                .into_iter()
                .filter_map(|id| match id {
                    redis::Value::BulkString(id) => String::from_utf8(id).ok(),
                    _ => None,
                })
                .collect();
            if ids.len() == 2 {
                break ids;
            }
        }
        assert!(Instant::now() < deadline, "both nodes beat on the answering instance");
        std::thread::sleep(Duration::from_millis(50));
    };
    // For three rounds' worth of silent beats, each key is always there.
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(3 * (SILENT as u64 + 1)) {
        for node in &nodes {
            let exists = redis.query(&["EXISTS", &format!("wshub:node:{node}")]);
            assert_eq!(
                exists,
                Ok(redis::Value::Int(1)),
                "node {node}'s key expired on the answering instance after {:?}",
                watch.elapsed()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    holder.join().expect("listener thread");
}
