//! A map from connection id to per-connection state, split over shards so
//! that threads touching different connections rarely meet on one lock.
//!
//! The engine's map gets each connection from the acceptor thread as it is
//! accepted, and loses it on the connection's reader thread when it ends
//! (the protocol's maps are written on the reader threads alone). With one `RwLock<HashMap>` a burst of new
//! connections queues on the write lock; on 2 cores with thousands of threads
//! the holder is often preempted mid-insert (or mid-rehash, which moves every
//! entry), and every other new connection parks behind it (most of a burst
//! of new connections did, when it was measured). Ids are sequential, so consecutive connections land on different
//! shards.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use parking_lot::{RwLock, RwLockReadGuard};

use crate::types::ConnId;

const SHARDS: usize = 64;

/// Hashes the [`ConnId`] keys of the maps that hold connections (these
/// shards, the hub's): ids are the server's own sequential numbers, never
/// chosen by a peer, so Fibonacci hashing (one multiply, the product's high
/// bits moved down to where the table takes its bucket from) spreads them,
/// consecutive ones and a shard's every 64th alike, where std's keyed SipHash,
/// made to resist keys an attacker picks, costs a hash per member per
/// broadcast.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().for_each(|&b| self.write_u64(u64::from(b)));
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by [`ConnId`] with [`IdHasher`].
pub(crate) type IdMap<V> = HashMap<ConnId, V, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
pub(crate) struct ConnMap<V> {
    shards: Box<[RwLock<IdMap<V>>]>,
}

impl<V> Default for ConnMap<V> {
    fn default() -> Self {
        ConnMap { shards: (0..SHARDS).map(|_| RwLock::new(IdMap::default())).collect() }
    }
}

impl<V> ConnMap<V> {
    fn shard(&self, id: ConnId) -> &RwLock<IdMap<V>> {
        &self.shards[(id % SHARDS as u64) as usize]
    }

    pub(crate) fn insert(&self, id: ConnId, value: V) -> Option<V> {
        self.shard(id).write().insert(id, value)
    }

    pub(crate) fn remove(&self, id: ConnId) -> Option<V> {
        self.shard(id).write().remove(&id)
    }

    /// Runs `f` on the entry of `id` (if any) under its shard's read lock.
    pub(crate) fn with<R>(&self, id: ConnId, f: impl FnOnce(Option<&V>) -> R) -> R {
        f(self.shard(id).read().get(&id))
    }

    /// Runs `f` on the entry of `id` (if any) under its shard's write lock.
    pub(crate) fn with_mut<R>(&self, id: ConnId, f: impl FnOnce(Option<&mut V>) -> R) -> R {
        f(self.shard(id).write().get_mut(&id))
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.read().is_empty())
    }

    /// Visits every entry, one shard (read-locked) at a time: entries added or
    /// removed meanwhile may or may not be seen.
    pub(crate) fn for_each(&self, mut f: impl FnMut(&V)) {
        for shard in self.shards.iter() {
            let guard: RwLockReadGuard<'_, _> = shard.read();
            guard.values().for_each(&mut f);
        }
    }

    /// [`for_each`](Self::for_each) with each entry's id.
    pub(crate) fn for_each_entry(&self, mut f: impl FnMut(ConnId, &V)) {
        for shard in self.shards.iter() {
            shard.read().iter().for_each(|(id, v)| f(*id, v));
        }
    }
}

impl<V: Clone> ConnMap<V> {
    pub(crate) fn get(&self, id: ConnId) -> Option<V> {
        self.shard(id).read().get(&id).cloned()
    }

    pub(crate) fn values(&self) -> Vec<V> {
        let mut all = Vec::new();
        self.for_each(|v| all.push(v.clone()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ids_and_a_shards_ids_spread_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let hash = BuildHasherDefault::<IdHasher>::default();
        for stride in [1, SHARDS as ConnId] {
            let ids: Vec<u64> = (0..4096).map(|i| hash.hash_one(1 + i * stride)).collect();
            // Bucket indexes (low bits) of a 4,096-bucket table: at least as
            // many distinct as keys placed at random would take (63 %).
            let mut low: Vec<u64> = ids.iter().map(|h| h & 4095).collect();
            low.sort_unstable();
            low.dedup();
            assert!(low.len() > 4096 * 63 / 100, "stride {stride}: {} buckets", low.len());
            // The tag (top seven bits) takes every value.
            let mut top: Vec<u64> = ids.iter().map(|h| h >> 57).collect();
            top.sort_unstable();
            top.dedup();
            assert_eq!(top.len(), 128, "stride {stride}");
        }
    }

    #[test]
    fn inserts_finds_and_removes_across_shards() {
        let map = ConnMap::default();
        assert!(map.is_empty());
        for id in 1..=200u64 {
            assert_eq!(map.insert(id, id * 10), None);
        }
        assert_eq!(map.len(), 200);
        assert_eq!(map.get(65), Some(650));
        assert_eq!(map.with(1, |v| v.copied()), Some(10));
        map.with_mut(2, |v| *v.unwrap() += 1);
        assert_eq!(map.get(2), Some(21));
        let mut seen = map.values();
        seen.sort();
        assert_eq!(seen.len(), 200);
        assert_eq!(seen[0], 10);
        assert_eq!(map.remove(65), Some(650));
        assert_eq!(map.remove(65), None);
        assert_eq!(map.get(65), None);
        assert_eq!(map.len(), 199);
        for id in 1..=200u64 {
            map.remove(id);
        }
        assert!(map.is_empty());
    }
}
