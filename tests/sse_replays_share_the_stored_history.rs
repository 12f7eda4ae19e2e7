//! Event-stream replays share what history stores, as WebSocket replays do
//! (`replay_shares_the_stored_frames.rs`): 40 streams asking for everything
//! (`since=0`) on a room holding 4 MB, none of them reading, add at most
//! 8 MiB to the server's RSS (a copy per stream added about 100 MiB). The
//! streams keep small receive windows, so the replays stay queued in the
//! server rather than in the kernel's socket buffers.

mod api_common;
mod protocol_common;

use std::time::Duration;

use api_common::Sse;
use protocol_common::*;

/// A connection whose receive buffer stays small, so what the server sends
/// it stays in the server (as behind a slow or stalled reader) instead of in
/// the kernel's socket buffers.
fn small_window(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&addr.into(), WAIT).unwrap();
    socket.into()
}

#[test]
fn forty_streams_replaying_a_4_mb_room_share_its_history() {
    let server = Wshub::start(&[]);
    let pid = server.child.id();
    let mut publisher = server.client();
    publisher.join("r");
    let n = 40;
    for i in 0..n {
        publisher.send_text(&big_publish("r", 100_000, Some(&format!("p{i}"))));
    }
    for _ in 0..n {
        assert_eq!(publisher.json()["type"], "ack");
    }
    let before = peak_rss_over(pid, Duration::from_millis(300));
    // Every stream's replay is the whole room (what a reader would get).
    let mut reader = Sse::open(server.addr, "room=r&since=0", &[]);
    assert_eq!(reader.expect("connected").data["recovered"], true);
    for seq in 1..=n {
        assert_eq!(reader.expect("room:message").id, Some(seq.to_string()));
    }
    drop(reader);
    let idle: Vec<Sse> =
        (0..n).map(|_| Sse::open_on(small_window(server.addr), server.addr, "room=r&since=0", &[])).collect();
    assert!(idle.iter().all(|s| s.status == 200));
    let peak = peak_rss_over(pid, Duration::from_secs(3));
    eprintln!("RSS before the streams {} MiB, peak during {} MiB", before / MIB, peak / MIB);
    assert!(
        peak < before + 8 * MIB,
        "40 replays of 4 MB grew RSS by {} MiB",
        peak.saturating_sub(before) / MIB
    );
    drop(idle);
}
