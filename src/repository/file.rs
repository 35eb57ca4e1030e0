//! A file as the repository layer hands it out: found on a page, then served from the store or
//! while it arrives from an upstream.
//!
//! These types are shared by every kind of repository, so the HTTP front writes a file response
//! one way whatever the file's origin, and never sees how the store holds a body.

use std::sync::Arc;

use super::cached::{CacheStatus, Cached};
use super::remote::flight::DownloadBody;
use crate::simple::digest::Sha256Digest;
use crate::simple::page::{FileEntry, ProjectPage};

pub use crate::store::{ArtifactBody, Content, FileSlice, OPEN_BLOBS};

/// A file found on its project's current page.
pub struct Located {
    pub page: Arc<Cached<ProjectPage>>,
    position: usize,
}

impl Located {
    /// `position` must index `page`'s files (callers found it there).
    pub(crate) fn new(page: Arc<Cached<ProjectPage>>, position: usize) -> Located {
        Located { page, position }
    }

    pub fn entry(&self) -> &FileEntry {
        // `position` was found in this very page, which is immutable.
        &self.page.value.files[self.position]
    }
}

/// A file request's answer.
pub struct ServedFile {
    pub status: CacheStatus,
    /// The content digest, when known before the transfer ends.
    pub sha256: Option<Sha256Digest>,
    pub body: FileBody,
}

/// The bytes of a served file.
pub enum FileBody {
    /// Stored: complete, of known size, readable by ranges.
    Stored { size: u64, body: ArtifactBody },
    /// Arriving from an upstream: streamed whole as it arrives (its last bytes withheld until
    /// the digest matches); `length` when the upstream announced one.
    Arriving {
        length: Option<u64>,
        stream: DownloadBody,
    },
}

/// What is known about a file without fetching it (for HEAD).
pub struct FileInfo {
    pub size: Option<u64>,
    pub sha256: Option<Sha256Digest>,
    pub stored: bool,
}
