//! The uploaded file: a temporary file that deletes itself unless the caller takes it.
//!
//! An upload may be a gigabyte, so it goes to disk as it arrives and is never held in memory. Until
//! the store commits it, the file is a temporary that must not outlive a refused or abandoned
//! upload, whichever way the request ends (an error, a failed check, a client that hangs up and
//! so drops the future). [`ContentFile`] owns it: dropping it deletes the file, and
//! [`ContentFile::into_path`] hands it over to the caller, who then renames or deletes it.

use std::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use crate::simple::Sha256Digest;

/// The three digests the upload API knows, computed while the file was written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digests {
    pub sha256: Sha256Digest,
    pub blake2_256: [u8; 32],
    pub md5: [u8; 16],
}

impl Digests {
    /// The sha256 as 64 lowercase hexadecimal characters.
    pub fn sha256_hex(&self) -> String {
        self.sha256.to_hex()
    }

    /// The BLAKE2b-256 as 64 lowercase hexadecimal characters.
    pub fn blake2_256_hex(&self) -> String {
        hex::encode(self.blake2_256)
    }

    /// The MD5 as 32 lowercase hexadecimal characters.
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

impl fmt::Debug for Digests {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Digests")
            .field("sha256", &self.sha256_hex())
            .field("blake2_256", &self.blake2_256_hex())
            .field("md5", &self.md5_hex())
            .finish()
    }
}

/// A path that is deleted when this value is dropped, unless it was kept.
#[derive(Debug)]
pub(crate) struct TempPath {
    path: PathBuf,
    keep: bool,
}

impl TempPath {
    /// Takes charge of a file that was just created at `path`.
    pub(crate) fn new(path: PathBuf) -> TempPath {
        TempPath { path, keep: false }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn keep(mut self) -> PathBuf {
        self.keep = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if !self.keep {
            // A blocking unlink, but one system call: cheap enough for the async code paths that
            // drop an upload. The file may already be gone (the caller removed it); that is fine.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The uploaded file, complete and written (not yet fsynced), with its size and digests.
///
/// Dropping it deletes the file. To keep it, call [`ContentFile::sync_all`] (on a blocking thread)
/// and then [`ContentFile::into_path`], and rename the path into place: the temporary directory
/// given to [`super::receive`] must be on the store's file system for that rename to be atomic.
pub struct ContentFile {
    // Field order matters: the handle is closed before the path is deleted.
    file: File,
    path: TempPath,
    filename: String,
    size: u64,
    digests: Digests,
}

impl ContentFile {
    pub(crate) fn new(
        file: File,
        path: TempPath,
        filename: String,
        size: u64,
        digests: Digests,
    ) -> ContentFile {
        ContentFile {
            file,
            path,
            filename,
            size,
            digests,
        }
    }

    /// The temporary file's path, for reading it (the checks open it by path).
    pub fn path(&self) -> &Path {
        self.path.path()
    }

    /// The filename from the `content` part's Content-Disposition, exactly as sent and not yet
    /// validated ([`super::check`] parses it as a [`crate::simple::DistFilename`]).
    pub fn filename(&self) -> &str {
        &self.filename
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The file's digests, computed from the bytes written.
    pub fn digests(&self) -> &Digests {
        &self.digests
    }

    /// The file's sha256: its identity in the store.
    pub fn sha256(&self) -> Sha256Digest {
        self.digests.sha256
    }

    /// Flushes the file's data to disk (`fsync`). Blocking: call it from `spawn_blocking`, before
    /// renaming the file into the store. Receiving does not fsync, since most refused uploads
    /// never need it.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }

    /// Takes the file over: it is no longer deleted on drop, and removing or renaming it is the
    /// caller's job. Read [`ContentFile::size`] and [`ContentFile::digests`] first.
    pub fn into_path(self) -> PathBuf {
        let ContentFile { file, path, .. } = self;
        drop(file);
        path.keep()
    }
}

impl fmt::Debug for ContentFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContentFile")
            .field("path", &self.path.path())
            .field("filename", &self.filename)
            .field("size", &self.size)
            .field("digests", &self.digests)
            .finish()
    }
}
