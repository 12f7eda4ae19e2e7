//! Recovery: a client that rejoins with `since` gets exactly what it missed,
//! in order, before the ack, then live messages; `recovered: false` when the
//! history no longer reaches back or the epoch changed.

mod protocol_common;
use protocol_common as common;

use common::{Client, Frame, Wshub};
use serde_json::{json, Value};

fn message_seq(v: &Value) -> u64 {
    assert_eq!(v["type"], "room:message", "{v}");
    v["payload"]["seq"].as_u64().expect("seq")
}

#[test]
fn a_rejoin_with_since_replays_exactly_the_missed_messages_then_live_ones() {
    let server = Wshub::start(&[]);
    let mut publisher = server.client();
    publisher.join("news");
    let mut reader = server.client();
    let epoch = reader.join("news")["epoch"].clone();
    assert_eq!(publisher.json()["type"], "presence:join");
    publisher.ok("room:publish", json!({"room": "news", "data": "seen"}));
    assert_eq!(message_seq(&reader.json()), 1);
    drop(reader); // disconnect (the TCP connection ends without a close frame)
    assert_eq!(publisher.json()["type"], "presence:leave");

    for i in 0..3 {
        publisher.ok("room:publish", json!({"room": "news", "data": format!("missed {i}")}));
    }
    let mut back = server.client();
    let id = back.send_request("room:join", json!({"room": "news", "since": 1, "epoch": epoch}));
    for (i, seq) in (2..=4).enumerate() {
        let m = back.json();
        assert_eq!(message_seq(&m), seq);
        assert_eq!(m["payload"]["data"], format!("missed {i}"));
    }
    let ack = back.json();
    assert_eq!((ack["type"].clone(), ack["id"].clone()), (json!("ack"), json!(id)), "{ack}");
    assert_eq!(ack["payload"]["recovered"], true);
    assert_eq!(ack["payload"]["seq"], 4);
    assert_eq!(ack["payload"]["epoch"], epoch);
    assert_eq!(publisher.json()["type"], "presence:join");

    publisher.ok("room:publish", json!({"room": "news", "data": "live"}));
    let live = back.json();
    assert_eq!((message_seq(&live), live["payload"]["data"].clone()), (5, json!("live")));
    back.assert_nothing_pending();
}

#[test]
fn binary_messages_replay_as_binary_in_seq_order() {
    let server = Wshub::start(&[]);
    let mut p = server.client();
    p.join("mix");
    p.ok("room:publish", json!({"room": "mix", "data": 1}));
    p.send_binary(&[&[1u8, 0, 3][..], b"mix", b"raw"].concat());
    p.ok("room:publish", json!({"room": "mix", "data": 3}));
    let mut r = server.client();
    r.send_request("room:join", json!({"room": "mix", "since": 0}));
    assert_eq!(message_seq(&r.json()), 1);
    assert_eq!(r.binary(), [&[2u8, 0, 3][..], b"mix", &2u64.to_be_bytes(), b"raw"].concat());
    assert_eq!(message_seq(&r.json()), 3);
    assert_eq!(r.json()["payload"]["recovered"], true);
}

#[test]
fn when_history_no_longer_reaches_back_recovered_is_false() {
    let server = Wshub::start(&["--history-size", "2"]);
    let mut p = server.client();
    p.join("h");
    for i in 1..=5 {
        p.ok("room:publish", json!({"room": "h", "data": i}));
    }
    // since 1: 2..=5 were missed but only 4 and 5 are kept.
    let mut r = server.client();
    r.send_request("room:join", json!({"room": "h", "since": 1}));
    assert_eq!(message_seq(&r.json()), 4);
    assert_eq!(message_seq(&r.json()), 5);
    let ack = r.json();
    assert_eq!((ack["type"].clone(), ack["payload"]["recovered"].clone()), (json!("ack"), json!(false)));
    // since 3: exactly 4 and 5 were missed, both kept.
    let mut r2 = server.client();
    r2.send_request("room:join", json!({"room": "h", "since": 3}));
    assert_eq!(message_seq(&r2.json()), 4);
    assert_eq!(message_seq(&r2.json()), 5);
    assert_eq!(r2.json()["payload"]["recovered"], true);
}

