//! An idle connection's reader, blocked waiting for its next frame, holds
//! no stack page below the one it waits in: the pages its handshake and
//! `on_connect` touched deeper down went back to the kernel before the read
//! loop began. Read from outside, on a running `wshub` binary: the blocked
//! thread's stack pointer from `/proc/PID/task/TID/syscall`, which pages are
//! in memory from `/proc/PID/pagemap`. On the pooled-stack path and on glibc
//! stacks (`WSHUB_KERNEL_FALLBACK`), for WebSockets and an event stream.
//! The release waits for the connection's first quiet moment (a `poll`);
//! once every reader has had it (`wshub_reader_stack_releases_total`), an
//! idle WebSocket's reader waits out the rest of its idle timeout in a
//! `poll` as well, then in `recvfrom`; an event stream's in `recvfrom`.

mod child_common;
mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;
/// How far below the waiting frame's page to look.
const BELOW: u64 = 48;
/// `recvfrom` and `poll` (`ppoll` where there is no `poll`), where an idle
/// reader waits.
#[cfg(target_arch = "x86_64")]
const WAITS: [&str; 2] = ["45", "7"];
#[cfg(target_arch = "aarch64")]
const WAITS: [&str; 2] = ["207", "73"];

/// The reader threads of `pid` (`wshub-r<conn>`) by task id.
fn readers(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| {
            let t = t.ok()?;
            let name = std::fs::read_to_string(t.path().join("comm")).ok()?;
            let name = name.trim();
            (name.starts_with("wshub-r") && name[7..].parse::<u64>().is_ok())
                .then(|| t.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// The stack pointer of task `tid` while it waits in `recvfrom` or `poll`.
fn waiting_sp(pid: u32, tid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let fields: Vec<&str> = text.split_whitespace().collect();
    // "NR arg1..arg6 SP PC" while blocked; "running" or "-1 SP PC" otherwise.
    if fields.len() != 9 || !WAITS.contains(&fields[0]) {
        return None;
    }
    u64::from_str_radix(fields[7].trim_start_matches("0x"), 16).ok()
}

/// The start of the mapping of `pid` that holds `addr`.
fn mapping_of(pid: u32, addr: u64) -> u64 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    for line in maps.lines() {
        let range = line.split_whitespace().next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let (lo, hi) = (u64::from_str_radix(lo, 16).unwrap(), u64::from_str_radix(hi, 16).unwrap());
        if (lo..hi).contains(&addr) {
            return lo;
        }
    }
    panic!("no mapping holds {addr:#x}");
}

/// How many of the pages in [from, to) are in memory.
fn resident(pid: u32, from: u64, to: u64) -> usize {
    let mut pagemap = std::fs::File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let pages = ((to - from) / PAGE) as usize;
    let mut entries = vec![0u8; pages * 8];
    pagemap.seek(SeekFrom::Start(from / PAGE * 8)).unwrap();
    pagemap.read_exact(&mut entries).unwrap();
    entries.chunks(8).filter(|e| u64::from_le_bytes((*e).try_into().unwrap()) >> 63 == 1).count()
}

/// `wshub_reader_stack_releases_total`, from `/metrics`.
fn releases(addr: std::net::SocketAddr) -> u64 {
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("wshub_reader_stack_releases_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn check(fallback: bool) {
    let (bin, addr) = child_common::start_binary(fallback);
    let pid = bin.0.id();
    let clients: Vec<_> = (0..3).map(|_| common::connect(addr, "/ws")).collect();
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /sse?room=feed HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    // Each reader is idle once it has released and blocked again (a reader
    // in its quiet poll still holds its handshake's pages).
    common::wait_until("every reader to release its stack", || releases(addr) == clients.len() as u64 + 1);
    let deadline = Instant::now() + common::WAIT;
    let waiting = loop {
        let waiting: Vec<(String, u64)> =
            readers(pid).into_iter().filter_map(|tid| waiting_sp(pid, &tid).map(|sp| (tid, sp))).collect();
        if waiting.len() == clients.len() + 1 {
            break waiting;
        }
        assert!(Instant::now() < deadline, "readers not all waiting: {waiting:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    for (tid, sp) in waiting {
        let top = sp & !(PAGE - 1);
        let from = top.saturating_sub(BELOW * PAGE).max(mapping_of(pid, sp));
        let kept = resident(pid, from, top);
        assert_eq!(kept, 0, "reader {tid}: {kept} stack pages in memory below the one it waits in");
    }
    drop((clients, stream));
}

#[test]
fn on_pooled_stacks() {
    check(false);
}

#[test]
fn on_glibc_stacks() {
    check(true);
}
