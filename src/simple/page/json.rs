//! Reading PEP 691 JSON pages, with the PEP 700, 714, 740 and 792 additions.
//!
//! serde reads a page into loose structs that accept unknown keys and missing optional fields
//! (files are validated and counted as they are read, so the limits stop a page early);
//! the page must then declare `meta.api-version` 1.x, and each file becomes a validated
//! [`FileEntry`] or is dropped and counted. When serde cannot read a page that declares another
//! API version, the version is reported rather than the mismatch it caused.
//!
//! The PEP 792 `project-status` is read leniently: it is new, and a page whose status has an
//! unexpected shape is still a page of files. The standard's object (`status`, or `state` as the
//! PEP's text once spelt it, and `reason`) is read; so are a bare marker string and the
//! `meta.project-status` / `meta.project-status-reason` strings of the specification's example;
//! anything else is no status (`active`).

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use url::Url;

use super::hashes::Hashes;
use super::link::{resolve_file_url, split_fragment};
use super::{
    check_size, is_version_text, versions_from_files, CoreMetadata, FileEntry, PageError, PageKind,
    PageLocation, ProjectIndex, ProjectPage, ProjectStatus, Yanked, MAX_FILES, MAX_VERSIONS,
};
use crate::simple::digest::Sha256Digest;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;

#[derive(Deserialize)]
struct JsonMeta {
    #[serde(rename = "api-version")]
    api_version: Option<String>,
    #[serde(rename = "project-status", default)]
    project_status: Loose,
    #[serde(rename = "project-status-reason", default)]
    project_status_reason: Loose,
}

/// A value that should be a string; anything else reads as absent instead of failing the page.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Loose {
    Text(String),
    #[default]
    #[serde(skip)]
    Absent,
    Other(serde::de::IgnoredAny),
}

impl Loose {
    fn text(&self) -> Option<&str> {
        match self {
            Loose::Text(text) => Some(text),
            Loose::Absent | Loose::Other(_) => None,
        }
    }
}

/// PEP 792 `project-status`: the standard's object, or a bare marker.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum JsonProjectStatus {
    Object {
        #[serde(default)]
        status: Loose,
        #[serde(default)]
        state: Loose,
        #[serde(default)]
        reason: Loose,
    },
    Marker(String),
    #[default]
    #[serde(skip)]
    Absent,
    Other(serde::de::IgnoredAny),
}
/// Used only to explain a failed parse: a page of an API version we do not know is better
/// reported as that than as whatever structural mismatch it caused.
#[derive(Deserialize)]
struct JsonMetaOnly {
    meta: Option<JsonMeta>,
}

#[derive(Deserialize)]
struct JsonFile {
    filename: String,
    url: String,
    hashes: Option<JsonHashes>,
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
    /// PEP 740: a URL, or null.
    provenance: Option<String>,
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
///
/// Files are validated as they are read and `versions` counted as it is read, so a page past
/// [`MAX_FILES`] or [`MAX_VERSIONS`] is refused when the reader meets the first entry too many:
/// the memory spent on it is bounded by the limits, not by what the upstream sent.
pub fn parse_project_json(
    body: &[u8],
    page_url: &Url,
    expected: &ProjectName,
) -> Result<ProjectPage, PageError> {
    let kind = PageKind::ProjectPage;
    let at = PageLocation::of(page_url);
    check_size(body, kind, &at)?;
    let reading = Reading {
        page_url,
        passed: Cell::new(None),
    };
    // A page big enough to list more files than the limit is first counted without building
    // anything: one past the limit is then refused holding nothing but its body. (Reading it
    // to the limit would cost about 100 MB of entries before the refusal.)
    if body.len() > MAX_FILES.saturating_mul(SMALLEST_FILE) {
        let mut counting = serde_json::Deserializer::from_slice(body);
        // A page the count cannot read is left for the reading below to report.
        let _ = Counting(&reading).deserialize(&mut counting);
    }
    let read = match reading.passed.get() {
        Some(_) => Err(de::Error::custom("past a limit")),
        None => {
            let mut deserializer = serde_json::Deserializer::from_slice(body);
            (&reading)
                .deserialize(&mut deserializer)
                .and_then(|page| deserializer.end().map(|()| page))
        }
    };
    let page = match (read, reading.passed.get()) {
        (Ok(page), _) => page,
        (Err(_), Some(passed)) => {
            let (project, limit) = (expected.clone(), passed.limit());
            return Err(match passed {
                Passed::Files => PageError::TooManyFiles { project, at, limit },
                Passed::Versions => PageError::TooManyVersions { project, at, limit },
            });
        }
        (Err(error), None) => return Err(json_error(body, kind, &at, error)),
    };
    check_api_version(page.meta.as_ref(), kind, &at)?;
    let versions = match page.versions {
        Some(versions) => versions,
        None => versions_from_files(&page.files),
    };
    let status = project_status(&page.project_status, page.meta.as_ref());
    Ok(ProjectPage {
        name: expected.clone(),
        files: page.files,
        versions,
        status,
        dropped: page.dropped,
    })
}

/// Which limit a page passed, found by the readers that count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Passed {
    Files,
    Versions,
}

