//! A `since` of the largest seq (`u64::MAX`, a value any client may send)
//! on a cluster node is a seq the room never reached: the join is acked
//! with `recovered: false`, and a stream opens with it, as on one node.
//! Before, the node's `since + 1` overflowed: the connection was closed
//! 1011 (a debug build's panic), and a release build read the room's whole
//! history for nothing.

mod api_common;
mod cluster_common;
use api_common::Sse;
use cluster_common::*;

use serde_json::json;

#[test]
fn the_largest_since_is_not_recovered_and_closes_nothing() {
    let redis = Redis::start();
    let a = node(&redis, &[]);
    let mut member = a.client();
    ok(&mut member, "room:join", json!({"room": "r"}));
    ok(&mut member, "room:publish", json!({"room": "r", "data": 1}));

    let mut late = a.client();
    let joined = ok(&mut late, "room:join", json!({"room": "r", "since": u64::MAX}));
    assert_eq!((&joined["recovered"], &joined["seq"]), (&json!(false), &json!(1)), "{joined}");
    ok(&mut late, "ping", json!({}));

    for query in [format!("room=r&since={}", u64::MAX), format!("room=s&since=e:{}", u64::MAX)] {
        let mut stream = Sse::open(a.addr, &query, &[]);
        assert_eq!(stream.status, 200, "{query}");
        assert_eq!(stream.expect("connected").data["recovered"], false, "{query}");
    }
}
