//! A paused process keeps its clients: `kill -STOP`, 2 s, `kill -CONT` (a
//! debugger attaching, Ctrl-Z and `fg`, a frozen container). Blocking calls
//! with a timeout return EINTR after a stop and SIGCONT and are never
//! restarted (signal(7)); every one wshub makes retries. 20 clients are open
//! across the pause, and every one still answers `ping` after it: for the
//! `wshub` binary and for a C host (`tests/c/protocol_host.c`, built under
//! ASan + UBSan).

mod c_common;
mod cluster_common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use cluster_common::{Client, Wshub};
use serde_json::json;

const CLIENTS: usize = 20;

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &pid.to_string()]).status().expect("kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// Opens the clients, pauses `pid` for 2 s, and checks every client's ping.
fn clients_survive_a_pause(addr: SocketAddr, pid: u32) {
    let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::connect(addr, &[])).collect();
    for client in &mut clients {
        client.assert_nothing_pending();
    }
    signal(pid, "STOP");
    std::thread::sleep(Duration::from_secs(2));
    signal(pid, "CONT");
    for (i, client) in clients.iter_mut().enumerate() {
        let ack = client.ok("ping", json!(i));
        assert_eq!(ack, json!(i), "client {i}");
    }
}

#[test]
fn the_binary_keeps_every_client_through_a_stop_and_continue() {
    let server = Wshub::start(&["--rate-limit", "0"]);
    clients_survive_a_pause(server.addr, server.child.id());
}

#[test]
fn a_c_host_keeps_every_client_through_a_stop_and_continue() {
    let build = c_common::make("tests/c", "c-api", c_common::SANITIZE);
    let mut host =
        c_common::Program::start(Command::new(build.join("protocol_host")), Duration::from_secs(60));
    let addr = SocketAddr::from(([127, 0, 0, 1], host.port));
    clients_survive_a_pause(addr, host.pid() as u32);
    drop(host.stdin.take());
    host.expect_line("stopped in", Duration::from_secs(30));
    let (status, stderr) = host.wait(Duration::from_secs(30));
    c_common::assert_clean_exit("protocol_host", status, &stderr);
}
