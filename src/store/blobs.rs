//! The content-addressed files beside the catalog, and the temporary directory they come from.
//!
//! Bodies of 64 KiB and more never enter sled (see the module doc of `store`): they are files
//! named by their sha256 under `blobs/sha256/<2 hex>/<64 hex>`. A file reaches that name only by
//! `rename` from `tmp/` after its bytes were fsynced, and the directory is fsynced after the
//! rename, so a blob name always denotes complete, durable content. This module knows paths and
//! durability; which blobs are wanted is the catalog's business.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use crate::simple::Sha256Digest;

/// How many fresh names `create_temp` tries before giving up: a collision of 64 random bits
/// means something else is writing into `tmp/`, and looping forever would hide it.
const TEMP_ATTEMPTS: usize = 8;

/// The blob and temporary directories of one store.
#[derive(Debug)]
pub(crate) struct Blobs {
    /// `<store>/blobs/sha256`
    root: PathBuf,
    /// `<store>/tmp`
    tmp: PathBuf,
}

/// What losing a blob's rename to a power cut would cost, which decides whether
/// [`Blobs::install`] fsyncs the directory (a cold install commits dozens of files at once, and
/// a directory fsync each, serialised under the store's write lock, cost a quarter of the cold
/// throughput under load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// The only copy there is (a hosted upload): the rename is made durable before the record.
    Only,
    /// A copy of something the upstream still has (a cached file or page). The file's bytes are
    /// fsynced; if its rename is lost, the record without its blob is dropped at the next open
    /// and the next request fetches it again.
    Refetchable,
}

/// A file found under the blob directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// A well-named blob: `<2 hex>/<64 hex>` with the directory matching the name.
    Blob(Sha256Digest),
    /// Anything else: a file we did not write under that name, which nothing can refer to.
    Stray(PathBuf),
}

impl Blobs {
    /// The layout under `store`; nothing is created until [`Blobs::create_layout`].
    pub(crate) fn new(store: &Path) -> Self {
        Blobs {
            root: store.join("blobs").join("sha256"),
            tmp: store.join("tmp"),
        }
    }

    /// Creates `blobs/sha256/` and `tmp/` if absent. A new blob directory gets its 256 fan-out
    /// directories at once, so that the first downloads into a fresh store (a cold install
    /// commits dozens of files at once) do not each pay for a `mkdir` and a directory fsync.
    pub(crate) fn create_layout(&self) -> Result<(), StoreError> {
        let fresh = !self.root.is_dir();
        for dir in [&self.root, &self.tmp] {
            fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        }
        if fresh {
            for byte in 0..=u8::MAX {
                let dir = self.root.join(format!("{byte:02x}"));
                match fs::create_dir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(source) => return Err(StoreError::CreateDir { path: dir, source }),
                }
            }
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    pub(crate) fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Where the blob of `digest` lives (whether or not it exists).
    pub(crate) fn path_of(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        let fanout = hex.get(..2).unwrap_or_default();
        self.root.join(fanout).join(&hex)
    }

    /// A new, empty temporary file with a unique name, opened for reading and writing.
    pub(crate) fn create_temp(&self) -> Result<(PathBuf, File), StoreError> {
        let mut last = None;
        for _ in 0..TEMP_ATTEMPTS {
            let path = self
                .tmp
                .join(format!("{:016x}.part", rand::random::<u64>()));
            match OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok((path, file)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(StoreError::io("create a temporary file in", &self.tmp, e)),
            }
        }
        let source = last.unwrap_or_else(|| io::Error::other("no attempt was made"));
        Err(StoreError::io(
            "find a free temporary name in",
            &self.tmp,
            source,
        ))
    }

    /// Moves a fully written, already fsynced temporary file to the blob name of `digest`, and
    /// makes the rename durable when `keep` says so. An existing blob of the same digest is
    /// replaced: by content addressing its bytes are the same, and readers holding it open keep
    /// their copy.
    pub(crate) fn install(
        &self,
        temp: &Path,
        digest: &Sha256Digest,
        keep: Keep,
    ) -> Result<PathBuf, StoreError> {
        let target = self.path_of(digest);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let moved = match fs::rename(temp, &target) {
            // A fan-out directory deleted by hand (a fresh store has all of them).
            Err(e) if e.kind() == io::ErrorKind::NotFound && !dir.is_dir() => {
                fs::create_dir_all(&dir)
                    .map_err(|e| StoreError::io("create the blob directory", &dir, e))?;
                // The new fan-out directory's own entry must survive a crash too.
                sync_dir(&self.root)?;
                fs::rename(temp, &target)
            }
            moved => moved,
        };
        moved.map_err(|e| StoreError::io("move a finished download into", &target, e))?;
        if keep == Keep::Only {
            sync_dir(&dir)?;
        }
        Ok(target)
    }

    /// Makes the name of an installed blob durable: for a cached file that becomes the only
    /// copy of a hosted upload (see [`Keep`]).
    pub(crate) fn make_durable(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let target = self.path_of(digest);
        sync_dir(target.parent().unwrap_or(&self.root))
    }

    /// Writes `bytes` to a new temporary file and fsyncs it, ready for [`Blobs::install`].
    /// Kept apart from the install so that the slow part runs outside the store's write lock.
    pub(crate) fn write_temp(&self, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        let (temp, mut file) = self.create_temp()?;
        let written = file
            .write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| StoreError::io("write", &temp, e));
        drop(file);
        if written.is_err() {
            // Best effort: whatever is left in tmp/ is removed at the next open anyway.
            let _ = fs::remove_file(&temp);
        }
        written.map(|()| temp)
    }

