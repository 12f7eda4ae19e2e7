//! A node stopping while a healthy Redis stalls for a moment (a fork, an
//! fsync, a slow script: here `kill -STOP` for 400 ms) still sends its
//! members' leaves: the other nodes' members get `presence:leave` at once,
//! not a dead node's reaping later. Before, the stop's first Redis call
//! that waited past 250 ms took the shard for down, and every leave after
//! it was given up (reaped some 10 s later), although Redis answered again
//! 150 ms on.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const MEMBERS: usize = 6;
/// Well before the other node would reap a dead node's members (its key
/// gone for 5 s, then seen gone for 5 s more).
const AT_ONCE: Duration = Duration::from_secs(3);

#[test]
fn leaves_sent_through_a_short_stall_reach_the_other_node() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    let readers = members_answering_close(&a, &["room"], MEMBERS);
    let mut watcher = b.client();
    watcher.join("room");
    let members = ok(&mut watcher, "presence:get", json!({"room": "room"}));
    assert_eq!(members["count"], MEMBERS + 1, "{members}");

    redis.freeze();
    a.sigterm();
    std::thread::sleep(Duration::from_millis(400));
    redis.thaw();
    assert_eq!(a.wait_exit(WAIT + WAIT), Some(0), "a clean exit");
    let stopped = Instant::now();
    for reader in readers {
        reader.join().expect("member thread");
    }

    watcher.ws.get_mut().set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let mut leaves = 0;
    while leaves < MEMBERS && stopped.elapsed() < AT_ONCE {
        if let Ok(tungstenite::Message::Text(t)) = watcher.ws.read() {
            let v: serde_json::Value = serde_json::from_str(t.as_str()).expect("JSON");
            leaves += usize::from(v["type"] == "presence:leave");
        }
    }
    assert_eq!(leaves, MEMBERS, "leaves that reached the other node within {AT_ONCE:?} of the stop");
}
