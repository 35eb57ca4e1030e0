//! The label values of wheelgate's metrics: small closed sets, so that every series can be
//! counted in a fixed array slot chosen by a `match`, and no request can make a new series.

use crate::repository::CacheStatus;

/// The `route` label: which kind of endpoint a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Index,
    Project,
    /// A distribution file, or its PEP 740 provenance.
    File,
    /// A file's PEP 658 core metadata.
    Metadata,
    Upload,
    Health,
    Ready,
    Metrics,
    /// The status page at `/`.
    Status,
    /// Redirects, the legacy JSON API's refusal, and paths that name nothing.
    Other,
}

impl Route {
    pub const ALL: [Route; 10] = [
        Route::Index,
        Route::Project,
        Route::File,
        Route::Metadata,
        Route::Upload,
        Route::Health,
        Route::Ready,
        Route::Metrics,
        Route::Status,
        Route::Other,
    ];
    pub const COUNT: usize = Route::ALL.len();

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Index => "index",
            Route::Project => "project",
            Route::File => "file",
            Route::Metadata => "metadata",
            Route::Upload => "upload",
            Route::Health => "health",
            Route::Ready => "ready",
            Route::Metrics => "metrics",
            Route::Status => "status",
            Route::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// The response codes wheelgate sends, each with its own slot of the `status` label; any other
/// code is counted as `other`.
pub const STATUS_CODES: [u16; 23] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 406, 409, 413, 416, 429, 431, 500,
    502, 503, 504, 507,
];

/// Slots of the `status` label: the known codes and `other`.
pub const STATUS_SLOTS: usize = STATUS_CODES.len() + 1;

/// The slot of a response code.
pub(crate) fn status_slot(code: u16) -> usize {
    match code {
        200 => 0,
        201 => 1,
        204 => 2,
        206 => 3,
        301 => 4,
        302 => 5,
        304 => 6,
        400 => 7,
        401 => 8,
        403 => 9,
        404 => 10,
        405 => 11,
        406 => 12,
        409 => 13,
        413 => 14,
        416 => 15,
        429 => 16,
        431 => 17,
        500 => 18,
        502 => 19,
        503 => 20,
        504 => 21,
        507 => 22,
        _ => STATUS_CODES.len(),
    }
}

/// The `status` label value of a slot.
pub(crate) fn status_label(slot: usize) -> String {
    STATUS_CODES
        .get(slot)
        .map_or_else(|| "other".to_owned(), u16::to_string)
}

/// The `kind` label of cache outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    /// An index or project page.
    Page,
    /// A file, its metadata or its provenance.
    File,
}

impl CacheKind {
    pub const ALL: [CacheKind; 2] = [CacheKind::Page, CacheKind::File];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheKind::Page => "page",
            CacheKind::File => "file",
        }
    }
}

/// The `outcome` label of cache outcomes, in [`CacheStatus`] order.
pub const CACHE_OUTCOMES: [CacheStatus; 4] = [
    CacheStatus::Hit,
    CacheStatus::Miss,
    CacheStatus::Stale,
    CacheStatus::Revalidated,
];

pub(crate) fn cache_slot(status: CacheStatus) -> usize {
    match status {
        CacheStatus::Hit => 0,
        CacheStatus::Miss => 1,
        CacheStatus::Stale => 2,
        CacheStatus::Revalidated => 3,
    }
}

/// Where the bytes of a response came from (`source` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Memory or the store.
    Cache,
    /// An upstream, as they arrive.
    Upstream,
}

impl Source {
    pub const ALL: [Source; 2] = [Source::Cache, Source::Upstream];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Upstream => "upstream",
        }
    }
}

/// What one use of the shared bucket (`[store.shared]`) came to (`outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedOutcome {
    /// A file asked for was in the bucket.
    Found,
    /// A file asked for was not: the upstream was asked.
    Missing,
    /// The bucket failed to answer: the upstream was asked.
    Failed,
    /// A file fetched from the upstream was copied to the bucket.
    Copied,
    /// It was there already.
    Present,
    /// Copying it failed (logged); another replica may fetch it from the upstream again.
    CopyFailed,
}

