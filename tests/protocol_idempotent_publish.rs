//! Idempotent publish (protocol 1.1): a publish that repeats a key the room's
//! history still holds publishes nothing and acks the first message's seq with
//! `duplicate: true`; once the first message leaves the history the key is free
//! again. The same for keyed binary publishes (kind 0x03), acked by key.

mod protocol_common;
use protocol_common as common;

use common::{metric, Wshub};
use serde_json::json;

#[test]
fn a_repeated_key_is_acked_as_a_duplicate_and_delivered_once() {
    let server = Wshub::start(&[]);
    let mut sender = server.client();
    sender.join("orders");
    let mut member = server.client();
    member.join("orders");
    assert_eq!(sender.json()["type"], "presence:join");

    let first = sender.ok("room:publish", json!({"room": "orders", "data": "paid", "key": "k-1"}));
    assert_eq!(first, json!({"room": "orders", "seq": 1}));
    let again = sender.ok("room:publish", json!({"room": "orders", "data": "paid", "key": "k-1"}));
    assert_eq!(again, json!({"room": "orders", "seq": 1, "duplicate": true}));
    // Another key, and no key, publish as usual; keys are per room.
    let other = sender.ok("room:publish", json!({"room": "orders", "data": "shipped", "key": "k-2"}));
    assert_eq!(other["seq"], 2);
    sender.join("audit");
    let elsewhere = sender.ok("room:publish", json!({"room": "audit", "data": "x", "key": "k-1"}));
    assert_eq!(elsewhere, json!({"room": "audit", "seq": 1}));

    let m = member.json();
    assert_eq!((m["payload"]["seq"].clone(), m["payload"]["data"].clone()), (json!(1), json!("paid")));
    let m = member.json();
    assert_eq!((m["payload"]["seq"].clone(), m["payload"]["data"].clone()), (json!(2), json!("shipped")));
    member.assert_nothing_pending();
    // A duplicate with echo sends the sender no copy either.
    let echoed =
        sender.ok("room:publish", json!({"room": "orders", "data": "paid", "key": "k-1", "echo": true}));
    assert_eq!(echoed["duplicate"], true);
    sender.assert_nothing_pending();
    assert_eq!(metric(server.addr, "wshub_duplicate_publishes_total"), 2);
}

#[test]
fn a_key_is_free_again_once_its_message_left_the_history() {
    let server = Wshub::start(&["--history-size", "2"]);
    let mut sender = server.client();
    sender.join("r");
    sender.ok("room:publish", json!({"room": "r", "data": 1, "key": "a"}));
    sender.ok("room:publish", json!({"room": "r", "data": 2}));
    sender.ok("room:publish", json!({"room": "r", "data": 3}));
    let reused = sender.ok("room:publish", json!({"room": "r", "data": 4, "key": "a"}));
    assert_eq!(reused, json!({"room": "r", "seq": 4}));
}

#[test]
fn bad_keys_get_bad_request() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    c.join("r");
    for key in [json!(""), json!(7), json!("k".repeat(65))] {
        let e = c.request("room:publish", json!({"room": "r", "data": 1, "key": key}));
        assert_eq!(
            (e["type"].clone(), e["payload"]["code"].clone()),
            (json!("error"), json!("bad_request")),
            "{e}"
        );
    }
    let long = c.ok("room:publish", json!({"room": "r", "data": 1, "key": "k".repeat(64)}));
    assert_eq!(long["seq"], 1);
}

#[test]
fn a_keyed_binary_publish_is_acked_by_its_key_and_stored_once() {
    let server = Wshub::start(&[]);
    let mut sender = server.client();
    sender.join("bin");
    let mut member = server.client();
    member.join("bin");
    assert_eq!(sender.json()["type"], "presence:join");
    let keyed = [&[3u8, 0, 3][..], b"bin", &[2], b"b1", b"BODY"].concat();
    sender.send_binary(&keyed);
    let ack = sender.json();
    assert_eq!((ack["type"].clone(), ack["id"].clone()), (json!("ack"), json!("b1")), "{ack}");
    assert_eq!(ack["payload"], json!({"room": "bin", "seq": 1}));
    sender.send_binary(&keyed);
    let ack = sender.json();
    assert_eq!(ack["payload"], json!({"room": "bin", "seq": 1, "duplicate": true}), "{ack}");
    assert_eq!(member.binary(), [&[2u8, 0, 3][..], b"bin", &1u64.to_be_bytes(), b"BODY"].concat());
    member.assert_nothing_pending();
    // A bad key is an error whose id is what could be read: none.
    sender.send_binary(&[&[3u8, 0, 3][..], b"bin", &[0], b"BODY"].concat());
    let e = sender.json();
    assert_eq!(
        (e["type"].clone(), e["payload"]["code"].clone()),
        (json!("error"), json!("bad_request")),
        "{e}"
    );
}
