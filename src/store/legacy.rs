//! Moves the small bodies that earlier versions kept inside the catalog out to blob files.
//!
//! Until 2026-12 bodies under 64 KiB sat in sled beside their records. sled's page cache does
//! not hold to its `cache_capacity`: it counts a page only once 64 accesses have queued up in
//! that page's shard (256 shards), so up to ~16,000 pages of up to 17 values stay resident
//! uncounted, and with bodies of up to 64 KiB inside them that reached hundreds of MiB after a
//! load test and never came back (issue 16, `benches/README.md`). Records alone keep those
//! pages to a few KiB. So every body is now a blob, and a store written before is converted
//! once, when it opens: each inline body is written to a blob (fsynced, renamed), then its
//! record is pointed at the blob and the inline copy dropped in one transaction. A crash in
//! between leaves either the old form or the new one, and the next open carries on.

use super::blobs::{Blobs, Keep};
use super::catalog::Catalog;
use super::error::StoreError;
use crate::simple::Sha256Digest;

/// How many bodies were moved out of the catalog.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    pub artifacts: u64,
    pub pages: u64,
    /// Inline artifact bodies whose bytes do not match their digest: left where they are, for
    /// `cache verify` to report and remove.
    pub mismatched: u64,
}

/// Moves every inline body to a blob; see the module doc.
pub(crate) fn move_inline_bodies(catalog: &Catalog, blobs: &Blobs) -> Result<Moved, StoreError> {
    let mut moved = Moved::default();
    for digest in catalog.inline_artifact_digests()? {
        let Some(body) = catalog.artifact_body(&digest)? else {
            continue;
        };
        if Sha256Digest::of(&body) != digest {
            moved.mismatched += 1;
            continue;
        }
        let temp = blobs.write_temp(&body)?;
        blobs.install(&temp, &digest, Keep::Only)?;
        catalog.artifact_body_moved(&digest)?;
        moved.artifacts += 1;
    }
    for key in catalog.inline_page_keys()? {
        let Some(body) = catalog.inline_page_body(&key)? else {
            continue;
        };
        let digest = Sha256Digest::of(&body);
        let temp = blobs.write_temp(&body)?;
        blobs.install(&temp, &digest, Keep::Only)?;
        catalog.page_body_moved(&key, &digest, body.len() as u64)?;
        moved.pages += 1;
    }
    if moved != Moved::default() {
        catalog.flush()?;
    }
    Ok(moved)
}
