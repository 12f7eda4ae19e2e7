//! Sentinel (`--redis-sentinel`, `--redis-sentinel-master`): a primary, a
//! replica and three `redis-sentinel` children on loopback, two nodes that
//! know only the sentinels. After `kill -9` of the primary the sentinels
//! promote the replica; publishing works again on every node within 15 s,
//! clients got `unavailable` meanwhile, and every acked message is either
//! delivered to the members of both nodes or they were told the room moved
//! to a new epoch. Across a `SENTINEL FAILOVER` the old primary, a primary
//! still for seconds, acks no publish once the sentinels name the new one.

mod cluster_common;
use cluster_common::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const MASTER: &str = "wshubtest";
/// The bound the issue sets for publishing to work again after the kill.
const FAILOVER_BOUND: Duration = Duration::from_secs(15);

/// A child process killed (by its PID) on drop.
struct Proc(Option<Child>);

impl Proc {
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn query(port: u16, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
    con.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut con)
}

fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn redis_server(port: u16, dir: &TempDir, extra: &[&str]) -> Proc {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", dir.0.to_str().expect("utf-8 path")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn redis-server (bash .ci/setup installs it)");
    let proc = Proc(Some(child));
    wait_for("redis-server answers", WAIT, || query(port, &["PING"]).is_ok());
    proc
}

fn sentinel(port: u16, primary: u16, dir: &TempDir) -> Proc {
    let conf = dir.0.join(format!("sentinel-{port}.conf"));
    let text = format!(
        "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {}\n\
         sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n\
         sentinel down-after-milliseconds {MASTER} 1000\n\
         sentinel failover-timeout {MASTER} 2000\n\
         sentinel parallel-syncs {MASTER} 1\n",
        dir.0.display()
    );
    std::fs::write(&conf, text).expect("sentinel config");
    let child = Command::new("redis-sentinel")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn redis-sentinel (bash .ci/setup installs it)");
    let proc = Proc(Some(child));
    wait_for("redis-sentinel answers", WAIT, || query(port, &["PING"]).is_ok());
    proc
}

/// The first word of `ROLE`: `master`, `slave` or `sentinel` (empty when it does not answer).
fn role(port: u16) -> String {
    match query(port, &["ROLE"]) {
        Ok(redis::Value::Array(role)) => match role.first() {
            Some(redis::Value::BulkString(word)) => String::from_utf8_lossy(word).into_owned(),
            _ => String::new(),
        },
        _ => String::new(),
    }
}

fn count(port: u16, args: &[&str]) -> usize {
    match query(port, args) {
        Ok(redis::Value::Array(items)) => items.len(),
        _ => 0,
    }
}

/// Publishes `data` once: its seq when acked, `None` on `unavailable`.
fn try_publish(client: &mut Client, data: &str) -> Option<u64> {
    let id = client.send_request("room:publish", json!({"room": "r", "data": data}));
    let reply = until(client, 100, |v| v["id"] == id.as_str());
    if reply["type"] == "ack" {
        return reply["payload"]["seq"].as_u64();
    }
    assert_eq!(reply["payload"]["code"], "unavailable", "{reply}");
    None
}

/// Reads a member's frames until `last` arrives or it is told the room
/// moved to a new epoch (what it then missed it learns from that notice):
/// the data of every message delivered, and whether it was told.
fn read_until(client: &mut Client, last: &str) -> (Vec<String>, bool) {
    let (mut got, mut told) = (Vec::new(), false);
    for _ in 0..10_000 {
        let v: Value = client.json();
        if v["type"] == "room:message" {
            let data = v["payload"]["data"].as_str().unwrap_or_default().to_owned();
            let done = data == last;
            got.push(data);
            if done {
                return (got, told);
            }
        } else if v["type"] == "error" && v["payload"]["room"] == "r" {
            told |= v["payload"]["message"].as_str().is_some_and(|m| m.contains("new epoch"));
            if told {
                return (got, told);
            }
        }
    }
    panic!("{last:?} never arrived");
}

