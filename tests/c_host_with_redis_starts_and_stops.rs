//! A C host with Redis configured (`wshub_config_set_redis`), built under
//! ASan + UBSan (`tests/c/protocol_host.c`): the Redis threads start with the
//! server, so messages cross between two hosts before any plain HTTP request
//! (the C path admits upgrades without the protocol's `on_upgrade`, where
//! they used to start); and `wshub_stop` returns within the shutdown timeout
//! (2 s) with Redis up, and with no Redis listening at all (the subscriber
//! thread used to hold the server, so the stop waited for it forever).

mod c_common;
mod cluster_common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use c_common::{assert_clean_exit, make, Program, SANITIZE};
use cluster_common::{free_port, get, Client, Frame, Redis};
use serde_json::json;

const START: Duration = Duration::from_secs(60);

fn host(redis_url: &str) -> Program {
    let build = make("tests/c", "c-api", SANITIZE);
    let mut cmd = Command::new(build.join("protocol_host"));
    cmd.arg(redis_url);
    Program::start(cmd, START)
}

fn addr(host: &Program) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], host.port))
}

/// Ends the host's stdin; it stops and reports how long `wshub_stop` took,
/// which must be within the shutdown timeout plus a margin for a loaded
/// machine (a stop that never returns fails the wait).
fn stop_within_the_shutdown_timeout(mut host: Program, name: &str) {
    drop(host.stdin.take());
    let line = host.expect_line("stopped in", Duration::from_secs(30));
    let ms: u64 = line.split_whitespace().nth(2).and_then(|n| n.parse().ok()).expect("stopped in N ms");
    assert!(ms < 2_000 + 5_000, "{name}: wshub_stop took {ms} ms: {line}");
    let (status, stderr) = host.wait(Duration::from_secs(30));
    assert_clean_exit(name, status, &stderr);
}

#[test]
fn two_c_hosts_on_one_redis_fan_out_from_the_start_and_stop_promptly() {
    let redis = Redis::start();
    let (a, b) = (host(&redis.url()), host(&redis.url()));
    let mut alice = Client::connect(addr(&a), &[]);
    alice.join("lobby");
    let mut bob = Client::connect(addr(&b), &[]);
    bob.join("lobby");
    bob.ok("room:publish", json!({"room": "lobby", "data": "across"}));
    let mut got = false;
    for _ in 0..20 {
        if let Frame::Json(v) = alice.frame() {
            if v["payload"]["data"] == "across" {
                got = true;
                break;
            }
        }
    }
    assert!(got, "bob's message never reached alice on the other host");
    drop((alice, bob));
    stop_within_the_shutdown_timeout(a, "host a");
    stop_within_the_shutdown_timeout(b, "host b");
}

#[test]
fn a_c_host_whose_redis_is_unreachable_still_stops_within_the_shutdown_timeout() {
    let nobody = format!("redis://127.0.0.1:{}", free_port());
    let host = host(&nobody);
    let client = Client::connect(addr(&host), &[]);
    drop(client);
    // Whatever starts the Redis threads (a plain request used to), they must
    // not hold the stop: the subscriber is retrying a Redis that is not there.
    let _ = get(addr(&host), "/healthz");
    stop_within_the_shutdown_timeout(host, "host without redis");
}
