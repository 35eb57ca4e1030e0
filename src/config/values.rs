//! The small value languages of `proxy.toml`: repository names, durations, sizes and `${VAR}`
//! expansion.
//!
//! They live apart from the TOML walking so that each one is a pure function with its own tests,
//! and so that other modules (the router parses repository names out of URLs, logs print
//! durations) use exactly the same rules as the configuration file.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The pattern every repository name follows, quoted in error messages.
const REPO_NAME_PATTERN: &str = "[a-z0-9][a-z0-9._-]{0,63}";

/// Names that would collide with URL segments wheelgate serves itself (§2): `/simple/`,
/// `/<repo>/files/…` and the operational `/-/…` endpoints.
const RESERVED_REPO_NAMES: [&str; 3] = ["simple", "files", "-"];

const MAX_REPO_NAME_LEN: usize = 64;

/// A repository name, validated once as `[a-z0-9][a-z0-9._-]{0,63}` and not reserved.
///
/// Repository names appear in URLs (`/<repo>/simple/`), so the type guarantees they are safe to
/// put in a path segment without escaping.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RepoName(String);

/// Why a string is not a [`RepoName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RepoNameError {
    #[error("a repository name cannot be empty; names are {REPO_NAME_PATTERN}")]
    Empty,
    #[error("repository name \"{name}\" is {len} bytes long; names are at most 64 characters ({REPO_NAME_PATTERN})")]
    TooLong { name: String, len: usize },
    #[error("repository name \"{name}\" contains {ch:?}; names are {REPO_NAME_PATTERN}{}", lowercase_hint(.name))]
    InvalidCharacter { name: String, ch: char },
    #[error("repository name \"{name}\" must start with a lowercase letter or a digit; names are {REPO_NAME_PATTERN}")]
    InvalidStart { name: String },
    #[error("repository name \"{name}\" is reserved (simple, files and - are URL segments wheelgate serves itself); choose another name")]
    Reserved { name: String },
}

fn lowercase_hint(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    if lower != name && RepoName::parse(&lower).is_ok() {
        format!(" (did you mean \"{lower}\"?)")
    } else {
        String::new()
    }
}

impl RepoName {
    /// Validates `name` as a repository name.
    pub fn parse(name: &str) -> Result<RepoName, RepoNameError> {
        if RESERVED_REPO_NAMES.contains(&name) {
            return Err(RepoNameError::Reserved {
                name: name.to_owned(),
            });
        }
        let mut chars = name.chars();
        let Some(first) = chars.next() else {
            return Err(RepoNameError::Empty);
        };
        if name.len() > MAX_REPO_NAME_LEN {
            return Err(RepoNameError::TooLong {
                name: name.to_owned(),
                len: name.len(),
            });
        }
        let allowed_first = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !allowed_first(first) {
            return if matches!(first, '.' | '_' | '-') {
                Err(RepoNameError::InvalidStart {
                    name: name.to_owned(),
                })
            } else {
                Err(RepoNameError::InvalidCharacter {
                    name: name.to_owned(),
                    ch: first,
                })
            };
        }
        if let Some(ch) = chars.find(|&c| !(allowed_first(c) || matches!(c, '.' | '_' | '-'))) {
            return Err(RepoNameError::InvalidCharacter {
                name: name.to_owned(),
                ch,
            });
        }
        Ok(RepoName(name.to_owned()))
    }

    /// The name as written in the configuration and in URLs.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RepoName {
    type Err = RepoNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RepoName::parse(s)
    }
}

impl AsRef<str> for RepoName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

const DURATION_EXAMPLES: &str = "e.g. \"30s\", \"10m\", \"1h\", \"7d\" or \"1h30m\"";