#[test]
fn another_epoch_or_a_seq_from_the_future_is_not_recovered() {
    let server = Wshub::start(&[]);
    let mut p = server.client();
    let epoch = p.join("e")["epoch"].as_str().unwrap_or_default().to_owned();
    p.ok("room:publish", json!({"room": "e", "data": 1}));
    let mut r = server.client();
    let ack = r.ok("room:join", json!({"room": "e", "since": 0, "epoch": "not-this-one"}));
    assert_eq!((ack["recovered"].clone(), ack["epoch"].clone()), (json!(false), json!(epoch)));
    let mut r2 = server.client();
    assert_eq!(r2.ok("room:join", json!({"room": "e", "since": 99}))["recovered"], false);
}

#[test]
fn a_gap_longer_than_half_the_outbound_queue_is_not_recovered() {
    let server = Wshub::start(&["--outbound-queue", "8"]);
    let mut p = server.client();
    p.join("cap");
    for i in 1..=6 {
        p.ok("room:publish", json!({"room": "cap", "data": i}));
    }
    let mut r = server.client();
    r.send_request("room:join", json!({"room": "cap", "since": 0}));
    for seq in 3..=6 {
        assert_eq!(message_seq(&r.json()), seq);
    }
    assert_eq!(r.json()["payload"]["recovered"], false);
}

#[test]
fn a_restart_changes_the_epoch() {
    let first = Wshub::start(&[]).client().join("x")["epoch"].clone();
    let second = Wshub::start(&[]).client().join("x")["epoch"].clone();
    assert_ne!(first, second);
}

#[test]
fn history_expires_after_its_ttl() {
    let server = Wshub::start(&["--history-ttl-ms", "300"]);
    let mut p = server.client();
    p.join("ttl");
    p.ok("room:publish", json!({"room": "ttl", "data": 1}));
    // Rejoin (bounded) until the message has aged out.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let mut r = server.client();
        r.send_request("room:join", json!({"room": "ttl", "since": 0}));
        match r.json() {
            v if v["type"] == "ack" => {
                assert_eq!(v["payload"]["recovered"], false);
                assert_eq!(v["payload"]["seq"], 1);
                break;
            }
            v => assert_eq!(message_seq(&v), 1),
        }
        assert!(std::time::Instant::now() < deadline, "history never expired");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Joins with `since` while another client publishes as fast as it can: every
/// joiner must see a gapless, duplicate-free run of seqs from `since + 1`.
#[test]
fn joining_during_a_publish_storm_loses_and_doubles_nothing() {
    // The replay limit is half the outbound queue: 4096 lets a joiner catch up on all 1500.
    let server = Wshub::start(&["--rate-limit", "0", "--history-size", "10000", "--outbound-queue", "4096"]);
    let addr = server.addr;
    let (before, total) = (50u64, 1550u64);
    let mut p = Client::connect(addr, &[]);
    p.join("storm");
    // Every joiner's `since` (0..=40) is already published when the storm starts.
    for i in 0..before {
        p.ok("room:publish", json!({"room": "storm", "data": i}));
    }
    let publisher = std::thread::spawn(move || {
        for i in before..total {
            p.send(json!({"type": "room:publish", "payload": {"room": "storm", "data": i}}));
        }
        p.sync(100_000);
    });
    let joiners: Vec<_> = (0..5u64)
        .map(|round| {
            std::thread::spawn(move || {
                let since = round * 10;
                let mut j = Client::connect(addr, &[]);
                let id = j.send_request("room:join", json!({"room": "storm", "since": since}));
                let mut expected = since + 1;
                let mut acked = false;
                // Read until this joiner has its ack and everything published.
                while expected <= total || !acked {
                    match j.frame() {
                        Frame::Json(v) if v["type"] == "room:message" => {
                            assert_eq!(message_seq(&v), expected, "round {round}");
                            expected += 1;
                        }
                        Frame::Json(v) if v["type"] == "ack" && v["id"] == id.as_str() => {
                            assert!(!acked);
                            assert_eq!(v["payload"]["recovered"], true, "{v}");
                            assert_eq!(
                                v["payload"]["seq"].as_u64(),
                                Some(expected - 1),
                                "ack after the replay"
                            );
                            acked = true;
                        }
                        Frame::Json(v) => {
                            assert!(v["type"].as_str().is_some_and(|t| t.starts_with("presence:")), "{v}")
                        }
                        other => panic!("{other:?}"),
                    }
                }
                j.sync(100);
            })
        })
        .collect();
    for j in joiners {
        j.join().expect("joiner");
    }
    publisher.join().expect("publisher");
}
