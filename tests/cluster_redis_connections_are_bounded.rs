//! Many readers calling Redis at once share a bounded pool: a caller waits
//! for a connection instead of opening (and dropping) one of its own.

mod cluster_common;
use cluster_common::*;

use serde_json::json;

/// Redis's `total_connections_received`.
fn connections_received(redis: &Redis) -> u64 {
    let redis::Value::BulkString(info) = redis.query(&["INFO", "stats"]).expect("INFO") else {
        panic!("INFO is a bulk string");
    };
    let info = String::from_utf8(info).expect("utf-8");
    info.lines()
        .find_map(|l| l.strip_prefix("total_connections_received:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("total_connections_received")
}

#[test]
fn three_hundred_publishers_use_a_bounded_number_of_connections() {
    const CLIENTS: usize = 300;
    const EACH: usize = 20;
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| a.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        ok(c, "room:join", json!({"room": format!("r{}", i % 10)}));
    }
    let before = connections_received(&redis);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                for n in 0..EACH {
                    ok(&mut c, "room:publish", json!({"room": format!("r{}", i % 10), "data": n}));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a publisher failed (an error instead of an ack?)");
    }
    let opened = connections_received(&redis) - before;
    // The pool's bound (32), plus this test's INFO and the subscriber or
    // heartbeat reconnecting should the loaded machine make one time out.
    assert!(opened <= 32 + 4, "{opened} connections for {} publishes", CLIENTS * EACH);
}