/// Parses a duration written as one or more `<number><unit>` parts, units `ms`, `s`, `m`, `h`,
/// `d`: `30s`, `10m`, `1h`, `7d`, `500ms`, `1h30m`.
///
/// A bare number is refused because `30` could mean seconds or minutes; the error suggests the
/// unit. The error text says what is wrong and how to write it, without the key (the caller adds
/// that).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!(
            "a duration cannot be empty; write one {DURATION_EXAMPLES}"
        ));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "\"{text}\" has no unit; add one, e.g. \"{text}s\" for seconds or \"{text}m\" for minutes"
        ));
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (digits, after) = rest.split_at(digits_end);
        if digits.is_empty() {
            return Err(format!("\"{text}\" is not a duration: expected a number before \"{after}\"; write one {DURATION_EXAMPLES}"));
        }
        if after.starts_with(['.', ',']) {
            return Err(format!(
                "\"{text}\" is not a duration: fractions are not supported; use a smaller unit (\"90m\" rather than \"1.5h\")"
            ));
        }
        let unit_end = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, remaining) = after.split_at(unit_end);
        let unit_ms: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => {
                return Err(format!(
                    "\"{text}\" is not a duration: \"{digits}\" has no unit; units are ms, s, m, h and d"
                ))
            }
            other => {
                return Err(format!(
                    "\"{text}\" is not a duration: unknown unit \"{other}\"; units are ms, s, m, h and d"
                ))
            }
        };
        let too_large = || format!("\"{text}\" is too large a duration");
        let amount: u64 = digits.parse().map_err(|_| too_large())?;
        let part = amount.checked_mul(unit_ms).ok_or_else(too_large)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_large)?;
        rest = remaining;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Writes a duration the way [`parse_duration`] reads it, largest units first (`1h30m`, `500ms`,
/// `0s`), so that `wheelgate check` prints values a user can paste back into the file.
pub fn format_duration(duration: Duration) -> String {
    let mut ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let amount = ms / size;
        if amount > 0 {
            out.push_str(&format!("{amount}{unit}"));
            ms %= size;
        }
    }
    out
}

const SIZE_UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a size in bytes: `1024`, `1024B`, `512MiB`, `20GiB`, `1KiB`, `1TiB` (binary units) or
/// `KB`, `MB`, `GB`, `TB` (decimal units). Units are case-insensitive and may follow a space.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, after) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "\"{text}\" is not a size: it must start with a number; write e.g. \"512MiB\", \"20GiB\" or \"1024\" (bytes)"
        ));
    }
    if after.starts_with(['.', ',']) {
        return Err(format!(
            "\"{text}\" is not a size: fractions are not supported; use a smaller unit (\"1536MiB\" rather than \"1.5GiB\")"
        ));
    }
    let unit = after.trim_start().to_ascii_lowercase();
    let multiplier = if unit.is_empty() {
        1
    } else {
        SIZE_UNITS.iter().find(|(name, _)| *name == unit).map(|(_, m)| *m).ok_or_else(|| {
            format!(
                "\"{text}\" is not a size: unknown unit \"{}\"; units are B, KiB, MiB, GiB, TiB (powers of 1024) and KB, MB, GB, TB (powers of 1000)",
                after.trim_start()
            )
        })?
    };
    let too_large = || format!("\"{text}\" is too large a size");
    let amount: u64 = digits.parse().map_err(|_| too_large())?;
    amount.checked_mul(multiplier).ok_or_else(too_large)
}

/// Writes a size the way [`parse_size`] reads it, in the largest binary unit that represents it
/// exactly (`20GiB`, `1536MiB`), or in bytes (`1000B`).
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in [
        ("TiB", 1u64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Why `${…}` expansion failed in one string value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("environment variable `{var}` is not set; set it, or give a fallback with \"${{{var}:-fallback}}\"")]
    Missing { var: String },
    #[error(
        "\"${{\" is never closed by \"}}\"; close it, or write \"$${{\" for a literal \"${{\""
    )]
    Unclosed,
    #[error("\"${{{name}}}\" does not name an environment variable (letters, digits and _, not starting with a digit)")]
    BadName { name: String },
}

