//! Sharding (`--redis` repeated): rooms are spread over two `redis-server`
//! children by a hash of their name, the same on every node. With one
//! instance stopped, rooms on the other keep publishing and delivering
//! across nodes; rooms on the stopped one answer `unavailable`, and recover
//! (seqs going on, nothing acked lost) once it is back.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

const ROOMS: usize = 16;

fn holds(redis: &Redis, room: &str) -> bool {
    matches!(redis.query(&["EXISTS", &format!("wshub:m:{room}")]), Ok(redis::Value::Int(1)))
}

/// Publishes `data` to `room`: the ack's payload, or the error's.
fn publish(client: &mut Client, room: &str, data: &str) -> Value {
    let id = client.send_request("room:publish", json!({"room": room, "data": data}));
    until(client, 1000, |v| v["id"] == id.as_str())
}

/// The next `room:message` of `room` (other rooms' messages and events skipped).
fn next_message(client: &mut Client, room: &str) -> Value {
    until(client, 1000, |v| v["type"] == "room:message" && v["payload"]["room"] == room)["payload"].clone()
}

#[test]
fn one_redis_down_stops_only_its_rooms_and_they_recover() {
    let (first, mut second) = (Redis::start(), Redis::start());
    let (u1, u2) = (first.url(), second.url());
    let args = ["--redis", u1.as_str(), "--redis", u2.as_str(), "--rate-limit", "0"];
    // Node B has the same list from its config file (a list under `redis`).
    let dir = TempDir::new("shards-config");
    let file = dir.0.join("wshub.toml");
    std::fs::write(&file, format!("redis = [{u1:?}, {u2:?}]\nrate_limit = 0\n")).expect("config file");
    let (a, b) = (Wshub::start(&args), Wshub::start(&["--config", file.to_str().expect("utf-8")]));
    let (mut publisher, mut reader) = (a.client(), b.client());
    let rooms: Vec<String> = (0..ROOMS).map(|i| format!("room-{i}")).collect();
    for room in &rooms {
        ok(&mut publisher, "room:join", json!({"room": room}));
        ok(&mut reader, "room:join", json!({"room": room}));
        let ack = publish(&mut publisher, room, "one");
        assert_eq!(ack["payload"]["seq"], 1, "{ack}");
        assert_eq!(next_message(&mut reader, room)["data"], "one");
    }
    // Each room lives on exactly one instance, and both have some.
    let (on_first, on_second): (Vec<&String>, Vec<&String>) = rooms.iter().partition(|r| holds(&first, r));
    for room in &on_first {
        assert!(!holds(&second, room), "{room} on both instances");
    }
    for room in &on_second {
        assert!(holds(&second, room), "{room} on neither instance");
    }
    assert!(!on_first.is_empty() && !on_second.is_empty(), "all {ROOMS} rooms on one instance");

    second.stop_keeping_data();
    // The first instance's rooms go on, across nodes, while the second is down.
    for _round in 0..3 {
        for room in &on_first {
            let ack = publish(&mut publisher, room, "during");
            assert_eq!(ack["type"], "ack", "{room} on the running instance: {ack}");
            let got = next_message(&mut reader, room);
            assert_eq!((got["data"].as_str(), &got["seq"]), (Some("during"), &ack["payload"]["seq"]));
        }
    }
    for room in &on_second {
        let reply = publish(&mut publisher, room, "refused");
        assert_eq!(reply["payload"]["code"], "unavailable", "{room} on the stopped instance: {reply}");
    }
    // The node serves the running instance's rooms: healthy, with one shard of two up.
    let deadline = Instant::now() + WAIT;
    while protocol_common::metric(a.addr, "wshub_redis_shards_up") != 1 {
        assert!(Instant::now() < deadline, "wshub_redis_shards_up did not fall to 1");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(protocol_common::metric(a.addr, "wshub_redis_up"), 0);
    // Which one is down, by its position in the list.
    assert_eq!(protocol_common::metric(a.addr, "wshub_redis_shard_up{shard=\"0\"}"), 1);
    assert_eq!(protocol_common::metric(a.addr, "wshub_redis_shard_up{shard=\"1\"}"), 0);
    assert_eq!(get(a.addr, "/healthz").0, 200);
    // A join of a new room on the running instance works too.
    let mut newcomer = b.client();
    let fresh = (0..1000).map(|i| format!("fresh-{i}")).find(|r| {
        let reply = newcomer.request("room:join", json!({"room": r}));
        reply["type"] == "ack"
    });
    assert!(fresh.is_some(), "no room could be joined while one instance was down");

    second.spawn();
    // Its rooms come back with their seqs, on both nodes.
    let deadline = Instant::now() + Duration::from_secs(15);
    for room in &on_second {
        let ack = loop {
            let reply = publish(&mut publisher, room, "back");
            if reply["type"] == "ack" {
                break reply;
            }
            assert_eq!(reply["payload"]["code"], "unavailable", "{reply}");
            assert!(Instant::now() < deadline, "{room} did not come back: {reply}");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(ack["payload"]["seq"], 2, "{room}: the seq goes on (the instance kept its data): {ack}");
        let got = next_message(&mut reader, room);
        assert_eq!((got["data"].as_str(), &got["seq"]), (Some("back"), &json!(2)), "{room}");
    }
    assert_eq!(protocol_common::metric(a.addr, "wshub_redis_shards_up"), 2);
}

/// A node given the instances in another order would look for rooms on
/// other shards: it says so in its log.
#[test]
fn a_node_given_another_shard_list_says_so() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (first, second) = (Redis::start(), Redis::start());
    let (u1, u2) = (first.url(), second.url());
    let _a = Wshub::start(&["--redis", u1.as_str(), "--redis", u2.as_str()]);
    let deadline = Instant::now() + WAIT;
    while !matches!(second.query(&["EXISTS", "wshub:shards"]), Ok(redis::Value::Int(1))) {
        assert!(Instant::now() < deadline, "node A did not record its shard list");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut b = Command::new(env!("CARGO_BIN_EXE_wshub"))
        .args(["--bind", "127.0.0.1:0", "--log-level", "warn", "--redis", &u2, "--redis", &u1])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wshub");
    let stderr = b.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let told = std::iter::from_fn(|| rx.recv_timeout(WAIT).ok())
        .take(1000)
        .any(|line| line.contains("another node of this cluster was given another --redis list"));
    let _ = b.kill();
    let _ = b.wait();
    assert!(told, "node B did not log the mismatch");
}
