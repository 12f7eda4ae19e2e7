//! A message another tool PUBLISHes into a room's channel that no node
//! wrote (a header that is not a node's, or an `m` whose text is no
//! `room:message`) is skipped with a log: it reaches no member and takes
//! no seq, and the room's next message arrives as usual. Before, a text
//! that was no message was sent to the members as it was (`not json1}}`:
//! a text frame no client can parse) and took the room's next seq.

mod cluster_common;
use cluster_common::*;

use serde_json::json;

#[test]
fn a_foreign_channel_message_reaches_no_member() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    wait_health(a.addr, 200, WAIT);
    let mut member = a.client();
    let joined = ok(&mut member, "room:join", json!({"room": "r"}));
    let epoch = joined["epoch"].as_str().expect("epoch").to_owned();
    for foreign in [
        format!("m 1 {epoch} elsewhere -\ntnot json"),
        format!("m 1 {epoch} elsewhere -\nt{{\"payload\":{{\"data\":1}}}}"),
        "m 1\ntruncated header".to_owned(),
        "no newline".to_owned(),
        "x something\nelse".to_owned(),
    ] {
        let heard = redis.query(&["PUBLISH", "wshub:c:r", &foreign]).expect("PUBLISH");
        assert_eq!(heard, redis::Value::Int(1), "the node listens on the room's channel");
    }
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "r"}));
    let ack = ok(&mut publisher, "room:publish", json!({"room": "r", "data": "real"}));
    assert_eq!(ack["seq"], 1);
    // `until` reads every frame as JSON: a foreign text would fail it here.
    let got = until(&mut member, 20, |v| v["type"] == "room:message" || v["type"] == "error");
    assert_eq!(got["type"], "room:message", "{got}");
    assert_eq!((&got["payload"]["data"], &got["payload"]["seq"]), (&json!("real"), &json!(1)));
}
