//! Package group patterns (SPEC §6.1): `/*`, `/pypi/*`, `/pypi//NAME$` and `/pypi//PREFIX~`.
//!
//! A pattern is parsed once, when the configuration loads, into [`Pattern`]; every mistake an
//! operator can make in one (a name that is not PEP 503 normalised, a `~` after a separator, a
//! namespace PyPI does not have) is a [`PatternError`] that says what to write instead.

use std::fmt;

use crate::simple::name::{NameError, ProjectName};

/// What a package group covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pattern {
    /// `/*`: every package; the root group.
    Root,
    /// `/pypi/*`: every Python package.
    Python,
    /// `/pypi//PREFIX~`: the name PREFIX and every name that starts with PREFIX followed by `-`.
    Prefix(ProjectName),
    /// `/pypi//NAME$`: exactly NAME.
    Exact(ProjectName),
}

/// Why a string is not a [`Pattern`]. Each message quotes the pattern and says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error(
        "the pattern is empty; write \"/*\", \"/pypi/*\", \"/pypi//NAME$\" or \"/pypi//PREFIX~\""
    )]
    Empty,
    #[error("pattern \"{pattern}\" does not start with `/`; write \"/*\", \"/pypi/*\", \"/pypi//NAME$\" or \"/pypi//PREFIX~\"")]
    NoLeadingSlash { pattern: String },
    #[error("pattern \"{pattern}\" names the package format `{format}`; wheelgate serves Python packages only, so patterns are \"/*\" or start with \"/pypi/\"")]
    UnknownFormat { pattern: String, format: String },
    #[error("pattern \"{pattern}\" has the namespace `{namespace}`, but PyPI has no namespaces: write \"{suggestion}\" (two slashes after pypi)")]
    Namespace {
        pattern: String,
        namespace: String,
        suggestion: String,
    },
    #[error("pattern \"{pattern}\" lacks the empty namespace of PyPI: write \"{suggestion}\" (two slashes after pypi)")]
    MissingNamespace { pattern: String, suggestion: String },
    #[error("pattern \"{pattern}\" does not say how the name matches: end it with `$` for exactly that name (\"{pattern}$\") or with `~` for the name and every name starting with it followed by `-` (\"{pattern}~\")")]
    MissingEnd { pattern: String },
    #[error("pattern \"{pattern}\" has a `*` in the package name; `*` only stands alone (\"/*\", \"/pypi/*\"): write \"/pypi//PREFIX~\" for a name and every name starting with it followed by `-`")]
    Wildcard { pattern: String },
    #[error("pattern \"{pattern}\" has `~` after `{after}`, which is not a letter or digit; a prefix ends at a whole word and `~` already covers the `-` that follows: write \"{suggestion}\"")]
    TildeAfterNonWord {
        pattern: String,
        after: char,
        suggestion: String,
    },
    #[error("pattern \"{pattern}\": {error}")]
    Name { pattern: String, error: NameError },
    #[error("pattern \"{pattern}\" is not written with the PEP 503 normalised name (lowercase, runs of `-`, `_` and `.` as one `-`): write \"{suggestion}\"")]
    NotNormalised { pattern: String, suggestion: String },
}

impl Pattern {
    /// Parses a pattern as written in `proxy.toml`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let pattern = || text.to_owned();
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        if text == "/*" {
            return Ok(Pattern::Root);
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(PatternError::NoLeadingSlash { pattern: pattern() });
        };
        let (format, rest) = rest.split_once('/').unwrap_or((rest, ""));
        if format != "pypi" {
            return Err(PatternError::UnknownFormat {
                pattern: pattern(),
                format: format.to_owned(),
            });
        }
        if rest == "*" {
            return Ok(Pattern::Python);
        }
        let Some((namespace, name)) = rest.split_once('/') else {
            return Err(PatternError::MissingNamespace {
                pattern: pattern(),
                suggestion: format!("/pypi//{rest}"),
            });
        };
        if !namespace.is_empty() {
            return Err(PatternError::Namespace {
                pattern: pattern(),
                namespace: namespace.to_owned(),
                suggestion: format!("/pypi//{name}"),
            });
        }
        let (name, exact) = if let Some(name) = name.strip_suffix('$') {
            (name, true)
        } else if let Some(name) = name.strip_suffix('~') {
            (name, false)
        } else if name.contains('*') {
            return Err(PatternError::Wildcard { pattern: pattern() });
        } else {
            return Err(PatternError::MissingEnd { pattern: pattern() });
        };
        if name.contains('*') {
            return Err(PatternError::Wildcard { pattern: pattern() });
        }
        if !exact {
            if let Some(after) = name.chars().last().filter(|c| !c.is_ascii_alphanumeric()) {
                let stem = name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
                let stem = ProjectName::parse(stem)
                    .map(|stem| stem.as_str().to_owned())
                    .unwrap_or_else(|_| stem.to_owned());
                return Err(PatternError::TildeAfterNonWord {
                    pattern: pattern(),
                    after,
                    suggestion: format!("/pypi//{stem}~"),
                });
            }
        }
        let normalised = ProjectName::parse(name).map_err(|error| PatternError::Name {
            pattern: pattern(),
            error,
        })?;
        let parsed = if exact {
            Pattern::Exact(normalised)
        } else {
            Pattern::Prefix(normalised)
        };
        if parsed.name().map(ProjectName::as_str) != Some(name) {
            return Err(PatternError::NotNormalised {
                pattern: pattern(),
                suggestion: parsed.to_string(),
            });
        }
        Ok(parsed)
    }

    /// The name of an exact or prefix pattern.
    pub fn name(&self) -> Option<&ProjectName> {
        match self {
            Pattern::Root | Pattern::Python => None,
            Pattern::Prefix(name) | Pattern::Exact(name) => Some(name),
        }
    }

    /// Whether `name` belongs to what the pattern covers.
    pub fn matches(&self, name: &ProjectName) -> bool {
        match self {
            Pattern::Root | Pattern::Python => true,
            Pattern::Exact(exact) => exact == name,
            Pattern::Prefix(prefix) => prefix_matches(prefix.as_str(), name.as_str()),
        }
    }
}

