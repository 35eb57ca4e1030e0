//! `cache verify` on the store: every stored body hashed again against the digest it is stored
//! under, and what turns out damaged taken out so that it is fetched again.
//!
//! A blob that rotted on disk (a flipped bit, a truncation, a file edited by hand) would
//! otherwise be served as it is: the store checks a body's sha256 once, before committing it,
//! and trusts its own files afterwards. Bodies are read in blocks of [`HASH_BLOCK`] and hashed
//! as they stream, so a multi-gigabyte wheel costs one block of memory. Nothing is locked while
//! hashing: the store goes on serving and committing, and an entry removed meanwhile (evicted,
//! say) is simply not judged.
//!
//! What is done with a damaged body depends on who uses it:
//! - a cached file of a remote repository is removed (record, URL pins, body): the next request
//!   fetches it again;
//! - a page whose body is a blob file is forgotten: the next request fetches it again;
//! - a hosted upload's body is the only copy there is, so it is kept and reported, unless the
//!   caller asks for damaged uploads to be forgotten ([`Store::forget_uploads_using`]), after
//!   which the files can be published again.
//!
//! Every page body is a blob named by its digest. Stores written before 2026-12 kept small
//! bodies in the catalog; those are moved out at open, and an artifact body that did not match
//! its digest stays there for this check to find.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use super::catalog::parse_page_key;
use super::engine::Store;
use super::error::StoreError;
use super::index::Entry;
use super::pages::PageKey;
use super::uploads::UploadName;
use crate::simple::Sha256Digest;

/// How many bytes of a body are read and hashed at a time.
const HASH_BLOCK: usize = 1024 * 1024;

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verification {
    /// Stored files (artifacts) hashed, damaged ones included, and their recorded size.
    pub files: u64,
    pub file_bytes: u64,
    /// Pages whose body is a blob file, hashed.
    pub page_bodies: u64,
    pub damaged: Vec<Damaged>,
}

/// One stored body that does not hold the bytes its digest names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// The digest the body is stored under.
    pub sha256: Sha256Digest,
    pub problem: Problem,
    /// What the body was (or still is, when kept) the content of.
    pub used_by: Vec<BodyUser>,
    pub repair: Repair,
}

/// How a body was found damaged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The record is there, the body is not.
    Missing,
    /// The bytes hash to another digest.
    Differs { actual: Sha256Digest, size: u64 },
    /// Reading the body failed.
    Unreadable(String),
}

/// A user of a stored body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyUser {
    /// A stored file, as its record names it.
    File {
        repository: String,
        filename: String,
    },
    /// An upload to a hosted repository.
    Upload(UploadName),
    /// An index page.
    Page(PageKey),
}

/// What was done about a damaged body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    /// Taken out of the store: fetched again when next asked for.
    Removed,
    /// The body of hosted uploads, the only copy: kept as it is.
    Kept,
    /// The body of hosted uploads, forgotten with the uploads: they can be published again.
    UploadsForgotten,
}

/// The digest and length of what a reader holds, read to its end in blocks.
fn hash_stream(mut reader: impl Read) -> io::Result<(Sha256Digest, u64)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BLOCK];
    let mut length = 0u64;
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(buffer.get(..n).unwrap_or_default());
                length += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((Sha256Digest::from_bytes(hasher.finalize().into()), length))
}

/// The judgement on one body: `None` when it holds what its digest names.
fn judge(
    digest: &Sha256Digest,
    hashed: io::Result<Option<(Sha256Digest, u64)>>,
) -> Option<Problem> {
    match hashed {
        Ok(Some((actual, _))) if actual == *digest => None,
        Ok(Some((actual, size))) => Some(Problem::Differs { actual, size }),
        Ok(None) => Some(Problem::Missing),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Some(Problem::Missing),
        Err(e) => Some(Problem::Unreadable(e.to_string())),
    }
}

