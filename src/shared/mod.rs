//! The shared tier (`[store.shared]`): an S3-compatible bucket that central replicas share
//! behind a load balancer, each keeping its local store as the first-level cache (issue 17).
//!
//! Artifacts are content-addressed and immutable, so sharing them needs no coordination: a
//! replica that misses locally asks the bucket before the upstream (`artifacts/sha256/<hex>`
//! under the configured prefix), and a file it fetched from the upstream, once its digest is
//! verified and it is committed locally, is copied to the bucket in the background, so the
//! client's stream never waits for it. A copy that fails only costs another upstream fetch
//! later; it is logged and counted.
//!
//! Hosted uploads are in the bucket before their 200 (and refused at once while the probe finds
//! the bucket unreachable): the body (and its metadata) as artifacts, then the upload's record at `uploads/<repository>/<project>/<filename>`, written with a
//! conditional create (`If-None-Match: *`), so that of two replicas receiving one filename at
//! once exactly one wins and the other answers 409 (or 200 for the same bytes). A replica asked
//! for a hosted project's page lists that project's records in the bucket (at most every
//! [`SYNC_INTERVAL`] per project) and takes in those it lacks, bodies first: an upload made
//! through one replica is on every replica's pages by then, and the first upload of a package
//! makes its package-level origin record on each replica as it is taken in. A hosted project list
//! adds the projects the bucket lists under `uploads/<repository>/` (one delimited listing, as
//! often).
//!
//! A bucket that accepts connections and stalls gives a request up after `idle_timeout` without
//! a byte (object_store's read timeout), which counts as unreachable like a refused connection.
//! While it counts as unreachable, lookups, copies and listings fail at once without asking it;
//! the probe alone finds it back.
//!
//! The bucket is reached with the `object_store` crate (its HTTP client on rustls with the
//! process's ring provider), signed with the credentials `[store.shared]` names (the secret
//! file re-read when it changes, see `credentials`) or the `AWS_*` environment variables, read
//! when the store opens.
//!
//! `artifacts` holds the files (looked up, copied, taken in), `uploads` the hosted upload
//! records, `origins` the package-level origin records of first ingestions; this module holds
//! the client, its errors and the bucket's state.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutMode, PutOptions, RetryConfig,
};

use self::credentials::SecretFileCredentials;
use crate::config::{SharedConfig, SharedCredentials};
use crate::simple::Sha256Digest;

mod artifacts;
mod credentials;
mod origins;
mod uploads;

pub use artifacts::SharedArtifact;
pub use uploads::{Claim, SYNC_INTERVAL};

/// How long connecting to the bucket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often the bucket is probed when nothing else has used it.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error(
        "[store.shared] cannot read secret_access_key_file {source}; create it with the \
         bucket's secret key, or remove access_key_id and secret_access_key_file to use \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    SecretFile { source: crate::secret::SecretError },
    #[error("[store.shared] bucket {bucket}: {source}")]
    Client {
        bucket: String,
        source: object_store::Error,
    },
    #[error(
        "could not copy {key} between the shared bucket {bucket} and this replica's store: \
         {reason}; check the store's disk (wheelgate cache verify)"
    )]
    Local {
        bucket: String,
        key: String,
        reason: String,
    },
    #[error(
        "the shared bucket {bucket} holds a copy of {key} that does not match its digest; for a \
         file from an upstream, replicas fetch it from the upstream instead and overwrite the \
         copy; for a hosted upload, put back the blob of that digest from the store of a \
         replica that lists the upload"
    )]
    Mismatch { bucket: String, key: String },
    #[error(
        "the shared bucket {bucket} holds an unreadable upload record at {key}; restore it from \
         a backup of the bucket, or delete it and publish the file again"
    )]
    UnreadableRecord { bucket: String, key: String },
    #[error(
        "the shared bucket {bucket} holds an unreadable package origin record at {key}; delete \
         that object: the next replica to ingest or publish the package makes it again"
    )]
    UnreadableOrigin { bucket: String, key: String },
    #[error(
        "the shared bucket {bucket} has been unreachable for {seconds} s ({reason}); it is not \
         asked again until its probe (every 5 s) gets an answer"
    )]
    Unreachable {
        bucket: String,
        seconds: u64,
        reason: String,
    },
    #[error("the shared bucket {bucket} failed for {key}: {source}")]
    Request {
        bucket: String,
        key: String,
        source: object_store::Error,
    },
}

