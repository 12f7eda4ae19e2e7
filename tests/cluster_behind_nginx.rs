//! Debian's nginx as the load balancer in front of two nodes, with the config
//! docs/scaling.md gives (its `nginx` block, ports and paths replaced): a
//! client whose node dies reconnects through nginx, lands on the other node
//! and recovers what it missed; and with `--trusted-proxy`, the clients
//! behind it are counted by their own addresses (`X-Forwarded-For`).

mod admission_common;
mod cluster_common;
use cluster_common::*;
// admission_common finds it at the crate root.
use cluster_common::protocol_common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// nginx as a child (`daemon off`), killed by its PID on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Nginx {
    fn start(a: u16, b: u16) -> Nginx {
        let dir = TempDir::new("nginx");
        let port = free_port();
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/scaling.md"))
            .expect("docs/scaling.md");
        let conf = doc
            .split_once("```nginx\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .expect("docs/scaling.md has an nginx block")
            .0
            .replace("/var/lib/wshub-lb", dir.0.to_str().expect("utf-8"))
            .replace("127.0.0.1:9001", &format!("127.0.0.1:{a}"))
            .replace("127.0.0.1:9002", &format!("127.0.0.1:{b}"))
            .replace("listen 127.0.0.1:8080", &format!("listen 127.0.0.1:{port}"));
        let path = dir.0.join("nginx.conf");
        std::fs::write(&path, conf).expect("write nginx.conf");
        let child = Command::new("nginx")
            .args([
                "-c",
                path.to_str().expect("utf-8"),
                "-e",
                dir.0.join("error.log").to_str().expect("utf-8"),
            ])
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn nginx (bash .ci/setup installs it)");
        let deadline = Instant::now() + WAIT;
        while !listening(port) {
            assert!(Instant::now() < deadline, "nginx did not listen within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Nginx { child, port, _dir: dir }
    }
}

impl Drop for Nginx {
    /// SIGTERM to the master (by its PID), which stops its worker before it
    /// exits (a SIGKILLed master would leave the worker running); SIGKILL
    /// only if it has not exited within [`WAIT`].
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_message(v: &Value) -> bool {
    v["type"] == "room:message"
}

#[test]
fn a_client_reconnects_through_nginx_after_its_node_dies_and_recovers() {
    let redis = Redis::start();
    let mut nodes = [node(&redis, &[]), node(&redis, &[])];
    let lb = Nginx::start(nodes[0].addr.port(), nodes[1].addr.port());
    let lb_addr = format!("127.0.0.1:{}", lb.port).parse().unwrap();
    // Healthy once each node's first heartbeat has reached Redis.
    wait_health(lb_addr, 200, WAIT);

    let mut client = Client::connect(lb_addr, &[]);
    let joined = ok(&mut client, "room:join", json!({"room": "chat"}));
    let epoch = joined["epoch"].clone();
    // Which node did nginx pick?
    let on = (0..2)
        .find(|&i| protocol_common::metric(nodes[i].addr, "wshub_connections") == 1)
        .expect("the client is on one node");
    let other = 1 - on;
    let mut publisher = nodes[other].client();
    ok(&mut publisher, "room:join", json!({"room": "chat"}));
    ok(&mut publisher, "room:publish", json!({"room": "chat", "data": 1}));
    assert_eq!(until(&mut client, 50, is_message)["payload"]["seq"], 1);

    kill_node(&mut nodes[on]);
    // The client sees its connection end (nginx closes its side).
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "the connection through nginx did not end");
        match client.ws.read() {
            Ok(tungstenite::Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        }
    }
    for i in 2..=6 {
        ok(&mut publisher, "room:publish", json!({"room": "chat", "data": i}));
    }
    // Reconnect through nginx: it skips the dead node.
    let mut again = Client::connect(lb_addr, &[]);
    let id = again.send_request("room:join", json!({"room": "chat", "since": 1, "epoch": epoch}));
    let mut got = Vec::new();
    let ack = loop {
        let v = until(&mut again, 50, |v| is_message(v) || v["id"] == id.as_str());
        if !is_message(&v) {
            break v;
        }
        got.push(v["payload"]["data"].as_u64().unwrap());
    };
    assert_eq!(got, vec![2, 3, 4, 5, 6]);
    assert_eq!(ack["payload"]["recovered"], true, "{ack}");
    assert_eq!(protocol_common::metric(nodes[other].addr, "wshub_connections"), 2);
}

#[test]
fn clients_behind_nginx_are_counted_by_their_own_addresses() {
    let server = Wshub::start(&["--max-connections-per-ip", "1", "--trusted-proxy", "127.0.0.1/32"]);
    // Both upstream entries are the one node.
    let lb = Nginx::start(server.addr.port(), server.addr.port());
    let lb_addr = format!("127.0.0.1:{}", lb.port).parse().unwrap();
    let ip = admission_common::ip;
    let (mut a, _) = admission_common::upgrade(ip("127.0.0.2"), lb_addr, "", &[], &[]).open();
    let (mut b, _) = admission_common::upgrade(ip("127.0.0.3"), lb_addr, "", &[], &[]).open();
    ok(&mut a, "ping", json!(1));
    ok(&mut b, "ping", json!(2));
    // A second connection from 127.0.0.2 is over its cap, whatever it claims
    // (nginx answers its own 502 once its one upstream refused twice).
    let again = admission_common::upgrade(ip("127.0.0.2"), lb_addr, "", &[], &[]);
    assert!(matches!(again.status(), 502 | 503), "{again:?}");
    let spoofed =
        admission_common::upgrade(ip("127.0.0.2"), lb_addr, "", &[("X-Forwarded-For", "127.0.0.77")], &[]);
    assert!(matches!(spoofed.status(), 502 | 503), "{spoofed:?}");
    // Straight to the node: a trusted peer's header names the client...
    let forwarded =
        admission_common::upgrade(ip("127.0.0.1"), server.addr, "", &[("X-Forwarded-For", "127.0.0.3")], &[]);
    assert_eq!(forwarded.status(), 503, "{forwarded:?}");
    // ...and any other peer's header counts for nothing.
    let direct = admission_common::upgrade(
        ip("127.0.0.2"),
        server.addr,
        "",
        &[("X-Forwarded-For", "127.0.0.78")],
        &[],
    );
    assert_eq!(direct.status(), 503, "{direct:?}");
    ok(&mut a, "ping", json!(3));
}
