//! Redis comes back from a snapshot that lacks a member who joined after it,
//! while it still holds one who left during the outage (that leave could not
//! reach Redis): the node's count of members in Redis matches its own, yet a
//! live member is missing from presence. The node must put it back.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

fn members(client: &mut Client) -> Option<Vec<String>> {
    let id = client.send_request("presence:get", json!({"room": "p"}));
    let reply = until(client, 1000, |v| v["id"] == id.as_str());
    let list = reply["payload"]["members"].as_array()?;
    let mut ids: Vec<String> =
        list.iter().filter_map(|m| m["clientId"].as_str().map(str::to_owned)).collect();
    ids.sort();
    Some(ids)
}

#[test]
fn a_member_missing_after_an_outage_is_put_back_though_a_leaver_is_still_counted() {
    let mut redis = Redis::start();
    let a = node(&redis, &[]);
    let mut stays = a.client();
    ok(&mut stays, "room:join", json!({"room": "p"}));
    let stays_id = members(&mut stays).expect("presence")[0].clone();
    let mut leaves = a.client();
    ok(&mut leaves, "room:join", json!({"room": "p"}));
    redis.query(&["SAVE"]).expect("SAVE");
    let before = members(&mut stays).expect("presence");
    let mut late = a.client();
    ok(&mut late, "room:join", json!({"room": "p"}));
    let all = members(&mut stays).expect("presence");
    assert_eq!(all.len(), 3, "{all:?}");
    let late_id = all.iter().find(|id| !before.contains(id)).expect("the late member").clone();

    redis.kill();
    // Leaves while Redis is down: its entry stays in what Redis comes back with.
    drop(leaves);
    wait_health(a.addr, 503, Duration::from_secs(5));
    redis.spawn();
    wait_health(a.addr, 200, Duration::from_secs(10));

    let mut want = vec![stays_id, late_id];
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Some(now) = members(&mut stays) {
            seen = now;
            if want.iter().all(|id| seen.contains(id)) {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("live members {want:?} are not all in presence: {seen:?}");
}