impl Passed {
    fn limit(self) -> usize {
        match self {
            Passed::Files => MAX_FILES,
            Passed::Versions => MAX_VERSIONS,
        }
    }
}

/// What the readers of one page share: where relative links resolve, and the limit a reader
/// stopped at (serde's error cannot carry it).
struct Reading<'a> {
    page_url: &'a Url,
    passed: Cell<Option<Passed>>,
}

impl Reading<'_> {
    /// Stops the page: `passed` is remembered for the error the caller builds.
    fn stop<E: de::Error>(&self, passed: Passed) -> E {
        self.passed.set(Some(passed));
        E::custom(format_args!("more than {} entries", passed.limit()))
    }
}

/// A project page as read: its files already validated (the unusable ones counted).
struct ReadPage {
    meta: Option<JsonMeta>,
    files: Vec<FileEntry>,
    dropped: usize,
    versions: Option<Vec<String>>,
    project_status: JsonProjectStatus,
}

/// The members of a project page that wheelgate reads; any other is skipped.
#[derive(Deserialize)]
#[serde(field_identifier)]
enum PageField {
    #[serde(rename = "meta")]
    Meta,
    #[serde(rename = "files")]
    Files,
    #[serde(rename = "versions")]
    Versions,
    #[serde(rename = "project-status")]
    ProjectStatus,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for &Reading<'_> {
    type Value = ReadPage;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ReadPage, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &Reading<'_> {
    type Value = ReadPage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PEP 691 project page (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadPage, A::Error> {
        let mut meta = None;
        let mut files = None;
        let mut versions = None;
        let mut project_status = None;
        while let Some(field) = map.next_key::<PageField>()? {
            match field {
                PageField::Meta if meta.is_some() => {
                    return Err(de::Error::duplicate_field("meta"))
                }
                PageField::Meta => meta = Some(map.next_value::<Option<JsonMeta>>()?),
                PageField::Files if files.is_some() => {
                    return Err(de::Error::duplicate_field("files"))
                }
                PageField::Files => files = Some(map.next_value_seed(FilesSeed(self))?),
                PageField::Versions if versions.is_some() => {
                    return Err(de::Error::duplicate_field("versions"))
                }
                PageField::Versions => versions = Some(map.next_value_seed(VersionsSeed(self))?),
                PageField::ProjectStatus => project_status = Some(map.next_value()?),
                PageField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (files, dropped) = files.unwrap_or_default();
        Ok(ReadPage {
            meta: meta.flatten(),
            files,
            dropped,
            versions: versions.flatten(),
            project_status: project_status.unwrap_or_default(),
        })
    }
}

/// The fewest bytes a file takes in `files`: `{"filename":"","url":""},`.
const SMALLEST_FILE: usize = 25;

/// Counts a page's `files` and `versions` without keeping anything, stopping at the first entry
/// past a limit (recorded in the reading).
struct Counting<'r, 'a>(&'r Reading<'a>);

/// Counts the entries of one list, as [`IgnoredAny`], up to `limit`.
struct CountList<'r, 'a>(&'r Reading<'a>, Passed);

impl<'de> DeserializeSeed<'de> for Counting<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Counting<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a PEP 691 project page (a JSON object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(field) = map.next_key::<PageField>()? {
            match field {
                PageField::Files => map.next_value_seed(CountList(self.0, Passed::Files))?,
                PageField::Versions => map.next_value_seed(CountList(self.0, Passed::Versions))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for CountList<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CountList<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut read = 0;
        while seq.next_element::<IgnoredAny>()?.is_some() {
            if read == self.1.limit() {
                return Err(self.0.stop(self.1));
            }
            read += 1;
        }
        Ok(())
    }

    // Anything else is left for the reading to judge.
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        IgnoredAny.visit_map(map).map(|_| ())
    }
}

/// Reads `files`, each file validated as it is read and the page stopped at the first file past
/// [`MAX_FILES`] (an unusable file counts: it cost the reading all the same).
struct FilesSeed<'r, 'a>(&'r Reading<'a>);

impl<'de> DeserializeSeed<'de> for FilesSeed<'_, '_> {
    type Value = (Vec<FileEntry>, usize);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for FilesSeed<'_, '_> {
    type Value = (Vec<FileEntry>, usize);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of files")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut files = Vec::new();
        let mut dropped = 0;
        while let Some(raw) = seq.next_element::<JsonFile>()? {
            if files.len() + dropped == MAX_FILES {
                return Err(self.0.stop(Passed::Files));
            }
            match json_file(raw, self.0.page_url) {
                Some(entry) => files.push(entry),
                None => dropped += 1,
            }
        }
        Ok((files, dropped))
    }
}

/// Reads PEP 700 `versions` (or its absence), keeping the entries that can be versions
/// ([`is_version_text`]) and stopping the page at the first entry past [`MAX_VERSIONS`].
struct VersionsSeed<'r, 'a>(&'r Reading<'a>);

/// One entry of `versions`: a string, or anything else (skipped).
#[derive(Deserialize)]
#[serde(untagged)]
enum VersionEntry {
    Text(String),
    Other(IgnoredAny),
}

impl<'de> DeserializeSeed<'de> for VersionsSeed<'_, '_> {
    type Value = Option<Vec<String>>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for VersionsSeed<'_, '_> {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of versions")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut versions = Vec::new();
        let mut read = 0;
        while let Some(entry) = seq.next_element::<VersionEntry>()? {
            if read == MAX_VERSIONS {
                return Err(self.0.stop(Passed::Versions));
            }
            read += 1;
            if let VersionEntry::Text(text) = entry {
                let text = text.trim();
                if is_version_text(text) {
                    versions.push(text.to_owned());
                }
            }
        }
        Ok(Some(versions))
    }
}

/// A file's `hashes` dictionary, read straight into [`Hashes`] (which keeps a bounded number):
/// a dictionary of a million digests costs time linear in its size and no memory.
struct JsonHashes {
    hashes: Hashes,
    /// A sha256 that is not one: the file is unusable.
    bad_sha256: bool,
}

impl<'de> Deserialize<'de> for JsonHashes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonHashes, D::Error> {
        deserializer.deserialize_map(HashesVisitor)
    }
}

struct HashesVisitor;

impl<'de> Visitor<'de> for HashesVisitor {
    type Value = JsonHashes;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a dictionary of digests")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonHashes, A::Error> {
        let mut read = JsonHashes {
            hashes: Hashes::default(),
            bad_sha256: false,
        };
        while let Some(algorithm) = map.next_key::<Cow<'de, str>>()? {
            if let Some(value) = map.next_value::<Option<Cow<'de, str>>>()? {
                if read.hashes.add(&algorithm, &value).is_err() {
                    read.bad_sha256 = true;
                }
            }
        }
        Ok(read)
    }
}

