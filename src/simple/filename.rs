//! Distribution filenames: safe to use as a path component, and classified.
//!
//! A filename arrives from an upstream page or a client path and ends up in our URLs, our store and
//! our policy decisions (`pkg.file.kind`, `pkg.version.id`), so it is checked for anything that could
//! escape a directory or confuse a log before it is accepted. Classification is deliberately
//! forgiving: a wheel or sdist whose name or version cannot be read is still a valid file of kind
//! [`DistKind::Other`], because indexes do carry such files and refusing them would hide them from
//! users; policy treats `other` files separately.

use std::fmt;
use std::ops::Range;

use super::name::ProjectName;

/// Longest filename accepted, in bytes: the usual file-system limit for one path component.
pub const MAX_FILENAME_LEN: usize = 255;

/// Source distribution suffixes, longest first so `.tar.gz` is found before `.tar`.
const SDIST_SUFFIXES: [&str; 6] = [".tar.bz2", ".tar.gz", ".tar.xz", ".tgz", ".zip", ".tar"];
const WHEEL_SUFFIX: &str = ".whl";

/// What kind of distribution a file is, as policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DistKind {
    Wheel,
    Sdist,
    Other,
}

impl DistKind {
    /// The lowercase name used in policy expressions (`pkg.file.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            DistKind::Wheel => "wheel",
            DistKind::Sdist => "sdist",
            DistKind::Other => "other",
        }
    }
}

impl fmt::Display for DistKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string cannot be used as a distribution filename.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilenameError {
    #[error("the filename is empty: a file link must end with the distribution's filename")]
    Empty,
    #[error("the filename {shown} is {len} bytes long, longer than the {max} allowed")]
    TooLong {
        shown: String,
        len: usize,
        max: usize,
    },
    #[error(
        "the filename {shown} contains the path separator {found:?}: a filename must be a single \
         path component"
    )]
    Separator { shown: String, found: char },
    #[error("the filename {shown} contains the control character {found:?}, which is not allowed")]
    ControlChar { shown: String, found: char },
    #[error(
        "the filename {shown} starts with `.`: hidden names and `.`/`..` are not distributions"
    )]
    LeadingDot { shown: String },
}

/// Quotes untrusted input for an error message, escaping control characters and cutting it short so
/// that neither a terminal nor a log line can be abused.
fn shown(raw: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let mut out: String = raw.chars().take(MAX_SHOWN).collect();
    if out.len() < raw.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// A validated distribution filename with its classification.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DistFilename {
    raw: String,
    kind: DistKind,
    project: Option<ProjectName>,
    /// Byte range of the version inside `raw`, so the version is available without another
    /// allocation per file on every page.
    version: Option<Range<usize>>,
}

impl DistFilename {
    /// Validates `raw` as a single safe path component, then classifies it.
    pub fn parse(raw: &str) -> Result<DistFilename, FilenameError> {
        validate_component(raw)?;
        let (kind, project, version) = classify(raw);
        Ok(DistFilename {
            raw: raw.to_owned(),
            kind,
            project,
            version,
        })
    }

    /// The filename exactly as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// Wheel, sdist or other.
    pub fn kind(&self) -> DistKind {
        self.kind
    }

    /// The normalised project name the filename spells, for wheels and sdists that could be read.
    pub fn project(&self) -> Option<&ProjectName> {
        self.project.as_ref()
    }

    /// The version exactly as the filename spells it, for wheels and sdists that could be read.
    pub fn version(&self) -> Option<&str> {
        self.version.clone().and_then(|range| self.raw.get(range))
    }
}

impl fmt::Display for DistFilename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl fmt::Debug for DistFilename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistFilename")
            .field("raw", &self.raw)
            .field("kind", &self.kind)
            .field("project", &self.project)
            .field("version", &self.version())
            .finish()
    }
}

impl AsRef<str> for DistFilename {
    fn as_ref(&self) -> &str {
        &self.raw
    }
}

fn validate_component(raw: &str) -> Result<(), FilenameError> {
    if raw.is_empty() {
        return Err(FilenameError::Empty);
    }
    if raw.len() > MAX_FILENAME_LEN {
        return Err(FilenameError::TooLong {
            shown: shown(raw),
            len: raw.len(),
            max: MAX_FILENAME_LEN,
        });
    }
    // Plain ASCII (every real filename) needs no character decoding.
    let plain = crate::all_bytes(raw.as_bytes(), |b| {
        b.is_ascii_graphic() & (b != b'/') & (b != b'\\')
    });
    for c in raw.chars().filter(|_| !plain) {
        if c == '/' || c == '\\' {
            return Err(FilenameError::Separator {
                shown: shown(raw),
                found: c,
            });
        }
        // `is_control` covers NUL, the other C0 codes, DEL and C1.
        if c.is_control() {
            return Err(FilenameError::ControlChar {
                shown: shown(raw),
                found: c,
            });
        }
    }
    // Covers "." and ".." as well as hidden files.
    if raw.starts_with('.') {
        return Err(FilenameError::LeadingDot { shown: shown(raw) });
    }
    Ok(())
}

