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

use parking_lot::{RwLock, RwLockReadGuard};

use crate::types::ConnId;

const SHARDS: usize = 64;

#[derive(Debug)]
pub(crate) struct ConnMap<V> {
    shards: Box<[RwLock<HashMap<ConnId, V>>]>,
}

impl<V> Default for ConnMap<V> {
    fn default() -> Self {
        ConnMap { shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect() }
    }
}

impl<V> ConnMap<V> {
    fn shard(&self, id: ConnId) -> &RwLock<HashMap<ConnId, V>> {
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
