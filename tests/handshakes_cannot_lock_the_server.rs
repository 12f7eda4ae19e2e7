//! Sockets that never finish their HTTP request cannot lock the server: they
//! are bounded per address and in total (apart from the open-connection cap),
//! the request has one deadline for the whole head (a byte-a-second trickler
//! is cut at it), and `/healthz` is answered while the handshake slots are full.

mod admission_common;
mod protocol_common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use admission_common::{get_from, ip, metric, tcp_from, upgrade};
use protocol_common::Wshub;
use serde_json::json;

/// Opens `n` TCP connections from 127.0.0.1 that send nothing.
fn idle_sockets(server: &Wshub, n: usize) -> Vec<TcpStream> {
    (0..n).filter_map(|_| tcp_from(ip("127.0.0.1"), server.addr).ok()).collect()
}

/// An honest client from `from` opens, joins and chats with itself.
fn honest_client_chats(server: &Wshub, from: &str) {
    let (mut c, _) = upgrade(ip(from), server.addr, "", &[], &[]).open();
    c.join("lobby");
    let ack = c.ok("room:publish", json!({"room": "lobby", "data": "hi"}));
    assert!(ack["seq"].as_u64().is_some(), "{ack}");
}

#[test]
fn idle_sockets_leave_healthz_and_honest_clients_an_answer() {
    // Only flags that exist before the handshake bounds: today's server drops
    // every connection past max_connections + 256 in progress, healthz included.
    let server = Wshub::start(&["--max-connections", "100"]);
    let idle = idle_sockets(&server, 600);
    assert!(idle.len() >= 550, "only {} idle sockets connected", idle.len());
    // Let the acceptor take all of them before asking.
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let (status, _) = get_from(ip("127.0.0.2"), server.addr, "/healthz");
    assert_eq!(status, 200, "/healthz from another address");
    let (status, _) = get_from(ip("127.0.0.1"), server.addr, "/healthz");
    assert_eq!(status, 200, "/healthz from the idle sockets' own address");
    honest_client_chats(&server, "127.0.0.2");
    assert!(started.elapsed() < Duration::from_secs(5), "answers took {:?}", started.elapsed());

    // A WebSocket from the saturated address is refused with a status, not left hanging.
    let refused = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]);
    assert_eq!(refused.status(), 503, "{refused:?}");
    assert!(refused.header("retry-after").is_some());
    let (_, metrics) = get_from(ip("127.0.0.2"), server.addr, "/metrics");
    assert!(
        metric(&metrics, "wshub_handshake_overflow_total{reason=\"handshakes_per_ip\"}") > 0,
        "{metrics}"
    );
    assert!(metric(&metrics, "wshub_handshakes_in_progress") > 0, "{metrics}");
    drop(idle);
}

/// Sends one byte a second to `stream` until the server answers or cuts it;
/// returns (what it answered, when).
fn trickle_until_cut(mut stream: TcpStream, limit: Duration) -> (String, Duration) {
    let request = b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let started = Instant::now();
    for byte in request.iter().cycle() {
        if started.elapsed() > limit {
            break;
        }
        if stream.write_all(&[*byte]).is_err() {
            return (String::new(), started.elapsed());
        }
        let mut buf = [0u8; 512];
        match stream.read(&mut buf) {
            Ok(n) => return (String::from_utf8_lossy(&buf[..n]).into_owned(), started.elapsed()),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return (String::new(), started.elapsed()),
        }
    }
    panic!("a byte-a-second trickler was never cut ({limit:?})");
}

#[test]
fn a_byte_a_second_trickler_is_cut_at_the_handshake_deadline() {
    let server = Wshub::start(&["--handshake-timeout-ms", "1500"]);
    let stream = tcp_from(ip("127.0.0.1"), server.addr).unwrap();
    let (answer, after) = trickle_until_cut(stream, Duration::from_secs(12));
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(after < Duration::from_millis(3500), "cut after {after:?}, deadline 1.5 s");
}