type Classified = (DistKind, Option<ProjectName>, Option<Range<usize>>);

const UNREADABLE: Classified = (DistKind::Other, None, None);

fn classify(raw: &str) -> Classified {
    if let Some(stem) = strip_suffix_ignore_case(raw, WHEEL_SUFFIX) {
        return classify_wheel(stem).unwrap_or(UNREADABLE);
    }
    for suffix in SDIST_SUFFIXES {
        if let Some(stem) = strip_suffix_ignore_case(raw, suffix) {
            return classify_sdist(stem).unwrap_or(UNREADABLE);
        }
    }
    UNREADABLE
}

fn strip_suffix_ignore_case<'a>(raw: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = raw.len().checked_sub(suffix.len())?;
    // The suffix is ASCII, so a match starts on a character boundary; `get` keeps a non-match
    // inside a multi-byte character from panicking.
    let tail = raw.get(cut..)?;
    if tail.eq_ignore_ascii_case(suffix) {
        raw.get(..cut)
    } else {
        None
    }
}

/// `{name}-{version}(-{build})?-{python}-{abi}-{platform}` (PEP 427).
fn classify_wheel(stem: &str) -> Option<Classified> {
    let mut parts = stem.split('-');
    let name = parts.next()?;
    let version = parts.next()?;
    // At most four more parts; a fifth makes the name unreadable (kept on the stack: every file
    // request parses its filename).
    let mut rest = [""; 5];
    let mut count = 0;
    for part in parts {
        if count == rest.len() {
            return None;
        }
        rest[count] = part;
        count += 1;
    }
    let tags_ok = match &rest[..count] {
        [python, abi, platform] => [python, abi, platform].iter().all(|p| !p.is_empty()),
        [build, python, abi, platform] => {
            build.starts_with(|c: char| c.is_ascii_digit())
                && [python, abi, platform].iter().all(|p| !p.is_empty())
        }
        _ => false,
    };
    if !tags_ok || !is_version_like(version) {
        return None;
    }
    let project = ProjectName::parse(name).ok()?;
    let start = name.len() + 1;
    Some((
        DistKind::Wheel,
        Some(project),
        Some(start..start + version.len()),
    ))
}

/// `{name}-{version}`, where legacy sdist names may themselves contain `-`: the split is at the last
/// `-` followed by something that reads as a version.
fn classify_sdist(stem: &str) -> Option<Classified> {
    let mut search_end = stem.len();
    while let Some(dash) = stem.get(..search_end).and_then(|s| s.rfind('-')) {
        let name = stem.get(..dash)?;
        let version = stem.get(dash + 1..)?;
        if is_version_like(version) {
            if let Ok(project) = ProjectName::parse(name) {
                return Some((DistKind::Sdist, Some(project), Some(dash + 1..stem.len())));
            }
        }
        search_end = dash;
    }
    None
}

