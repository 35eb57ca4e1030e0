//! `[store]`: where the cache lives on disk and how large it and its in-memory part may grow.

use super::{Key, Parser};
use crate::config::raw::RawStore;
use crate::config::{ConfigError, StoreConfig};

const DEFAULT_STORE_PATH: &str = "./wheelgate-data";
const DEFAULT_STORE_MAX_SIZE: u64 = 20 << 30;
const DEFAULT_MEMORY_CACHE: u64 = 256 << 20;
/// Room for the catalog, the logs and the rest of the system when the store shares their disk.
const DEFAULT_MIN_FREE_SPACE: u64 = 1 << 30;

impl Parser<'_> {
    pub(super) fn store(&self, raw: Option<&RawStore>) -> Result<StoreConfig, ConfigError> {
        let fallback = RawStore::default();
        let fields = raw.unwrap_or(&fallback);
        let key = |name| Key {
            section: "[store]",
            name,
        };
        let path = match &fields.path {
            None => self.resolve(DEFAULT_STORE_PATH),
            Some(field) => self.path(field, key("path"))?,
        };
        Ok(StoreConfig {
            path,
            max_size: self.size(
                fields.max_size.as_ref(),
                key("max_size"),
                DEFAULT_STORE_MAX_SIZE,
                Some("; the store needs room for at least one file"),
            )?,
            memory_cache: self.size(
                fields.memory_cache.as_ref(),
                key("memory_cache"),
                DEFAULT_MEMORY_CACHE,
                None,
            )?,
            min_free_space: self.size(
                fields.min_free_space.as_ref(),
                key("min_free_space"),
                DEFAULT_MIN_FREE_SPACE,
                None,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;

    #[test]
    fn bad_size_names_key_and_line() {
        let error = error_of(&format!("{MINIMAL}[store]\nmax_size = \"20 gigs\"\n"));
        assert_eq!(error.line(), Some(6));
        let message = error.to_string();
        assert!(message.contains("[store] max_size"), "{message}");
        assert!(message.contains("unknown unit \"gigs\""), "{message}");
        let config = parse_text(&format!(
            "{MINIMAL}[store]\nmax_size = 1048576\nmemory_cache = \"0\"\n"
        ))
        .unwrap();
        assert_eq!(config.store.max_size, 1 << 20);
        assert_eq!(config.store.memory_cache, 0);
        assert_eq!(config.store.min_free_space, 1 << 30, "the default floor");
        let config = parse_text(&format!(
            "{MINIMAL}[store]\nmin_free_space = \"0\"\n[server]\nmax_file_size = \"2GiB\"\n"
        ))
        .unwrap();
        assert_eq!(config.store.min_free_space, 0);
        assert_eq!(config.server.max_file_size, 2 << 30);
        assert_eq!(parse_text(MINIMAL).unwrap().server.max_file_size, 8 << 30);
        let error = error_of(&format!("{MINIMAL}[server]\nmax_file_size = 0\n"));
        assert!(
            error.to_string().contains("[server] max_file_size"),
            "{error}"
        );
    }
}
