//! The disk space the store may still use: a floor of free space (`[store] min_free_space`) left
//! for the catalog, the logs and everything else on that disk, and the bytes that downloads and
//! uploads under way have announced but not written yet.
//!
//! A download of a 2 GiB wheel starts with a few bytes on disk; counting only what the disk
//! reports free would let twenty such downloads start together on a disk with room for one, and
//! every one of them would fail half way with the disk full (and so would the catalog's next
//! write). So a transfer reserves its announced size before it starts, and the reservation shrinks
//! as its bytes land; a transfer of unknown size checks each block before writing it. The free
//! space is what `statvfs` says is available to wheelgate's user, read at each check: the disk is
//! shared with whatever else writes to it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The store's disk budget. Cheap to clone: clones share the count of pending bytes.
#[derive(Clone, Debug)]
pub struct Space {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    /// `[store] min_free_space`; set again when the configuration is reloaded.
    floor: AtomicU64,
    /// Bytes reserved by transfers under way and not written yet.
    pending: AtomicU64,
}

/// A transfer that would leave less free space than the floor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the store's disk at {} is nearly full: {available} bytes are free, {pending} of them are \
     promised to transfers under way, and {wanted} more would leave less than [store] \
     min_free_space ({floor} bytes); free space on that disk (or lower [store] max_size and run \
     `wheelgate cache gc`), then retry",
    path.display()
)]
pub struct NoSpace {
    /// The store directory.
    pub path: PathBuf,
    /// What `statvfs` reported available.
    pub available: u64,
    /// Reserved by other transfers.
    pub pending: u64,
    /// What this transfer needs.
    pub wanted: u64,
    /// `[store] min_free_space`.
    pub floor: u64,
}

impl Space {
    /// The budget of the disk holding `path`, keeping `floor` bytes free.
    pub fn new(path: &Path, floor: u64) -> Space {
        Space {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                floor: AtomicU64::new(floor),
                pending: AtomicU64::new(0),
            }),
        }
    }

    /// Reserves `bytes` for a transfer about to write them; refused when they would leave less
    /// than the floor free (counting what other transfers reserved).
    pub fn reserve(&self, bytes: u64) -> Result<Reservation, NoSpace> {
        self.inner.check(bytes)?;
        self.inner.pending.fetch_add(bytes, Ordering::Relaxed);
        Ok(Reservation {
            inner: self.inner.clone(),
            left: bytes,
            allocated: 0,
        })
    }

    /// Sets the free space to keep (a reloaded `[store] min_free_space`).
    pub fn set_floor(&self, floor: u64) {
        self.inner.floor.store(floor, Ordering::Relaxed);
    }

    /// Bytes reserved by transfers under way and not written yet.
    pub fn pending(&self) -> u64 {
        self.inner.pending.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn check(&self, wanted: u64) -> Result<(), NoSpace> {
        let Some(available) = available(&self.path) else {
            // Not knowing is no reason to refuse: the write itself reports a full disk.
            return Ok(());
        };
        let pending = self.pending.load(Ordering::Relaxed);
        let floor = self.floor.load(Ordering::Relaxed);
        if fits(available, pending, wanted, floor) {
            Ok(())
        } else {
            Err(NoSpace {
                path: self.path.clone(),
                available,
                pending,
                wanted,
                floor,
            })
        }
    }
}

/// True when writing `wanted` bytes leaves at least `floor` of `available` free once the
/// `pending` bytes of other transfers are written too.
fn fits(available: u64, pending: u64, wanted: u64, floor: u64) -> bool {
    pending
        .checked_add(wanted)
        .and_then(|needed| needed.checked_add(floor))
        .is_some_and(|needed| needed <= available)
}

