//! The in-memory view of the catalog that the warm path and eviction need.
//!
//! A warm file request must not touch sled (SPEC §4), so which artifacts exist, their sizes,
//! their last use and the URL pins are mirrored here, loaded once at open and updated with every
//! catalog change. Last-use times change only here on a hit; the ones changed since the last
//! persist are remembered so that `persist_recency` writes them in one batch.
//!
//! Pure data structure: no I/O, so its ordering rules are tested directly.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher as _;

/// Every file request looks its digest up here, under the index lock; std's SipHash was a
/// measurable part of a warm file request. foldhash is seeded per process.
type Hasher = foldhash::fast::RandomState;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::simple::Sha256Digest;

/// What the index knows about one stored artifact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub size: u64,
    /// Recency stamp: milliseconds since the Unix epoch, made strictly increasing by [`Index`]
    /// so that two uses within one millisecond still have an order.
    pub last_use: u64,
    pub evictable: bool,
    /// The body sits in the catalog rather than in a blob file.
    pub inline: bool,
}

/// The artifact index, URL pins, page counts and page blob references of one store.
#[derive(Debug, Default)]
pub(crate) struct Index {
    entries: HashMap<Sha256Digest, Entry, Hasher>,
    /// Evictable artifacts ordered by last use, oldest first.
    lru: BTreeSet<(u64, Sha256Digest)>,
    /// Sum of the sizes of all artifacts, evictable or not.
    total: u64,
    /// Artifacts used since the last `take_dirty`.
    dirty: HashSet<Sha256Digest, Hasher>,
    /// The last recency stamp handed out.
    clock: u64,
    /// The artifact that got the last stamp, if a use (not a load) gave it.
    last_touched: Option<Sha256Digest>,
    /// URL key -> content digest (SPEC §4: files whose upstream gave no sha256).
    pins: HashMap<Sha256Digest, Sha256Digest, Hasher>,
    /// How many page records use each blob, so that a blob shared with a page outlives the
    /// artifact (and the other way round).
    page_blobs: HashMap<Sha256Digest, usize, Hasher>,
    /// How many page records have each fingerprint (a hash of the catalog key), so that a page
    /// that was never stored is known to be absent without asking sled: on a cold miss that
    /// lookup ran on a blocking thread and waited behind the commits of a burst for up to 3 ms.
    /// Counted, so that two keys sharing a fingerprint only cost a lookup, never a wrong answer.
    page_keys: HashMap<u64, u32, Hasher>,
    fingerprint: Hasher,
    pages: u64,
}

impl Index {
    /// A strictly increasing stamp close to the wall clock.
    pub(crate) fn stamp(&mut self) -> u64 {
        self.clock = now_millis().max(self.clock.saturating_add(1));
        self.clock
    }

    /// Adds (or replaces) an artifact. Loaded entries keep their persisted stamp; the clock
    /// moves past it so later uses sort after it.
    pub(crate) fn insert(&mut self, digest: Sha256Digest, entry: Entry) {
        self.remove(&digest);
        self.clock = self.clock.max(entry.last_use);
        self.total = self.total.saturating_add(entry.size);
        if entry.evictable {
            self.lru.insert((entry.last_use, digest));
        }
        self.entries.insert(digest, entry);
    }

    pub(crate) fn remove(&mut self, digest: &Sha256Digest) -> Option<Entry> {
        let entry = self.entries.remove(digest)?;
        self.total = self.total.saturating_sub(entry.size);
        self.lru.remove(&(entry.last_use, *digest));
        self.dirty.remove(digest);
        if self.last_touched == Some(*digest) {
            self.last_touched = None;
        }
        Some(entry)
    }

    /// Makes an artifact non-evictable (a hosted upload of bytes that were cached).
    pub(crate) fn protect(&mut self, digest: &Sha256Digest) {
        if let Some(entry) = self.entries.get_mut(digest) {
            self.lru.remove(&(entry.last_use, *digest));
            entry.evictable = false;
        }
    }

    pub(crate) fn get(&self, digest: &Sha256Digest) -> Option<Entry> {
        self.entries.get(digest).copied()
    }