/// How the primary goes.
#[derive(PartialEq)]
enum Failover {
    /// `kill -9`: connections to it break.
    Kill,
    /// `SENTINEL FAILOVER`: it lives on as a replica, and a connection to it
    /// gets READONLY replies instead of breaking.
    Demote,
}

#[test]
fn nodes_follow_a_sentinel_failover_and_lose_no_acked_message_silently() {
    failover_is_followed(Failover::Kill);
}

#[test]
fn nodes_follow_a_primary_demoted_to_replica_by_sentinel_failover() {
    failover_is_followed(Failover::Demote);
}

fn failover_is_followed(how: Failover) {
    let dir = TempDir::new("sentinel");
    let (primary_port, replica_port) = (free_port(), free_port());
    let mut primary = redis_server(primary_port, &dir, &[]);
    let replica_dir = TempDir::new("sentinel-replica");
    let _replica =
        redis_server(replica_port, &replica_dir, &["--replicaof", "127.0.0.1", &primary_port.to_string()]);
    let sentinel_ports = [free_port(), free_port(), free_port()];
    let _sentinels: Vec<Proc> = sentinel_ports.iter().map(|&p| sentinel(p, primary_port, &dir)).collect();
    // Each sentinel knows the replica and the two other sentinels: a failover can be agreed.
    for &port in &sentinel_ports {
        wait_for("the sentinels find the replica and each other", Duration::from_secs(30), || {
            count(port, &["SENTINEL", "replicas", MASTER]) >= 1
                && count(port, &["SENTINEL", "sentinels", MASTER]) >= 2
        });
    }

    let addrs: Vec<String> = sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--redis-sentinel-master", MASTER, "--rate-limit", "0"];
    for addr in &addrs {
        args.extend(["--redis-sentinel", addr.as_str()]);
    }
    wait_for("the replica is in sync", WAIT, || {
        matches!(query(replica_port, &["INFO", "replication"]),
            Ok(redis::Value::BulkString(info)) if String::from_utf8_lossy(&info).contains("master_link_status:up"))
    });
    // Node B has the same from its config file.
    let file = dir.0.join("wshub.toml");
    std::fs::write(
        &file,
        format!("redis_sentinel = {addrs:?}\nredis_sentinel_master = {MASTER:?}\nrate_limit = 0\n"),
    )
    .expect("config file");
    let (a, b) = (Wshub::start(&args), Wshub::start(&["--config", file.to_str().expect("utf-8")]));
    let (mut pa, mut pb, mut ra, mut rb) = (a.client(), b.client(), a.client(), b.client());
    for client in [&mut pa, &mut pb, &mut ra, &mut rb] {
        ok(client, "room:join", json!({"room": "r"}));
    }
    for i in 1..=3 {
        ok(&mut pa, "room:publish", json!({"room": "r", "data": format!("before-{i}")}));
    }
    for reader in [&mut ra, &mut rb] {
        let (got, _) = read_until(reader, "before-3");
        assert_eq!(got, ["before-1", "before-2", "before-3"]);
    }

    // The replica has what was acked so far (replication is asynchronous:
    // without this the test would mostly see the new-epoch path).
    let _ = query(primary_port, &["WAIT", "1", "5000"]);
    match how {
        Failover::Kill => primary.kill(),
        Failover::Demote => {
            query(sentinel_ports[0], &["SENTINEL", "FAILOVER", MASTER]).expect("SENTINEL FAILOVER");
            wait_for("the replica is promoted", FAILOVER_BOUND, || role(replica_port) == "master");
        }
    }
    let killed = Instant::now();
    let deadline = killed + FAILOVER_BOUND;
    // Both nodes publish from the kill on until each has an ack again.
    let mut acked_after = Vec::new();
    let (mut unavailable, mut done) = ([false; 2], [false; 2]);
    for n in 0.. {
        for (i, client) in [&mut pa, &mut pb].into_iter().enumerate() {
            if done[i] {
                continue;
            }
            let data = format!("{i}-{n}");
            if let Some(seq) = try_publish(client, &data) {
                // The replica had every write (WAIT above): the seq goes on.
                assert!(seq > 3, "{data} acked at seq {seq}, reused under the same epoch");
                acked_after.push(data);
                done[i] = true;
            } else {
                unavailable[i] = true;
            }
        }
        if done == [true; 2] {
            break;
        }
        assert!(Instant::now() < deadline, "no ack on every node within {FAILOVER_BOUND:?} of the kill");
        std::thread::sleep(Duration::from_millis(100));
    }
    if how == Failover::Kill {
        assert_eq!(
            unavailable, [true; 2],
            "each node's publisher was told `unavailable` during the failover"
        );
    }
    // The replica is the primary now.
    assert_eq!(role(replica_port), "master");

    // Every acked message reached both nodes' members, or they were told the
    // room moved to a new epoch.
    let last = acked_after.last().cloned().expect("acked");
    for reader in [&mut ra, &mut rb] {
        let (got, told) = read_until(reader, &last);
        let missing: Vec<&String> = acked_after.iter().filter(|d| !got.contains(d)).collect();
        assert!(missing.is_empty() || told, "acked but neither delivered nor announced: {missing:?}");
        assert!(!told, "the replica had every write: no new epoch was due");
    }
    // And it goes on normally on the new primary.
    let seq = ok(&mut pb, "room:publish", json!({"room": "r", "data": "after"}))["seq"].as_u64();
    for reader in [&mut ra, &mut rb] {
        let v = until(reader, 100, |v| v["type"] == "room:message");
        assert_eq!(v["payload"]["data"], "after", "{v}");
        assert_eq!(v["payload"]["seq"].as_u64(), seq, "{v}");
    }
}

