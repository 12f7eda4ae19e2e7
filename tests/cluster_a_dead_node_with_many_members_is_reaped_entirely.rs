//! A dead node with tens of thousands of members is reaped entirely, page by
//! page, within the bound docs/scaling.md gives (12 s): each page goes on
//! where the last one's `HSCAN` ended. (Restarted from cursor 0, a page
//! finds nothing once the buckets it visits first are emptied, and the rest
//! of the members stays in presence for good.)

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

const MEMBERS: usize = 30_000;

fn hlen(redis: &Redis, key: &str) -> i64 {
    match redis.query(&["HLEN", key]).expect("HLEN") {
        redis::Value::Int(n) => n,
        other => panic!("HLEN {key}: {other:?}"),
    }
}

#[test]
fn every_member_of_a_dead_node_is_reaped_within_the_bound() {
    let redis = Redis::start();
    // A node that died with MEMBERS members in 100 rooms (its heartbeat key is gone).
    let fill = r#"
for i = 1, tonumber(ARGV[1]) do
  local room = 'room' .. (i % 100)
  local id = 'deadbeef0000-' .. i
  redis.call('hset', 'wshub:nm:deadbeef0000', room .. '\n' .. id, '{"room":"' .. room .. '","clientId":"' .. id .. '"}')
  redis.call('hset', 'wshub:p:' .. room, id, '')
end
redis.call('sadd', 'wshub:nodes', 'deadbeef0000')
return 1"#;
    redis.query(&["EVAL", fill, "0", &MEMBERS.to_string()]).expect("fill");
    assert_eq!(hlen(&redis, "wshub:nm:deadbeef0000"), MEMBERS as i64);

    let started = Instant::now();
    let a = node(&redis, &[]);
    // A member of one of the dead node's rooms sees presence shrink.
    let mut watcher = a.client();
    ok(&mut watcher, "room:join", json!({"room": "room1"}));
    let deadline = started + Duration::from_secs(12 + 3);
    loop {
        let left = hlen(&redis, "wshub:nm:deadbeef0000");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} members of the dead node are still there");
        std::thread::sleep(Duration::from_millis(200));
    }
    for room in 0..100 {
        assert_eq!(hlen(&redis, &format!("wshub:p:room{room}")), i64::from(room == 1), "room{room}");
    }
    let members = ok(&mut watcher, "presence:get", json!({"room": "room1"}))["members"].clone();
    assert_eq!(members.as_array().map(Vec::len), Some(1), "{members}");
}
