//! A member that stops reading is closed with 1013 once its outbound queue is
//! full, the room goes on for everyone else, and the drop is counted.

mod protocol_common;
use protocol_common as common;

use common::{Frame, Wshub};
use serde_json::json;

#[test]
fn a_member_that_stops_reading_is_closed_1013_and_counted() {
    // A long close timeout: the writer, stalled on the full socket, must still be
    // waiting to send the 1013 when the slow client finally reads, however slow the machine.
    let server = Wshub::start(&["--outbound-queue", "8", "--rate-limit", "0", "--close-timeout-ms", "60000"]);
    let mut slow = server.client();
    slow.join("firehose");
    let mut publisher = server.client();
    publisher.join("firehose");
    let big = "x".repeat(64 * 1024);
    // 400 x 64 KiB = 25 MiB: far more than loopback socket buffers and 8 queued frames hold.
    // No ids: the publisher gets no acks, only (at some point) the slow member's presence:leave.
    for i in 0..400 {
        publisher.send(json!({"type": "room:publish", "payload": {"room": "firehose", "data": big, "i": i}}));
    }
    publisher.sync(10);
    let mut code = None;
    for _ in 0..1000 {
        match slow.frame() {
            Frame::Close(c) => {
                code = Some(c);
                break;
            }
            Frame::Json(_) => {}
            Frame::Binary(b) => panic!("binary {} bytes", b.len()),
        }
    }
    assert_eq!(code, Some(1013));
    let metrics = common::get(server.addr, "/metrics").2;
    assert!(metrics.contains("wshub_dropped_total{reason=\"slow_consumer\"} 1"), "{metrics}");
    // The publisher was never affected.
    publisher.sync(10);
}
