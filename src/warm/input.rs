//! What `wheelgate warm` is asked to fetch, as typed values, whichever file it came from.
//!
//! A requirements.txt pins versions (with or without hashes); a uv.lock or a pylock.toml names
//! the very files of each package with their digests. Each format has its parser beside this
//! module; all of them produce a [`WarmList`], so the driver never sees a line of any format.
//! Names are PEP 503-normalised, versions PEP 440-parsed, filenames and digests validated here,
//! once. The URLs a lock file records are dropped on purpose: warm asks wheelgate by project
//! name and filename and never contacts the index the lock was made against.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::simple::digest::{DigestError, Sha256Digest};
use crate::simple::filename::{DistFilename, FilenameError};
use crate::simple::name::{NameError, ProjectName};

/// Everything one input file asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WarmList {
    pub requirements: Vec<Requirement>,
    /// Entries that do not come from an index (a path, a VCS checkout, a direct URL, an editable
    /// project): nothing to warm, but said so.
    pub skipped: Vec<Skipped>,
}

/// One package to warm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub project: ProjectName,
    pub wanted: Wanted,
    /// Where the input says it, for messages: `requirements.txt line 4`.
    pub origin: String,
}

/// Which files of a project are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// Every file of one version (a requirements.txt pin); with `hashes`, only the files whose
    /// sha256 is one of them.
    Version {
        version: PinnedVersion,
        hashes: Vec<Sha256Digest>,
    },
    /// Exactly these files (a lock file).
    Files(Vec<LockedFile>),
}

/// A version a requirement is pinned to: `==1.0` (PEP 440 equality, so `1.0.0` matches too) or
/// `===1.0` (the same string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinnedVersion {
    Equal(pep440_rs::Version),
    Arbitrary(String),
}

impl PinnedVersion {
    /// Parses the version of `==VERSION` (`arbitrary` for `===VERSION`).
    pub fn parse(text: &str, arbitrary: bool) -> Result<PinnedVersion, String> {
        if arbitrary {
            return Ok(PinnedVersion::Arbitrary(text.to_owned()));
        }
        if text.contains('*') {
            return Err(format!(
                "`=={text}` is a wildcard, not one version: pin an exact version"
            ));
        }
        text.parse::<pep440_rs::Version>()
            .map(PinnedVersion::Equal)
            .map_err(|error| format!("`{text}` is not a PEP 440 version ({error})"))
    }

    /// Whether a file whose name spells `version` is of this version.
    pub fn matches(&self, version: &str) -> bool {
        match self {
            PinnedVersion::Equal(pinned) => version
                .parse::<pep440_rs::Version>()
                .is_ok_and(|v| &v == pinned),
            PinnedVersion::Arbitrary(pinned) => pinned == version,
        }
    }
}

impl fmt::Display for PinnedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinnedVersion::Equal(version) => write!(f, "=={version}"),
            PinnedVersion::Arbitrary(text) => write!(f, "==={text}"),
        }
    }
}

/// A file a lock names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedFile {
    pub filename: DistFilename,
    /// The sha256 the lock records; `None` when it records only other algorithms.
    pub sha256: Option<Sha256Digest>,
}

/// An entry with nothing to fetch from an index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// What it is and where: `requirements.txt line 7: -e ./tools`.
    pub what: String,
    pub reason: &'static str,
}

/// The formats `wheelgate warm` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// pip's requirements file, every requirement pinned (`name==version`, hashes optional).
    Requirements,
    /// uv's lock file.
    UvLock,
    /// A PEP 751 lock file.
    Pylock,
}

impl InputFormat {
    /// The format a file's name says: `uv.lock`, `pylock.toml` or `pylock.<name>.toml` (PEP
    /// 751), anything else a requirements file.
    pub fn of_path(path: &Path) -> InputFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        if name == "uv.lock" {
            InputFormat::UvLock
        } else if name == "pylock.toml" || (name.starts_with("pylock.") && name.ends_with(".toml"))
        {
            InputFormat::Pylock
        } else {
            InputFormat::Requirements
        }
    }
}

