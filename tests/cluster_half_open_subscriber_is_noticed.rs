//! The subscriber's connection silently dropped on the way (a NAT or load
//! balancer forgot it, nothing was closed): the node notices because its
//! pings go unanswered, connects again and refills from the streams, so
//! delivery resumes and nothing acked is lost.

mod cluster_common;
use cluster_common::*;

use std::time::Duration;

use serde_json::{json, Value};

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

#[test]
fn delivery_resumes_after_the_subscriber_connection_is_silently_dropped() {
    let redis = Redis::start();
    let proxy = Proxy::start(redis.port, Duration::ZERO);
    let a = node(&redis, &[]);
    let b = node_at(&proxy.url(), &[]);
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "h"}));
    let mut reader = b.client();
    ok(&mut reader, "room:join", json!({"room": "h"}));
    ok(&mut publisher, "room:publish", json!({"room": "h", "data": 1}));
    assert_eq!(until(&mut reader, 50, is_message)["payload"]["seq"], 1);

    proxy.cut_silently();
    for i in 2..=4 {
        ok(&mut publisher, "room:publish", json!({"room": "h", "data": i}));
    }
    // Each read waits up to WAIT (10 s): well past the subscriber's ping bound.
    for seq in 2..=4 {
        let v = until(&mut reader, 50, is_message);
        assert_eq!(v["payload"]["seq"], seq, "in order, none lost: {v}");
    }
    assert!(protocol_common::metric(b.addr, "wshub_redis_reconnects_total") >= 1);
}