    /// Records a use of `digest` and returns its entry, or `None` if it is not stored.
    pub(crate) fn touch(&mut self, digest: &Sha256Digest) -> Option<Entry> {
        let entry = self.entries.get_mut(digest)?;
        if self.last_touched == Some(*digest) && entry.last_use == self.clock {
            // Already the most recent use (a hot file asked for again and again): the order
            // would not change, and the stamp is already marked dirty or persisted.
            return Some(*entry);
        }
        let stamp = now_millis().max(self.clock.saturating_add(1));
        self.clock = stamp;
        self.last_touched = Some(*digest);
        if entry.evictable {
            self.lru.remove(&(entry.last_use, *digest));
            self.lru.insert((stamp, *digest));
        }
        entry.last_use = stamp;
        self.dirty.insert(*digest);
        Some(*entry)
    }

    /// The least recently used evictable artifact other than `keep`, if the total is above
    /// `max_size`.
    pub(crate) fn victim(
        &self,
        max_size: u64,
        keep: Option<&Sha256Digest>,
    ) -> Option<Sha256Digest> {
        if self.total <= max_size {
            return None;
        }
        self.lru.iter().map(|(_, d)| *d).find(|d| Some(d) != keep)
    }

    /// The artifacts used since the last call, with their current stamps.
    pub(crate) fn take_dirty(&mut self) -> Vec<(Sha256Digest, u64)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .filter_map(|d| self.entries.get(&d).map(|e| (d, e.last_use)))
            .collect()
    }

    /// Puts back stamps that could not be persisted, so the next call retries them.
    pub(crate) fn restore_dirty(&mut self, digests: impl IntoIterator<Item = Sha256Digest>) {
        self.dirty
            .extend(digests.into_iter().filter(|d| self.entries.contains_key(d)));
    }

    pub(crate) fn pin(&mut self, url_key: Sha256Digest, digest: Sha256Digest) {
        self.pins.insert(url_key, digest);
    }

    pub(crate) fn unpin(&mut self, url_key: &Sha256Digest) {
        self.pins.remove(url_key);
    }

    pub(crate) fn pinned(&self, url_key: &Sha256Digest) -> Option<Sha256Digest> {
        self.pins.get(url_key).copied()
    }

    /// Notes one more page record, stored under catalog key `key` (using `blob` when its body
    /// is a blob file).
    pub(crate) fn add_page(&mut self, key: &[u8], blob: Option<Sha256Digest>) {
        self.pages = self.pages.saturating_add(1);
        *self
            .page_keys
            .entry(self.fingerprint.hash_one(key))
            .or_insert(0) += 1;
        if let Some(d) = blob {
            *self.page_blobs.entry(d).or_insert(0) += 1;
        }
    }

    /// Notes one page record fewer.
    pub(crate) fn remove_page(&mut self, key: &[u8], blob: Option<Sha256Digest>) {
        self.pages = self.pages.saturating_sub(1);
        let fingerprint = self.fingerprint.hash_one(key);
        if let Some(count) = self.page_keys.get_mut(&fingerprint) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.page_keys.remove(&fingerprint);
            }
        }
        if let Some(d) = blob {
            if let Some(count) = self.page_blobs.get_mut(&d) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.page_blobs.remove(&d);
                }
            }
        }
    }

    /// False when no page record has catalog key `key`; true when one may.
    pub(crate) fn may_have_page(&self, key: &[u8]) -> bool {
        self.page_keys.contains_key(&self.fingerprint.hash_one(key))
    }

    /// Whether any record still needs the blob file of `digest`.
    pub(crate) fn blob_in_use(&self, digest: &Sha256Digest) -> bool {
        self.page_blobs.contains_key(digest) || self.entries.get(digest).is_some_and(|e| !e.inline)
    }

    pub(crate) fn artifacts(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Every artifact with its entry, in no particular order (a copy: `cache verify` walks it
    /// without holding the lock).
    pub(crate) fn snapshot(&self) -> Vec<(Sha256Digest, Entry)> {
        self.entries.iter().map(|(d, e)| (*d, *e)).collect()
    }

    /// How many artifacts are never evicted (hosted uploads), and their bytes.
    pub(crate) fn unevictable(&self) -> (u64, u64) {
        self.entries
            .values()
            .filter(|e| !e.evictable)
            .fold((0, 0), |(n, bytes), e| (n + 1, bytes + e.size))
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    pub(crate) fn pages(&self) -> u64 {
        self.pages
    }
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
pub(crate) fn now_millis() -> u64 {
    millis(SystemTime::now())
}

/// `time` as milliseconds since the Unix epoch, saturating at both ends.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Sha256Digest {
        Sha256Digest::from_bytes([n; 32])
    }

    fn entry(size: u64, last_use: u64, evictable: bool) -> Entry {
        Entry {
            size,
            last_use,
            evictable,
            inline: false,
        }
    }

    #[test]
    fn stamps_strictly_increase() {
        let mut index = Index::default();
        let a = index.stamp();
        let b = index.stamp();
        assert!(b > a);
        // A persisted stamp from the future pushes the clock past it.
        index.insert(d(1), entry(1, a + 1_000_000, true));
        assert!(index.stamp() > a + 1_000_000);
    }

    #[test]
    fn victim_is_least_recent_evictable_and_not_kept() {
        let mut index = Index::default();
        index.insert(d(1), entry(10, 100, true));
        index.insert(d(2), entry(10, 50, false));
        index.insert(d(3), entry(10, 200, true));
        assert_eq!(index.total(), 30);
        assert_eq!(index.victim(30, None), None, "not above the limit");
        assert_eq!(index.victim(29, None), Some(d(1)));
        assert_eq!(index.victim(29, Some(&d(1))), Some(d(3)));
        index.touch(&d(1));
        assert_eq!(
            index.victim(29, None),
            Some(d(3)),
            "touch makes 1 the most recent"
        );
        index.protect(&d(3));
        assert_eq!(index.victim(29, None), Some(d(1)));
        index.remove(&d(1));
        assert_eq!(index.victim(0, None), None, "non-evictable never chosen");
        assert_eq!(index.total(), 20);
    }

    #[test]
    fn dirty_tracks_touches_once() {
        let mut index = Index::default();
        index.insert(d(1), entry(1, 1, true));
        index.insert(d(2), entry(1, 1, true));
        assert!(index.take_dirty().is_empty(), "loading is not a use");
        index.touch(&d(1));
        let first = index.touch(&d(1)).unwrap().last_use;
        assert_eq!(index.touch(&d(9)), None);
        assert_eq!(index.take_dirty(), vec![(d(1), first)]);
        assert!(index.take_dirty().is_empty());
        assert_eq!(
            index.touch(&d(1)).unwrap().last_use,
            first,
            "a repeated hit keeps its stamp"
        );
        assert!(index.take_dirty().is_empty(), "and is not dirty again");
        index.touch(&d(2));
        assert!(
            index.touch(&d(1)).unwrap().last_use > first,
            "after another use it is stamped again"
        );
        index.restore_dirty([d(1), d(9)]);
        let restored = index.take_dirty();
        assert_eq!(restored.len(), 2, "{restored:?}");
    }

    #[test]
    fn page_keys_and_blob_references_count() {
        let mut index = Index::default();
        assert!(!index.may_have_page(b"a"));
        index.add_page(b"a", Some(d(5)));
        index.add_page(b"b", Some(d(5)));
        index.add_page(b"c", None);
        assert_eq!(index.pages(), 3);
        assert!(
            index.may_have_page(b"a") && index.may_have_page(b"b") && index.may_have_page(b"c")
        );
        assert!(!index.may_have_page(b"d"));
        index.remove_page(b"a", Some(d(5)));
        assert!(!index.may_have_page(b"a"));
        assert!(index.blob_in_use(&d(5)));
        index.remove_page(b"b", Some(d(5)));
        assert!(!index.blob_in_use(&d(5)));
        // A replaced page: the new record is added before the old one is removed.
        index.add_page(b"c", None);
        index.remove_page(b"c", None);
        assert!(index.may_have_page(b"c"));
        index.insert(d(5), entry(1, 1, true));
        assert!(index.blob_in_use(&d(5)), "an artifact blob is in use");
        index.insert(
            d(5),
            Entry {
                inline: true,
                ..entry(1, 1, true)
            },
        );
        assert!(!index.blob_in_use(&d(5)), "an inline artifact has no blob");
        assert_eq!(index.total(), 1, "replacing does not double count");
    }

    #[test]
    fn pins_round_trip() {
        let mut index = Index::default();
        index.pin(d(1), d(2));
        assert_eq!(index.pinned(&d(1)), Some(d(2)));
        index.unpin(&d(1));
        assert_eq!(index.pinned(&d(1)), None);
    }
}
