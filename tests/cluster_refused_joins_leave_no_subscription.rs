//! A join (or an event stream) that the node refuses, here because its room
//! table is full (`--max-rooms`), must not leave the room's channel
//! subscribed: nothing lets such a subscription go again, so a client
//! joining new room names in a loop grew this node's subscriptions (and
//! Redis's) without bound, each subscribed again on every reconnect.

mod cluster_common;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

fn subscribed_rooms(addr: std::net::SocketAddr) -> u64 {
    let (_, _, body) = get(addr, "/metrics");
    body.lines()
        .find_map(|l| l.strip_prefix("wshub_redis_subscribed_rooms "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the gauge")
}

#[test]
fn joins_refused_for_a_full_room_table_leave_no_channel_subscribed() {
    let redis = Redis::start();
    let a = node(&redis, &["--max-rooms", "2"]);
    wait_health(a.addr, 200, WAIT);
    let mut c = Client::connect(a.addr, &[]);
    ok(&mut c, "room:join", json!({"room": "kept-1"}));
    ok(&mut c, "room:join", json!({"room": "kept-2"}));
    for i in 0..60 {
        let reply = c.request("room:join", json!({"room": format!("refused-{i}")}));
        assert_eq!(reply["type"], "error", "the room table is full: {reply}");
    }
    let mut sse = 0;
    for i in 0..10 {
        let (status, _, _) = get(a.addr, &format!("/sse?room=refused-sse-{i}"));
        sse += usize::from(status != 200);
    }
    assert_eq!(sse, 10, "streams of rooms past the table are refused");
    let deadline = Instant::now() + Duration::from_secs(5);
    while subscribed_rooms(a.addr) > 2 {
        assert!(
            Instant::now() < deadline,
            "{} channels stay subscribed for 2 rooms",
            subscribed_rooms(a.addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The kept rooms still work.
    ok(&mut c, "room:publish", json!({"room": "kept-1", "data": "still here"}));
}
