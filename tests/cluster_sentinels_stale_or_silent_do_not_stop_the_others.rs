//! Of a node's sentinels, one names an instance that is not a primary (a
//! sentinel that has not yet seen a failover, or one cut off from the
//! others, still naming the old primary now a replica) while another names
//! the primary. The node must go on to the next sentinel when the one named
//! fails its `ROLE` check: it stopped at the first sentinel that answered,
//! so with that one first in its list (or the last to answer) every new
//! connection failed and every join and publish got `unavailable`, however
//! many sentinels knew the primary.
//!
//! Of a node's sentinels, the first ones accept connections but never
//! answer (a wedged or overloaded sentinel): a call that needs a new
//! connection must still answer within a few seconds, and the node find the
//! primary through the sentinel that answers. Each silent sentinel cost its
//! own 2 s (16 of them: a publish through the API took 32 s), before and
//! after.
//!
//! The sentinels here are stand-ins on loopback answering
//! `SENTINEL get-master-addr-by-name` with a fixed address; the primary and
//! the replica are real `redis-server` children.

mod cluster_common;
use cluster_common::*;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

/// Reads one RESP command (an array of bulk strings); `None` at EOF or on junk.
fn command(reader: &mut BufReader<TcpStream>) -> Option<Vec<String>> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let n: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut data = vec![0; len + 2];
        std::io::Read::read_exact(reader, &mut data).ok()?;
        data.truncate(len);
        args.push(String::from_utf8_lossy(&data).into_owned());
    }
    Some(args)
}

/// A stand-in sentinel that accepts connections and never answers, for 60 s.
fn silent_sentinel() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let own = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((socket, _)) => held.push(socket),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    own
}

/// A stand-in sentinel naming `127.0.0.1:<port>` as the primary, for 60 s.
fn sentinel_naming(port: u16) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let own = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok((socket, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            std::thread::spawn(move || {
                let _ = socket.set_nonblocking(false);
                let _ = socket.set_read_timeout(Some(Duration::from_secs(5)));
                let mut writer = socket.try_clone().expect("clone");
                let mut reader = BufReader::new(socket);
                while let Some(args) = command(&mut reader) {
                    let reply = if args.first().is_some_and(|a| a.eq_ignore_ascii_case("SENTINEL")) {
                        let port = port.to_string();
                        format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len())
                    } else {
                        "+OK\r\n".to_owned()
                    };
                    if writer.write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            });
        }
    });
    own
}

#[test]
fn a_sentinel_naming_a_replica_is_passed_over_for_one_naming_the_primary() {
    let primary = Redis::start();
    let replica = Redis::start();
    // A replica (of nothing that answers): ROLE says "slave".
    replica.query(&["REPLICAOF", "127.0.0.1", &free_port().to_string()]).expect("REPLICAOF");
    let (stale, good) = (sentinel_naming(replica.port), sentinel_naming(primary.port));
    let (stale, good) = (format!("127.0.0.1:{stale}"), format!("127.0.0.1:{good}"));
    let node = Wshub::start(&[
        "--redis-sentinel",
        &stale,
        "--redis-sentinel",
        &good,
        "--redis-sentinel-master",
        "m",
        "--rate-limit",
        "0",
    ]);
    let mut client = node.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = client.request("room:join", json!({"room": "r"}));
        if reply["type"] == "ack" {
            break;
        }
        assert_eq!(reply["payload"]["code"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "no join while a sentinel named the primary: {reply}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let ack = ok(&mut client, "room:publish", json!({"room": "r", "data": "through the second sentinel"}));
    assert_eq!(ack["seq"], 1, "{ack}");
    assert!(matches!(primary.query(&["EXISTS", "wshub:m:r"]), Ok(redis::Value::Int(1))), "on the primary");
}

#[test]
fn silent_sentinels_delay_a_call_by_one_timeout_and_the_answering_one_is_found() {
    const KEY: &str = "silent-sentinels-key";
    let primary = Redis::start();
    let mut args: Vec<String> = Vec::new();
    for _ in 0..4 {
        args.extend(["--redis-sentinel".to_owned(), format!("127.0.0.1:{}", silent_sentinel())]);
    }
    args.extend(["--redis-sentinel".to_owned(), format!("127.0.0.1:{}", sentinel_naming(primary.port))]);
    args.extend(["--redis-sentinel-master", "m", "--rate-limit", "0", "--api-key", KEY].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let node = Wshub::start(&args);
    let body = r#"{"room":"r","data":1}"#;
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let asked = Instant::now();
        let (status, _, reply) = protocol_common::http(node.addr, &request);
        let took = asked.elapsed();
        // One timeout (1 s) for the sentinels, and the primary's connect; a
        // margin for a loaded machine.
        assert!(took < Duration::from_secs(4), "a publish took {took:?} ({status} {reply})");
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{reply}");
        assert!(Instant::now() < deadline, "the answering sentinel was never found: {status} {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(matches!(primary.query(&["EXISTS", "wshub:m:r"]), Ok(redis::Value::Int(1))), "on the primary");
}