/// Expands `${VAR}` and `${VAR:-fallback}` in one string value.
///
/// The rules, documented in the shipped `proxy.toml`:
/// - `${VAR}` is the variable's value; an unset variable is an error (a silent empty string would
///   turn a missing secret path or URL into a confusing failure later).
/// - `${VAR:-fallback}` is the fallback when `VAR` is unset *or empty*, as in POSIX shells; the
///   fallback may be empty and is taken literally (it cannot contain `}` or another `${…}`).
/// - `$${` is a literal `${`; any other `$` is literal, so password hashes such as
///   `$argon2id$v=19$…` need no escaping.
/// - Substituted values are not expanded again, so an environment value cannot inject references.
pub(crate) fn expand_env(
    value: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EnvError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(dollar) = rest.find('$') {
        let (literal, from_dollar) = rest.split_at(dollar);
        out.push_str(literal);
        if let Some(after) = from_dollar.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
            continue;
        }
        let Some(reference) = from_dollar.strip_prefix("${") else {
            out.push('$');
            rest = from_dollar.strip_prefix('$').unwrap_or_default();
            continue;
        };
        let Some((body, after)) = reference.split_once('}') else {
            return Err(EnvError::Unclosed);
        };
        let (name, fallback) = match body.split_once(":-") {
            Some((name, fallback)) => (name, Some(fallback)),
            None => (body, None),
        };
        if !is_env_name(name) {
            return Err(EnvError::BadName {
                name: body.to_owned(),
            });
        }
        match (env(name), fallback) {
            (Some(found), Some(fallback)) if found.is_empty() => out.push_str(fallback),
            (Some(found), _) => out.push_str(&found),
            (None, Some(fallback)) => out.push_str(fallback),
            (None, None) => {
                return Err(EnvError::Missing {
                    var: name.to_owned(),
                })
            }
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn repo_names_follow_the_pattern() {
        for good in ["pypi", "a", "0", "internal-1", "a.b_c-d", &"x".repeat(64)] {
            assert_eq!(
                RepoName::parse(good).map(|n| n.as_str().to_owned()),
                Ok(good.to_owned())
            );
        }
        assert_eq!(RepoName::parse(""), Err(RepoNameError::Empty));
        assert!(matches!(
            RepoName::parse(&"x".repeat(65)),
            Err(RepoNameError::TooLong { len: 65, .. })
        ));
        assert!(matches!(
            RepoName::parse("Bad Name"),
            Err(RepoNameError::InvalidCharacter { ch: 'B', .. })
        ));
        assert!(matches!(
            RepoName::parse("bad name"),
            Err(RepoNameError::InvalidCharacter { ch: ' ', .. })
        ));
        assert!(matches!(
            RepoName::parse("a/b"),
            Err(RepoNameError::InvalidCharacter { ch: '/', .. })
        ));
        assert!(matches!(
            RepoName::parse("_pypi"),
            Err(RepoNameError::InvalidStart { .. })
        ));
        assert!(matches!(
            RepoName::parse("pypï"),
            Err(RepoNameError::InvalidCharacter { ch: 'ï', .. })
        ));
    }

    #[test]
    fn reserved_repo_names_are_refused() {
        for reserved in ["simple", "files", "-"] {
            assert_eq!(
                RepoName::parse(reserved),
                Err(RepoNameError::Reserved {
                    name: reserved.to_owned()
                })
            );
        }
        assert!(RepoName::parse("simple2").is_ok());
    }

    #[test]
    fn repo_name_errors_suggest_the_lowercase_form() {
        let message = RepoName::parse("PyPI").unwrap_err().to_string();
        assert!(message.contains("did you mean \"pypi\""), "{message}");
        assert!(message.contains("[a-z0-9][a-z0-9._-]{0,63}"), "{message}");
    }

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration(" 0s "), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_explain_themselves() {
        let bare = parse_duration("30").unwrap_err();
        assert!(
            bare.contains("no unit") && bare.contains("\"30s\""),
            "{bare}"
        );
        assert!(parse_duration("10x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_duration("1.5h").unwrap_err().contains("fractions"));
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("h")
            .unwrap_err()
            .contains("expected a number"));
        assert!(parse_duration("1h30")
            .unwrap_err()
            .contains("\"30\" has no unit"));
        assert!(parse_duration("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_duration("-5s").is_err());
    }

    #[test]
    fn durations_format_back_to_parseable_text() {
        for text in ["0s", "30s", "10m", "1h30m", "7d", "500ms", "1d2h3m4s5ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes_in_every_unit() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1024B"), Ok(1024));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("5KB"), Ok(5_000));
        assert_eq!(parse_size("5MB"), Ok(5_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("256 mib"), Ok(256 << 20));
    }

    #[test]
    fn bad_sizes_explain_themselves() {
        assert!(parse_size("20 gigs")
            .unwrap_err()
            .contains("unknown unit \"gigs\""));
        assert!(parse_size("GiB")
            .unwrap_err()
            .contains("must start with a number"));
        assert!(parse_size("1.5GiB").unwrap_err().contains("fractions"));
        assert!(parse_size("99999999TiB").unwrap_err().contains("too large"));
        assert!(parse_size("").is_err());
    }

    #[test]
    fn sizes_format_back_to_parseable_text() {
        for (bytes, text) in [
            (20u64 << 30, "20GiB"),
            (1536 << 20, "1536MiB"),
            (1000, "1000B"),
            (0, "0B"),
        ] {
            assert_eq!(format_size(bytes), text);
            assert_eq!(parse_size(text), Ok(bytes));
        }
    }

    #[test]
    fn env_references_are_expanded() {
        let env = env_with(&[("HOST", "example.invalid"), ("EMPTY", "")]);
        assert_eq!(
            expand_env("https://${HOST}/simple/", &env),
            Ok("https://example.invalid/simple/".to_owned())
        );
        assert_eq!(
            expand_env("${HOST}${HOST}", &env),
            Ok("example.invalidexample.invalid".to_owned())
        );
        assert_eq!(expand_env("${EMPTY}", &env), Ok(String::new()));
        assert_eq!(
            expand_env("no references", &env),
            Ok("no references".to_owned())
        );
    }

    #[test]
    fn env_fallbacks_apply_to_unset_and_empty_variables() {
        let env = env_with(&[("HOST", "example.invalid"), ("EMPTY", "")]);
        assert_eq!(
            expand_env("${HOST:-other}", &env),
            Ok("example.invalid".to_owned())
        );
        assert_eq!(
            expand_env("${UNSET:-127.0.0.1:8080}", &env),
            Ok("127.0.0.1:8080".to_owned())
        );
        assert_eq!(
            expand_env("${EMPTY:-fallback}", &env),
            Ok("fallback".to_owned())
        );
        assert_eq!(expand_env("${UNSET:-}", &env), Ok(String::new()));
    }

    #[test]
    fn missing_env_variables_are_named() {
        let env = env_with(&[]);
        let error = expand_env("https://${UPSTREAM_HOST}/", &env).unwrap_err();
        assert_eq!(
            error,
            EnvError::Missing {
                var: "UPSTREAM_HOST".to_owned()
            }
        );
        assert!(
            error.to_string().contains("${UPSTREAM_HOST:-fallback}"),
            "{error}"
        );
    }

    #[test]
    fn dollar_escapes_and_lone_dollars_are_literal() {
        let env = env_with(&[("X", "value")]);
        assert_eq!(expand_env("$${X}", &env), Ok("${X}".to_owned()));
        assert_eq!(
            expand_env("$argon2id$v=19$m=1", &env),
            Ok("$argon2id$v=19$m=1".to_owned())
        );
        assert_eq!(expand_env("cost: 5$", &env), Ok("cost: 5$".to_owned()));
        assert_eq!(expand_env("$$X", &env), Ok("$$X".to_owned()));
    }

    #[test]
    fn substituted_values_are_not_expanded_again() {
        let env = env_with(&[("OUTER", "${INNER}")]);
        assert_eq!(expand_env("${OUTER}", &env), Ok("${INNER}".to_owned()));
    }

    #[test]
    fn malformed_references_are_errors() {
        let env = env_with(&[]);
        assert_eq!(expand_env("${UNCLOSED", &env), Err(EnvError::Unclosed));
        assert_eq!(
            expand_env("${}", &env),
            Err(EnvError::BadName {
                name: String::new()
            })
        );
        assert_eq!(
            expand_env("${1X}", &env),
            Err(EnvError::BadName {
                name: "1X".to_owned()
            })
        );
        assert_eq!(
            expand_env("${A B}", &env),
            Err(EnvError::BadName {
                name: "A B".to_owned()
            })
        );
    }
}
