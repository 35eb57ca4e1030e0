//! Parsing upstream index pages into typed values.
//!
//! An upstream page is untrusted input (SPEC §3): it decides which files pip and uv will see, under
//! which names, with which digests. Every page, PEP 691 JSON or PEP 503 HTML, goes through here once
//! and comes out as a [`ProjectPage`] or [`ProjectIndex`] whose filenames, digests and URLs have been
//! validated, or as a [`PageError`] that says what was wrong. Real indexes are sloppy, so the
//! parsers tolerate unknown keys, missing optional fields, odd HTML structure, uppercase hex and
//! entity-encoded attributes; a single unusable file is dropped and counted rather than failing
//! the whole page.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::Deserialize;
use url::Url;

use super::digest::{FileKey, Sha256Digest};
use super::filename::DistFilename;
use super::name::ProjectName;

/// Largest page body accepted. The public index's full project list is well under this; anything
/// bigger is a misconfigured upstream or an attack on our memory.
pub const MAX_PAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most files accepted on one project page.
pub const MAX_FILES: usize = 200_000;

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
    /// Files left out because they were unusable: a filename that is not a safe path component,
    /// a URL that is not http(s) or cannot be resolved, a malformed sha256.
    pub dropped: usize,
}

/// A parsed project list (`/simple/`): valid names only, deduplicated and sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProjectIndex {
    pub projects: Vec<ProjectName>,
}

/// Which kind of page an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    ProjectPage,
    ProjectList,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::ProjectPage => "project page",
            PageKind::ProjectList => "project list",
        })
    }
}

/// Where a page came from, for error messages: the URL without user information and query, which
/// is where credentials would hide, or nothing when the caller did not say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageLocation(Option<String>);

impl PageLocation {
    pub fn of(url: &Url) -> PageLocation {
        let mut shown = format!("{}://", url.scheme());
        if let Some(host) = url.host_str() {
            shown.push_str(host);
        }
        if let Some(port) = url.port() {
            shown.push_str(&format!(":{port}"));
        }
        shown.push_str(url.path());
        PageLocation(Some(shown))
    }
}

impl fmt::Display for PageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(url) => write!(f, " {url}"),
            None => Ok(()),
        }
    }
}

/// Why an upstream page could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(
        "the upstream {kind}{at} is {size} bytes, more than the {limit} bytes wheelgate accepts: \
         check that the repository's url points at a simple index"
    )]
    TooLarge {
        kind: PageKind,
        at: PageLocation,
        size: usize,
        limit: usize,
    },
    #[error(
        "the upstream project page{at} lists more than {limit} files, more than wheelgate accepts: \
         check that the repository's url points at a simple index"
    )]
    TooManyFiles { at: PageLocation, limit: usize },
    #[error(
        "the upstream JSON {kind}{at} is not valid: {source}; check that the upstream serves \
         PEP 691 JSON for application/vnd.pypi.simple.v1+json"
    )]
    Json {
        kind: PageKind,
        at: PageLocation,
        source: serde_json::Error,
    },
    #[error(
        "the upstream JSON {kind}{at} has no meta.api-version: it is not a PEP 691 page; check \
         the repository's url"
    )]
    MissingApiVersion { kind: PageKind, at: PageLocation },
    #[error(
        "the upstream JSON {kind}{at} declares meta.api-version {found:?}, but wheelgate \
         understands only 1.x: ask the upstream for the v1 API or use its HTML pages"
    )]
    UnsupportedApiVersion {
        kind: PageKind,
        at: PageLocation,
        found: String,
    },
    #[error(
        "the upstream HTML {kind}{at} is not valid UTF-8 (first bad byte at offset {offset}): \
         simple index pages must be UTF-8"
    )]
    NotUtf8 {
        kind: PageKind,
        at: PageLocation,
        offset: usize,
    },
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

// ---------------------------------------------------------------------------------------------
// JSON (PEP 691, PEP 700, PEP 714)
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
}

/// Used only to explain a failed parse: a page of an API version we do not know is better
/// reported as that than as whatever structural mismatch it caused.
#[derive(Deserialize)]
struct JsonMetaOnly {
    meta: Option<JsonMeta>,
}

