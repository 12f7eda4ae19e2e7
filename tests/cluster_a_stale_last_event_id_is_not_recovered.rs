//! An event stream's ids are seqs (`id: <seq>`, PROTOCOL.md); a client that
//! kept the epoch of `connected` may reconnect with `<epoch>:<seq>` as its
//! `Last-Event-ID` (or `since`). After Redis lost the room (a restart
//! without its data: seqs start again from 1 in a new epoch) such a client
//! gets what a WebSocket rejoin with `since` and that stale epoch gets:
//! `recovered: false` and no replay of the new epoch's messages under its
//! old seq. A bare seq (a browser's own reconnect) past the new epoch's seq
//! can only be of a lost epoch: `recovered: false` too. Before, either was
//! replayed the new epoch's messages after its old seq with `recovered: true`.

mod api_common;
mod cluster_common;
use api_common::Sse;
use cluster_common::*;

use std::time::{Duration, Instant};

use serde_json::json;

/// Publishes until acked (Redis may still be coming back); the ack's seq.
fn publish(client: &mut Client, data: serde_json::Value) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let id = client.send_request("room:publish", json!({"room": "feed", "data": data}));
        let reply = until(client, 20, |v| v["id"] == id.as_str());
        if reply["type"] == "ack" {
            return reply["payload"]["seq"].as_u64().expect("seq");
        }
        assert!(Instant::now() < deadline, "publishing did not resume: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_last_event_id_of_a_lost_epoch_recovers_nothing() {
    let redis = Redis::start();
    let (a, b) = (node(&redis, &[]), node(&redis, &[]));
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "feed"}));
    let mut stream = Sse::open(b.addr, "room=feed", &[]);
    let epoch = stream.expect("connected").data["epoch"].as_str().expect("epoch").to_owned();
    let mut last_id = String::new();
    for i in 1..=3u64 {
        assert_eq!(publish(&mut publisher, json!(i)), i);
        let e = stream.expect("room:message");
        assert_eq!(e.id, Some(i.to_string()), "the id is the seq");
        last_id = format!("{epoch}:{i}");
    }
    drop(stream);

    // Same epoch: recovered, on either node.
    for node in [&b, &a] {
        let mut again = Sse::open(node.addr, "room=feed", &[("Last-Event-ID", &format!("{epoch}:1"))]);
        let connected = again.expect("connected");
        assert_eq!(connected.data["recovered"], true, "{connected:?}");
        for i in 2..=3 {
            assert_eq!(again.expect("room:message").id, Some(i.to_string()));
        }
    }
    // A bare seq (what an EventSource sends) says no epoch: taken as the room's.
    let mut bare = Sse::open(b.addr, "room=feed", &[("Last-Event-ID", "2")]);
    assert_eq!(bare.expect("connected").data["recovered"], true);
    assert_eq!(bare.expect("room:message").id, Some("3".to_owned()));
    drop(bare);
    assert_eq!(Sse::open(b.addr, "room=feed", &[("Last-Event-ID", ":3")]).status, 400);
    assert_eq!(Sse::open(b.addr, "room=feed&since=x:y", &[]).status, 400);

    // Redis loses the room: the next publishes start a new epoch from seq 1.
    redis.query(&["FLUSHALL"]).expect("FLUSHALL");
    let seqs: Vec<u64> = (0..2).map(|i| publish(&mut publisher, json!(format!("new-{i}")))).collect();
    assert_eq!(seqs, [1, 2], "a new epoch from 1");

    // A bare seq past the new epoch's: only the lost epoch had it.
    let mut ahead: Vec<Sse> =
        [&b, &a].map(|n| Sse::open(n.addr, "room=feed", &[("Last-Event-ID", "3")])).into();
    let mut at = Vec::new();
    for stream in &mut ahead {
        let connected = stream.expect("connected");
        assert_eq!(connected.data["recovered"], false, "a seq the room never reached: {connected:?}");
        at.push(connected.data["seq"].as_u64().expect("seq"));
    }
    assert_eq!(publish(&mut publisher, json!("live")), 3);
    for (stream, at) in ahead.iter_mut().zip(at) {
        // Live only: what the node delivers after its seq, up to the new message.
        for _ in 0..10 {
            let e = stream.expect("room:message");
            let seq = e.data["seq"].as_u64().expect("seq");
            assert!(seq > at && seq <= 3, "no replay: {e:?} after seq {at}");
            if e.data["data"] == "live" {
                assert_eq!(e.id.as_deref(), Some("3"));
                break;
            }
        }
    }
    drop(ahead);
    // The new epoch goes past the stream's last seq.
    let seqs: Vec<u64> = (0..2).map(|i| publish(&mut publisher, json!(format!("new-{i}")))).collect();
    assert_eq!(seqs, [4, 5]);

    for node in [&b, &a] {
        let mut stale = Sse::open(node.addr, "room=feed", &[("Last-Event-ID", &last_id)]);
        let connected = stale.expect("connected");
        assert_ne!(connected.data["epoch"], epoch.as_str(), "{connected:?}");
        assert_eq!(connected.data["recovered"], false, "a stale epoch cannot recover: {connected:?}");
        // What comes next is live (after the seq `connected` gives; the node
        // may deliver what was published before it still), not the new
        // epoch's 4 and 5 replayed as if they followed 3.
        let at = connected.data["seq"].as_u64().expect("seq");
        let live = publish(&mut publisher, json!("live"));
        for _ in 0..10 {
            let e = stale.expect("room:message");
            let seq = e.data["seq"].as_u64().expect("seq");
            assert!(seq > at, "no replay across epochs: {e:?} after {connected:?}");
            assert_eq!(e.id, Some(seq.to_string()));
            if e.data["data"] == "live" {
                assert_eq!(seq, live);
                break;
            }
        }
    }
    // `since` takes the same form, for clients that are not browsers.
    let mut by_query = Sse::open(b.addr, &format!("room=feed&since={last_id}"), &[]);
    assert_eq!(by_query.expect("connected").data["recovered"], false);
}
