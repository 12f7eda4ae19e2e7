//! More than one Redis (`--redis` repeated): each instance is a shard with
//! its own connections (pool, subscriber, heartbeat) and its own idea of
//! whether it is up, and a room lives on one shard, chosen by a consistent
//! hash of its name. So a shard that goes down makes only its rooms answer
//! `error unavailable`; the others' rooms go on.
//!
//! Every node must be given the same list in the same order (the hash maps a
//! room to a position in it). Each shard holds a fingerprint of the list
//! (`P:shards`, refreshed by every heartbeat); a node whose list differs
//! logs an error. Bans and the requests to all nodes (kicks) go through the
//! first shard only.
//!
//! This module owns the shard state and the room → shard mapping; the calls
//! made on a shard stay in `mod.rs`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use super::{pool, sentinel, Control, Member, CONTROL_QUEUE};

/// One Redis instance (or one Sentinel-watched primary) and this node's
/// connections to it.
pub(super) struct Shard {
    /// Its position in the configured list.
    pub index: usize,
    pub connector: sentinel::Connector,
    pub pool: pool::Pool,
    /// False from a failed heartbeat on this shard (or a READONLY reply to
    /// any call) until a heartbeat on it succeeds again.
    pub up: AtomicBool,
    /// Whether the node has settled on this shard since it started: its
    /// heartbeat was tried once (answered or not: a shard that is down at
    /// start costs only its rooms, as later), and on the first shard, which
    /// records the bans, it answered and the bans were read (a node that has
    /// not read them would admit banned users). Until every shard has,
    /// `/healthz` answers 503.
    pub settled: AtomicBool,
    /// Times the heartbeat found the primary replaced (Sentinel named
    /// another, or the one connected to is a replica now): the subscriber
    /// connects again when it changes.
    pub primary_changes: AtomicU64,
    /// Requests to this shard's subscriber thread.
    pub control: (Sender<Control>, Receiver<Control>),
    /// Rooms whose channel this shard's subscriber has confirmed.
    pub subscribed: Mutex<HashSet<String>>,
    /// This node's members of rooms on this shard, as the shard's members
    /// hash holds them (field `room\nclientId`): what the heartbeat puts
    /// back when the shard lost them (`node.rs`).
    pub members: Mutex<HashMap<String, Member>>,
}

impl Shard {
    pub fn new(index: usize, connector: sentinel::Connector) -> Shard {
        Shard {
            index,
            connector,
            pool: pool::Pool::default(),
            up: AtomicBool::new(true),
            settled: AtomicBool::new(false),
            primary_changes: AtomicU64::new(0),
            control: crossbeam_channel::bounded(CONTROL_QUEUE),
            subscribed: Mutex::new(HashSet::new()),
            members: Mutex::new(HashMap::new()),
        }
    }
}

/// The shard (`0..shards`) of a room: a jump consistent hash (Lamping and
/// Veach) of the room name's FNV-1a hash. Both are fixed functions, the
/// same on every node and every build (std's hasher is seeded per process);
/// a shard added at the end of the list takes about 1/n of the rooms and
/// moves no room between the others.
pub(super) fn shard_of(room: &str, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let mut key = fnv1a(room.as_bytes());
    let (mut b, mut j): (i64, i64) = (-1, 0);
    while j < shards as i64 {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b.wrapping_add(1)) as f64 * ((1u64 << 31) as f64 / ((key >> 33).wrapping_add(1)) as f64))
            as i64;
    }
    b as usize
}

/// FNV-1a, 64 bits.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The fingerprint of a shard list, as each shard holds it: the instances'
/// addresses and databases in order (no passwords), hashed.
pub(super) fn fingerprint(shards: &[String]) -> String {
    let mut text = String::new();
    for url in shards {
        let place = match redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
            Ok(info) => format!("{}/{}", info.addr(), info.redis_settings().db()),
            Err(_) => url.clone(),
        };
        text.push_str(&place);
        text.push('\n');
    }
    format!("{}:{:016x}", shards.len(), fnv1a(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values every build and every node must agree on.
    #[test]
    fn the_room_hash_is_fixed() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // Computed apart, with the paper's algorithm written in Python.
        let shards = |room: &str| [2, 3, 5, 10].map(|n| shard_of(room, n));
        assert_eq!(shards("lobby"), [1, 2, 2, 8]);
        assert_eq!(shards("room-0"), [0, 0, 0, 0]);
        assert_eq!(shards("room-1"), [1, 2, 2, 5]);
        assert_eq!(shards("room-3"), [0, 0, 4, 5]);
        assert_eq!(shard_of("lobby", 1), 0);
    }

    #[test]
    fn rooms_spread_and_a_new_shard_moves_only_its_share() {
        let rooms: Vec<String> = (0..10_000).map(|i| format!("room-{i}")).collect();
        let two: Vec<usize> = rooms.iter().map(|r| shard_of(r, 2)).collect();
        let on_first = two.iter().filter(|&&s| s == 0).count();
        assert!((4_000..6_000).contains(&on_first), "{on_first} of 10000 on shard 0");
        let three: Vec<usize> = rooms.iter().map(|r| shard_of(r, 3)).collect();
        for (a, b) in two.iter().zip(&three) {
            assert!(a == b || *b == 2, "a room moved between the old shards");
        }
        let moved = two.iter().zip(&three).filter(|(a, b)| a != b).count();
        assert!((2_500..4_200).contains(&moved), "{moved} of 10000 moved to the new shard");
    }

    #[test]
    fn the_fingerprint_ignores_passwords_but_not_order() {
        let a = fingerprint(&["redis://:x@h1:1".into(), "redis://h2:2".into()]);
        let b = fingerprint(&["redis://:y@h1:1".into(), "redis://h2:2".into()]);
        let c = fingerprint(&["redis://h2:2".into(), "redis://h1:1".into()]);
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
