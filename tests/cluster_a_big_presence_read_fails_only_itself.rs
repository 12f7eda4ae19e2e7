//! A room with 200,000 members in Redis, its presence asked for in a loop by
//! many clients: each `presence:get` reads a bounded page (at most
//! `PRESENCE_MAX` members, with the room's `count`), and the node stays up
//! meanwhile: `/healthz` answers 200 and publishes to other rooms are acked.
//! The heartbeat that decides whether Redis is down has its own connection,
//! so calls that are slow (or wait for a pooled connection) fail only
//! themselves.

mod cluster_common;
use cluster_common::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const MEMBERS: usize = 200_000;
/// The most members one `presence:get` lists (docs/protocol.md).
const PRESENCE_MAX: usize = 1000;
const READERS: usize = 16;

#[test]
fn presence_of_a_huge_room_is_bounded_and_leaves_the_node_up() {
    let redis = Redis::start();
    {
        let client = redis::Client::open(redis.url()).expect("url");
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).expect("connect");
        for chunk in 0..MEMBERS / 10_000 {
            let mut cmd = redis::cmd("HSET");
            cmd.arg("wshub:p:big");
            for i in chunk * 10_000..(chunk + 1) * 10_000 {
                cmd.arg(format!("000000000000-{}", 1_000_000 + i)).arg(format!("user{i}"));
            }
            cmd.query::<i64>(&mut con).expect("HSET");
        }
    }
    let a = node(&redis, &[]);
    let mut member = a.client();
    ok(&mut member, "room:join", json!({"room": "big"}));
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "calm"}));

    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let mut c = a.client();
            ok(&mut c, "room:join", json!({"room": "big"}));
            let stop = stop.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let id = c.send_request("presence:get", json!({"room": "big"}));
                    until(&mut c, 50, |v| v["id"] == id.as_str());
                }
                c // still a member for the count below
            })
        })
        .collect();

    let mut failures = Vec::new();
    let started = Instant::now();
    for i in 0..40 {
        let (status, _, body) = get(a.addr, "/healthz");
        if status != 200 {
            failures.push(format!("/healthz {status} {body:?} after {:?}", started.elapsed()));
        }
        let reply = publisher.request("room:publish", json!({"room": "calm", "data": i}));
        if reply["type"] != "ack" {
            failures.push(format!("publish {i}: {reply}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let _readers: Vec<Client> = readers.into_iter().map(|r| r.join().expect("reader thread")).collect();
    assert!(failures.is_empty(), "the node flapped while presence was read: {failures:#?}");

    let ack = ok(&mut member, "presence:get", json!({"room": "big"}));
    let members = ack["members"].as_array().expect("members");
    assert_eq!(ack["count"], MEMBERS as u64 + READERS as u64 + 1, "{}", ack["count"]);
    assert_eq!(members.len(), PRESENCE_MAX);
    let mut ids: Vec<&str> = members.iter().map(|m| m["clientId"].as_str().expect("clientId")).collect();
    let listed = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), listed, "each member once, sorted by clientId");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted by clientId");
}
