//! `[access]`: who may use wheelgate without credentials.

use super::{Key, Parser};
use crate::config::raw::RawAccess;
use crate::config::{AccessConfig, ConfigError, Problem};

impl Parser<'_> {
    pub(super) fn access(&self, raw: Option<&RawAccess>) -> Result<AccessConfig, ConfigError> {
        let fallback = RawAccess::default();
        let fields = raw.unwrap_or(&fallback);
        let key = Key {
            section: "[access]",
            name: "anonymous_read",
        };
        let anonymous_read = self.boolean(fields.anonymous_read.as_ref(), key, true)?;
        if !anonymous_read {
            if let Some(field) = &fields.anonymous_read {
                return Err(self.at(field, key, Problem::AnonymousReadRequired));
            }
        }
        Ok(AccessConfig { anonymous_read })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn refusing_anonymous_read_needs_users() {
        let error = error_of(&format!("[access]\nanonymous_read = false\n{MINIMAL}"));
        assert_eq!(error.line(), Some(2));
        assert!(error.to_string().contains("[[user]]"), "{error}");
    }
}