impl Store {
    /// Hashes every stored file and every page body kept as a blob, and deals with the damaged
    /// ones as the module doc says: removed, or kept when they are hosted uploads, unless
    /// `forget_damaged_uploads`. Blocking, and as long as reading the whole store: run it on a
    /// blocking thread.
    pub fn verify(&self, forget_damaged_uploads: bool) -> Result<Verification, StoreError> {
        let artifacts = self.index().snapshot();
        let mut page_blobs: HashMap<Sha256Digest, Vec<sled::IVec>> = HashMap::new();
        for (key, entry) in self.inner.catalog.page_records()?.good {
            if let Some(digest) = entry.body.blob() {
                page_blobs.entry(digest).or_default().push(key);
            }
        }
        let mut report = Verification::default();
        for (digest, entry) in artifacts {
            let pages = page_blobs.remove(&digest).unwrap_or_default();
            let hashed = if entry.inline {
                self.hash_inline(&digest)
            } else {
                self.hash_blob(&digest)
            };
            let problem = judge(&digest, hashed);
            if !self.contains(&digest) {
                // Removed while it was read (evicted, say): nothing to judge, but the pages
                // that share its body are still there.
                if !pages.is_empty() {
                    page_blobs.insert(digest, pages);
                }
                continue;
            }
            report.files += 1;
            report.file_bytes += entry.size;
            let Some(problem) = problem else {
                report.page_bodies += pages.len() as u64;
                continue;
            };
            let damaged = self.repair_artifact(digest, entry, problem, forget_damaged_uploads)?;
            let damaged = self.forget_pages(damaged, &pages)?;
            report.damaged.push(damaged);
        }
        for (digest, pages) in page_blobs {
            let problem = judge(&digest, self.hash_blob(&digest));
            let Some(problem) = problem else {
                report.page_bodies += pages.len() as u64;
                continue;
            };
            let damaged = Damaged {
                sha256: digest,
                problem,
                used_by: Vec::new(),
                repair: Repair::Removed,
            };
            let damaged = self.forget_pages(damaged, &pages)?;
            if !damaged.used_by.is_empty() {
                report.page_bodies += damaged.used_by.len() as u64;
                report.damaged.push(damaged);
            }
        }
        for damaged in &report.damaged {
            tracing::warn!(
                sha256 = %damaged.sha256,
                problem = ?damaged.problem,
                repair = ?damaged.repair,
                "cache verify found a damaged body"
            );
        }
        Ok(report)
    }

    fn hash_blob(&self, digest: &Sha256Digest) -> io::Result<Option<(Sha256Digest, u64)>> {
        let file: File = self.inner.blobs.open(digest)?;
        hash_stream(file).map(Some)
    }

    fn hash_inline(&self, digest: &Sha256Digest) -> io::Result<Option<(Sha256Digest, u64)>> {
        match self.inner.catalog.artifact_body(digest) {
            Ok(Some(body)) => Ok(Some((Sha256Digest::of(&body), body.len() as u64))),
            Ok(None) => Ok(None),
            Err(error) => Err(io::Error::other(error.to_string())),
        }
    }

    /// Removes a damaged file, or keeps it when it is the body of hosted uploads (see the
    /// module doc).
    fn repair_artifact(
        &self,
        digest: Sha256Digest,
        entry: Entry,
        problem: Problem,
        forget_uploads: bool,
    ) -> Result<Damaged, StoreError> {
        let mut used_by = Vec::new();
        // An unreadable record only costs the name in the report.
        if let Ok(Some(record)) = self.inner.catalog.artifact(&digest) {
            used_by.push(BodyUser::File {
                repository: record.repository,
                filename: record.filename,
            });
        }
        // Only uploads make a file unevictable; one that no upload names (its record was
        // unreadable and dropped) is a cached file like any other.
        let uploads = if entry.evictable {
            Vec::new()
        } else {
            self.uploads_using(&digest)?
        };
        let repair = if uploads.is_empty() {
            self.remove_artifact(&digest)?;
            Repair::Removed
        } else if forget_uploads {
            let forgotten = self.forget_uploads_using(&digest)?;
            used_by.extend(forgotten.into_iter().map(BodyUser::Upload));
            Repair::UploadsForgotten
        } else {
            used_by.extend(uploads.into_iter().map(BodyUser::Upload));
            Repair::Kept
        };
        Ok(Damaged {
            sha256: digest,
            problem,
            used_by,
            repair,
        })
    }

    /// Forgets the pages (by catalog key) whose body is a damaged blob, naming them in
    /// `damaged`; a page forgotten meanwhile is not named.
    fn forget_pages(
        &self,
        mut damaged: Damaged,
        pages: &[sled::IVec],
    ) -> Result<Damaged, StoreError> {
        for key in pages {
            if self.forget_page_key(key)? {
                if let Some(page) = parse_page_key(key) {
                    damaged.used_by.push(BodyUser::Page(page));
                }
            }
        }
        Ok(damaged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_hashed_whole_across_blocks() {
        let body: Vec<u8> = (0..HASH_BLOCK * 2 + 17).map(|i| (i % 253) as u8).collect();
        let (digest, length) = hash_stream(body.as_slice()).unwrap();
        assert_eq!(
            (digest, length),
            (Sha256Digest::of(&body), body.len() as u64)
        );
        assert_eq!(hash_stream(&b""[..]).unwrap(), (Sha256Digest::of(b""), 0));
    }

    #[test]
    fn judgements() {
        let good = Sha256Digest::of(b"good");
        let bad = Sha256Digest::of(b"bad");
        assert_eq!(judge(&good, Ok(Some((good, 4)))), None);
        assert_eq!(
            judge(&good, Ok(Some((bad, 3)))),
            Some(Problem::Differs {
                actual: bad,
                size: 3
            })
        );
        assert_eq!(judge(&good, Ok(None)), Some(Problem::Missing));
        assert_eq!(
            judge(&good, Err(io::ErrorKind::NotFound.into())),
            Some(Problem::Missing)
        );
        assert!(matches!(
            judge(&good, Err(io::Error::other("disk on fire"))),
            Some(Problem::Unreadable(reason)) if reason.contains("disk on fire")
        ));
    }
}