/// A loose test for "this is where a version starts": a digit, or `v` followed by a digit, and only
/// characters that PEP 440 and legacy versions use. Precise PEP 440 parsing belongs to policy.
fn is_version_like(s: &str) -> bool {
    let mut chars = s.chars();
    let starts_ok = match chars.next() {
        Some(c) if c.is_ascii_digit() => true,
        Some('v' | 'V') => chars.next().is_some_and(|c| c.is_ascii_digit()),
        _ => false,
    };
    starts_ok
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '!' | '+' | '_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, kind: DistKind, project: Option<&str>, version: Option<&str>) {
        let f = DistFilename::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        assert_eq!(f.as_str(), raw);
        assert_eq!(f.kind(), kind, "{raw}");
        assert_eq!(f.project().map(ProjectName::as_str), project, "{raw}");
        assert_eq!(f.version(), version, "{raw}");
    }

    #[test]
    fn wheels() {
        check(
            "foo-1.0-py3-none-any.whl",
            DistKind::Wheel,
            Some("foo"),
            Some("1.0"),
        );
        check(
            "Foo_Bar-2.3.1-1-cp311-cp311-manylinux_2_17_x86_64.whl",
            DistKind::Wheel,
            Some("foo-bar"),
            Some("2.3.1"),
        );
        check(
            "torch-2.1.0+cpu-cp311-cp311-linux_x86_64.whl",
            DistKind::Wheel,
            Some("torch"),
            Some("2.1.0+cpu"),
        );
        check(
            "pkg-1!2.0rc1-py2.py3-none-any.WHL",
            DistKind::Wheel,
            Some("pkg"),
            Some("1!2.0rc1"),
        );
    }

    #[test]
    fn malformed_wheels_are_other() {
        for raw in [
            "foo-1.0-any.whl",
            "foo-1.0-py3-none-any-extra-more.whl",
            "foo-1.0-x-py3-none-any.whl",
            "foo--py3-none-any.whl",
            "foo-1.0--none-any.whl",
            "-1.0-py3-none-any.whl",
            "foo-one-py3-none-any.whl",
            "ü-1.0-py3-none-any.whl",
        ] {
            check(raw, DistKind::Other, None, None);
        }
    }

    #[test]
    fn sdists() {
        check("foo-1.0.tar.gz", DistKind::Sdist, Some("foo"), Some("1.0"));
        check(
            "foo-bar-1.0.tar.gz",
            DistKind::Sdist,
            Some("foo-bar"),
            Some("1.0"),
        );
        check(
            "foo_bar-2.0.post1.zip",
            DistKind::Sdist,
            Some("foo-bar"),
            Some("2.0.post1"),
        );
        check("Foo-v1.2.tgz", DistKind::Sdist, Some("foo"), Some("v1.2"));
        check("foo-1.0.tar.bz2", DistKind::Sdist, Some("foo"), Some("1.0"));
        check("foo-1.0.tar.xz", DistKind::Sdist, Some("foo"), Some("1.0"));
        check("foo-1.0.tar", DistKind::Sdist, Some("foo"), Some("1.0"));
        check(
            "py-2fa-1.0.TAR.GZ",
            DistKind::Sdist,
            Some("py-2fa"),
            Some("1.0"),
        );
        // The last dash followed by a version wins, even if the name holds digits after a dash.
        check(
            "foo-2-3.0.tar.gz",
            DistKind::Sdist,
            Some("foo-2"),
            Some("3.0"),
        );
    }

    #[test]
    fn unreadable_sdists_are_other() {
        for raw in ["foo.tar.gz", "foo-bar.tar.gz", "-1.0.tar.gz", "foo-.zip"] {
            check(raw, DistKind::Other, None, None);
        }
    }

    #[test]
    fn other_kinds() {
        for raw in [
            "foo-1.0-py3.8.egg",
            "foo-1.0.win32.exe",
            "foo-1.0.msi",
            "foo-1.0-1.noarch.rpm",
            "foo-1.0.dmg",
            "README",
        ] {
            check(raw, DistKind::Other, None, None);
        }
    }

    #[test]
    fn unsafe_names_are_rejected() {
        assert_eq!(DistFilename::parse(""), Err(FilenameError::Empty));
        for raw in [".", ".."] {
            assert!(matches!(
                DistFilename::parse(raw),
                Err(FilenameError::LeadingDot { .. })
            ));
        }
        assert!(matches!(
            DistFilename::parse(".hidden-1.0.tar.gz"),
            Err(FilenameError::LeadingDot { .. })
        ));
        assert!(matches!(
            DistFilename::parse("a/b.whl"),
            Err(FilenameError::Separator { found: '/', .. })
        ));
        assert!(matches!(
            DistFilename::parse("..\\b.whl"),
            Err(FilenameError::Separator { found: '\\', .. })
        ));
        assert!(matches!(
            DistFilename::parse("foo\0.whl"),
            Err(FilenameError::ControlChar { found: '\0', .. })
        ));
        assert!(matches!(
            DistFilename::parse("foo\n-1.0.tar.gz"),
            Err(FilenameError::ControlChar { .. })
        ));
        let long = format!("{}-1.0.tar.gz", "a".repeat(300));
        assert!(matches!(
            DistFilename::parse(&long),
            Err(FilenameError::TooLong { len, .. }) if len == long.len()
        ));
        let exact = format!("{}.tar.gz", "a".repeat(MAX_FILENAME_LEN - 7));
        assert!(DistFilename::parse(&exact).is_ok());
    }

    #[test]
    fn error_messages_escape_and_shorten() {
        let msg = DistFilename::parse("evil\x1b[31m.whl")
            .unwrap_err()
            .to_string();
        assert!(!msg.contains('\x1b'), "{msg}");
        let long = "b".repeat(1000);
        let msg = DistFilename::parse(&format!("{long}/x"))
            .unwrap_err()
            .to_string();
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn multibyte_suffix_boundary_does_not_panic() {
        for raw in ["é.whl", "aé", "ééééé", "x.tar.gé"] {
            assert!(DistFilename::parse(raw).is_ok(), "{raw}");
        }
    }
}
