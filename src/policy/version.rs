//! PEP 440 versions and specifier sets, as download rules use them.
//!
//! A thin wrapper over `pep440_rs` so that rules compare versions the way pip does (`9.0` is older
//! than `10.0`, `1.0rc1` older than `1.0`) and never with a hand-written parser, and so that the
//! errors name the text that failed and say what a valid one looks like.

use std::fmt;
use std::str::FromStr;

/// A PEP 440 version, ordered as pip orders them.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pep440_rs::Version);

/// A PEP 440 specifier set such as `>=1.2,<2`.
#[derive(Clone, PartialEq, Eq)]
pub struct Specifiers(pep440_rs::VersionSpecifiers);

/// Why a text is not a PEP 440 version or specifier set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("'{text}' is not a PEP 440 version ({reason}); versions look like '3.0', '2.1.post1' or '1.0rc2'")]
    Version { text: String, reason: String },
    #[error("'{text}' is not a PEP 440 specifier set ({reason}); specifier sets look like '>=1.2,<2' or '~=3.1'")]
    Specifiers { text: String, reason: String },
}

/// Untrusted text (a filename's version comes from an upstream) is cut short and kept on one line
/// before it goes into an error message.
fn shown(text: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let mut out: String = text
        .chars()
        .take(MAX_SHOWN)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().count() > MAX_SHOWN {
        out.push('…');
    }
    out
}

/// The parser's reason, on one line.
fn reason(error: impl fmt::Display) -> String {
    error
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl Version {
    pub fn parse(text: &str) -> Result<Version, VersionError> {
        pep440_rs::Version::from_str(text.trim())
            .map(Version)
            .map_err(|error| VersionError::Version {
                text: shown(text),
                reason: reason(error),
            })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Version({})", self.0)
    }
}

impl Specifiers {
    pub fn parse(text: &str) -> Result<Specifiers, VersionError> {
        pep440_rs::VersionSpecifiers::from_str(text)
            .map(Specifiers)
            .map_err(|error| VersionError::Specifiers {
                text: shown(text),
                reason: reason(error),
            })
    }

    /// Whether `version` satisfies every specifier of the set (an empty set accepts everything).
    pub fn contains(&self, version: &Version) -> bool {
        self.0.contains(&version.0)
    }
}

impl fmt::Display for Specifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Specifiers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Specifiers({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    #[test]
    fn versions_order_as_pep_440_says() {
        assert!(v("9.0") < v("10.0"));
        assert!(v("1.0rc1") < v("1.0"));
        assert!(v("1.0") < v("1.0.post1"));
        assert!(v("1.0.dev1") < v("1.0a1"));
        assert_eq!(v("1.0"), v("1.0.0"));
        assert_eq!(v("1!1.0").cmp(&v("2.0")), std::cmp::Ordering::Greater);
    }

    #[test]
    fn invalid_versions_name_the_text() {
        let error = Version::parse("not-a-version").unwrap_err();
        assert!(matches!(error, VersionError::Version { .. }));
        let message = error.to_string();
        assert!(
            message.contains("'not-a-version' is not a PEP 440 version"),
            "{message}"
        );
        let message = Version::parse("x\ny").unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn specifier_sets_contain_versions() {
        let set = Specifiers::parse(">=1.2,<2").unwrap();
        assert!(set.contains(&v("1.2")));
        assert!(set.contains(&v("1.9.9")));
        assert!(!set.contains(&v("2.0")));
        assert!(!set.contains(&v("1.1")));
        assert!(Specifiers::parse("~=3.1").unwrap().contains(&v("3.4")));
        assert!(Specifiers::parse("").unwrap().contains(&v("0.1")));
        let message = Specifiers::parse(">>1").unwrap_err().to_string();
        assert!(
            message.contains("'>>1' is not a PEP 440 specifier set"),
            "{message}"
        );
    }
}
