//! A join that finds a room's Redis state gone moves the room to a new
//! epoch; the members already on that node are told, as the subscriber
//! tells them when a message of a new epoch arrives.

mod cluster_common;
use cluster_common::*;

use serde_json::json;

#[test]
fn members_are_told_when_a_join_moves_their_room_to_a_new_epoch() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let mut member = a.client();
    let first = ok(&mut member, "room:join", json!({"room": "j"}));
    for i in 1..=3 {
        ok(&mut member, "room:publish", json!({"room": "j", "data": i}));
    }
    redis.query(&["FLUSHALL"]).expect("FLUSHALL");
    let mut newcomer = a.client();
    let ack = ok(&mut newcomer, "room:join", json!({"room": "j"}));
    assert_ne!(ack["epoch"], first["epoch"], "{ack}");
    let notice = until(&mut member, 50, |v| v["type"] == "error");
    assert_eq!(notice["payload"]["code"], "unavailable", "{notice}");
    assert_eq!(notice["payload"]["room"], "j", "{notice}");
    assert_eq!(notice["payload"]["seq"], 3, "{notice}");
}
