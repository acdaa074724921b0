//! The live map: tag -> the key's current record and its in-memory counters.
//!
//! A verify that misses reads sled once and fills the map with `or_insert`, so it can never
//! replace an entry. Every change to an existing key is written to sled first and then
//! upserted here, unconditionally. Whichever of a racing fill and a change reaches the map
//! last, the map ends up holding the changed record: no stale entry can serve a request.

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::event::Tag;
use crate::record::KeyRecord;

/// One key's live state.
#[derive(Debug)]
pub(crate) struct LiveKey {
    pub record: ArcSwap<KeyRecord>,
    /// Last use, unix ms (0: never).
    pub last_used: AtomicI64,
    /// The last-used value last written to sled.
    pub flushed_last_used: AtomicI64,
}

/// The concurrent map from tag to live state.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    map: DashMap<Tag, Arc<LiveKey>, BuildHasherDefault<TagHasher>>,
    /// Bumped by [`Cache::clear`]; a fill that read sled before a clear does not insert.
    epoch: AtomicU64,
}

impl Cache {
    /// The live state for `tag`, if cached.
    #[inline]
    pub fn get(&self, tag: &Tag) -> Option<Arc<LiveKey>> {
        self.map.get(tag).map(|e| Arc::clone(e.value()))
    }

    /// The epoch to pass to [`Cache::fill`]; read it before reading sled.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Inserts `record`, read from sled during `epoch`, unless the tag is present; returns
    /// what is in the map. If the map was cleared since, the entry is returned uncached:
    /// a change upserted and then cleared away must not be shadowed by an older read.
    pub fn fill(&self, tag: Tag, record: KeyRecord, last_used: i64, epoch: u64) -> Arc<LiveKey> {
        let fresh = || {
            Arc::new(LiveKey {
                record: ArcSwap::from_pointee(record),
                last_used: AtomicI64::new(last_used),
                flushed_last_used: AtomicI64::new(last_used),
            })
        };
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(e) => Arc::clone(e.get()),
            // Checked under the shard lock, so a concurrent clear either sees this entry or
            // has already bumped the epoch.
            dashmap::Entry::Vacant(e) if self.epoch.load(Ordering::SeqCst) == epoch => {
                Arc::clone(e.insert(fresh()).value())
            }
            dashmap::Entry::Vacant(_) => fresh(),
        }
    }

    /// Replaces the record for `tag`, or inserts it; called after the change is in sled.
    pub fn upsert(&self, tag: Tag, record: KeyRecord, last_used: impl FnOnce() -> i64) {
        match self.map.entry(tag) {
            dashmap::Entry::Occupied(e) => e.get().record.store(Arc::new(record)),
            dashmap::Entry::Vacant(e) => {
                let last = last_used();
                e.insert(Arc::new(LiveKey {
                    record: ArcSwap::from_pointee(record),
                    last_used: AtomicI64::new(last),
                    flushed_last_used: AtomicI64::new(last),
                }));
            }
        }
    }

    /// Empties the map.
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.map.clear();
    }

    /// Last-used times that changed since they were last flushed, marking them flushed.
    pub fn take_dirty_last_used(&self) -> Vec<(crate::record::KeyId, i64)> {
        let mut out = Vec::new();
        for entry in &self.map {
            let live = entry.value();
            let now = live.last_used.load(Ordering::Relaxed);
            if now != live.flushed_last_used.swap(now, Ordering::Relaxed) {
                out.push((live.record.load().id.clone(), now));
            }
        }
        out
    }
}

/// Tags are already uniformly random (keyed BLAKE3 output), so the map hashes a tag by
/// taking its first eight bytes: no second hash on the hot path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TagHasher(u64);

impl Hasher for TagHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // `[u8; 32]`'s Hash feeds the length first (8 bytes), then the 32 bytes; mix all
        // in cheaply so any feeding order still spreads.
        for chunk in bytes.chunks(8) {
            self.0 = self.0.rotate_left(29) ^ u64::from_le_bytes(crate::log::frame::to_array(chunk));
        }
    }
}