/// Why an input file could not be read. Each names the file and, where there is one, the line
/// or the package, and says what to change.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read {}: {source}; check the path of the file to warm (and of its -r includes)", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {source}", path.display())]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{}: {found}; this wheelgate reads {supported}: upgrade wheelgate, or lock again with a tool that writes it", path.display())]
    UnsupportedVersion {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },
    #[error("{} line {line}: {reason}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{} ({package}): {reason}", path.display())]
    Package {
        path: PathBuf,
        package: String,
        reason: String,
    },
    #[error("{}: holds no package to warm", path.display())]
    Empty { path: PathBuf },
}

/// The text of an input file.
pub fn read_text(path: &Path) -> Result<String, InputError> {
    std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })
}

/// A project name from an input, with the reason it is refused.
pub fn project_name(raw: &str) -> Result<ProjectName, String> {
    ProjectName::parse(raw).map_err(|error: NameError| error.to_string())
}

/// A filename from a lock, with the reason it is refused.
pub fn dist_filename(raw: &str) -> Result<DistFilename, String> {
    DistFilename::parse(raw).map_err(|error: FilenameError| error.to_string())
}

/// `sha256:<hex>` (any case in the algorithm) to a digest; `Ok(None)` for another algorithm.
pub fn prefixed_sha256(text: &str) -> Result<Option<Sha256Digest>, String> {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return Err(format!(
            "the hash `{text}` has no algorithm: write it as sha256:<hex>"
        ));
    };
    if !algorithm.eq_ignore_ascii_case("sha256") {
        return Ok(None);
    }
    Sha256Digest::parse_hex(hex)
        .map(Some)
        .map_err(|error: DigestError| error.to_string())
}

/// The last path segment of a URL or a path, percent-decoded: the filename a lock's `url` or
/// `path` ends with.
pub fn last_segment(location: &str) -> Option<String> {
    let without_query = location.split(['?', '#']).next().unwrap_or(location);
    let segment = without_query.rsplit(['/', '\\']).next()?;
    if segment.is_empty() {
        return None;
    }
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_follow_the_file_name() {
        for (path, format) in [
            ("uv.lock", InputFormat::UvLock),
            ("/src/app/uv.lock", InputFormat::UvLock),
            ("pylock.toml", InputFormat::Pylock),
            ("ci/pylock.dev.toml", InputFormat::Pylock),
            ("requirements.txt", InputFormat::Requirements),
            ("requirements/prod.in", InputFormat::Requirements),
            ("pylock", InputFormat::Requirements),
        ] {
            assert_eq!(InputFormat::of_path(Path::new(path)), format, "{path}");
        }
    }

    #[test]
    fn pinned_versions_match_pep_440_equal_versions() {
        let pinned = PinnedVersion::parse("1.0", false).unwrap();
        assert!(pinned.matches("1.0.0"));
        assert!(pinned.matches("1.0"));
        assert!(!pinned.matches("1.0.1"));
        assert!(!pinned.matches("not a version"));
        assert_eq!(pinned.to_string(), "==1.0");
        let arbitrary = PinnedVersion::parse("1.0", true).unwrap();
        assert!(arbitrary.matches("1.0") && !arbitrary.matches("1.0.0"));
        assert!(PinnedVersion::parse("1.*", false)
            .unwrap_err()
            .contains("wildcard"));
        assert!(PinnedVersion::parse("one", false)
            .unwrap_err()
            .contains("PEP 440"));
    }

    #[test]
    fn hashes_and_segments() {
        let hex = "ab".repeat(32);
        assert_eq!(
            prefixed_sha256(&format!("SHA256:{hex}")).unwrap(),
            Some(Sha256Digest::parse_hex(&hex).unwrap())
        );
        assert_eq!(prefixed_sha256("md5:00").unwrap(), None);
        assert!(prefixed_sha256(&hex).unwrap_err().contains("sha256:<hex>"));
        assert!(prefixed_sha256("sha256:zz").is_err());
        assert_eq!(
            last_segment("http://idx.example.invalid/f/a_b-1.0%2Blocal-py3-none-any.whl#sha256=x")
                .as_deref(),
            Some("a_b-1.0+local-py3-none-any.whl")
        );
        assert_eq!(
            last_segment("../wheels/a-1.0.tar.gz").as_deref(),
            Some("a-1.0.tar.gz")
        );
        assert_eq!(last_segment("http://idx.example.invalid/"), None);
    }
}