#[test]
fn three_hundred_tricklers_do_not_keep_out_a_client_from_another_address() {
    let server = Wshub::start(&["--handshake-timeout-ms", "2000"]);
    let tricklers = idle_sockets(&server, 300);
    assert!(tricklers.len() >= 290);
    let started = Instant::now();
    let handles: Vec<_> = tricklers.into_iter().inspect(|s| s.set_nonblocking(true).unwrap()).collect();
    // One thread trickles a byte a second into every socket until each is cut.
    let trickler = std::thread::spawn(move || {
        let mut open: Vec<Option<TcpStream>> = handles.into_iter().map(Some).collect();
        let mut cut_at = Vec::new();
        for _ in 0..10 {
            for slot in open.iter_mut() {
                let Some(s) = slot else { continue };
                let mut buf = [0u8; 256];
                let gone = match s.read(&mut buf) {
                    Ok(_) => true, // an answer (408) or EOF
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => s.write(b"G").is_err(),
                    Err(_) => true,
                };
                if gone {
                    cut_at.push(started.elapsed());
                    *slot = None;
                }
            }
            if open.iter().all(Option::is_none) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        (open.iter().filter(|s| s.is_some()).count(), cut_at)
    });
    honest_client_chats(&server, "127.0.0.2");
    let (left, cut_at) = trickler.join().unwrap();
    assert_eq!(left, 0, "tricklers still open after 10 s");
    let last = cut_at.iter().max().copied().unwrap_or_default();
    assert!(last < Duration::from_secs(6), "last trickler cut after {last:?} (deadline 2 s)");
    honest_client_chats(&server, "127.0.0.1");
}

/// Waits (bounded) until the number of sockets the server counts in their
/// handshake passes `check`, asking from `from` (an address at its own bound
/// asks without taking a slot; otherwise the asking socket counts too).
fn wait_for_handshakes(server: &Wshub, from: &str, check: impl Fn(u64) -> bool) {
    let started = Instant::now();
    let mut seen = 0;
    while started.elapsed() < Duration::from_secs(30) {
        let (_, metrics) = get_from(ip(from), server.addr, "/metrics");
        seen = metric(&metrics, "wshub_handshakes_in_progress");
        if check(seen) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("handshakes in progress stayed at {seen}");
}

/// Whether the server closed or answered `s` (an idle socket it no longer holds).
fn let_go(s: &TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let gone = !matches!(s.peek(&mut [0u8; 1]), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).unwrap();
    gone
}

/// Holds every one of the server's 40 handshake slots: 10 idle sockets from
/// each of four addresses. The server may still hold the slot of the last
/// `/metrics` asker (it gives it back after its answer reaches the client),
/// so the table can be full before the 40th socket, which then takes the
/// oldest slot of the biggest holder (that socket is closed). Such sockets
/// are replaced until the server counts all 40, each address at its bound.
fn hold_every_slot(server: &Wshub) -> Vec<(&'static str, TcpStream)> {
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"] {
        held.extend((0..10).map(|_| (from, tcp_from(ip(from), server.addr).expect("connect"))));
    }
    let started = Instant::now();
    loop {
        // From 127.0.0.2, at its bound, the asker takes no slot, so the count
        // is the held sockets' (every victim's close precedes this answer:
        // it was taken when a held socket was accepted, before the asker).
        let (_, metrics) = get_from(ip("127.0.0.2"), server.addr, "/metrics");
        let counted = metric(&metrics, "wshub_handshakes_in_progress");
        let mut replaced = 0;
        for (from, socket) in held.iter_mut() {
            if let_go(socket) {
                *socket = tcp_from(ip(from), server.addr).expect("connect");
                replaced += 1;
            }
        }
        if replaced == 0 && counted >= 40 {
            return held;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server counts {counted} of 40 held sockets"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn four_addresses_holding_every_slot_cannot_keep_out_a_fifth() {
    let server = Wshub::start(&["--max-handshakes", "40", "--max-handshakes-per-ip", "10"]);
    for round in 0..3 {
        wait_for_handshakes(&server, "127.0.0.250", |n| n <= 1);
        let held = hold_every_slot(&server);
        let honest = upgrade(ip("127.0.0.9"), server.addr, "", &[], &[]);
        assert_eq!(honest.status(), 101, "round {round}: {honest:?}");
        drop(honest);
        drop(held);
    }
}

#[test]
fn sixteen_handshakes_per_address_by_default() {
    let server = Wshub::start(&[]);
    let held: Vec<_> = (0..16).map(|_| tcp_from(ip("127.0.0.1"), server.addr).expect("connect")).collect();
    wait_for_handshakes(&server, "127.0.0.250", |n| n >= 16);
    let refused = upgrade(ip("127.0.0.1"), server.addr, "", &[], &[]);
    assert_eq!(refused.status(), 503, "the 17th from one address: {refused:?}");
    drop(held);
}

#[test]
fn an_address_flooding_the_overflow_thread_loses_its_own_sockets_first() {
    let server = Wshub::start(&["--max-handshakes-per-ip", "1", "--overflow-sockets", "16"]);
    // Each address holds its one handshake slot: everything more it sends
    // goes to the overflow thread.
    let _slot_2 = tcp_from(ip("127.0.0.2"), server.addr).expect("connect");
    let _slot_3 = tcp_from(ip("127.0.0.3"), server.addr).expect("connect");
    wait_for_handshakes(&server, "127.0.0.3", |n| n >= 2);
    let mut flood = Vec::new();
    for round in 0..10 {
        // A request that arrives in two parts, with a flood in between.
        let mut honest = tcp_from(ip("127.0.0.3"), server.addr).expect("connect");
        honest.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
        flood.extend((0..40).filter_map(|_| tcp_from(ip("127.0.0.2"), server.addr).ok()));
        std::thread::sleep(Duration::from_millis(100));
        honest.write_all(b"Host: t\r\nConnection: close\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = honest.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "round {round}: {answer:?}");
    }
}

#[test]
fn a_continuous_flood_from_one_address_does_not_crowd_out_another_at_the_overflow_thread() {
    let server = Wshub::start(&["--max-handshakes-per-ip", "1", "--overflow-sockets", "128"]);
    // Each address holds its one handshake slot: the rest goes to the overflow thread.
    let _slot_2 = tcp_from(ip("127.0.0.2"), server.addr).expect("connect");
    let _slot_3 = tcp_from(ip("127.0.0.3"), server.addr).expect("connect");
    wait_for_handshakes(&server, "127.0.0.3", |n| n >= 2);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, addr) = (stop.clone(), server.addr);
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut held = std::collections::VecDeque::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed)
                    && started.elapsed() < Duration::from_secs(20)
                {
                    if let Ok(s) = tcp_from(ip("127.0.0.2"), addr) {
                        held.push_back(s);
                    }
                    if held.len() > 1000 {
                        held.drain(..500);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut failed = Vec::new();
    for round in 0..60 {
        let answer = (|| {
            let mut s = tcp_from(ip("127.0.0.3"), server.addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")?;
            let mut answer = Vec::new();
            s.read_to_end(&mut answer)?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        })();
        match answer {
            Ok(a) if a.starts_with("HTTP/1.1 200") => {}
            other => failed.push((round, other.map_err(|e| e.to_string()))),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    assert!(failed.is_empty(), "{} of 60 requests from another address failed: {failed:?}", failed.len());
}