/// The bucket, as one replica uses it.
#[derive(Debug, Clone)]
pub struct Shared {
    bucket: Arc<dyn ObjectStore>,
    name: String,
    prefix: String,
    /// How the last request (or probe) fared.
    state: Arc<Mutex<BucketState>>,
    /// Artifacts whose copy in the bucket did not match their digest: fetched from the
    /// upstream instead, and overwritten by the next verified copy.
    distrusted: Arc<Mutex<HashSet<Sha256Digest>>>,
    /// Package origin records made while the bucket was unreachable, shared when it answers.
    pending_origins: Arc<Mutex<Vec<origins::Pending>>>,
}

/// Whether the bucket answered the last time it was used or probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BucketState {
    Up,
    /// Unreachable or failing since `since`, for `reason`.
    Down {
        since: SystemTime,
        reason: String,
    },
}

impl Shared {
    /// The client for `config`. Reads the secret file (or the environment) now; nothing is
    /// sent until the first request.
    pub fn open(config: &SharedConfig) -> Result<Shared, SharedError> {
        // reqwest (object_store's client) takes the process's default TLS provider and panics
        // without one: ring, the only one this binary has. Fails only if it is set already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            // A bucket that does not answer must cost a read little more than an upstream
            // fetch and an upload a prompt 503, not object_store's default of three minutes
            // of retries.
            .with_retry(RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            })
            // No whole-request timeout: a multi-gigabyte file streams for as long as it takes.
            // But a bucket that accepts a connection and then stalls gives up a request after
            // `idle_timeout` without a byte (waiting for an answer's head included), which then
            // counts as unreachable: the reader's read times out, like any other failure.
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(CONNECT_TIMEOUT)
                    .with_read_timeout(config.idle_timeout)
                    .with_timeout_disabled(),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint.as_str().trim_end_matches('/'))
                .with_allow_http(endpoint.scheme() == "http")
                .with_virtual_hosted_style_request(false);
        }
        if let SharedCredentials::Static {
            access_key_id,
            secret_access_key_file,
        } = &config.credentials
        {
            let credentials = SecretFileCredentials::open(access_key_id, secret_access_key_file)
                .map_err(|source| SharedError::SecretFile { source })?;
            builder = builder.with_credentials(Arc::new(credentials));
        }
        let bucket = builder.build().map_err(|source| SharedError::Client {
            bucket: config.bucket.clone(),
            source,
        })?;
        Ok(Shared {
            bucket: Arc::new(bucket),
            name: config.bucket.clone(),
            prefix: config.prefix.clone(),
            state: Arc::new(Mutex::new(BucketState::Up)),
            distrusted: Arc::default(),
            pending_origins: Arc::default(),
        })
    }

    /// The bucket's state as last seen (see [`Shared::watch`]).
    pub fn state(&self) -> BucketState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Fails at once while the bucket counts as unreachable: a request that needs the bucket
    /// (a lookup, a copy, a listing) does not wait for a failure already known, which for a
    /// stalled bucket would cost `idle_timeout` each time. The probe alone finds it back.
    fn reachable(&self) -> Result<(), SharedError> {
        match self.state() {
            BucketState::Up => Ok(()),
            BucketState::Down { since, reason } => Err(SharedError::Unreachable {
                bucket: self.name.clone(),
                seconds: since.elapsed().map_or(0, |elapsed| elapsed.as_secs()),
                reason,
            }),
        }
    }

    /// Records how a request fared: an answer (a "not found" too) means the bucket is up.
    fn note(&self, failure: Option<&object_store::Error>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match (failure, &*state) {
            (None, BucketState::Up) => {}
            (None, BucketState::Down { .. }) => {
                tracing::info!(bucket = %self.name, "the shared bucket answers again");
                *state = BucketState::Up;
            }
            (Some(error), BucketState::Up) => {
                tracing::warn!(bucket = %self.name, %error, "the shared bucket is unreachable; uploads are refused until it answers again, files are served from this replica's store");
                *state = BucketState::Down {
                    since: SystemTime::now(),
                    reason: error.to_string(),
                };
            }
            (Some(_), BucketState::Down { .. }) => {}
        }
    }

    /// Probes the bucket every few seconds, so that its state is current even when nothing
    /// else uses it: `/-/ready`, the metrics and the uploads go by it. Runs until the process
    /// ends.
    pub async fn watch(self) {
        let probe = ObjectPath::from(format!("{}wheelgate-probe", self.prefix).as_str());
        let mut ticker = tokio::time::interval(PROBE_INTERVAL);
        loop {
            ticker.tick().await;
            let head = GetOptions {
                head: true,
                ..GetOptions::default()
            };
            match self.bucket.get_opts(&probe, head).await {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {
                    self.note(None);
                    self.share_pending().await;
                }
                Err(error) => self.note(Some(&error)),
            }
        }
    }

    /// Creates `key` with `body` unless it exists (a conditional create, `If-None-Match: *`):
    /// whether this call created it. How first-writer-wins records are written.
    async fn create(&self, key: &str, body: Vec<u8>) -> Result<bool, SharedError> {
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .bucket
            .put_opts(&ObjectPath::from(key), body.into(), create)
            .await
        {
            Ok(_) => {
                self.note(None);
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                self.note(None);
                Ok(false)
            }
            Err(source) => Err(self.failed(key)(source)),
        }
    }

    /// A failed bucket request for `key`: noted in the bucket's state.
    fn failed(&self, key: &str) -> impl Fn(object_store::Error) -> SharedError + '_ {
        let key = key.to_owned();
        move |source| {
            self.note(Some(&source));
            SharedError::Request {
                bucket: self.name.clone(),
                key: key.clone(),
                source,
            }
        }
    }

    /// A failure on this replica's side of a copy of `key`: the bucket's state is untouched.
    fn local(&self, key: &str, reason: impl std::fmt::Display) -> SharedError {
        SharedError::Local {
            bucket: self.name.clone(),
            key: key.to_owned(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn config(prefix: &str) -> SharedConfig {
        SharedConfig {
            endpoint: url::Url::parse("http://127.0.0.1:9/").ok(),
            bucket: "wheelgate".to_owned(),
            region: "us-east-1".to_owned(),
            prefix: prefix.to_owned(),
            credentials: SharedCredentials::Environment,
            idle_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn artifacts_are_keyed_by_digest_under_the_prefix() {
        let digest = Sha256Digest::of(b"a wheel");
        let hex = digest.to_hex();
        let shared = Shared::open(&config("")).unwrap();
        assert_eq!(
            shared.artifact_key(&digest),
            format!("artifacts/sha256/{hex}")
        );
        let shared = Shared::open(&config("fleet-a/")).unwrap();
        assert_eq!(
            shared.artifact_key(&digest),
            format!("fleet-a/artifacts/sha256/{hex}")
        );
    }

    #[test]
    fn a_missing_secret_file_is_named() {
        let mut config = config("");
        config.credentials = SharedCredentials::Static {
            access_key_id: "id".to_owned(),
            secret_access_key_file: "/nonexistent/wheelgate-s3-secret".into(),
        };
        let message = Shared::open(&config).unwrap_err().to_string();
        assert!(
            message.contains("/nonexistent/wheelgate-s3-secret")
                && message.contains("secret_access_key_file"),
            "{message}"
        );
    }
}
