//! The values of a `[[rule]]` table (SPEC §5): rule names, actions and operations.
//!
//! They are parsed once here, when the configuration loads, so that the policy engine and the
//! `wheelgate rules` commands handle only valid values. The name syntax is the vendor's (seed 003):
//! at most 256 characters of `A-Za-z0-9`, percent-encoded octets and `-._~:@+^`, so that a rule
//! set written for the vendor's API can be carried over unchanged.

use std::fmt;
use std::str::FromStr;

use super::mode::Mode;
use super::values::RepoName;
use crate::simple::ProjectName;

/// The longest rule name accepted, in characters (a percent-encoded octet counts as the three
/// characters it is written with, as in the vendor's API).
pub const MAX_RULE_NAME_LEN: usize = 256;

/// How many characters of a name too long to be a rule name a message shows.
pub const SHOWN_OF_A_LONG_NAME: usize = 40;

/// The punctuation a rule name may contain besides letters, digits and `%XX`.
const RULE_NAME_PUNCTUATION: &str = "-._~:@+^";

/// A rule name, unique within its repository.
///
/// Only printable ASCII without spaces or quotes can get through [`RuleName::parse`], so a name is
/// safe to put in a log line, an HTTP header or a reason phrase as it is.
#[derive(Clone, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub struct RuleName(String);

/// Why a string is not a [`RuleName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleNameError {
    #[error("a rule name cannot be empty; give a name such as \"no-old-django\"")]
    Empty,
    #[error("the rule name \"{start}…\" is {len} characters long; rule names are at most {MAX_RULE_NAME_LEN} characters, shorten it")]
    TooLong {
        /// The name's first [`SHOWN_OF_A_LONG_NAME`] characters, with control characters escaped.
        start: String,
        len: usize,
    },
    #[error("rule name \"{name}\" contains {ch:?} at character {position}; rule names may contain only letters, digits, percent-encoded octets (%XX) and {RULE_NAME_PUNCTUATION}")]
    InvalidCharacter {
        name: String,
        ch: char,
        /// 1-based, in characters.
        position: usize,
    },
    #[error("rule name \"{name}\" has a `%` at character {position} that is not followed by two hexadecimal digits; write a literal `%` as %25")]
    BadPercentEncoding {
        name: String,
        /// 1-based, in characters.
        position: usize,
    },
}