#[derive(Deserialize)]
struct JsonProjectPage {
    meta: Option<JsonMeta>,
    #[serde(default)]
    files: Vec<JsonFile>,
    versions: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    hashes: Option<BTreeMap<String, Option<String>>>,
    #[serde(rename = "requires-python")]
    requires_python: Option<String>,
    yanked: Option<JsonYanked>,
    #[serde(rename = "core-metadata")]
    core_metadata: Option<JsonMetadata>,
    #[serde(rename = "dist-info-metadata")]
    dist_info_metadata: Option<JsonMetadata>,
    /// The key PEP 691 originally specified, still sent by some older servers.
    #[serde(rename = "data-dist-info-metadata")]
    legacy_dist_info_metadata: Option<JsonMetadata>,
    size: Option<u64>,
    #[serde(rename = "upload-time")]
    upload_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonYanked {
    Flag(bool),
    Reason(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonMetadata {
    Flag(bool),
    Hashes(BTreeMap<String, Option<String>>),
}

#[derive(Deserialize)]
struct JsonIndex {
    meta: Option<JsonMeta>,
    #[serde(default)]
    projects: Vec<JsonIndexProject>,
}

#[derive(Deserialize)]
struct JsonIndexProject {
    name: Option<String>,
}

fn check_api_version(
    meta: Option<&JsonMeta>,
    kind: PageKind,
    at: &PageLocation,
) -> Result<(), PageError> {
    let Some(found) = meta.and_then(|m| m.api_version.as_deref()) else {
        return Err(PageError::MissingApiVersion {
            kind,
            at: at.clone(),
        });
    };
    let supported = match found.trim().split_once('.') {
        Some((major, minor)) => {
            major == "1" && !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    };
    if supported {
        Ok(())
    } else {
        Err(PageError::UnsupportedApiVersion {
            kind,
            at: at.clone(),
            found: found.chars().take(40).collect(),
        })
    }
}

/// Turns a serde failure into the most useful error: an unsupported API version if the page
/// declares one, the syntax error otherwise.
fn json_error(
    body: &[u8],
    kind: PageKind,
    at: &PageLocation,
    source: serde_json::Error,
) -> PageError {
    if let Ok(meta_only) = serde_json::from_slice::<JsonMetaOnly>(body) {
        if let Err(version_error) = check_api_version(meta_only.meta.as_ref(), kind, at) {
            if matches!(version_error, PageError::UnsupportedApiVersion { .. }) {
                return version_error;
            }
        }
    }
    PageError::Json {
        kind,
        at: at.clone(),
        source,
    }
}

/// Parses a PEP 691 JSON project page. Relative file URLs are resolved against `page_url`.
pub fn parse_project_json(
    body: &[u8],
    page_url: &Url,
    expected: &ProjectName,
) -> Result<ProjectPage, PageError> {
    let kind = PageKind::ProjectPage;
    let at = PageLocation::of(page_url);
    check_size(body, kind, &at)?;
    let page: JsonProjectPage =
        serde_json::from_slice(body).map_err(|e| json_error(body, kind, &at, e))?;
    check_api_version(page.meta.as_ref(), kind, &at)?;
    if page.files.len() > MAX_FILES {
        return Err(PageError::TooManyFiles {
            at,
            limit: MAX_FILES,
        });
    }
    let mut files = Vec::with_capacity(page.files.len());
    let mut dropped = 0;
    for raw in page.files {
        match json_file(raw, page_url) {
            Some(entry) => files.push(entry),
            None => dropped += 1,
        }
    }
    let versions = match page.versions {
        Some(versions) => versions,
        None => versions_from_files(&files),
    };
    Ok(ProjectPage {
        name: expected.clone(),
        files,
        versions,
        dropped,
    })
}

fn json_file(raw: JsonFile, page_url: &Url) -> Option<FileEntry> {
    let filename = DistFilename::parse(&raw.filename).ok()?;
    let (url, fragment) = resolve_file_url(page_url, &raw.url)?;
    let mut hashes = Hashes::default();
    for (algorithm, value) in raw.hashes.iter().flatten() {
        if let Some(value) = value {
            hashes.add(algorithm, value).ok()?;
        }
    }
    // A digest in the URL fragment only fills in what the hashes dictionary left out.
    if let Some((algorithm, value)) = fragment.as_deref().and_then(split_fragment) {
        if !hashes.has(&algorithm) {
            hashes.add(&algorithm, value).ok()?;
        }
    }
    let yanked = match raw.yanked {
        None | Some(JsonYanked::Flag(false)) => Yanked::No,
        Some(JsonYanked::Flag(true)) => Yanked::Yes { reason: None },
        Some(JsonYanked::Reason(reason)) => Yanked::with_reason(&reason),
    };
    // PEP 714: `core-metadata` is authoritative when present; the older names are fallbacks.
    let core_metadata = raw
        .core_metadata
        .or(raw.dist_info_metadata)
        .or(raw.legacy_dist_info_metadata)
        .map_or(CoreMetadata::Absent, |m| match m {
            JsonMetadata::Flag(false) => CoreMetadata::Absent,
            JsonMetadata::Flag(true) => CoreMetadata::Present { sha256: None },
            JsonMetadata::Hashes(map) => metadata_from_hashes(&map),
        });
    let (sha256, other_hashes) = hashes.finish();
    Some(FileEntry {
        filename,
        url,
        sha256,
        other_hashes,
        requires_python: raw.requires_python.filter(|s| !s.is_empty()),
        yanked,
        core_metadata,
        size: raw.size,
        upload_time: raw.upload_time.filter(|t| is_timestamp(t)),
    })
}

fn metadata_from_hashes(map: &BTreeMap<String, Option<String>>) -> CoreMetadata {
    let sha256 = map
        .iter()
        .find(|(algorithm, _)| algorithm.eq_ignore_ascii_case("sha256"))
        .and_then(|(_, value)| value.as_deref());
    match sha256 {
        None => CoreMetadata::Present { sha256: None },
        // A metadata digest that cannot be read cannot be verified; advertising no metadata makes
        // clients fall back to the artifact itself instead of failing on a mismatch.
        Some(hex) => match Sha256Digest::parse_hex(hex) {
            Ok(digest) => CoreMetadata::Present {
                sha256: Some(digest),
            },
            Err(_) => CoreMetadata::Absent,
        },
    }
}

/// Parses a PEP 691 JSON project list.
pub fn parse_index_json(body: &[u8]) -> Result<ProjectIndex, PageError> {
    let kind = PageKind::ProjectList;
    let at = PageLocation::default();
    check_size(body, kind, &at)?;
    let index: JsonIndex =
        serde_json::from_slice(body).map_err(|e| json_error(body, kind, &at, e))?;
    check_api_version(index.meta.as_ref(), kind, &at)?;
    // Invalid names are skipped rather than failing the list: one odd entry upstream must not
    // hide every other project.
    let projects = index
        .projects
        .iter()
        .filter_map(|p| p.name.as_deref())
        .filter_map(|name| ProjectName::parse(name.trim()).ok())
        .collect();
    Ok(ProjectIndex::from_unsorted(projects))
}

// ---------------------------------------------------------------------------------------------
// HTML (PEP 503, PEP 592, PEP 658, PEP 714)
// ---------------------------------------------------------------------------------------------

fn html_text<'a>(body: &'a [u8], kind: PageKind, at: &PageLocation) -> Result<&'a str, PageError> {
    check_size(body, kind, at)?;
    std::str::from_utf8(body).map_err(|e| PageError::NotUtf8 {
        kind,
        at: at.clone(),
        offset: e.valid_up_to(),
    })
}

/// Parses a PEP 503 HTML project page. Relative links are resolved against the page's
/// `<base href>` if it has one, else against `page_url`.
pub fn parse_project_html(
    body: &[u8],
    page_url: &Url,
    expected: &ProjectName,
) -> Result<ProjectPage, PageError> {
    let kind = PageKind::ProjectPage;
    let at = PageLocation::of(page_url);
    let text = html_text(body, kind, &at)?;

    // Browsers use the first `<base href>` for the whole document, wherever it sits, so it is
    // found before any link is resolved.
    let base = html::Tokenizer::new(text)
        .find_map(|token| match token {
            html::Token::Start(tag) if tag.is("base") => tag.attribute("href").flatten(),
            _ => None,
        })
        .and_then(|href| page_url.join(href.trim()).ok());
    let base = base.as_ref().unwrap_or(page_url);

    let mut files = Vec::new();
    let mut dropped = 0;
    for token in html::Tokenizer::new(text) {
        let html::Token::Start(tag) = token else {
            continue;
        };
        if !tag.is("a") {
            continue;
        }
        let Some(Some(href)) = tag.attribute("href") else {
            continue;
        };
        if files.len() + dropped >= MAX_FILES {
            return Err(PageError::TooManyFiles {
                at,
                limit: MAX_FILES,
            });
        }
        match html_file(&tag, base, &href) {
            Some(entry) => files.push(entry),
            None => dropped += 1,
        }
    }
    let versions = versions_from_files(&files);
    Ok(ProjectPage {
        name: expected.clone(),
        files,
        versions,
        dropped,
    })
}

fn html_file(tag: &html::StartTag<'_>, base: &Url, href: &str) -> Option<FileEntry> {
    let (url, fragment) = resolve_file_url(base, href)?;
    // pip and uv take the filename from the URL, not the anchor text, so we do too.
    let last_segment = url.path_segments()?.next_back()?;
    let decoded = percent_encoding::percent_decode_str(last_segment)
        .decode_utf8()
        .ok()?;
    let filename = DistFilename::parse(&decoded).ok()?;

    let mut hashes = Hashes::default();
    if let Some((algorithm, value)) = fragment.as_deref().and_then(split_fragment) {
        hashes.add(&algorithm, value).ok()?;
    }
    let requires_python = tag
        .attribute("data-requires-python")
        .flatten()
        .filter(|s| !s.is_empty())
        .map(Cow::into_owned);
    let yanked = match tag.attribute("data-yanked") {
        None => Yanked::No,
        Some(reason) => Yanked::with_reason(reason.as_deref().unwrap_or_default()),
    };
    // PEP 714: `data-core-metadata` is authoritative when present.
    let core_metadata = tag
        .attribute("data-core-metadata")
        .or_else(|| tag.attribute("data-dist-info-metadata"))
        .map_or(CoreMetadata::Absent, |value| {
            metadata_from_attribute(value.as_deref().unwrap_or_default())
        });
    let (sha256, other_hashes) = hashes.finish();
    Some(FileEntry {
        filename,
        url,
        sha256,
        other_hashes,
        requires_python,
        yanked,
        core_metadata,
        size: None,
        upload_time: None,
    })
}

/// PEP 658 attribute values: `true`, or `<algorithm>=<hex>`. Anything unreadable counts as
/// absent, so clients fall back to the artifact instead of fetching metadata that may not exist.
fn metadata_from_attribute(value: &str) -> CoreMetadata {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        return CoreMetadata::Present { sha256: None };
    }
    let Some((algorithm, hex)) = value.split_once('=') else {
        return CoreMetadata::Absent;
    };
    if algorithm.trim().eq_ignore_ascii_case("sha256") {
        match Sha256Digest::parse_hex(hex.trim()) {
            Ok(digest) => CoreMetadata::Present {
                sha256: Some(digest),
            },
            Err(_) => CoreMetadata::Absent,
        }
    } else if is_hash_name(algorithm.trim()) && is_hex_value(hex.trim()) {
        CoreMetadata::Present { sha256: None }
    } else {
        CoreMetadata::Absent
    }
}

/// Parses a PEP 503 HTML project list: the text of each anchor is a project name; anchors whose
/// text is not a valid name are skipped.
pub fn parse_index_html(body: &[u8]) -> Result<ProjectIndex, PageError> {
    let kind = PageKind::ProjectList;
    let at = PageLocation::default();
    let text = html_text(body, kind, &at)?;
    let mut projects = Vec::new();
    // The text of the anchor being read, in one buffer reused for every anchor. An anchor ends at
    // `</a>`, at the next `<a>` (anchors cannot nest) or at the end of the page.
    let mut anchor_text = String::new();
    let mut in_anchor = false;
    fn finish_anchor(anchor_text: &mut String, projects: &mut Vec<ProjectName>) {
        let decoded = html_escape::decode_html_entities(anchor_text.trim());
        projects.extend(ProjectName::parse(decoded.trim()).ok());
        anchor_text.clear();
    }
    for token in html::Tokenizer::new(text) {
        match token {
            html::Token::Start(tag) if tag.is("a") => {
                if in_anchor {
                    finish_anchor(&mut anchor_text, &mut projects);
                }
                in_anchor = true;
            }
            html::Token::End(name) if in_anchor && name.eq_ignore_ascii_case("a") => {
                finish_anchor(&mut anchor_text, &mut projects);
                in_anchor = false;
            }
            html::Token::Text(text) if in_anchor => anchor_text.push_str(text),
            _ => {}
        }
    }
    if in_anchor {
        finish_anchor(&mut anchor_text, &mut projects);
    }
    Ok(ProjectIndex::from_unsorted(projects))
}

/// Just enough of the HTML5 tokenizer to read index pages: start tags with their attributes, end
/// tags and text, with comments, doctypes and the contents of raw-text elements skipped.
///
/// The general-purpose parser in our dependencies (tl 0.7) misreads the attribute that follows a
/// valueless one (`data-yanked data-core-metadata="true"` loses the `d` of the second name) and cuts
/// unquoted values at `/`; both forms occur on real PEP 503/592 pages. This tokenizer follows the
/// HTML5 rules for those states, runs in linear time with no recursion, and cannot panic: every
/// slice goes through `str::get`, and it only stops on ASCII delimiters, which are always
/// character boundaries.
mod html {
    use std::borrow::Cow;