/// The page's PEP 792 status: the top-level `project-status`, else the `meta` strings.
fn project_status(top: &JsonProjectStatus, meta: Option<&JsonMeta>) -> ProjectStatus {
    match top {
        JsonProjectStatus::Object {
            status,
            state,
            reason,
        } => ProjectStatus::from_page(status.text().or(state.text()), reason.text()),
        JsonProjectStatus::Marker(marker) => ProjectStatus::from_page(Some(marker), None),
        JsonProjectStatus::Absent | JsonProjectStatus::Other(_) => match meta {
            Some(meta) => ProjectStatus::from_page(
                meta.project_status.text(),
                meta.project_status_reason.text(),
            ),
            None => ProjectStatus::default(),
        },
    }
}

fn json_file(raw: JsonFile, page_url: &Url) -> Option<FileEntry> {
    let filename = DistFilename::parse(&raw.filename).ok()?;
    let (url, fragment) = resolve_file_url(page_url, &raw.url)?;
    let mut hashes = match raw.hashes {
        Some(JsonHashes {
            bad_sha256: true, ..
        }) => return None,
        Some(read) => read.hashes,
        None => Hashes::default(),
    };
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
        // A provenance link that cannot be used leaves the file without provenance, not unusable.
        provenance: raw
            .provenance
            .and_then(|href| resolve_file_url(page_url, &href))
            .map(|(url, _)| url),
        origin: None,
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
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::simple::digest::FileKey;
    use crate::simple::page::testing::*;
    use crate::simple::page::{StatusMarker, MAX_VERSION_LEN};

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
    fn json_provenance_and_project_status() {
        let body = format!(
            r#"{{"meta":{{"api-version":"1.4"}},"name":"foo",
            "project-status":{{"status":"Archived","reason":"moved to bar"}},
            "files":[
              {{"filename":"foo-1.0.tar.gz","url":"https://files.example.invalid/foo-1.0.tar.gz",
                "hashes":{{"sha256":"{HEX_A}"}},
                "provenance":"https://index.example.invalid/integrity/foo/1.0/foo-1.0.tar.gz/provenance"}},
              {{"filename":"foo-1.1.tar.gz","url":"https://files.example.invalid/foo-1.1.tar.gz",
                "hashes":{{}},"provenance":"../../files/foo-1.1.tar.gz.provenance#frag"}},
              {{"filename":"foo-1.2.tar.gz","url":"https://files.example.invalid/foo-1.2.tar.gz",
                "hashes":{{}},"provenance":null}},
              {{"filename":"foo-1.3.tar.gz","url":"https://files.example.invalid/foo-1.3.tar.gz",
                "hashes":{{}},"provenance":"javascript:alert(1)"}}
            ]}}"#
        );
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(
            page.dropped, 0,
            "a bad provenance link does not drop its file"
        );
        assert_eq!(
            provenance_urls(&page),
            [
                Some("https://index.example.invalid/integrity/foo/1.0/foo-1.0.tar.gz/provenance"),
                Some("https://index.example.invalid/files/foo-1.1.tar.gz.provenance"),
                None,
                None
            ]
        );
        assert_eq!(page.status.marker, StatusMarker::Archived);
        assert_eq!(page.status.reason.as_deref(), Some("moved to bar"));
    }

    #[test]
    fn json_project_status_is_read_leniently() {
        // `top` is a top-level member, `meta` members of `meta`, each with a leading comma.
        let status = |top: &str, meta: &str| {
            let body = format!(r#"{{"meta":{{"api-version":"1.4"{meta}}}{top},"files":[]}}"#);
            parse_project_json(body.as_bytes(), &page_url(), &foo())
                .unwrap_or_else(|e| panic!("{body}: {e}"))
                .status
        };
        let marker = |top: &str| status(top, "").marker;
        assert_eq!(marker(""), StatusMarker::Active);
        assert_eq!(
            marker(r#","project-status":{"status":"quarantined"}"#),
            StatusMarker::Quarantined
        );
        // The PEP's text once spelt the key `state`; `status` wins when both are there.
        assert_eq!(
            marker(r#","project-status":{"state":"deprecated"}"#),
            StatusMarker::Deprecated
        );
        assert_eq!(
            marker(r#","project-status":{"state":"deprecated","status":"archived"}"#),
            StatusMarker::Archived
        );
        assert_eq!(
            marker(r#","project-status":"archived""#),
            StatusMarker::Archived
        );
        // The specification's example puts the strings in `meta`.
        let in_meta = status(
            "",
            r#","project-status":"archived","project-status-reason":"done""#,
        );
        assert_eq!(in_meta.marker, StatusMarker::Archived);
        assert_eq!(in_meta.reason.as_deref(), Some("done"));
        // Shapes that make no sense are no status, and the page still parses.
        for odd in [
            r#","project-status":null"#,
            r#","project-status":7"#,
            r#","project-status":{"status":["archived"],"reason":1}"#,
            r#","project-status":{}"#,
            r#","project-status":{"status":"not a marker"}"#,
        ] {
            assert!(status(odd, "").is_default(), "{odd}");
        }
        assert!(status("", r#","project-status":{"status":"archived"}"#).is_default());
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

    /// `n` valid files `foo-<i>.tar.gz`, as the entries of a `files` list.
    fn tiny_files(n: usize) -> String {
        (0..n)
            .map(|i| format!(r#"{{"filename":"foo-{i}.tar.gz","url":"/f/{i}"}}"#))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn json_files_past_the_limit_stop_the_reading() {
        let page = |files: &str, tail: &str| {
            format!(r#"{{"meta":{{"api-version":"1.1"}},"files":[{files}{tail}"#)
        };
        let at_limit = page(&tiny_files(MAX_FILES), "]}");
        let read = parse_project_json(at_limit.as_bytes(), &page_url(), &foo()).unwrap();
        assert_eq!(read.files.len(), MAX_FILES);
        // One file more, then bytes that are not JSON at all: the reader must stop at the file
        // past the limit, never reaching them.
        let past = page(&tiny_files(MAX_FILES + 1), ", this is not JSON");
        let err = parse_project_json(past.as_bytes(), &page_url(), &foo()).unwrap_err();
        assert!(
            matches!(
                err,
                PageError::TooManyFiles {
                    limit: MAX_FILES,
                    ..
                }
            ),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("of foo ")
                && message.contains("index.example.invalid/simple/foo/")
                && message.contains(&MAX_FILES.to_string()),
            "{message}"
        );
        // Unusable files count as well: they cost the reading all the same.
        let junk = vec![r#"{"filename":"x","url":"y"}"#; MAX_FILES + 1].join(",");
        let err =
            parse_project_json(page(&junk, "]}").as_bytes(), &page_url(), &foo()).unwrap_err();
        assert!(matches!(err, PageError::TooManyFiles { .. }), "{err}");
    }

    #[test]
    fn json_versions_are_validated_and_capped() {
        let page = |versions: &str| {
            format!(r#"{{"meta":{{"api-version":"1.1"}},"files":[],"versions":{versions}}}"#)
        };
        let read = |versions: &str| {
            parse_project_json(page(versions).as_bytes(), &page_url(), &foo()).map(|p| p.versions)
        };
        let long = "1".repeat(MAX_VERSION_LEN + 1);
        assert_eq!(
            read(&format!(
                r#"["1.0"," 2.0rc1 ","1!3.0+local.7","", "<script>","a b",7,null,{{}},["1"],"{long}"]"#
            ))
            .unwrap(),
            ["1.0", "2.0rc1", "1!3.0+local.7"]
        );
        assert_eq!(read("[]").unwrap(), Vec::<String>::new());
        assert_eq!(
            read("null").unwrap(),
            Vec::<String>::new(),
            "derived from no files"
        );
        assert!(matches!(read("3"), Err(PageError::Json { .. })));

        let many = |n: usize| {
            let list = vec![r#""1""#; n].join(",");
            format!("[{list}")
        };
        assert_eq!(
            read(&format!("{}]", many(MAX_VERSIONS))).unwrap().len(),
            MAX_VERSIONS
        );
        // Past the limit the reader stops before the garbage that follows.
        let err = read(&format!("{}, not JSON", many(MAX_VERSIONS + 1))).unwrap_err();
        assert!(
            matches!(
                err,
                PageError::TooManyVersions {
                    limit: MAX_VERSIONS,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("versions"), "{err}");
    }

    /// A hostile `hashes` dictionary of 40 000 digests is read in linear time and kept bounded.
    #[test]
    fn json_huge_hashes_dictionary_is_linear_and_bounded() {
        let digests: Vec<String> = (0..40_000)
            .map(|n| format!(r#""algo{n}":"abcdef""#))
            .collect();
        let files: Vec<String> = (0..3)
            .map(|i| {
                format!(
                    r#"{{"filename":"foo-{i}.tar.gz","url":"/f/{i}","hashes":{{{},"sha256":"{HEX_A}"}}}}"#,
                    digests.join(",")
                )
            })
            .collect();
        let body = format!(
            r#"{{"meta":{{"api-version":"1.1"}},"files":[{}]}}"#,
            files.join(",")
        );
        let started = std::time::Instant::now();
        let page = parse_project_json(body.as_bytes(), &page_url(), &foo()).unwrap();
        let elapsed = started.elapsed();
        assert!(
            elapsed < std::time::Duration::from_secs(1),
            "120 000 digests took {elapsed:?}"
        );
        assert_eq!(page.files.len(), 3);
        for file in &page.files {
            assert_eq!(file.sha256, Some(digest(HEX_A)));
            assert_eq!(
                file.other_hashes.len(),
                super::super::hashes::MAX_OTHER_HASHES
            );
        }
        // A bad sha256 anywhere in the dictionary still makes the file unusable.
        let bad = br#"{"meta":{"api-version":"1.1"},"files":[
            {"filename":"foo-1.tar.gz","url":"/f","hashes":{"md5":"ab","SHA256":"zz","x":null}}]}"#;
        let page = parse_project_json(bad, &page_url(), &foo()).unwrap();
        assert_eq!((page.files.len(), page.dropped), (0, 1));
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
}
