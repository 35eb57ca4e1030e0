//! Parsing upstream index pages into typed values.
//!
//! An upstream page is untrusted input (SPEC §3): it decides which files pip and uv will see, under
//! which names, with which digests. Every page, PEP 691 JSON or PEP 503 HTML, goes through here once
//! and comes out as a [`ProjectPage`] or [`ProjectIndex`] whose filenames, digests and URLs have been
//! validated, or as a [`PageError`] that says what was wrong. Real indexes are sloppy, so the
//! parsers tolerate unknown keys, missing optional fields, odd HTML structure, uppercase hex and
//! entity-encoded attributes; a single unusable file is dropped and counted rather than failing
//! the whole page.
//!
//! The model and its limits are here. Each format has a parser of its own, `json` (PEP 691, with
//! PEP 700, 714, 740 and 792) and `html` (PEP 503, with PEP 592, 658, 714, 740 and 792, over its own
//! tokenizer); both read file links (and PEP 740 provenance links) through `link` (the URL
//! resolved, the digest in its fragment), digests through `hashes` and the PEP 792 project status
//! through `status`. `error` says what was wrong with a page that could not be used.

mod error;
mod hashes;
mod html;
mod json;
mod link;
mod status;
#[cfg(test)]
mod testing;

use std::collections::HashSet;
use std::sync::Arc;

use url::Url;

use super::digest::{FileKey, Sha256Digest};
use super::filename::DistFilename;
use super::name::ProjectName;
use crate::config::RepoName;

pub use error::{PageError, PageKind, PageLocation};
pub use html::{parse_index_html, parse_project_html};
pub use json::{parse_index_json, parse_project_json};
pub use status::{ProjectStatus, StatusMarker};

/// Largest page body accepted. The public index's full project list is well under this; anything
/// bigger is a misconfigured upstream or an attack on our memory.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most files accepted on one project page. The biggest real projects (years of nightly wheels)
/// list tens of thousands; the parsers count while they read and stop at the first file past
/// this, so a hostile page cannot make wheelgate hold more.
pub const MAX_FILES: usize = 200_000;

/// Most entries accepted in a JSON page's PEP 700 `versions` list, counted while reading like
/// files. A release without files is rare, so a project cannot plausibly have more versions than
/// files; a page past either limit is refused whole rather than shown truncated, because a
/// truncated list would tell clients that releases do not exist.
pub const MAX_VERSIONS: usize = MAX_FILES;

/// Longest version string kept in `versions`. PEP 440 sets no bound, but real versions,
/// local labels included, are far shorter; a longer entry is dropped like an unusable file.
pub const MAX_VERSION_LEN: usize = 128;

/// PEP 592 yank status.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Yanked {
    No,
    Yes { reason: Option<String> },
}

impl Yanked {
    pub fn is_yanked(&self) -> bool {
        matches!(self, Yanked::Yes { .. })
    }

    /// An empty reason carries no information, so it is the same as no reason.
    fn with_reason(reason: &str) -> Yanked {
        Yanked::Yes {
            reason: (!reason.is_empty()).then(|| reason.to_owned()),
        }
    }
}

/// Whether the upstream serves the file's core metadata separately (PEP 658, PEP 714).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoreMetadata {
    Absent,
    Present { sha256: Option<Sha256Digest> },
}

/// One downloadable file on a project page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub filename: DistFilename,
    /// Absolute http(s) URL of the file upstream, without fragment.
    pub url: Url,
    pub sha256: Option<Sha256Digest>,
    /// Other published digests as (algorithm, lowercase hex), algorithm names lowercased, for
    /// passing through in JSON pages.
    pub other_hashes: Vec<(String, String)>,
    pub requires_python: Option<String>,
    pub yanked: Yanked,
    pub core_metadata: CoreMetadata,
    pub size: Option<u64>,
    /// PEP 700 upload time, exactly as the upstream wrote it (only kept if it reads as an
    /// RFC 3339 timestamp).
    pub upload_time: Option<String>,
    /// PEP 740: where the upstream serves the file's provenance (its attestations), resolved to an
    /// absolute http(s) URL; `None` when the index offers none.
    pub provenance: Option<Url>,
    /// On a group's page, the member repository the file comes from; `None` on the page of the
    /// repository that holds the file.
    pub origin: Option<Arc<Origin>>,
}

/// Where a file on a group's page comes from: the repository that holds it, and what that
/// repository's page says of the project (a group merges pages whose statuses may differ, and
/// the rules judge each file by its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub repository: RepoName,
    pub status: StatusMarker,
}

impl FileEntry {
    /// The key that names this file in our URLs: its content digest when the upstream published
    /// one, otherwise the digest of its upstream URL (SPEC §4).
    pub fn key(&self) -> FileKey {
        match self.sha256 {
            Some(digest) => FileKey::Sha256(digest),
            None => FileKey::for_url(self.url.as_str()),
        }
    }
}

/// A parsed project page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectPage {
    /// The project the page was requested for; upstream spellings that differ are not errors.
    pub name: ProjectName,
    pub files: Vec<FileEntry>,
    /// PEP 700 versions: the upstream's list when it gave one, else the versions spelled by the
    /// filenames, unique, in first-seen order.
    pub versions: Vec<String>,
    /// PEP 792: the project's status (`active` when the page says nothing).
    pub status: ProjectStatus,
    /// Files left out because they were unusable: a filename that is not a safe path component,
    /// a URL that is not http(s) or cannot be resolved, a malformed sha256.
    pub dropped: usize,
}

