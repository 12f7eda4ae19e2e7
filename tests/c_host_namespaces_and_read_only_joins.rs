//! Namespaces and read-only joins from C (`tests/c/namespaces_and_read_only_joins.c`,
//! built under ASan + UBSan): `wshub_config_add_namespace` with a
//! `WSHUB_NAMESPACE_OPTIONS_INIT` struct makes a feed room clients cannot
//! publish to and a capped room without join/leave events; `on_join`
//! returning `WSHUB_JOIN_READ_ONLY` makes a read-only member; the program
//! checks the function's argument errors itself and exits cleanly.

mod c_common;
mod cluster_common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use c_common::{assert_clean_exit, make, Program, SANITIZE};
use cluster_common::Client;
use serde_json::{json, Value};

fn code(reply: &Value) -> &str {
    assert_eq!(reply["type"], "error", "{reply}");
    reply["payload"]["code"].as_str().expect("code")
}

#[test]
fn a_c_host_gives_rooms_their_namespace_rules_and_read_only_joins() {
    let build = make("tests/c", "c-api", SANITIZE);
    let mut host =
        Program::start(Command::new(build.join("namespaces_and_read_only_joins")), Duration::from_secs(60));
    let addr = SocketAddr::from(([127, 0, 0, 1], host.port));
    let mut a = Client::connect(addr, &[]);
    a.join("feed:1");
    assert_eq!(code(&a.request("room:publish", json!({"room": "feed:1", "data": 1}))), "forbidden");
    a.join("ro:1");
    assert_eq!(code(&a.request("room:publish", json!({"room": "ro:1", "data": 1}))), "forbidden");
    a.join("plain:1");
    a.ok("room:publish", json!({"room": "plain:1", "data": 1}));

    a.join("stage:1");
    let mut b = Client::connect(addr, &[]);
    b.join("stage:1");
    let mut c = Client::connect(addr, &[]);
    assert_eq!(code(&c.request("room:join", json!({"room": "stage:1"}))), "forbidden");
    // No presence:join reached a; b's publish does.
    b.ok("room:publish", json!({"room": "stage:1", "data": "b"}));
    let msg = a.json();
    assert_eq!(msg["type"], "room:message", "{msg}");

    drop(host.stdin.take());
    host.expect_line("stopped", Duration::from_secs(30));
    let (status, stderr) = host.wait(Duration::from_secs(30));
    assert_clean_exit("namespaces_and_read_only_joins", status, &stderr);
}