/// Whether `prefix~` matches `name`: the name itself, or the name followed by `-` and more.
pub(super) fn prefix_matches(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Root => f.write_str("/*"),
            Pattern::Python => f.write_str("/pypi/*"),
            Pattern::Prefix(name) => write!(f, "/pypi//{name}~"),
            Pattern::Exact(name) => write!(f, "/pypi//{name}$"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ProjectName {
        ProjectName::parse(text).unwrap()
    }

    #[test]
    fn the_four_shapes_parse_and_print_back() {
        for (text, pattern) in [
            ("/*", Pattern::Root),
            ("/pypi/*", Pattern::Python),
            ("/pypi//acme~", Pattern::Prefix(name("acme"))),
            ("/pypi//acme-utils$", Pattern::Exact(name("acme-utils"))),
            ("/pypi//a1$", Pattern::Exact(name("a1"))),
        ] {
            assert_eq!(Pattern::parse(text), Ok(pattern.clone()), "{text}");
            assert_eq!(pattern.to_string(), text);
        }
    }

    #[test]
    fn prefixes_match_whole_words() {
        let acme = Pattern::parse("/pypi//acme~").unwrap();
        assert!(acme.matches(&name("acme")));
        assert!(acme.matches(&name("acme-utils")));
        assert!(acme.matches(&name("Acme_Utils")));
        assert!(!acme.matches(&name("acmetools")));
        assert!(!acme.matches(&name("acm")));
        let exact = Pattern::parse("/pypi//acme-utils$").unwrap();
        assert!(exact.matches(&name("acme.utils")));
        assert!(!exact.matches(&name("acme-utils-core")));
    }

    #[test]
    fn mistakes_say_what_to_write() {
        let message = |text: &str| Pattern::parse(text).unwrap_err().to_string();
        assert!(message("").contains("empty"));
        assert!(message("pypi/*").contains("does not start with `/`"));
        let npm = message("/npm/*");
        assert!(
            npm.contains("`npm`") && npm.contains("Python packages only"),
            "{npm}"
        );
        let namespaced = message("/pypi/acme/utils$");
        assert!(namespaced.contains("\"/pypi//utils$\""), "{namespaced}");
        let missing = message("/pypi/acme$");
        assert!(missing.contains("\"/pypi//acme$\""), "{missing}");
        let end = message("/pypi//acme");
        assert!(
            end.contains("\"/pypi//acme$\"") && end.contains("\"/pypi//acme~\""),
            "{end}"
        );
        assert!(message("/pypi//acme*").contains("`*`"));
        assert!(message("/pypi//ac*me~").contains("`*`"));
    }

    #[test]
    fn a_tilde_after_a_separator_suggests_the_word_prefix() {
        assert_eq!(
            Pattern::parse("/pypi//acme-~"),
            Err(PatternError::TildeAfterNonWord {
                pattern: "/pypi//acme-~".to_owned(),
                after: '-',
                suggestion: "/pypi//acme~".to_owned(),
            })
        );
        let message = Pattern::parse("/pypi//Acme_~").unwrap_err().to_string();
        assert!(message.contains("\"/pypi//acme~\""), "{message}");
    }

    #[test]
    fn names_must_be_normalised_and_the_normal_form_is_suggested() {
        for (text, suggestion) in [
            ("/pypi//Acme_Utils$", "/pypi//acme-utils$"),
            ("/pypi//acme.utils~", "/pypi//acme-utils~"),
            ("/pypi//ACME--x$", "/pypi//acme-x$"),
        ] {
            assert_eq!(
                Pattern::parse(text),
                Err(PatternError::NotNormalised {
                    pattern: text.to_owned(),
                    suggestion: suggestion.to_owned(),
                }),
                "{text}"
            );
        }
        assert!(matches!(
            Pattern::parse("/pypi//-acme$"),
            Err(PatternError::Name { .. })
        ));
    }
}
