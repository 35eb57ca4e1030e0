//! `[store]`: where the cache lives on disk and how large it and its in-memory part may grow.

use std::time::Duration;

use super::super::error::Problem;
use super::{Key, Parser};
use crate::config::raw::{RawShared, RawStore};
use crate::config::{ConfigError, SharedConfig, SharedCredentials, StoreConfig};

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
            shared: fields
                .shared
                .as_ref()
                .map(|shared| self.shared(shared))
                .transpose()?,
        })
    }

    fn shared(&self, fields: &RawShared) -> Result<SharedConfig, ConfigError> {
        let key = |name| Key {
            section: "[store.shared]",
            name,
        };
        let line = self.header_line("[store.shared]");
        let bucket = match &fields.bucket {
            Some(field) => {
                let bucket = self.text(field, key("bucket"))?.trim().to_owned();
                if bucket.is_empty() || bucket.contains('/') {
                    return Err(self.at(
                        field,
                        key("bucket"),
                        Problem::Empty {
                            hint: "; give the bucket's name (no slashes), created beforehand",
                        },
                    ));
                }
                bucket
            }
            None => {
                return Err(self.missing_key(
                    line,
                    "[store.shared]",
                    "bucket",
                    "; name the bucket the replicas share, created beforehand",
                ))
            }
        };
        let endpoint = match &fields.endpoint {
            None => None,
            Some(field) => {
                let text = self.text(field, key("endpoint"))?;
                let bad = |reason: &str| {
                    self.at(
                        field,
                        key("endpoint"),
                        Problem::Url {
                            value: text.clone(),
                            reason: reason.to_owned(),
                        },
                    )
                };
                let url = url::Url::parse(text.trim()).map_err(|e| bad(&e.to_string()))?;
                if !matches!(url.scheme(), "http" | "https") {
                    return Err(bad("the endpoint must be an http or https URL"));
                }
                if url.path() != "/" || url.query().is_some() || !url.username().is_empty() {
                    return Err(bad(
                        "give only scheme, host and port (the bucket is named by `bucket`, \
                         credentials by `access_key_id` and `secret_access_key_file`)",
                    ));
                }
                Some(url)
            }
        };
        let region = match &fields.region {
            Some(field) => self.text(field, key("region"))?.trim().to_owned(),
            None => DEFAULT_REGION.to_owned(),
        };
        let prefix = match &fields.prefix {
            Some(field) => normalise_prefix(&self.text(field, key("prefix"))?),
            None => String::new(),
        };
        let credentials = match (&fields.access_key_id, &fields.secret_access_key_file) {
            (None, None) => SharedCredentials::Environment,
            (Some(id), Some(file)) => SharedCredentials::Static {
                access_key_id: self.text(id, key("access_key_id"))?.trim().to_owned(),
                secret_access_key_file: self.path(file, key("secret_access_key_file"))?,
            },
            (Some(_), None) => {
                return Err(self.missing_key(
                    line,
                    "[store.shared]",
                    "secret_access_key_file",
                    "; give it with access_key_id, or neither to use AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY from the environment",
                ))
            }
            (None, Some(_)) => {
                return Err(self.missing_key(
                    line,
                    "[store.shared]",
                    "access_key_id",
                    "; give it with secret_access_key_file, or neither to use \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY from the environment",
                ))
            }
        };
        let idle_timeout = self.duration(
            fields.idle_timeout.as_ref(),
            key("idle_timeout"),
            DEFAULT_SHARED_IDLE_TIMEOUT,
            true,
        )?;
        Ok(SharedConfig {
            endpoint,
            bucket,
            region,
            prefix,
            credentials,
            idle_timeout,
        })
    }
}

/// `[store.shared] idle_timeout` when not given: long enough for a busy bucket's pause, short
/// enough that a stalled one costs a request half a minute, not forever.
const DEFAULT_SHARED_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The region when `[store.shared]` names none: what S3-compatible servers accept.
const DEFAULT_REGION: &str = "us-east-1";

/// A key prefix as object keys use it: no leading slash, a trailing one unless empty.
fn normalise_prefix(text: &str) -> String {
    let trimmed = text.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}/")
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

    #[test]
    fn the_shared_bucket_is_validated_once() {
        use crate::config::SharedCredentials;
        let config = parse_text(&format!(
            "{MINIMAL}[store.shared]\nendpoint = \"http://127.0.0.1:7480\"\nbucket = \"fleet\"\n\
             prefix = \"/central/\"\naccess_key_id = \"AKID\"\n\
             secret_access_key_file = \"/run/secrets/s3\"\n"
        ))
        .unwrap();
        let shared = config.store.shared.unwrap();
        assert_eq!(shared.endpoint.unwrap().as_str(), "http://127.0.0.1:7480/");
        assert_eq!(
            (shared.bucket.as_str(), shared.region.as_str()),
            ("fleet", "us-east-1")
        );
        assert_eq!(shared.prefix, "central/");
        assert_eq!(
            shared.credentials,
            SharedCredentials::Static {
                access_key_id: "AKID".to_owned(),
                secret_access_key_file: "/run/secrets/s3".into(),
            }
        );
        let shared = parse_text(&format!("{MINIMAL}[store.shared]\nbucket = \"fleet\"\n"))
            .unwrap()
            .store
            .shared
            .unwrap();
        assert_eq!(
            (shared.endpoint, shared.prefix.as_str(), shared.credentials),
            (None, "", SharedCredentials::Environment)
        );
        assert!(parse_text(MINIMAL).unwrap().store.shared.is_none());

        let error = error_of(&format!(
            "{MINIMAL}[store.shared]\nregion = \"eu-west-1\"\n"
        ));
        assert_eq!(error.line(), Some(5), "{error}");
        assert!(
            error.to_string().contains("[store.shared] bucket"),
            "{error}"
        );
        let error = error_of(&format!(
            "{MINIMAL}[store.shared]\nbucket = \"b\"\nendpoint = \"http://s3.example.invalid/b\"\n"
        ));
        assert_eq!(error.line(), Some(7), "{error}");
        assert!(
            error.to_string().contains("only scheme, host and port"),
            "{error}"
        );
        let error = error_of(&format!(
            "{MINIMAL}[store.shared]\nbucket = \"b\"\naccess_key_id = \"AKID\"\n"
        ));
        assert!(
            error.to_string().contains("secret_access_key_file")
                && error.to_string().contains("AWS_ACCESS_KEY_ID"),
            "{error}"
        );
    }
}