/// The address `SENTINEL get-master-addr-by-name` gives on `sentinel`.
fn named_port(sentinel: u16) -> Option<u16> {
    match query(sentinel, &["SENTINEL", "get-master-addr-by-name", MASTER]) {
        Ok(redis::Value::Array(addr)) => match addr.get(1) {
            Some(redis::Value::BulkString(port)) => String::from_utf8_lossy(port).parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// A heartbeat notices within a beat (1 s) and the time its calls take;
/// the rest is margin for a loaded machine.
const NOTICE: Duration = Duration::from_secs(3);

/// Split brain: after `SENTINEL FAILOVER` the old primary stays a primary
/// for seconds (until the sentinels demote it) and takes every write sent
/// to it, which its resync then drops. A node's heartbeat asks the
/// sentinels which primary they name and `ROLE` of its own: once they name
/// another, its pooled connections to the old one are dropped, publishes
/// fail (`unavailable`) until it is connected to the new one, and none is
/// acked by the old primary after that.
#[test]
fn no_publish_is_acked_by_the_old_primary_once_the_sentinels_name_another() {
    split_brain(false);
}

/// The same while the sentinel asked first is frozen (`kill -STOP`: its
/// socket accepts, nothing answers). Before, it took each beat's whole
/// deadline and was asked first again on the next, so the node never
/// learnt of the new primary and every publish the old one acked was lost.
#[test]
fn a_frozen_sentinel_does_not_hide_the_new_primary() {
    split_brain(true);
}

fn split_brain(freeze_first: bool) {
    let dir = TempDir::new("sentinel-split");
    let (primary_port, replica_port) = (free_port(), free_port());
    let _primary = redis_server(primary_port, &dir, &[]);
    let replica_dir = TempDir::new("sentinel-split-replica");
    let _replica =
        redis_server(replica_port, &replica_dir, &["--replicaof", "127.0.0.1", &primary_port.to_string()]);
    let sentinel_ports = [free_port(), free_port(), free_port()];
    let _sentinels: Vec<Proc> = sentinel_ports.iter().map(|&p| sentinel(p, primary_port, &dir)).collect();
    for &port in &sentinel_ports {
        wait_for("the sentinels find the replica and each other", Duration::from_secs(30), || {
            count(port, &["SENTINEL", "replicas", MASTER]) >= 1
                && count(port, &["SENTINEL", "sentinels", MASTER]) >= 2
        });
    }
    wait_for("the replica is in sync", WAIT, || {
        matches!(query(replica_port, &["INFO", "replication"]),
            Ok(redis::Value::BulkString(info)) if String::from_utf8_lossy(&info).contains("master_link_status:up"))
    });
    let addrs: Vec<String> = sentinel_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut args = vec!["--redis-sentinel-master", MASTER, "--rate-limit", "0"];
    for addr in &addrs {
        args.extend(["--redis-sentinel", addr.as_str()]);
    }
    let a = Wshub::start(&args);
    wait_health(a.addr, 200, WAIT);
    let mut publisher = a.client();
    ok(&mut publisher, "room:join", json!({"room": "r"}));
    assert_eq!(try_publish(&mut publisher, "first"), Some(1));

    let asked = if freeze_first {
        let pid = _sentinels[0].0.as_ref().expect("sentinel running").id().to_string();
        assert!(Command::new("kill").args(["-STOP", &pid]).status().expect("kill").success());
        &sentinel_ports[1..]
    } else {
        &sentinel_ports[..]
    };
    query(asked[0], &["SENTINEL", "FAILOVER", MASTER]).expect("SENTINEL FAILOVER");
    // Publishes every 50 ms until the old primary is a replica again and
    // the node has published for a while since the sentinels named the new one.
    let mut named_at = None;
    let (mut acked_late, mut refused) = (Vec::new(), 0);
    let deadline = Instant::now() + Duration::from_secs(40);
    for n in 0.. {
        assert!(Instant::now() < deadline, "the failover did not settle: named at {named_at:?}");
        if named_at.is_none() && asked.iter().all(|&p| named_port(p) == Some(replica_port)) {
            named_at = Some(Instant::now());
        }
        let data = format!("p-{n}");
        let sent = Instant::now();
        match try_publish(&mut publisher, &data) {
            Some(_) if named_at.is_some_and(|t| sent >= t + NOTICE) => acked_late.push(data),
            Some(_) => {}
            None => refused += 1,
        }
        if named_at.is_some_and(|t| t.elapsed() > NOTICE + Duration::from_secs(3))
            && role(primary_port) == "slave"
            && acked_late.len() >= 20
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The old primary has resynced from the new one: what it took alone is gone.
    wait_for("the old primary is in sync with the new one", Duration::from_secs(20), || {
        matches!(query(primary_port, &["INFO", "replication"]),
            Ok(redis::Value::BulkString(info)) if String::from_utf8_lossy(&info).contains("master_link_status:up"))
    });
    let stream = match query(replica_port, &["XRANGE", "wshub:h:r", "-", "+"]) {
        Ok(v) => text_of(&v),
        Err(e) => panic!("XRANGE on the new primary: {e}"),
    };
    let lost: Vec<&String> = acked_late.iter().filter(|d| !stream.contains(&format!("\"{d}\""))).collect();
    assert!(refused > 0, "publishes got `unavailable` while the node changed primaries");
    assert!(
        lost.is_empty(),
        "{} of {} publishes acked {NOTICE:?} after the sentinels named the new primary are not on it \
         (acked by the old one; {refused} refused): {lost:?}",
        lost.len(),
        acked_late.len()
    );
}

/// Every string in a reply, joined by line breaks.
fn text_of(v: &redis::Value) -> String {
    match v {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join("\n"),
        _ => String::new(),
    }
}
