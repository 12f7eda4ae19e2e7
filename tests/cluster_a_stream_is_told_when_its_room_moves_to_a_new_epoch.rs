//! An event stream on a cluster node whose room moves to a new epoch (Redis
//! came back without the room's history) is told, as WebSocket members are
//! (`error` with `unavailable`): the stream's ids then start again from 1,
//! and without a word a client could not tell messages lost with Redis from
//! none published.

mod api_common;
mod cluster_common;
use api_common::Sse;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

#[test]
fn a_stream_gets_an_error_event_before_the_new_epochs_messages() {
    let mut redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut publisher = Client::connect(a.addr, &[]);
    ok(&mut publisher, "room:join", json!({"room": "feed"}));
    let mut member = Client::connect(b.addr, &[]);
    ok(&mut member, "room:join", json!({"room": "feed"}));
    let mut stream = Sse::open(b.addr, "room=feed", &[]);
    assert_eq!(stream.status, 200);
    stream.expect("connected");
    for i in 1..=3u64 {
        ok(&mut publisher, "room:publish", json!({"room": "feed", "data": i}));
        assert_eq!(stream.expect("room:message").id, Some(i.to_string()));
    }

    // Redis restarts empty: the room's next publish opens a new epoch.
    redis.kill();
    wait_health(a.addr, 503, Duration::from_secs(10));
    redis.spawn();
    wait_health(a.addr, 200, Duration::from_secs(10));
    wait_health(b.addr, 200, Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let id = publisher.send_request("room:publish", json!({"room": "feed", "data": "after"}));
        let reply = until(&mut publisher, 20, |v| v["id"] == id.as_str());
        if reply["type"] == "ack" {
            break;
        }
        assert!(Instant::now() < deadline, "publishing did not resume: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The WebSocket member is told; so must the stream be, before seq 1 again.
    let told = until(&mut member, 20, |v| v["type"] == "error");
    assert_eq!(told["payload"]["code"], "unavailable");
    let mut events = Vec::new();
    loop {
        let e = stream.next().expect("the stream stays open");
        let done = e.event == "room:message" && e.data["data"] == "after";
        events.push((e.event, e.id, e.data));
        if done {
            break;
        }
        assert!(events.len() < 10, "{events:?}");
    }
    let told = events.iter().position(|(kind, _, data)| kind == "error" && data["code"] == "unavailable");
    assert!(told.is_some(), "the stream was not told of the new epoch: {events:?}");
    assert_eq!(told, Some(events.len() - 2), "told just before the new epoch's message: {events:?}");
    // The id is the seq (PROTOCOL.md), which starts again in the new epoch.
    assert_eq!(events.last().and_then(|(_, id, _)| id.as_deref()), Some("1"), "{events:?}");
}