impl RuleName {
    /// Validates `name` against the vendor's rule-name syntax.
    pub fn parse(name: &str) -> Result<RuleName, RuleNameError> {
        if name.is_empty() {
            return Err(RuleNameError::Empty);
        }
        let len = name.chars().count();
        if len > MAX_RULE_NAME_LEN {
            let start: String = name.chars().take(SHOWN_OF_A_LONG_NAME).collect();
            return Err(RuleNameError::TooLong {
                start: start.escape_debug().to_string(),
                len,
            });
        }
        let chars: Vec<char> = name.chars().collect();
        let mut index = 0;
        while let Some(&ch) = chars.get(index) {
            if ch == '%' {
                let hex = |offset: usize| {
                    chars
                        .get(index + offset)
                        .is_some_and(char::is_ascii_hexdigit)
                };
                if !(hex(1) && hex(2)) {
                    return Err(RuleNameError::BadPercentEncoding {
                        name: name.to_owned(),
                        position: index + 1,
                    });
                }
                index += 3;
                continue;
            }
            if !(ch.is_ascii_alphanumeric() || RULE_NAME_PUNCTUATION.contains(ch)) {
                return Err(RuleNameError::InvalidCharacter {
                    // The name may hold control characters: keep the message on one line.
                    name: name.escape_debug().to_string(),
                    ch,
                    position: index + 1,
                });
            }
            index += 1;
        }
        Ok(RuleName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RuleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RuleName {
    type Err = RuleNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleName::parse(s)
    }
}

impl AsRef<str> for RuleName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// What a matching rule does to a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Allow,
    Deny,
}

impl Action {
    /// Parses the configuration spelling, `ALLOW` or `DENY` (exactly, as in the vendor's API).
    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "ALLOW" => Some(Action::Allow),
            "DENY" => Some(Action::Deny),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a rule governs. Only downloads exist today; the key is kept so that configurations
/// written in the vendor's shape load unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Operation {
    #[default]
    Download,
}

impl Operation {
    /// Parses the configuration spelling, `DOWNLOAD`.
    pub fn parse(text: &str) -> Option<Operation> {
        match text {
            "DOWNLOAD" => Some(Operation::Download),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Download => "DOWNLOAD",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[rule]]`, validated: its repository exists, its name is unique there, and it is the only
/// rule of its scope (the repository as a whole, or its package) in that repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleConfig {
    pub repository: RepoName,
    pub name: RuleName,
    pub action: Action,
    pub operation: Operation,
    /// `None`: the rule covers every package of the repository.
    pub package: Option<ProjectName>,
    /// The CEL expression as written; `None` matches every download the rule covers. Compiled by
    /// `crate::policy`, not here, so that `Config` stays plain data.
    pub condition: Option<String>,
    /// `audit`: a DENY is logged and counted as a would-deny, and nothing is refused.
    pub mode: Mode,
    /// The line of the rule's `[[rule]]` header, for messages about it at run time.
    pub line: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_rule_names() {
        for name in [
            "no-old-django",
            "a",
            "A.b_c~d:e@f+g^h",
            "caf%C3%A9",
            "%2f",
            &"x".repeat(MAX_RULE_NAME_LEN),
        ] {
            assert_eq!(
                RuleName::parse(name).map(|n| n.to_string()),
                Ok(name.to_owned())
            );
        }
    }

    #[test]
    fn invalid_rule_names() {
        assert_eq!(RuleName::parse(""), Err(RuleNameError::Empty));
        let long = format!("{}{}", "a".repeat(39), "b".repeat(MAX_RULE_NAME_LEN - 38));
        let error = RuleName::parse(&long).unwrap_err();
        assert_eq!(
            error,
            RuleNameError::TooLong {
                start: format!("{}b", "a".repeat(39)),
                len: 257
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("\"{}b…\" is 257 characters long", "a".repeat(39))),
            "{message}"
        );
        assert!(
            !message.contains("bb"),
            "only 40 characters are shown: {message}"
        );
        for (name, ch, position) in [
            ("no old", ' ', 3),
            ("a/b", '/', 2),
            ("é", 'é', 1),
            ("quote\"", '"', 6),
            ("a!", '!', 2),
        ] {
            match RuleName::parse(name) {
                Err(RuleNameError::InvalidCharacter {
                    ch: found,
                    position: at,
                    ..
                }) => assert_eq!((found, at), (ch, position), "{name}"),
                other => panic!("{name:?} gave {other:?}"),
            }
        }
        for (name, position) in [("100%", 4), ("%G1", 1), ("a%2", 2)] {
            assert_eq!(
                RuleName::parse(name),
                Err(RuleNameError::BadPercentEncoding {
                    name: name.to_owned(),
                    position
                }),
                "{name}"
            );
        }
    }

    #[test]
    fn rule_name_errors_keep_control_characters_off_the_line() {
        let message = RuleName::parse("a\nb").unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("a\\nb"), "{message}");
    }

    #[test]
    fn actions_and_operations_use_the_vendor_spelling() {
        assert_eq!(Action::parse("ALLOW"), Some(Action::Allow));
        assert_eq!(Action::parse("DENY"), Some(Action::Deny));
        assert_eq!(Action::parse("deny"), None);
        assert_eq!(Action::Deny.to_string(), "DENY");
        assert_eq!(Operation::parse("DOWNLOAD"), Some(Operation::Download));
        assert_eq!(Operation::parse("UPLOAD"), None);
        assert_eq!(Operation::default().to_string(), "DOWNLOAD");
    }
}
