//! The store's one error type.
//!
//! Every failure names the file or catalog it concerns and says what an operator can do about it,
//! because store errors surface in logs and at start-up, far from the code that caused them.

use std::io;
use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the store directory {}: {source}; check that store.path points to a \
         writable location for the wheelgate user",
        path.display()
    )]
    CreateDir { path: PathBuf, source: io::Error },

    #[error(
        "store directory {} is in use by another process: two wheelgate processes cannot share \
         one store; stop the other process or point store.path elsewhere",
        path.display()
    )]
    Locked { path: PathBuf },

    #[error(
        "cannot open the store catalog {}: {source}; if the directory was damaged, move it aside \
         and let wheelgate start with an empty store",
        path.display()
    )]
    Open { path: PathBuf, source: sled::Error },

    #[error(
        "this store was written by a newer wheelgate (format {found}); this binary understands \
         format {supported}: upgrade wheelgate or point store.path elsewhere (store: {})",
        path.display()
    )]
    NewerFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "the store catalog {} records an unreadable format version ({reason}); it was not \
         written by wheelgate: point store.path at a directory of its own",
        path.display()
    )]
    UnknownFormat { path: PathBuf, reason: String },

    #[error(
        "the store catalog {} could not {action}: {source}; check free disk space and the \
         permissions of the store directory",
        path.display()
    )]
    Catalog {
        path: PathBuf,
        action: &'static str,
        source: sled::Error,
    },

    #[error(
        "the store catalog {} holds an unreadable record for {what}: {reason}; run `wheelgate \
         cache purge` for it, or move the store aside to start empty",
        path.display()
    )]
    CorruptRecord {
        path: PathBuf,
        what: String,
        reason: String,
    },

    #[error(
        "could not {action} {}: {source}; check free disk space and the permissions of the store \
         directory",
        path.display()
    )]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },

    #[error(
        "the temporary file {} holds {actual} bytes but {filename} should have {expected}: the \
         download is incomplete and was discarded; request the file again",
        path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        filename: String,
        expected: u64,
        actual: u64,
    },

    #[error(
        "cannot start the store's writer thread: {source}; the system may be out of threads or \
         memory"
    )]
    Thread { source: io::Error },

    #[error(
        "the store's writer thread has stopped (the error before this one in the log says why); \
         nothing more can be stored until wheelgate is restarted"
    )]
    WriterGone,

    #[error(
        "the stored body of the upload {filename} was evicted before its upload was recorded \
         (the store is over max_size): raise [store] max_size and upload it again"
    )]
    UploadBodyMissing { filename: String },

    /// One failure reported to every commit of a batch (a failed flush).
    #[error(transparent)]
    Shared(#[from] std::sync::Arc<StoreError>),
}

impl StoreError {
    /// True when the disk (or the quota) is full: the client should hear 507, not 500.
    pub fn is_disk_full(&self) -> bool {
        let full = |error: &io::Error| error.kind() == io::ErrorKind::StorageFull;
        match self {
            StoreError::Io { source, .. } | StoreError::CreateDir { source, .. } => full(source),
            StoreError::Catalog { source, .. } => {
                matches!(source, sled::Error::Io(error) if full(error))
            }
            StoreError::Shared(inner) => inner.is_disk_full(),
            _ => false,
        }
    }

    /// Wraps an I/O failure with the action and the path it concerns.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            action,
            source,
        }
    }
}
