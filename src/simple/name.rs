//! Project names, validated and PEP 503-normalised once.
//!
//! Every lookup in the proxy (cache keys, policy rules, package groups, URLs) is by the normalised
//! name, so `Foo_Bar`, `foo.bar` and `FOO--bar` must become the same value before anything else sees
//! them. Holding the name in a type that can only be built through [`ProjectName::parse`] makes it
//! impossible to forget that step.

use std::fmt;

/// The longest project name accepted, in bytes. Real names are far shorter; the bound keeps
/// hostile paths and upstream pages from turning names into an allocation vector.
pub const MAX_NAME_LEN: usize = 200;

/// Why a string is not a valid project name (PEP 508 name syntax).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the project name is empty: give a name such as `requests`")]
    Empty,
    #[error(
        "the project name is {len} bytes long, longer than the {max} allowed: check that the path \
         holds a project name"
    )]
    TooLong { len: usize, max: usize },
    #[error(
        "the project name `{name}` contains {found:?}: names may only contain ASCII letters, digits, \
         `-`, `_` and `.`"
    )]
    InvalidChar { name: String, found: char },
    #[error(
        "the project name `{name}` starts or ends with a separator: names must begin and end with \
         an ASCII letter or digit"
    )]
    BadEdge { name: String },
}

/// A PEP 503-normalised project name: lowercase ASCII, with every run of `-`, `_` and `.` turned
/// into a single `-`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectName(String);

impl ProjectName {
    /// Validates `raw` against the PEP 508 name syntax
    /// (`^([A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9])$`, at most [`MAX_NAME_LEN`] bytes)
    /// and returns its normalised form.
    pub fn parse(raw: &str) -> Result<ProjectName, NameError> {
        let bytes = raw.as_bytes();
        if bytes.is_empty() {
            return Err(NameError::Empty);
        }
        if bytes.len() > MAX_NAME_LEN {
            return Err(NameError::TooLong {
                len: bytes.len(),
                max: MAX_NAME_LEN,
            });
        }
        // One pass: every byte must be allowed; note whether the spelling is already normal.
        let mut normalized = true;
        let mut previous_dash = false;
        for &b in bytes {
            match b {
                b'a'..=b'z' | b'0'..=b'9' => previous_dash = false,
                b'-' => {
                    normalized &= !previous_dash;
                    previous_dash = true;
                }
                b'A'..=b'Z' => {
                    normalized = false;
                    previous_dash = false;
                }
                b'_' | b'.' => {
                    normalized = false;
                    previous_dash = true;
                }
                _ => {
                    let found = raw
                        .chars()
                        .find(|&c| !(c.is_ascii_alphanumeric() || is_separator(c)));
                    return Err(NameError::InvalidChar {
                        name: raw.to_owned(),
                        found: found.unwrap_or(char::from(b)),
                    });
                }
            }
        }
        let edges_ok =
            bytes[0].is_ascii_alphanumeric() && bytes[bytes.len() - 1].is_ascii_alphanumeric();
        if !edges_ok {
            return Err(NameError::BadEdge {
                name: raw.to_owned(),
            });
        }
        // Requests name projects by their normalised spelling almost always: copy it as it is.
        if normalized {
            return Ok(ProjectName(raw.to_owned()));
        }
        // From here on `raw` is ASCII letters, digits and separators.
        let mut out = String::with_capacity(raw.len());
        let mut in_separator_run = false;
        for &b in bytes {
            if is_separator(char::from(b)) {
                if !in_separator_run {
                    out.push('-');
                }
                in_separator_run = true;
            } else {
                out.push(char::from(b.to_ascii_lowercase()));
                in_separator_run = false;
            }
        }
        Ok(ProjectName(out))
    }

    /// The normalised name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, '-' | '_' | '.')
}

/// Whether `raw` is already spelled exactly as its PEP 503 normalised form, so a request for it
/// needs no redirect. It does not validate: a string such as `-foo` is "normalised" but still fails
/// [`ProjectName::parse`], which callers run as well.
pub fn is_normalized(raw: &str) -> bool {
    let mut previous_dash = false;
    for b in raw.bytes() {
        match b {
            b'A'..=b'Z' | b'_' | b'.' => return false,
            b'-' if previous_dash => return false,
            _ => {}
        }
        previous_dash = b == b'-';
    }
    true
}

impl fmt::Display for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ProjectName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProjectName({:?})", self.0)
    }
}

impl AsRef<str> for ProjectName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ProjectName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ProjectName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_table() {
        let table = [
            ("Foo_Bar", "foo-bar"),
            ("foo.bar", "foo-bar"),
            ("FOO--bar", "foo-bar"),
            ("a-_-b", "a-b"),
            ("a--b", "a-b"),
            ("a-b-c", "a-b-c"),
            ("a._.-_b", "a-b"),
            ("requests", "requests"),
            ("Django", "django"),
            ("zope.interface", "zope-interface"),
            ("x", "x"),
            ("X", "x"),
            ("9", "9"),
            ("a1_2.B3", "a1-2-b3"),
        ];
        for (raw, want) in table {
            let name = ProjectName::parse(raw).unwrap();
            assert_eq!(name.as_str(), want, "normalising {raw}");
            assert_eq!(name.to_string(), want);
            assert!(is_normalized(want), "{want} should count as normalised");
        }
    }

    #[test]
    fn equal_after_normalisation() {
        let a = ProjectName::parse("Acme_Utils").unwrap();
        let b = ProjectName::parse("acme.utils").unwrap();
        let c = ProjectName::parse("ACME-utils").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
    }

    #[test]
    fn invalid_names() {
        assert_eq!(ProjectName::parse(""), Err(NameError::Empty));
        for raw in ["-foo", "foo-", ".foo", "foo_", "_", "-"] {
            assert!(
                matches!(ProjectName::parse(raw), Err(NameError::BadEdge { .. })),
                "{raw} should be rejected for its edges"
            );
        }
        for (raw, bad) in [
            ("foo bar", ' '),
            ("foo/bar", '/'),
            ("foo\0", '\0'),
            ("café", 'é'),
            ("a+b", '+'),
            ("..", '.'),
        ] {
            match ProjectName::parse(raw) {
                Err(NameError::InvalidChar { found, .. }) => assert_eq!(found, bad, "{raw}"),
                // `..` consists only of separators, so either error is a correct refusal.
                Err(NameError::BadEdge { .. }) if raw == ".." => {}
                other => panic!("{raw:?} gave {other:?}"),
            }
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            ProjectName::parse(&long),
            Err(NameError::TooLong { len, .. }) if len == MAX_NAME_LEN + 1
        ));
        assert!(ProjectName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn error_messages_name_the_input() {
        let err = ProjectName::parse("foo bar").unwrap_err().to_string();
        assert!(err.contains("foo bar"), "{err}");
    }

    #[test]
    fn is_normalized_detects_redirect_cases() {
        for raw in ["Foo", "foo_bar", "foo.bar", "foo--bar"] {
            assert!(!is_normalized(raw), "{raw}");
        }
        for raw in ["foo", "foo-bar", "a1-b2"] {
            assert!(is_normalized(raw), "{raw}");
        }
    }
}