impl FileEntry {
    /// About the bytes this entry holds on the heap (its strings), beside its own size.
    fn heap_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        // The filename's project name is a copy of its first part.
        self.filename.as_str().len() * 2
            + self.url.as_str().len()
            + self.provenance.as_ref().map_or(0, |url| url.as_str().len())
            + self.other_hashes.capacity() * std::mem::size_of::<(String, String)>()
            + self
                .other_hashes
                .iter()
                .map(|(algorithm, value)| algorithm.capacity() + value.capacity())
                .sum::<usize>()
            + text(&self.requires_python)
            + text(&self.upload_time)
            + match &self.yanked {
                Yanked::Yes { reason } => text(reason),
                Yanked::No => 0,
            }
    }
}

/// Bytes a rendering spends on one file besides its name and links: the digest (twice in the
/// HTML link and fragment), the JSON keys, the attributes.
const RENDERED_PER_FILE: usize = 200;

impl ProjectPage {
    /// About the bytes of memory the parsed page holds: what the memory cache weighs.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<ProjectPage>()
            + self.files.capacity() * std::mem::size_of::<FileEntry>()
            + self.files.iter().map(FileEntry::heap_bytes).sum::<usize>()
            + self.versions.capacity() * std::mem::size_of::<String>()
            + self.versions.iter().map(String::capacity).sum::<usize>()
    }

    /// About the length of one rendering of the page (JSON or HTML): each file's name, its link
    /// back to wheelgate (which names it again) and its digest and attributes.
    pub fn rendered_len(&self) -> usize {
        self.files
            .iter()
            .map(|file| {
                3 * file.filename.as_str().len()
                    + file.requires_python.as_ref().map_or(0, String::len)
                    + RENDERED_PER_FILE
            })
            .sum::<usize>()
            + self.versions.iter().map(|v| v.len() + 3).sum::<usize>()
            + 512
    }
}

/// A parsed project list (`/simple/`): valid names only, deduplicated and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectIndex {
    pub projects: Vec<ProjectName>,
}

impl ProjectIndex {
    /// About the bytes of memory the parsed list holds.
    pub fn held_bytes(&self) -> usize {
        self.projects.capacity() * std::mem::size_of::<ProjectName>()
            + self
                .projects
                .iter()
                .map(|name| name.as_str().len())
                .sum::<usize>()
    }

    /// About the length of one rendering of the list: each name twice (link and text).
    pub fn rendered_len(&self) -> usize {
        self.projects
            .iter()
            .map(|name| 2 * name.as_str().len() + 40)
            .sum::<usize>()
            + 512
    }

    /// Sorts and deduplicates names gathered in page order.
    pub fn from_unsorted(mut projects: Vec<ProjectName>) -> ProjectIndex {
        projects.sort_unstable();
        projects.dedup();
        ProjectIndex { projects }
    }
}

fn versions_from_files(files: &[FileEntry]) -> Vec<String> {
    let mut seen = HashSet::new();
    files
        .iter()
        .filter_map(|f| f.filename.version())
        .filter(|v| seen.insert(*v))
        .map(str::to_owned)
        .collect()
}

/// Whether a PEP 700 `versions` entry can be a version: 1 to [`MAX_VERSION_LEN`] bytes of the
/// characters PEP 440 and the legacy versions of old releases use (letters, digits, `.`, `-`,
/// `_`, `+`, `!`, `*`). Anything else is not passed on to clients.
fn is_version_text(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_VERSION_LEN
        && text.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+' | b'!' | b'*')
        })
}

fn check_size(body: &[u8], kind: PageKind, at: &PageLocation) -> Result<(), PageError> {
    if body.len() > MAX_PAGE_BYTES {
        return Err(PageError::TooLarge {
            kind,
            at: at.clone(),
            size: body.len(),
            limit: MAX_PAGE_BYTES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::page::testing::*;

    #[test]
    fn oversized_bodies_are_rejected() {
        let body = vec![b' '; MAX_PAGE_BYTES + 1];
        assert!(matches!(
            parse_project_html(&body, &page_url(), &foo()),
            Err(PageError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_project_json(&body, &page_url(), &foo()),
            Err(PageError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_index_html(&body),
            Err(PageError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_index_json(&body),
            Err(PageError::TooLarge { .. })
        ));
    }

    #[test]
    fn index_pages() {
        let html = br#"<html><body><a href="/simple/foo/">Foo</a>
            <a href="/simple/b/">Bar_Baz</a><a href="x">bar.baz</a>
            <a href="y"> spaced </a><a href="z">not a name!</a><a href="w"></a>
            <a href="v">&#x61;mp</a></body></html>"#;
        let index = parse_index_html(html).unwrap();
        let names: Vec<&str> = index.projects.iter().map(ProjectName::as_str).collect();
        assert_eq!(names, ["amp", "bar-baz", "foo", "spaced"]);

        let json = br#"{"meta":{"api-version":"1.1","_last-serial":3},"projects":[
            {"name":"Foo"},{"name":"bar.baz","_last-serial":1},{"name":"bad name"},{"name":"foo"},{}]}"#;
        let index = parse_index_json(json).unwrap();
        let names: Vec<&str> = index.projects.iter().map(ProjectName::as_str).collect();
        assert_eq!(names, ["bar-baz", "foo"]);
        assert!(matches!(
            parse_index_json(br#"{"meta":{"api-version":"2.0"},"projects":[]}"#),
            Err(PageError::UnsupportedApiVersion { .. })
        ));
        assert!(parse_index_json(b"[]").is_err());
    }
}