    pub(super) enum Token<'a> {
        Start(StartTag<'a>),
        End(&'a str),
        Text(&'a str),
    }

    pub(super) struct StartTag<'a> {
        name: &'a str,
        /// In source order, duplicates removed (the first occurrence wins, as in HTML5).
        attributes: Vec<(&'a str, Option<&'a str>)>,
    }

    impl<'a> StartTag<'a> {
        pub(super) fn is(&self, name: &str) -> bool {
            self.name.eq_ignore_ascii_case(name)
        }

        /// An attribute looked up case-insensitively and entity-decoded. The outer `Option` says
        /// whether the attribute is present, the inner one whether it has a value.
        pub(super) fn attribute(&self, name: &str) -> Option<Option<Cow<'a, str>>> {
            self.attributes
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.map(html_escape::decode_html_entities))
        }
    }

    /// Attributes kept per tag; later ones are read past and ignored.
    const MAX_ATTRIBUTES: usize = 32;

    /// Elements whose content is not markup: a `<a` inside a script is not a link.
    const RAW_TEXT: [&str; 4] = ["script", "style", "textarea", "title"];

    pub(super) struct Tokenizer<'a> {
        src: &'a str,
        pos: usize,
        /// Set after the start tag of a raw-text element: skip to its end tag.
        raw_text_end: Option<&'static str>,
    }

    fn is_space(b: u8) -> bool {
        matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
    }

    impl<'a> Tokenizer<'a> {
        pub(super) fn new(src: &'a str) -> Self {
            Tokenizer {
                src,
                pos: 0,
                raw_text_end: None,
            }
        }

        fn peek(&self) -> Option<u8> {
            self.src.as_bytes().get(self.pos).copied()
        }

        fn peek_at(&self, offset: usize) -> Option<u8> {
            self.src.as_bytes().get(self.pos + offset).copied()
        }

        fn rest(&self) -> &'a str {
            self.src.get(self.pos..).unwrap_or_default()
        }

        /// Advances while `keep` holds. `keep` must reject only ASCII bytes, so the cursor always
        /// stops on a character boundary.
        fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
            let start = self.pos;
            while self.peek().is_some_and(&keep) {
                self.pos += 1;
            }
            self.src.get(start..self.pos).unwrap_or_default()
        }

        fn skip_spaces(&mut self) {
            self.take_while(is_space);
        }

        /// Moves just past the next occurrence of `needle`, or to the end.
        fn skip_past(&mut self, needle: &str) {
            self.pos = match self.rest().find(needle) {
                Some(at) => self.pos + at + needle.len(),
                None => self.src.len(),
            };
        }

        fn skip_raw_text(&mut self, element: &str) {
            let mut search = self.pos;
            while let Some(at) = self.src.get(search..).and_then(|s| s.find("</")) {
                let name_start = search + at + 2;
                let candidate = self
                    .src
                    .as_bytes()
                    .get(name_start..name_start + element.len());
                if candidate.is_some_and(|c| c.eq_ignore_ascii_case(element.as_bytes())) {
                    self.pos = search + at;
                    return;
                }
                search = name_start;
            }
            self.pos = self.src.len();
        }

        /// Reads a start tag; the cursor is just past `<`. Returns `None` when the page ends
        /// inside the tag, which HTML5 drops.
        fn start_tag(&mut self) -> Option<StartTag<'a>> {
            let name = self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>'));
            let mut attributes: Vec<(&'a str, Option<&'a str>)> = Vec::new();
            loop {
                self.skip_spaces();
                match self.peek()? {
                    b'>' => {
                        self.pos += 1;
                        return Some(StartTag { name, attributes });
                    }
                    b'/' => {
                        self.pos += 1;
                        continue;
                    }
                    _ => {}
                }
                let start = self.pos;
                // A leading `=` belongs to the name (HTML5 "before attribute name" state).
                if self.peek() == Some(b'=') {
                    self.pos += 1;
                }
                self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>' || b == b'='));
                let key = self.src.get(start..self.pos).unwrap_or_default();
                self.skip_spaces();
                let mut value = None;
                if self.peek() == Some(b'=') {
                    self.pos += 1;
                    self.skip_spaces();
                    value = Some(match self.peek()? {
                        quote @ (b'"' | b'\'') => {
                            self.pos += 1;
                            let rest = self.rest();
                            let end = rest.find(char::from(quote))?;
                            self.pos += end + 1;
                            rest.get(..end).unwrap_or_default()
                        }
                        b'>' => "",
                        _ => self.take_while(|b| !(is_space(b) || b == b'>')),
                    });
                }
                // The bound keeps the duplicate check linear on a hostile tag with millions of
                // attributes; real links carry fewer than ten.
                if attributes.len() < MAX_ATTRIBUTES
                    && !attributes.iter().any(|(k, _)| k.eq_ignore_ascii_case(key))
                {
                    attributes.push((key, value));
                }
            }
        }
    }

    impl<'a> Iterator for Tokenizer<'a> {
        type Item = Token<'a>;

        fn next(&mut self) -> Option<Token<'a>> {
            if let Some(element) = self.raw_text_end.take() {
                self.skip_raw_text(element);
            }
            loop {
                let rest = self.rest();
                if rest.is_empty() {
                    return None;
                }
                if self.peek() != Some(b'<') {
                    let end = rest.find('<').unwrap_or(rest.len());
                    self.pos += end;
                    return Some(Token::Text(rest.get(..end).unwrap_or_default()));
                }
                match (self.peek_at(1), self.peek_at(2)) {
                    (Some(b'!'), _) if rest.starts_with("<!--") => {
                        // Searching from the second dash also ends `<!-->` and `<!--->`, as
                        // HTML5 does.
                        self.pos += 2;
                        self.skip_past("-->");
                    }
                    (Some(b'!' | b'?'), _) => self.skip_past(">"),
                    (Some(b'/'), Some(b)) if b.is_ascii_alphabetic() => {
                        self.pos += 2;
                        let name = self.take_while(|b| !(is_space(b) || b == b'/' || b == b'>'));
                        self.skip_past(">");
                        return Some(Token::End(name));
                    }
                    (Some(b'/'), _) => self.skip_past(">"),
                    (Some(b), _) if b.is_ascii_alphabetic() => {
                        self.pos += 1;
                        let Some(tag) = self.start_tag() else {
                            // The page ended inside the tag: HTML5 drops it, and nothing follows.
                            self.pos = self.src.len();
                            return None;
                        };
                        self.raw_text_end =
                            RAW_TEXT.iter().find(|element| tag.is(element)).copied();
                        return Some(Token::Start(tag));
                    }
                    _ => {
                        // A `<` that starts no markup is text.
                        let end = rest
                            .get(1..)
                            .and_then(|r| r.find('<'))
                            .map_or(rest.len(), |i| i + 1);
                        self.pos += end;
                        return Some(Token::Text(rest.get(..end).unwrap_or_default()));
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        type OwnedAttributes = Vec<(String, Option<String>)>;

        fn start_tags(src: &str) -> Vec<(String, OwnedAttributes)> {
            Tokenizer::new(src)
                .filter_map(|t| match t {
                    Token::Start(tag) => Some((
                        tag.name.to_owned(),
                        tag.attributes
                            .iter()
                            .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                            .collect(),
                    )),
                    _ => None,
                })
                .collect()
        }

        fn attrs(pairs: &[(&str, Option<&str>)]) -> OwnedAttributes {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned)))
                .collect()
        }

        #[test]
        fn valueless_attribute_before_another() {
            let tags = start_tags(r#"<a href="x" data-yanked data-core-metadata="true">t</a>"#);
            assert_eq!(
                tags,
                [(
                    "a".to_owned(),
                    attrs(&[
                        ("href", Some("x")),
                        ("data-yanked", None),
                        ("data-core-metadata", Some("true"))
                    ])
                )]
            );
        }

        #[test]
        fn attribute_value_forms() {
            let tags = start_tags("<A HREF=/files/x.whl#sha256=ab data-x = 'q\"v' e= f=>");
            assert_eq!(
                tags,
                [(
                    "A".to_owned(),
                    attrs(&[
                        ("HREF", Some("/files/x.whl#sha256=ab")),
                        ("data-x", Some("q\"v")),
                        ("e", Some("f=")),
                    ])
                )]
            );
            let tags = start_tags("<a href=x href=y/><br/>");
            assert_eq!(
                tags[0].1,
                attrs(&[("href", Some("x"))]),
                "first duplicate wins"
            );
            assert_eq!(tags[1].0, "br");
        }

        #[test]
        fn comments_doctype_and_raw_text_are_skipped() {
            let src =
                "<!DOCTYPE html><!-- <a href=no> --><!--><?xml x?><script>var s='<a href=no>';\
                       </SCRIPT><title><a href=no></title></ x><a href=yes>";
            let tags = start_tags(src);
            let names: Vec<&str> = tags.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["script", "title", "a"]);
            assert_eq!(tags[2].1, attrs(&[("href", Some("yes"))]));
        }

        #[test]
        fn truncated_input_ends_cleanly() {
            for src in [
                "<a href=\"x",
                "<a href=",
                "<a",
                "<",
                "<!--",
                "</a",
                "<script>",
                "a < b",
                "é<é",
            ] {
                let count = Tokenizer::new(src).count();
                assert!(count <= src.len(), "{src}");
            }
            assert!(
                start_tags("<a href=\"x").is_empty(),
                "a tag cut off by the end is dropped"
            );
        }

        /// Inputs built to make a naive tokenizer quadratic must still finish quickly.
        #[test]
        fn hostile_inputs_stay_linear() {
            let many_attributes = format!("<a {}>", "x ".repeat(500_000));
            assert_eq!(start_tags(&many_attributes)[0].1.len(), 1);
            let inputs = [
                "<title>".repeat(200_000),
                "<!".repeat(200_000),
                "</x".repeat(200_000),
                "<script></".repeat(100_000),
                "<".repeat(500_000),
            ];
            for src in &inputs {
                assert!(Tokenizer::new(src).count() <= src.len());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

impl ProjectIndex {
    /// Sorts and deduplicates names gathered in page order.
    pub fn from_unsorted(mut projects: Vec<ProjectName>) -> ProjectIndex {
        projects.sort_unstable();
        projects.dedup();
        ProjectIndex { projects }
    }
}

/// Resolves a link against its base and keeps it only if it is http(s); returns the URL without
/// fragment and the fragment separately (it carries the digest in PEP 503).
fn resolve_file_url(base: &Url, href: &str) -> Option<(Url, Option<String>)> {
    let mut url = base.join(href.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let fragment = url.fragment().map(str::to_owned);
    url.set_fragment(None);
    Some((url, fragment))
}

/// `sha256=<hex>` (or another algorithm) from a URL fragment.
fn split_fragment(fragment: &str) -> Option<(String, &str)> {
    let (algorithm, value) = fragment.split_once('=')?;
    Some((algorithm.to_ascii_lowercase(), value))
}

fn is_hash_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_hex_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A malformed sha256 makes a file unusable: we could not verify what we serve.
struct BadSha256;

#[derive(Default)]
struct Hashes {
    sha256: Option<Sha256Digest>,
    other: Vec<(String, String)>,
}

impl Hashes {
    fn has(&self, algorithm: &str) -> bool {
        if algorithm == "sha256" {
            self.sha256.is_some()
        } else {
            self.other.iter().any(|(a, _)| a == algorithm)
        }
    }

    /// Records one published digest. Digests of other algorithms that do not look like hex are
    /// ignored (we only pass them through); a bad sha256 is an error for the file.
    fn add(&mut self, algorithm: &str, value: &str) -> Result<(), BadSha256> {
        let algorithm = algorithm.trim().to_ascii_lowercase();
        let value = value.trim();
        if algorithm == "sha256" {
            self.sha256 = Some(Sha256Digest::parse_hex(value).map_err(|_| BadSha256)?);
        } else if is_hash_name(&algorithm) && is_hex_value(value) && !self.has(&algorithm) {
            self.other.push((algorithm, value.to_ascii_lowercase()));
        }
        Ok(())
    }

    /// The sha256 and the other digests, sorted by algorithm so pages render the same whatever
    /// order the upstream used.
    fn finish(mut self) -> (Option<Sha256Digest>, Vec<(String, String)>) {
        self.other.sort_unstable();
        (self.sha256, self.other)
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

/// A loose RFC 3339 check: `YYYY-MM-DDTHH:MM:SS(.fraction)?` then `Z` or `±HH:MM`. Values that do
/// not read are dropped rather than passed on to policy as garbage.
fn is_timestamp(s: &str) -> bool {
    let [y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, sep, h1, h2, b':', mi1, mi2, b':', s1, s2, rest @ ..] =
        s.as_bytes()
    else {
        return false;
    };
    let digits = [y1, y2, y3, y4, mo1, mo2, d1, d2, h1, h2, mi1, mi2, s1, s2];
    if !digits.iter().all(|b| b.is_ascii_digit()) || !matches!(sep, b'T' | b't' | b' ') {
        return false;
    }
    let two = |a: &u8, b: &u8| u32::from(a - b'0') * 10 + u32::from(b - b'0');
    let in_range = (1..=12).contains(&two(mo1, mo2))
        && (1..=31).contains(&two(d1, d2))
        && two(h1, h2) <= 23
        && two(mi1, mi2) <= 59
        && two(s1, s2) <= 60;
    if !in_range {
        return false;
    }
    let rest = match rest {
        [b'.', tail @ ..] => {
            let digits = tail.iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return false;
            }
            tail.get(digits..).unwrap_or_default()
        }
        _ => rest,
    };
    match rest {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', oh1, oh2, b':', om1, om2] => {
            [oh1, oh2, om1, om2].iter().all(|b| b.is_ascii_digit())
                && two(oh1, oh2) <= 23
                && two(om1, om2) <= 59
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const HEX_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn page_url() -> Url {
        Url::parse("https://index.example.invalid/simple/foo/").unwrap()
    }

    fn foo() -> ProjectName {
        ProjectName::parse("foo").unwrap()
    }

    fn digest(hex: &str) -> Sha256Digest {
        Sha256Digest::parse_hex(hex).unwrap()
    }

    #[test]
    fn json_with_all_fields() {
        let body = format!(
            r#"{{
  "meta": {{"api-version": "1.1", "_last-serial": 7}},
  "name": "Foo",
  "unknown-top-level": [1, 2],
  "files": [
    {{
      "filename": "foo-1.0-py3-none-any.whl",
      "url": "../../packages/foo-1.0-py3-none-any.whl",
      "hashes": {{"sha256": "{upper}", "MD5": "ABCDEF", "blake2b_256": "0123"}},
      "requires-python": ">=3.8",
      "yanked": "broken build",
      "core-metadata": {{"sha256": "{HEX_B}"}},
      "dist-info-metadata": true,
      "size": 1234,
      "upload-time": "2024-01-02T03:04:05.678901Z",
      "provenance": null
    }},
    {{
      "filename": "foo-1.1.tar.gz",
      "url": "https://files.example.invalid/foo-1.1.tar.gz#sha256={HEX_B}",
      "hashes": {{}},
      "yanked": true,
      "dist-info-metadata": {{"sha256": "{HEX_A}"}},
      "upload-time": "yesterday"
    }},
    {{
      "filename": "foo-1.2.tar.gz",
      "url": "https://files.example.invalid/foo-1.2.tar.gz",
      "yanked": false,
      "data-dist-info-metadata": true
    }},
    {{
      "filename": "foo-1.3.tar.gz",
      "url": "https://files.example.invalid/foo-1.3.tar.gz",
      "hashes": {{"sha256": "{HEX_A}"}},
      "yanked": "",
      "core-metadata": false,
      "dist-info-metadata": true,
      "requires-python": null,
      "size": null
    }}
  ],
  "versions": ["1.0", "1.1", "1.2", "1.3", "2.0"]
}}"#,
            upper = HEX_A.to_ascii_uppercase()
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(page.name, foo());
        assert_eq!(page.dropped, 0);
        assert_eq!(page.versions, ["1.0", "1.1", "1.2", "1.3", "2.0"]);
        assert_eq!(page.files.len(), 4);

        let f = &page.files[0];
        assert_eq!(f.filename.as_str(), "foo-1.0-py3-none-any.whl");
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/packages/foo-1.0-py3-none-any.whl"
        );
        assert_eq!(f.sha256, Some(digest(HEX_A)));
        assert_eq!(
            f.other_hashes,
            [
                ("blake2b_256".to_owned(), "0123".to_owned()),
                ("md5".to_owned(), "abcdef".to_owned())
            ]
        );
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(
            f.yanked,
            Yanked::Yes {
                reason: Some("broken build".into())
            }
        );
        // PEP 714: core-metadata wins over dist-info-metadata.
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_B))
            }
        );
        assert_eq!(f.size, Some(1234));
        assert_eq!(
            f.upload_time.as_deref(),
            Some("2024-01-02T03:04:05.678901Z")
        );
        assert_eq!(f.key(), FileKey::Sha256(digest(HEX_A)));

        let f = &page.files[1];
        assert_eq!(
            f.url.as_str(),
            "https://files.example.invalid/foo-1.1.tar.gz"
        );
        assert_eq!(
            f.sha256,
            Some(digest(HEX_B)),
            "fragment fills in a missing hash"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );
        assert_eq!(f.upload_time, None, "unreadable upload time is dropped");
        assert_eq!(f.size, None);

        let f = &page.files[2];
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(f.core_metadata, CoreMetadata::Present { sha256: None });
        assert_eq!(f.sha256, None);
        assert_eq!(
            f.key(),
            FileKey::Url(Sha256Digest::of(
                b"https://files.example.invalid/foo-1.2.tar.gz"
            ))
        );

        let f = &page.files[3];
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Absent,
            "core-metadata false wins"
        );
        assert_eq!(f.requires_python, None);
    }

    #[test]
    fn json_minimal_and_derived_versions() {
        let body = br#"{"meta":{"api-version":"1.0"},"name":"foo","files":[
            {"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/a/foo-1.0.tar.gz","hashes":{}},
            {"filename":"foo-1.0-py3-none-any.whl","url":"https://files.example.invalid/b/foo-1.0-py3-none-any.whl","hashes":{}},
            {"filename":"foo-0.9.zip","url":"/c/foo-0.9.zip","hashes":{}},
            {"filename":"foo.exe","url":"/c/foo.exe","hashes":{}}
        ]}"#;
        let page = parse_project_json(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.versions, ["1.0", "0.9"]);
        assert_eq!(
            page.files[2].url.as_str(),
            "https://index.example.invalid/c/foo-0.9.zip"
        );
        assert!(page
            .files
            .iter()
            .all(|f| f.core_metadata == CoreMetadata::Absent));
    }

    #[test]
    fn json_name_mismatch_is_kept_and_files_of_other_projects_too() {
        let body = br#"{"meta":{"api-version":"1.1"},"name":"bar","files":[
            {"filename":"bar-1.0.tar.gz","url":"https://files.example.invalid/bar-1.0.tar.gz","hashes":{}}
        ],"versions":[]}"#;
        let page = parse_project_json(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.name, foo());
        assert_eq!(page.files.len(), 1);
        assert_eq!(page.files[0].filename.project().unwrap().as_str(), "bar");
    }

    #[test]
    fn json_drops_unusable_files() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"foo","files":[
            {{"filename":"../evil.whl","url":"https://files.example.invalid/x","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"javascript:alert(1)","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"file:///etc/passwd","hashes":{{}}}},
            {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz","hashes":{{"sha256":"nothex"}}}},
            {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz","hashes":{{"sha256":"{HEX_A}"}}}}
        ]}}"#
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(page.files.len(), 1);
        assert_eq!(page.dropped, 4);
    }

    #[test]
    fn json_api_versions() {
        let page =
            |v: &str| format!(r#"{{"meta":{{"api-version":"{v}"}},"name":"foo","files":[]}}"#);
        for ok in ["1.0", "1.1", "1.4"] {
            assert!(
                parse_project_json(page(ok).as_bytes(), &page_url(), &foo()).is_ok(),
                "{ok}"
            );
        }
        for bad in ["2.0", "0.9", "1", "v1.0", "1.x", ""] {
            let err = parse_project_json(page(bad).as_bytes(), &page_url(), &foo()).unwrap_err();
            assert!(
                matches!(err, PageError::UnsupportedApiVersion { .. }),
                "{bad}: {err}"
            );
        }
        let err =
            parse_project_json(br#"{"name":"foo","files":[]}"#, &page_url(), &foo()).unwrap_err();
        assert!(matches!(err, PageError::MissingApiVersion { .. }), "{err}");
        // A v2 page whose files no longer fit our model reports the version, not the mismatch.
        let v2 = br#"{"meta":{"api-version":"2.0"},"files":{"foo.whl":{"uri":1}}}"#;
        let err = parse_project_json(v2, &page_url(), &foo()).unwrap_err();
        assert!(
            matches!(err, PageError::UnsupportedApiVersion { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("2.0"), "{err}");
    }

    #[test]
    fn json_garbage_is_rejected_with_position() {
        let err = parse_project_json(b"{\"meta\":\n  {\"api-version\": }", &page_url(), &foo())
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, PageError::Json { .. }), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(
            msg.contains("https://index.example.invalid/simple/foo/"),
            "{msg}"
        );
        for garbage in [
            &b""[..],
            b"null",
            b"[]",
            b"<html>",
            b"\xff\xfe",
            b"{\"files\": 3}",
        ] {
            assert!(parse_project_json(garbage, &page_url(), &foo()).is_err());
        }
        let wrong_type = br#"{"meta":{"api-version":"1.1"},"files":[{"filename":"a.whl","url":"x","size":"big"}]}"#;
        assert!(matches!(
            parse_project_json(wrong_type, &page_url(), &foo()),
            Err(PageError::Json { .. })
        ));
    }

    #[test]
    fn json_mutations_never_panic() {
        let seed = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"name":"foo","files":[{{"filename":"foo-1.0-py3-none-any.whl","url":"../x/foo-1.0-py3-none-any.whl#sha256={HEX_A}","hashes":{{"sha256":"{HEX_A}"}},"yanked":"r","core-metadata":{{"sha256":"{HEX_B}"}},"size":3,"upload-time":"2024-01-02T03:04:05Z"}}],"versions":["1.0"]}}"#
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(691);
        for _ in 0..3000 {
            let mut body = seed.clone().into_bytes();
            for _ in 0..rng.gen_range(1..6) {
                let at = rng.gen_range(0..body.len());
                match rng.gen_range(0..3) {
                    0 => body[at] = rng.gen(),
                    1 => {
                        body.remove(at);
                    }
                    _ => {
                        let bytes = b"{}[]\",:\\0e-";
                        body.insert(at, bytes[rng.gen_range(0..bytes.len())]);
                    }
                }
            }
            let _ = parse_project_json(&body, &page_url(), &foo());
            let _ = parse_index_json(&body);
        }
    }

    #[test]
    fn html_project_page() {
        let body = format!(
            r#"<!DOCTYPE html>
<html><head><meta name="pypi:repository-version" content="1.1"><title>Links for foo</title></head>
<body>
<h1>Links for foo</h1>
<a href="../../packages/foo-1.0-py3-none-any.whl#sha256={upper}" data-requires-python="&gt;=3.8&amp;&lt;4" data-core-metadata="sha256={HEX_B}" data-dist-info-metadata="true">foo-1.0-py3-none-any.whl</a><br/>
<A HREF='https://files.example.invalid/foo-1.1.tar.gz#md5=ABC123' DATA-YANKED="bad &quot;release&quot;">foo-1.1.tar.gz</A>
<a href="/other/foo-1.2.tar.gz" data-yanked data-dist-info-metadata="sha256={HEX_A}">foo-1.2.tar.gz</a>
<a href="foo-1.3.tar.gz" data-yanked="" data-core-metadata="garbage" data-dist-info-metadata="true">x</a>
<a href="javascript:alert(1)">foo-9.tar.gz</a>
<a href="data:text/plain,foo-9.tar.gz">foo-9.tar.gz</a>
<a href="https://files.example.invalid/%2E%2E%2Fetc.whl">evil</a>
<a href="https://files.example.invalid/bar-1.0.tar.gz#sha256=short">bar</a>
<a name="anchor-without-href">nothing</a>
<a href="https://files.example.invalid/foo-1.4%2Blocal.tar.gz">plus</a>
</body></html>"#,
            upper = HEX_A.to_ascii_uppercase()
        );
        let page = parse_project_html(body.as_bytes(), &page_url(), &foo()).unwrap();
        let names: Vec<&str> = page.files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "foo-1.0-py3-none-any.whl",
                "foo-1.1.tar.gz",
                "foo-1.2.tar.gz",
                "foo-1.3.tar.gz",
                "foo-1.4+local.tar.gz"
            ]
        );
        assert_eq!(page.dropped, 4);
        assert_eq!(page.versions, ["1.0", "1.1", "1.2", "1.3", "1.4+local"]);

        let f = &page.files[0];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/packages/foo-1.0-py3-none-any.whl"
        );
        assert_eq!(f.sha256, Some(digest(HEX_A)));
        assert_eq!(f.requires_python.as_deref(), Some(">=3.8&<4"));
        assert_eq!(f.yanked, Yanked::No);
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_B))
            }
        );

        let f = &page.files[1];
        assert_eq!(
            f.url.as_str(),
            "https://files.example.invalid/foo-1.1.tar.gz"
        );
        assert_eq!(f.sha256, None);
        assert_eq!(f.other_hashes, [("md5".to_owned(), "abc123".to_owned())]);
        assert_eq!(
            f.yanked,
            Yanked::Yes {
                reason: Some("bad \"release\"".into())
            }
        );
        assert_eq!(f.core_metadata, CoreMetadata::Absent);

        let f = &page.files[2];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/other/foo-1.2.tar.gz"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );

        let f = &page.files[3];
        assert_eq!(
            f.url.as_str(),
            "https://index.example.invalid/simple/foo/foo-1.3.tar.gz"
        );
        assert_eq!(f.yanked, Yanked::Yes { reason: None });
        assert_eq!(
            f.core_metadata,
            CoreMetadata::Absent,
            "an unreadable data-core-metadata still takes precedence"
        );
    }

    #[test]
    fn html_base_href() {
        let body = br#"<html><head><base href="https://mirror.example.invalid/root/"></head>
            <body><a href="pkgs/foo-1.0.tar.gz">foo-1.0.tar.gz</a>
            <a href="//cdn.example.invalid/foo-1.1.tar.gz">foo-1.1.tar.gz</a></body></html>"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(
            page.files[0].url.as_str(),
            "https://mirror.example.invalid/root/pkgs/foo-1.0.tar.gz"
        );
        assert_eq!(
            page.files[1].url.as_str(),
            "https://cdn.example.invalid/foo-1.1.tar.gz"
        );
        // A relative <base href> is itself resolved against the page.
        let body = br#"<base href="../../mirror/"><a href="foo-1.0.tar.gz">x</a>"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(
            page.files[0].url.as_str(),
            "https://index.example.invalid/mirror/foo-1.0.tar.gz"
        );
    }

    #[test]
    fn html_not_utf8_is_an_error() {
        let err = parse_project_html(b"<a href=\"x\xff.whl\">", &page_url(), &foo()).unwrap_err();
        assert!(
            matches!(err, PageError::NotUtf8 { offset: 10, .. }),
            "{err}"
        );
    }

    #[test]
    fn html_odd_structure() {
        let body = br#"<a href="foo-1.0.tar.gz"><a href="foo-1.1.tar.gz"></div></div></a><p><a
            href = "foo-1.2.tar.gz" >x"#;
        let page = parse_project_html(body, &page_url(), &foo()).unwrap();
        assert_eq!(page.files.len(), 3);
        let empty = parse_project_html(b"", &page_url(), &foo()).unwrap();
        assert!(empty.files.is_empty());
    }

    /// Random HTML-ish token soup and random bytes must give a page or an error, never a panic.
    #[test]
    fn html_garbage_never_panics() {
        let tokens: [&str; 26] = [
            "<",
            ">",
            "</",
            "/>",
            "<a ",
            "</a>",
            "href=",
            "\"",
            "'",
            "=",
            "#sha256=",
            HEX_A,
            "data-yanked",
            "data-core-metadata=",
            "<base href=",
            "&amp;",
            "&#x",
            "&",
            ";",
            "foo-1.0.tar.gz",
            "../",
            "javascript:",
            "<!--",
            "-->",
            "é",
            "<script>",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(503);
        for round in 0..2000 {
            let body: Vec<u8> = if round % 4 == 0 {
                (0..rng.gen_range(0..256)).map(|_| rng.gen()).collect()
            } else {
                let mut s = String::new();
                for _ in 0..rng.gen_range(0..64) {
                    s.push_str(tokens[rng.gen_range(0..tokens.len())]);
                    if rng.gen_bool(0.2) {
                        s.push(char::from(rng.gen_range(0x20u8..0x7f)));
                    }
                }
                s.into_bytes()
            };
            let _ = parse_project_html(&body, &page_url(), &foo());
            let _ = parse_index_html(&body);
        }
    }

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
    fn too_many_files() {
        let one = "<a href=\"f-1.0.tar.gz\"></a>";
        let body = one.repeat(MAX_FILES + 1);
        let err = parse_project_html(body.as_bytes(), &page_url(), &foo()).unwrap_err();
        assert!(matches!(err, PageError::TooManyFiles { .. }), "{err}");
        let body = one.repeat(MAX_FILES);
        assert_eq!(
            parse_project_html(body.as_bytes(), &page_url(), &foo())
                .unwrap()
                .files
                .len(),
            MAX_FILES
        );
    }

    #[test]
    fn error_locations_hide_credentials() {
        let url =
            Url::parse("https://__token__:s3cret@index.example.invalid/simple/foo/?k=v").unwrap();
        let err = parse_project_json(b"nope", &url, &foo())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && !err.contains("k=v"), "{err}");
        assert!(err.contains("index.example.invalid/simple/foo/"), "{err}");
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

    #[test]
    fn timestamps() {
        for ok in [
            "2024-01-02T03:04:05Z",
            "2024-01-02T03:04:05.123456Z",
            "2024-01-02 03:04:05+01:00",
            "2024-12-31T23:59:60-05:30",
        ] {
            assert!(is_timestamp(ok), "{ok}");
        }
        for bad in [
            "",
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-13-02T03:04:05Z",
            "2024-01-02T24:04:05Z",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05Zjunk",
            "２０２４-01-02T03:04:05Z",
            "2024-01-02T03:04:05+0100",
        ] {
            assert!(!is_timestamp(bad), "{bad}");
        }
    }

    #[test]
    fn metadata_attribute_values() {
        assert_eq!(
            metadata_from_attribute("true"),
            CoreMetadata::Present { sha256: None }
        );
        assert_eq!(metadata_from_attribute("false"), CoreMetadata::Absent);
        assert_eq!(metadata_from_attribute(""), CoreMetadata::Absent);
        assert_eq!(
            metadata_from_attribute("md5=abcdef"),
            CoreMetadata::Present { sha256: None }
        );
        assert_eq!(
            metadata_from_attribute(&format!("SHA256={}", HEX_A.to_ascii_uppercase())),
            CoreMetadata::Present {
                sha256: Some(digest(HEX_A))
            }
        );
        assert_eq!(metadata_from_attribute("sha256=zz"), CoreMetadata::Absent);
    }
}
