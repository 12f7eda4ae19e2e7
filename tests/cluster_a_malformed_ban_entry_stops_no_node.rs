//! An entry of the bans hash that is not a time (written by hand or by
//! another tool: `HSET wshub:bans mallory forever`) is passed over: the
//! node reads the other bans, its subscriber delivers, and `/healthz` says
//! 200. Before, the whole read failed on it: every subscriber session
//! ended at once (nothing crossed nodes), joins failed, and a node started
//! then answered `503 redis not reached yet` for good.

mod cluster_common;
use cluster_common::*;

use serde_json::json;

#[test]
fn a_ban_that_is_not_a_time_is_passed_over() {
    let redis = Redis::start();
    redis.query(&["HSET", "wshub:bans", "mallory", "forever"]).expect("HSET");
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    wait_health(a.addr, 200, WAIT);
    wait_health(b.addr, 200, WAIT);
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "r"}));
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "r"}));
    let ack = ok(&mut publisher, "room:publish", json!({"room": "r", "data": "hi"}));
    let got = until(&mut reader, 20, |v| v["type"] == "room:message");
    assert_eq!((&got["payload"]["data"], &got["payload"]["seq"]), (&json!("hi"), &ack["seq"]));
}
