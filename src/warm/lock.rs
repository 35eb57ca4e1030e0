//! What uv.lock and pylock.toml share: packages that name their files (an sdist and wheels),
//! each with its URL or path, sometimes its filename, and its digests.
//!
//! Both formats' file tables are read into one [`LockFile`] (the keys they do not share are
//! simply absent in the other), and a package becomes a [`Requirement`] the same way in both:
//! the filename from `filename`/`name` or the last segment of `url` or `path`, the sha256 from
//! `hash = "sha256:…"` (uv) or `hashes = { sha256 = "…" }` (PEP 751). The URL itself is dropped.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::input::{
    dist_filename, last_segment, prefixed_sha256, project_name, read_text, InputError, LockedFile,
    Requirement, Skipped, Wanted, WarmList,
};
use crate::simple::Sha256Digest;

/// A file of a lock, in either format.
#[derive(Deserialize)]
pub struct LockFile {
    /// PEP 751's filename.
    name: Option<String>,
    /// uv.lock's filename.
    filename: Option<String>,
    url: Option<String>,
    path: Option<String>,
    /// uv.lock: `algorithm:hex`.
    hash: Option<String>,
    /// PEP 751: algorithm to hex.
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// The files of a package, under the same keys in both formats (flattened into each format's
/// package table).
#[derive(Deserialize)]
pub struct LockFiles {
    sdist: Option<LockFile>,
    #[serde(default)]
    wheels: Vec<LockFile>,
}

/// A package of a lock, as both formats give it.
pub struct Package<'a> {
    pub name: &'a str,
    pub version: Option<&'a str>,
    /// Why no index serves it (a VCS checkout, a local project…), if none does.
    pub not_from_an_index: Option<&'static str>,
    pub files: &'a LockFiles,
}

/// The lock file at `path`, parsed as TOML into `T`.
pub fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, InputError> {
    parse(&read_text(path)?, path)
}

/// `text`, the lock file at `path`, parsed as TOML into `T`.
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, InputError> {
    toml::from_str(text).map_err(|source| InputError::Toml {
        path: path.to_owned(),
        source,
    })
}

/// Adds `package` of the lock at `path` to `list`: a requirement for its files, or a skipped
/// entry when no index serves it.
pub fn add(list: &mut WarmList, path: &Path, package: Package<'_>) -> Result<(), InputError> {
    let label = match package.version {
        Some(version) => format!("{} {version}", package.name),
        None => package.name.to_owned(),
    };
    let origin = format!("{} package {label}", path.display());
    if let Some(reason) = package.not_from_an_index {
        list.skipped.push(Skipped {
            what: origin,
            reason,
        });
        return Ok(());
    }
    let error = |reason: String| InputError::Package {
        path: path.to_owned(),
        package: label.clone(),
        reason,
    };
    let project = project_name(package.name).map_err(&error)?;
    let files = package
        .files
        .sdist
        .iter()
        .chain(&package.files.wheels)
        .map(locked_file)
        .collect::<Result<Vec<_>, _>>()
        .map_err(&error)?;
    if files.is_empty() {
        return Err(error(
            "it lists no sdist and no wheel, nor another source: lock again".to_owned(),
        ));
    }
    list.requirements.push(Requirement {
        project,
        wanted: Wanted::Files(files),
        origin,
    });
    Ok(())
}

fn locked_file(file: &LockFile) -> Result<LockedFile, String> {
    let name = file
        .filename
        .clone()
        .or_else(|| file.name.clone())
        .or_else(|| file.url.as_deref().and_then(last_segment))
        .or_else(|| file.path.as_deref().and_then(last_segment))
        .ok_or("a file has no url, path or name to name it")?;
    let filename = dist_filename(&name)?;
    let from_hashes = file
        .hashes
        .iter()
        .find(|(algorithm, _)| algorithm.eq_ignore_ascii_case("sha256"))
        .map(|(_, hex)| Sha256Digest::parse_hex(hex).map_err(|e| e.to_string()))
        .transpose();
    let sha256 = match (&file.hash, from_hashes) {
        (_, Err(error)) => Err(error),
        (_, Ok(Some(digest))) => Ok(Some(digest)),
        (Some(hash), Ok(None)) => prefixed_sha256(hash),
        (None, Ok(None)) => Ok(None),
    }
    .map_err(|e| format!("{name}: {e}"))?;
    Ok(LockedFile { filename, sha256 })
}
