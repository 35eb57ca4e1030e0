//! The bounds an upload is held to, in one place.
//!
//! An upload is the one request whose body a client chooses freely, and checking it means
//! decompressing parts of an archive the client built. Every loop and every buffer in this module
//! is bounded by one of these numbers so that neither a large body nor a crafted archive can make
//! the server hold more memory, or scan more bytes, than the operator agreed to.

use std::time::Duration;

/// The bounds applied while receiving and checking an upload. [`Limits::default`] suits real
/// packages; `max_upload_size` and `idle_timeout` come from `[server]` in `proxy.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The whole request body, in bytes. Crossing it while streaming ends the request with 413.
    pub max_upload_size: u64,
    /// How long the body may go without a byte arriving; past it the request ends with 408 (a
    /// client gone without closing its connection would otherwise hold the temporary file and
    /// the disk reservation for ever).
    pub idle_timeout: Duration,
    /// Parts in the form, the file included. Real uploads send a few dozen.
    pub max_fields: usize,
    /// One text field, in bytes (except `description`, see [`Limits::max_text_total`]).
    pub max_field_size: usize,
    /// All text fields kept together, in bytes. The long `description` may use all of it; a longer
    /// one is skipped, since the distribution's own metadata carries it.
    pub max_text_total: usize,
    /// The decompressed core metadata file (`METADATA`, `PKG-INFO`), in bytes. A member that
    /// decompresses beyond it is refused as a possible zip bomb.
    pub max_metadata_size: u64,
    /// Entries in an archive: read from a zip's central directory, or scanned in a tar before
    /// `PKG-INFO` is found.
    pub max_archive_entries: u64,
    /// Bytes of a `.tar.gz` decompressed while looking for `PKG-INFO`, and bytes of a zip's
    /// central directory.
    pub max_archive_scan: u64,
}

impl Limits {
    /// The defaults, with the operator's body size limit.
    pub fn with_max_upload_size(max_upload_size: u64) -> Limits {
        Limits {
            max_upload_size,
            ..Limits::default()
        }
    }

    /// The defaults, with the operator's `[server]` settings.
    pub fn of_server(server: &crate::config::ServerConfig) -> Limits {
        Limits {
            max_upload_size: server.max_upload_size,
            idle_timeout: server.upload_idle_timeout,
            ..Limits::default()
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_upload_size: 1 << 30,
            idle_timeout: Duration::from_secs(60),
            max_fields: 1000,
            max_field_size: 64 << 10,
            max_text_total: 1 << 20,
            max_metadata_size: 1 << 20,
            max_archive_entries: 200_000,
            max_archive_scan: 256 << 20,
        }
    }
}
