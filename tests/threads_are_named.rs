//! Every thread of a running `wshub` binary with clients carries a wshub
//! name within Linux's 15 bytes, as `ps -L` (and `top -H`, gdb, perf) show
//! it: per connection a reader `wshub-r<conn>` (and a writer `wshub-w<conn>`
//! while its queue is backed up: none for these idle clients), and the hub,
//! acceptor, overflow, stopper, trim and fan-out threads. On
//! the pooled-stack path and on glibc stacks (`WSHUB_KERNEL_FALLBACK`).

mod child_common;
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

/// `ps -L -o comm=` of `pid`: one name per thread.
fn thread_names(pid: u32) -> Vec<String> {
    let out = Command::new("ps").args(["-L", "-o", "comm=", "-p", &pid.to_string()]).output().expect("ps");
    String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().to_owned()).collect()
}

fn check(fallback: bool) {
    let (bin, addr) = child_common::start_binary(fallback);
    let clients: Vec<_> = (0..3).map(|_| common::connect(addr, "/ws")).collect();
    let pid = bin.0.id();
    // Every connection's reader is up once its 101 came; wait for the names
    // anyway (a thread names itself as it starts).
    let deadline = Instant::now() + common::WAIT;
    let names = loop {
        let names = thread_names(pid);
        let readers = names.iter().filter(|n| n.starts_with("wshub-r")).count();
        if readers >= 3 || Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // /proc says the same as ps.
    let proc_names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    assert_eq!(proc_names.len(), names.len(), "{proc_names:?} vs {names:?}");
    for name in &names {
        assert!(name.starts_with("wshub"), "an unnamed thread: {name:?} in {names:?}");
        assert!(name.len() <= 15, "{name:?}");
    }
    for wanted in ["wshub-hub", "wshub-accept", "wshub-overflow", "wshub-stopper"] {
        assert!(names.iter().any(|n| n == wanted), "no {wanted} in {names:?}");
    }
    let per_conn = |prefix: &str| {
        names.iter().filter(|n| n.starts_with(prefix) && n[7..].parse::<u64>().is_ok()).count()
    };
    assert_eq!(per_conn("wshub-r"), 3, "wshub-r<conn> threads in {names:?}");
    // Idle connections: nothing queued, so no writer thread.
    assert_eq!(per_conn("wshub-w"), 0, "wshub-w<conn> threads in {names:?}");
    drop(clients);
}

#[test]
fn ps_lists_named_wshub_threads_on_pooled_stacks() {
    check(false);
}

#[test]
fn ps_lists_named_wshub_threads_on_glibc_stacks() {
    check(true);
}
