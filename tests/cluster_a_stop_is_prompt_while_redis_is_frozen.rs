//! A node stops promptly while its Redis is frozen (`kill -STOP` of the
//! `redis-server` child: its sockets stay open and nothing answers): the
//! members' leaves and every other Redis call on the stop path give up at
//! once or after a short deadline, instead of waiting out a call timeout per
//! member and room. Other nodes reap the stopped node's members once Redis
//! answers again, as for a node that died.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

/// Members on the stopping node, each in a few rooms.
const MEMBERS: usize = 6;
const ROOMS: usize = 3;

/// What a stop may take beyond its drain: the members here answer their
/// close at once, so the drain is short; a loaded machine gets a margin.
const PROMPT: Duration = Duration::from_secs(3);

#[test]
fn sigterm_returns_promptly_while_redis_is_frozen() {
    let redis = Redis::start();
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    let rooms: Vec<String> = (0..ROOMS).map(|r| format!("room-{r}")).collect();
    let rooms: Vec<&str> = rooms.iter().map(String::as_str).collect();
    let readers = members_answering_close(&a, &rooms, MEMBERS);
    let mut watcher = b.client();
    watcher.join("room-0");
    let members = ok(&mut watcher, "presence:get", json!({"room": "room-0"}));
    assert_eq!(members["count"], MEMBERS + 1, "{members}");

    redis.freeze();
    let asked = Instant::now();
    a.sigterm();
    let code = a.wait_exit(WAIT + WAIT);
    let took = asked.elapsed();
    redis.thaw();
    assert_eq!(code, Some(0), "a clean exit");
    assert!(took < PROMPT, "the stop took {took:?} with Redis frozen (bound {PROMPT:?})");
    for reader in readers {
        reader.join().expect("member thread");
    }
    // The members whose leave was given up go as a dead node's do. (Frozen
    // for about a second, Redis may have been taken for down by B too: it
    // answers `unavailable` until its next heartbeat.)
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let id = watcher.send_request("presence:get", json!({"room": "room-0"}));
        let reply = until(&mut watcher, 50, |v| v["id"] == id.as_str());
        let members = &reply["payload"];
        if reply["type"] == "ack" && members["count"] == 1 {
            break;
        }
        assert!(reply["type"] == "ack" || members["code"] == "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "the stopped node's members stayed: {members}");
        std::thread::sleep(Duration::from_millis(500));
    }
}