impl SharedOutcome {
    pub const ALL: [SharedOutcome; 6] = [
        SharedOutcome::Found,
        SharedOutcome::Missing,
        SharedOutcome::Failed,
        SharedOutcome::Copied,
        SharedOutcome::Present,
        SharedOutcome::CopyFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SharedOutcome::Found => "found",
            SharedOutcome::Missing => "missing",
            SharedOutcome::Failed => "failed",
            SharedOutcome::Copied => "copied",
            SharedOutcome::Present => "present",
            SharedOutcome::CopyFailed => "copy_failed",
        }
    }
}

/// The `outcome` of one upstream request (a page or a file, retries included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamOutcome {
    /// 200: the page or the file's headers arrived.
    Ok,
    /// 304: the stored page is still current.
    NotModified,
    /// 404 (or 410): the upstream has no such page or file.
    NotFound,
    /// A timeout: connect, first byte or idle.
    Timeout,
    /// Anything else: refused connections, TLS failures, 5xx, refused credentials, bad bodies.
    Error,
    /// A chained wheelgate refused by its download rule or origin control (a 403 with
    /// `X-Wheelgate-Denied`): it answered as it should, so this is not an upstream failure.
    Refused,
}

impl UpstreamOutcome {
    pub const ALL: [UpstreamOutcome; 6] = [
        UpstreamOutcome::Ok,
        UpstreamOutcome::NotModified,
        UpstreamOutcome::NotFound,
        UpstreamOutcome::Timeout,
        UpstreamOutcome::Error,
        UpstreamOutcome::Refused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamOutcome::Ok => "ok",
            UpstreamOutcome::NotModified => "not_modified",
            UpstreamOutcome::NotFound => "not_found",
            UpstreamOutcome::Timeout => "timeout",
            UpstreamOutcome::Error => "error",
            UpstreamOutcome::Refused => "refused",
        }
    }

    /// Whether the upstream answered as an upstream should (for the repository's state).
    pub fn is_success(self) -> bool {
        !matches!(self, UpstreamOutcome::Timeout | UpstreamOutcome::Error)
    }
}

/// The `outcome` of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadOutcome {
    /// A new file was published.
    Created,
    /// The same file was already there (a re-run publish job): nothing changed.
    Identical,
    /// Refused: no or wrong credentials, no publish role, a conflicting file, a bad form.
    Rejected,
    /// wheelgate failed (the store, say).
    Failed,
}

impl UploadOutcome {
    pub const ALL: [UploadOutcome; 4] = [
        UploadOutcome::Created,
        UploadOutcome::Identical,
        UploadOutcome::Rejected,
        UploadOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UploadOutcome::Created => "created",
            UploadOutcome::Identical => "identical",
            UploadOutcome::Rejected => "rejected",
            UploadOutcome::Failed => "failed",
        }
    }
}

/// What refused a download (`kind` label of denials).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenialKind {
    /// A download rule (SPEC §5).
    Rule,
    /// An origin control: a package group that may not come from this repository (SPEC §6).
    Origin,
}

impl DenialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DenialKind::Rule => "rule",
            DenialKind::Origin => "origin",
        }
    }
}

/// The `result` of a configuration reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub const ALL: [ReloadResult; 2] = [ReloadResult::Success, ReloadResult::Failure];

    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Success => "success",
            ReloadResult::Failure => "failure",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_code_has_its_own_slot() {
        for (slot, code) in STATUS_CODES.iter().enumerate() {
            assert_eq!(status_slot(*code), slot, "{code}");
            assert_eq!(status_label(slot), code.to_string());
        }
        assert_eq!(status_slot(418), STATUS_CODES.len());
        assert_eq!(status_label(STATUS_CODES.len()), "other");
    }

    #[test]
    fn route_indexes_follow_their_list() {
        for (index, route) in Route::ALL.iter().enumerate() {
            assert_eq!(route.index(), index, "{}", route.as_str());
        }
    }
}
