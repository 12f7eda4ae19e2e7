//! `WSHUB_KERNEL_FALLBACK=1` makes the binary take the path older kernels take:
//! glibc stacks with a guard page (2 mappings per thread) instead of the pooled
//! stacks (a mapping per 32 stacks), and the connections still work. Without
//! the switch, on a kernel with guard markers, the pool is used.

mod common;
mod protocol_common;

use common::{connect, next_data};
use protocol_common::{Wshub, WAIT};
use std::process::Command;
use tungstenite::Message as WsMessage;

const CONNS: usize = 60;

fn mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps").lines().count()
}

fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).expect("read task").count()
}

/// Mappings added by `CONNS` open, echoing connections.
fn mappings_for_connections(server: &Wshub) -> usize {
    let pid = server.child.id();
    let before = mappings(pid);
    let base_threads = threads(pid);
    let mut clients: Vec<_> = (0..CONNS).map(|_| connect(server.addr, "/ws")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(WsMessage::text(format!("m{i}"))).unwrap();
        assert_eq!(next_data(ws), WsMessage::text(format!("m{i}")));
    }
    // Every connection has its reader by now (the echo came back); the echoes
    // went straight to idle sockets, so no connection has a writer thread.
    assert_eq!(threads(pid), base_threads + CONNS);
    let after = mappings(pid);
    for ws in clients {
        common::close_client(ws);
    }
    after.saturating_sub(before)
}

/// True when this kernel supports guard markers (MADV_GUARD_INSTALL, Linux 6.13+).
fn kernel_has_guard_markers() -> bool {
    let release = String::from_utf8(Command::new("uname").arg("-r").output().unwrap().stdout).unwrap();
    let mut parts = release.trim().split(['.', '-']).map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (6, 13)
}

#[test]
fn the_switch_gives_every_thread_its_own_glibc_stack_and_connections_still_work() {
    let mut server = Wshub::start_with_env(&["--echo"], &[("WSHUB_KERNEL_FALLBACK", "1")]);
    let added = mappings_for_connections(&server);
    // glibc: a stack and its guard page per thread, a thread per connection
    // (a few may merge with a neighbour; never close to the pool's handful).
    assert!(added >= CONNS, "{added} mappings for {CONNS} connections: the pool was used");
    server.signal("INT");
    assert_eq!(server.wait_exit(WAIT), Some(0));
}

#[test]
fn without_the_switch_a_new_kernel_uses_the_pool() {
    if !kernel_has_guard_markers() || std::env::var_os("WSHUB_KERNEL_FALLBACK").is_some() {
        eprintln!("fallback path in use on this machine; nothing to compare");
        return;
    }
    let mut server = Wshub::start_with_env(&["--echo"], &[("WSHUB_KERNEL_FALLBACK", "")]);
    let added = mappings_for_connections(&server);
    // 60 threads on pooled stacks: a few chunks of 32 stacks each, plus
    // malloc's per-thread arenas; far under one mapping per connection.
    assert!(added < CONNS, "{added} mappings for {CONNS} connections: the pool was not used");
    server.signal("INT");
    assert_eq!(server.wait_exit(WAIT), Some(0));
}