    /// Opens the blob of `digest` for reading.
    pub(crate) fn open(&self, digest: &Sha256Digest) -> io::Result<File> {
        File::open(self.path_of(digest))
    }

    /// The size of the blob of `digest`, or `None` when there is no such file.
    pub(crate) fn len(&self, digest: &Sha256Digest) -> Option<u64> {
        fs::metadata(self.path_of(digest))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }

    /// Deletes the blob of `digest`; `false` when it was already gone.
    pub(crate) fn remove(&self, digest: &Sha256Digest) -> Result<bool, StoreError> {
        remove_if_present(&self.path_of(digest))
    }

    /// Deletes everything in `tmp/`: at open no writer can be alive (sled's lock is held), so
    /// every entry is the remains of an interrupted download. Returns how many entries went.
    pub(crate) fn clear_tmp(&self) -> Result<usize, StoreError> {
        let entries = fs::read_dir(&self.tmp).map_err(|e| StoreError::io("list", &self.tmp, e))?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("list", &self.tmp, e))?;
            let path = entry.path();
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            let result = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match result {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::io(
                        "delete the leftover temporary file",
                        &path,
                        e,
                    ))
                }
            }
        }
        Ok(removed)
    }

    /// Every file under `blobs/sha256/`, classified. Used once at open to find garbage.
    pub(crate) fn list(&self) -> Result<Vec<Found>, StoreError> {
        let mut found = Vec::new();
        let fanouts =
            fs::read_dir(&self.root).map_err(|e| StoreError::io("list", &self.root, e))?;
        for fanout in fanouts {
            let fanout = fanout.map_err(|e| StoreError::io("list", &self.root, e))?;
            let dir = fanout.path();
            if !fanout.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                found.push(Found::Stray(dir));
                continue;
            }
            let prefix = fanout.file_name().to_string_lossy().into_owned();
            let files = fs::read_dir(&dir).map_err(|e| StoreError::io("list", &dir, e))?;
            for file in files {
                let file = file.map_err(|e| StoreError::io("list", &dir, e))?;
                let name = file.file_name().to_string_lossy().into_owned();
                let digest = Sha256Digest::parse_hex(&name)
                    .ok()
                    // Only our own spelling counts: lowercase, in the directory of its first
                    // two characters, and a regular file.
                    .filter(|d| d.to_hex() == name && name.get(..2) == Some(prefix.as_str()))
                    .filter(|_| file.file_type().map(|t| t.is_file()).unwrap_or(false));
                found.push(match digest {
                    Some(d) => Found::Blob(d),
                    None => Found::Stray(file.path()),
                });
            }
        }
        Ok(found)
    }

    /// Deletes a stray entry found by [`Blobs::list`] (a file, or a directory and its content).
    pub(crate) fn remove_stray(&self, path: &Path) -> Result<(), StoreError> {
        let result = if path.is_dir() {
            fs::remove_dir_all(path)
        } else {
            fs::remove_file(path)
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("delete the stray file", path, e)),
        }
    }
}

