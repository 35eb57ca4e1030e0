//! `mode = "enforce" | "audit"`: whether a rule or a package group refuses what it denies, or
//! only records that it would have (SPEC §5, §6).
//!
//! Shared by `[[rule]]` and `[[package_group]]`, so that an operator rolls a new policy out the
//! same way whichever kind it is: in audit first, watching the would-deny count, then enforced.

use std::fmt;

/// Whether a policy's denials are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// What it denies is refused (the default).
    #[default]
    Enforce,
    /// What it denies is served anyway, logged and counted as a would-deny.
    Audit,
}

impl Mode {
    /// Parses the configuration spelling, `enforce` or `audit`.
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "enforce" => Some(Mode::Enforce),
            "audit" => Some(Mode::Audit),
            _ => None,
        }
    }

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_use_the_lowercase_spelling() {
        assert_eq!(Mode::parse("audit"), Some(Mode::Audit));
        assert_eq!(Mode::parse("enforce"), Some(Mode::Enforce));
        assert_eq!(Mode::parse("AUDIT"), None);
        assert_eq!(Mode::default(), Mode::Enforce);
        assert_eq!(Mode::Audit.to_string(), "audit");
    }
}
