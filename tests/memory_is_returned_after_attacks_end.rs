//! Issue 14, item 8 (memory never returned): once an attack's connections are
//! gone and what they held is freed (queued frames, room history), the server
//! gives the memory back to the system instead of keeping its peak RSS.

mod protocol_common;

use std::time::{Duration, Instant};

use protocol_common::*;

#[test]
fn rss_falls_back_after_slow_consumers_and_their_rooms_are_gone() {
    // An outbound budget far above the attack: the slow consumers' queues
    // must hold what they are sent, so that there is memory to give back.
    let server = Wshub::start(&["--outbound-max-bytes", "1073741824"]);
    let pid = server.child.id();
    let before = rss_bytes(pid);
    let rooms = ["m0", "m1"];
    let mut publisher = server.client();
    // A member per room that never reads: its queue holds what it is sent.
    let mut idle: Vec<Client> = rooms.iter().map(|_| server.client()).collect();
    for room in rooms {
        publisher.join(room);
    }
    for (room, c) in rooms.iter().zip(&mut idle) {
        c.join(room);
    }
    publisher.sync(10); // past the presence:join events
    let n = 160; // within the default burst
    for i in 0..n {
        publisher.send_text(&big_publish(rooms[i % rooms.len()], 1_000_000, Some(&format!("p{i}"))));
    }
    for _ in 0..n {
        assert_eq!(publisher.json()["type"], "ack");
    }
    let peak = peak_rss_over(pid, Duration::from_millis(500));
    assert!(peak > before + 100 * MIB, "the attack did not take memory ({} MiB)", (peak - before) / MIB);
    // The publisher first: whatever its close frees is trimmed before the
    // slow consumers go, so their queues must be given back on their own.
    drop(publisher);
    std::thread::sleep(Duration::from_millis(1500));
    drop(idle);
    // Bounded wait for the connections to end and the memory to be returned.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = rss_bytes(pid);
    while now > before + 48 * MIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        now = rss_bytes(pid);
    }
    eprintln!(
        "RSS before {} MiB, peak {} MiB, {} ms after the clients closed {} MiB",
        before / MIB,
        peak / MIB,
        (Instant::now() + Duration::from_secs(10) - deadline).as_millis(),
        now / MIB
    );
    assert!(
        now < before + 48 * MIB,
        "10 s after the attack RSS is still {} MiB above its start (peak was +{} MiB)",
        (now - before) / MIB,
        (peak - before) / MIB
    );
}

#[test]
fn bodies_sent_where_none_is_taken_cost_no_memory() {
    let server = Wshub::start(&["--api-key", "k", "--max-handshakes-per-ip", "1024"]);
    let pid = server.child.id();
    let before = rss_bytes(pid);
    let body = vec![b'x'; 1_048_575];
    let head = format!("POST /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n", body.len());
    let mut sockets = Vec::new();
    for _ in 0..200 {
        let Ok(mut s) = std::net::TcpStream::connect(server.addr) else { continue };
        let _ = std::io::Write::write_all(&mut s, head.as_bytes());
        s.set_nonblocking(true).unwrap();
        // As much of the body as the socket takes without waiting.
        let _ = std::io::Write::write(&mut s, &body);
        sockets.push(s);
    }
    let peak = peak_rss_over(pid, Duration::from_millis(1500));
    eprintln!("RSS before {} MiB, peak {} MiB", before / MIB, peak / MIB);
    assert!(
        peak < before + 48 * MIB,
        "200 bodies nobody takes raised RSS by {} MiB",
        (peak.saturating_sub(before)) / MIB
    );
    drop(sockets);
}