/// Deletes `path`; `false` when it did not exist.
pub(crate) fn remove_if_present(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(StoreError::io("delete", path, e)),
    }
}

/// Makes the entries of `dir` (a rename or a new subdirectory) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("sync the directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs() -> (tempfile::TempDir, Blobs) {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(dir.path());
        blobs.create_layout().unwrap();
        (dir, blobs)
    }

    #[test]
    fn path_uses_two_hex_fanout() {
        let (dir, blobs) = blobs();
        let d = Sha256Digest::of(b"x");
        let hex = d.to_hex();
        let expected = dir.path().join("blobs/sha256").join(&hex[..2]).join(&hex);
        assert_eq!(blobs.path_of(&d), expected);
    }

    #[test]
    fn write_installs_durable_blob_and_leaves_tmp_empty() {
        let (_dir, blobs) = blobs();
        let body = vec![7u8; 100_000];
        let d = Sha256Digest::of(&body);
        let temp = blobs.write_temp(&body).unwrap();
        assert!(temp.starts_with(blobs.tmp_dir()));
        let path = blobs.install(&temp, &d, Keep::Only).unwrap();
        assert!(!temp.exists());
        assert_eq!(fs::read(&path).unwrap(), body);
        assert_eq!(blobs.len(&d), Some(100_000));
        assert_eq!(fs::read_dir(blobs.tmp_dir()).unwrap().count(), 0);
        assert_eq!(blobs.list().unwrap(), vec![Found::Blob(d)]);
        assert!(blobs.remove(&d).unwrap());
        assert!(!blobs.remove(&d).unwrap());
        assert_eq!(blobs.len(&d), None);
    }

    #[test]
    fn a_fresh_layout_has_every_fanout_and_a_lost_one_is_recreated() {
        let (dir, blobs) = blobs();
        let root = dir.path().join("blobs/sha256");
        assert_eq!(fs::read_dir(&root).unwrap().count(), 256);
        assert!(
            blobs.list().unwrap().is_empty(),
            "empty fan-outs are not strays"
        );
        let body = vec![3u8; 70_000];
        let d = Sha256Digest::of(&body);
        fs::remove_dir(root.join(&d.to_hex()[..2])).unwrap();
        let temp = blobs.write_temp(&body).unwrap();
        let path = blobs.install(&temp, &d, Keep::Only).unwrap();
        assert_eq!(fs::read(path).unwrap(), body);
    }

    #[test]
    fn temp_names_are_unique() {
        let (_dir, blobs) = blobs();
        let (a, _) = blobs.create_temp().unwrap();
        let (b, _) = blobs.create_temp().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(blobs.tmp_dir()));
        assert_eq!(blobs.clear_tmp().unwrap(), 2);
        assert!(!a.exists());
    }

    #[test]
    fn list_classifies_strays() {
        let (dir, blobs) = blobs();
        let d = Sha256Digest::of(b"y");
        let hex = d.to_hex();
        let root = dir.path().join("blobs/sha256");
        // Wrong fan-out directory, uppercase name, a non-digest name, a file at fan-out level.
        let wrong_dir = if &hex[..2] == "00" { "01" } else { "00" };
        fs::create_dir_all(root.join(wrong_dir)).unwrap();
        fs::write(root.join(wrong_dir).join(&hex), b"y").unwrap();
        fs::create_dir_all(root.join(&hex[..2])).unwrap();
        fs::write(root.join(&hex[..2]).join(hex.to_uppercase()), b"y").unwrap();
        fs::write(root.join(&hex[..2]).join("notes.txt"), b"y").unwrap();
        fs::write(root.join("loose"), b"y").unwrap();
        let found = blobs.list().unwrap();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found.iter().all(|f| matches!(f, Found::Stray(_))),
            "{found:?}"
        );
        for f in &found {
            if let Found::Stray(p) = f {
                blobs.remove_stray(p).unwrap();
            }
        }
        assert!(blobs.list().unwrap().is_empty());
    }
}
