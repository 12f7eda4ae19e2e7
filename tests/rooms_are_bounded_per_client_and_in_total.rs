//! Issue 14, item 2: a client may not create or join any number of rooms
//! (`--max-rooms-per-client`, `--max-rooms`); over a limit, `room:join` gets
//! `error forbidden` and the connection lives on.

mod protocol_common;

use protocol_common::*;
use serde_json::json;

#[test]
fn a_client_joins_at_most_max_rooms_per_client() {
    let server = Wshub::start(&["--max-rooms-per-client", "5"]);
    let mut c = server.client();
    for i in 0..5 {
        c.join(&format!("r{i}"));
    }
    c.join("r0"); // joining a room again is not a new room
    let refused = c.request("room:join", json!({"room": "r5"}));
    assert_eq!(
        (refused["type"].as_str(), refused["payload"]["code"].as_str()),
        (Some("error"), Some("forbidden"))
    );
    c.ok("room:leave", json!({"room": "r0"}));
    c.join("r5");
    assert!(metric(server.addr, r#"wshub_dropped_total{reason="max_rooms_per_client"}"#) >= 1);
}

#[test]
fn the_default_allows_128_rooms_per_client() {
    let server = Wshub::start(&[]);
    let mut c = server.client();
    for i in 0..128 {
        c.join(&format!("r{i}"));
    }
    let refused = c.request("room:join", json!({"room": "one-too-many"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    c.assert_nothing_pending();
}

#[test]
fn no_room_is_created_past_max_rooms() {
    let server = Wshub::start(&["--max-rooms", "3"]);
    let mut a = server.client();
    for room in ["r1", "r2", "r3"] {
        a.join(room);
    }
    let mut b = server.client();
    let refused = b.request("room:join", json!({"room": "r4"}));
    assert_eq!(refused["payload"]["code"], "forbidden", "{refused}");
    b.join("r1"); // an existing room may still be joined
    a.sync(4); // past b's presence:join
    a.ok("room:leave", json!({"room": "r3"}));
    b.join("r4"); // r3 went with its last member and had no history
    assert!(metric(server.addr, r#"wshub_dropped_total{reason="max_rooms"}"#) >= 1);
}
