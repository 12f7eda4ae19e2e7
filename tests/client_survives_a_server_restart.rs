//! wshub::client against the real `wshub` binary stopped and started again on
//! the same port: reconnects with growing, jittered delays (bounds asserted
//! from the events, not from clocks), rejoins, reports the reset epoch,
//! recovers what the new server got before it came back, and delivers the
//! publishes made while the server was down once each, in order.

mod client_common;

use std::time::Duration;

use client_common::{messages, wait_for, Server};
use serde_json::json;
use wshub::client::{Backoff, Client, Event, Options};

fn options() -> Options {
    Options::default().backoff(Duration::from_millis(40), Duration::from_millis(640))
}

#[test]
fn restart_reconnects_rejoins_and_delivers_buffered_publishes_once_in_order() {
    let server = Server::start(&[]);
    let addr = server.addr;
    let url = format!("ws://{addr}/ws");
    let a = Client::connect(&url, options()).expect("a connects");
    let b = Client::connect(&url, options()).expect("b connects");
    let (mut seen_a, mut seen_b) = (Vec::new(), Vec::new());
    let first_epoch = a.join("r").expect("a joins")["epoch"].as_str().unwrap().to_owned();
    b.join("r").expect("b joins");
    assert_eq!(b.publish("r", &json!({"n": "before"})).expect("ack")["seq"], 1);
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Message { seq: 1, .. }).then_some(()));

    server.stop();
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Disconnected { code: 1001, .. }).then_some(()));
    wait_for(&b, &mut seen_b, |e| matches!(e, Event::Disconnected { .. }).then_some(()));
    // Published while the server is down: buffered, in order.
    let receipts: Vec<_> =
        (0..3).map(|i| a.publish_nowait("r", &json!({"n": i})).expect("buffered while offline")).collect();
    assert!(!a.is_online());
    // Let the caps grow past a few doublings before the server comes back.
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Reconnecting { attempt: 5, .. }).then_some(()));

    let server = Server::start_at(addr, &[]).expect("restart on the same port");
    // A fresh client publishes before (or while) a and b come back: a and b
    // recover it through the rejoin in the new epoch, or get it live.
    let early = Client::connect(&url, options()).expect("early client");
    early.join("r").expect("early joins");
    let early_seq =
        early.publish("r", &json!({"n": "early"})).expect("early publish")["seq"].as_u64().unwrap();

    let acks: Vec<_> = receipts.into_iter().map(|r| r.wait().expect("buffered publish acked")).collect();
    let seqs: Vec<u64> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order: {seqs:?}");
    assert!(acks.iter().all(|a| a.get("duplicate").is_none()), "{acks:?}");

    // b gets early and the three buffered ones, once each, in seq order.
    let last = *seqs.last().unwrap();
    wait_for(&b, &mut seen_b, |e| matches!(e, Event::Message { seq, .. } if *seq == last).then_some(()));
    let after = messages(&seen_b, "r"); // b published "before" itself: no copy
    let mut want: Vec<(u64, serde_json::Value)> =
        seqs.iter().zip(0..).map(|(s, i)| (*s, json!({ "n": i }))).collect();
    want.push((early_seq, json!({"n": "early"})));
    want.sort_by_key(|(s, _)| *s);
    assert_eq!(after, want, "b's messages after the restart: {seen_b:#?}");
    b.request("ping", json!(1)).expect("b sync");

    // a was told the room was reset, and rejoined in the new epoch.
    let (recovered, epoch, previous) = wait_for(&a, &mut seen_a, |e| match e {
        Event::Recovery { recovered, epoch, previous_epoch, .. } => {
            Some((*recovered, epoch.clone(), previous_epoch.clone()))
        }
        _ => None,
    });
    assert!(!recovered);
    assert_ne!(epoch, first_epoch);
    assert_eq!(previous.as_deref(), Some(first_epoch.as_str()));
    wait_for(&a, &mut seen_a, |e| matches!(e, Event::Connected { .. }).then_some(()));
    // a recovers "early" once (it never sees its own three: no echo).
    a.request("ping", json!(1)).expect("a sync");
    while let Ok(e) = a.events().try_recv() {
        seen_a.push(e);
    }
    let early_copies = messages(&seen_a, "r").iter().filter(|(_, d)| d["n"] == "early").count();
    assert_eq!(early_copies, 1, "{seen_a:#?}");

    // The delays: attempts 1, 2, 3, ... each within [0, cap(attempt)], caps growing.
    let backoff = Backoff { min: Duration::from_millis(40), max: Duration::from_millis(640) };
    let delays: Vec<(u32, Duration)> = seen_a
        .iter()
        .filter_map(|e| match e {
            Event::Reconnecting { attempt, delay } => Some((*attempt, *delay)),
            _ => None,
        })
        .collect();
    assert!(delays.len() >= 5, "{delays:?}");
    for (i, (attempt, delay)) in delays.iter().enumerate() {
        assert_eq!(*attempt as usize, i + 1, "attempts count up from 1: {delays:?}");
        assert!(*delay <= backoff.cap(*attempt), "attempt {attempt}: {delay:?} over its cap");
        assert!(*delay <= backoff.min * 2u32.pow(attempt - 1), "over min*2^(attempt-1)");
    }
    assert!(backoff.cap(5) > backoff.cap(1));
    let distinct: std::collections::BTreeSet<_> = delays.iter().map(|(_, d)| d.as_nanos()).collect();
    assert!(distinct.len() > 1, "jittered: {delays:?}");
    drop(server);
}

#[test]
fn close_stops_and_fails_what_waits() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/ws", server.addr);
    let a = Client::connect(&url, options().max_buffered(2)).expect("connects");
    a.join("r").unwrap();
    let addr = server.addr;
    server.stop();
    let mut seen = Vec::new();
    wait_for(&a, &mut seen, |e| matches!(e, Event::Reconnecting { .. }).then_some(()));
    let one = a.publish_nowait("r", &json!(1)).unwrap();
    let _two = a.publish_nowait("r", &json!(2)).unwrap();
    // Past max_buffered: refused, never dropped silently.
    assert_eq!(a.publish_nowait("r", &json!(3)).unwrap_err(), wshub::client::Error::BufferFull);
    a.close();
    assert_eq!(one.wait().unwrap_err(), wshub::client::Error::Closed);
    wait_for(&a, &mut seen, |e| matches!(e, Event::Closed { .. }).then_some(()));
    // No reconnect after close(), even once the server is back.
    let _server = Server::start_at(addr, &[]).expect("restart");
    assert!(a.events().recv_timeout(Duration::from_millis(500)).is_err(), "nothing after Closed");
    assert_eq!(a.request("ping", json!(1)).unwrap_err(), wshub::client::Error::Closed);
}