/// The bytes available to this process on the filesystem holding `path`; `None` when the system
/// cannot say.
fn available(path: &Path) -> Option<u64> {
    let stats = rustix::fs::statvfs(path).ok()?;
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

/// Bytes a transfer has reserved and not written yet; given back when it is dropped.
#[derive(Debug)]
pub struct Reservation {
    inner: Arc<Inner>,
    left: u64,
    /// Bytes allocated on the disk ahead of their writes ([`Reservation::preallocate`]): the
    /// disk's free space already shows them, so they are neither pending nor checked again.
    allocated: u64,
}

impl Reservation {
    /// Claims the reserved bytes on the disk for `file` (written from its start), when the file
    /// system can (ext4, xfs, btrfs, tmpfs). Writing into blocks already allocated made buffered
    /// writes of 256 KiB blocks on ext4 several times faster than delayed allocation finding room
    /// page by page (benches/README.md, "Cold large file"). Once claimed, the bytes leave the
    /// pending count, which would otherwise count them twice against the floor. Best effort: on
    /// a file system that cannot, the reservation stays as it was.
    pub fn preallocate(&mut self, file: &std::fs::File) {
        if self.left == 0 {
            return;
        }
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, self.left) {
            Ok(()) => {
                self.inner.pending.fetch_sub(self.left, Ordering::Relaxed);
                self.allocated = std::mem::take(&mut self.left);
            }
            Err(error) => {
                tracing::trace!(%error, bytes = self.left, "the file system did not preallocate");
            }
        }
    }

    /// Accounts for `bytes` about to be written: taken from the reservation, and what goes beyond
    /// it (a body longer than announced, or of unknown size) is checked against the floor first,
    /// together with the `unwritten` bytes handed to a writer before them that the disk may not
    /// show yet.
    pub fn write(&mut self, bytes: u64, unwritten: u64) -> Result<(), NoSpace> {
        let prepaid = bytes.min(self.allocated);
        self.allocated -= prepaid;
        let bytes = bytes - prepaid;
        let covered = bytes.min(self.left);
        let beyond = bytes - covered;
        if beyond > 0 {
            self.inner.check(beyond.saturating_add(unwritten))?;
        }
        self.left -= covered;
        self.inner.pending.fetch_sub(covered, Ordering::Relaxed);
        Ok(())
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.inner.pending.fetch_sub(self.left, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_counts_what_others_reserved() {
        assert!(fits(100, 0, 50, 50));
        assert!(!fits(100, 1, 50, 50));
        assert!(!fits(100, 0, 51, 50));
        assert!(!fits(u64::MAX, u64::MAX, 1, 0));
        assert!(fits(0, 0, 0, 0));
    }

    #[test]
    fn reservations_shrink_as_bytes_land_and_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), 0);
        let mut first = space.reserve(1000).unwrap();
        let second = space.reserve(500).unwrap();
        assert_eq!(space.pending(), 1500);
        first.write(400, 0).unwrap();
        assert_eq!(space.pending(), 1100);
        // Beyond the reservation: checked, not counted as pending.
        first.write(700, 0).unwrap();
        assert_eq!(space.pending(), 500);
        drop(second);
        drop(first);
        assert_eq!(space.pending(), 0);
    }

    #[test]
    fn a_floor_larger_than_the_disk_refuses_and_names_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), u64::MAX / 2);
        let refused = space.reserve(1).unwrap_err();
        assert_eq!(refused.wanted, 1);
        let message = refused.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        assert!(message.contains("min_free_space"), "{message}");
        assert_eq!(space.pending(), 0, "a refused reservation holds nothing");
    }

    #[test]
    fn a_body_beyond_its_reservation_is_checked_block_by_block() {
        let dir = tempfile::tempdir().unwrap();
        let free = available(dir.path()).unwrap();
        let space = Space::new(dir.path(), free / 2);
        let mut unknown = space.reserve(0).unwrap();
        unknown.write(1, 0).unwrap();
        let refused = unknown.write(free, 0).unwrap_err();
        assert_eq!(refused.wanted, free);
        assert_eq!(space.pending(), 0);
        // Bytes queued before this block and not on the disk yet count as well.
        let refused = unknown.write(1, free).unwrap_err();
        assert_eq!(refused.wanted, free + 1);
    }

    #[test]
    fn preallocated_bytes_are_on_the_disk_and_no_longer_pending() {
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), 0);
        let file = tempfile::tempfile_in(dir.path()).unwrap();
        let mut reservation = space.reserve(1 << 20).unwrap();
        reservation.preallocate(&file);
        // tmp directories on file systems without fallocate keep the reservation as it was.
        if space.pending() == 0 {
            assert_eq!(file.metadata().unwrap().len(), 1 << 20);
            // Writes within what was allocated are not checked, even above the floor.
            space.set_floor(u64::MAX / 2);
            reservation.write(1 << 20, 0).unwrap();
            assert!(reservation.write(1, 0).is_err(), "past it, the floor holds");
        } else {
            assert_eq!(space.pending(), 1 << 20);
        }
        drop(reservation);
        assert_eq!(space.pending(), 0);
    }
}
