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
//! Hosted uploads are in the bucket before their 200: the body (and its metadata) as artifacts,
//! then the upload's record at `uploads/<repository>/<project>/<filename>`, written with a
//! conditional create (`If-None-Match: *`), so that of two replicas receiving one filename at
//! once exactly one wins and the other answers 409 (or 200 for the same bytes). A replica asked
//! for a hosted project's page lists that project's records in the bucket (at most every
//! [`SYNC_INTERVAL`] per project) and takes in those it lacks, bodies first: an upload made
//! through one replica is on every replica's pages by then, and the first upload of a package
//! makes its package-level origin record on each replica as it is taken in.
//!
//! The bucket is reached with the `object_store` crate (its HTTP client on rustls with the
//! process's ring provider), signed with the credentials `[store.shared]` names or the
//! `AWS_*` environment variables, read when the store opens.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions, RetryConfig, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use crate::config::{SharedConfig, SharedCredentials};
use crate::simple::Sha256Digest;
use crate::store::{ArtifactRecord, Content, Store, Upload};

/// How often the bucket is probed when nothing else has used it.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// How often a replica lists one hosted project's uploads in the bucket: the longest an upload
/// made through another replica takes to appear on this one's pages.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(2);

/// Parts of a multipart copy: big enough for few requests, small enough to hold a few in memory.
const PART_SIZE: usize = 8 << 20;

/// How many parts of one copy are in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Bodies up to this size are copied in one request.
const SINGLE_PUT_LIMIT: u64 = PART_SIZE as u64;

/// Why the bucket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error(
        "[store.shared] cannot read secret_access_key_file {path}: {source}; create it with the \
         bucket's secret key, or remove access_key_id and secret_access_key_file to use \
         AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
    )]
    SecretFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("[store.shared] bucket {bucket}: {source}")]
    Client {
        bucket: String,
        source: object_store::Error,
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

/// An upload's record as the bucket keeps it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct UploadObject {
    filename: String,
    version: String,
    sha256: String,
    size: u64,
    requires_python: Option<String>,
    core_metadata: Option<String>,
    /// Milliseconds since the Unix epoch.
    uploaded_at: u64,
    uploader: String,
}

impl UploadObject {
    fn of(upload: &Upload) -> UploadObject {
        UploadObject {
            filename: upload.filename.clone(),
            version: upload.version.clone(),
            sha256: upload.sha256.to_hex(),
            size: upload.size,
            requires_python: upload.requires_python.clone(),
            core_metadata: upload.core_metadata.map(|d| d.to_hex()),
            uploaded_at: upload
                .uploaded_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            uploader: upload.uploader.clone(),
        }
    }

    fn upload(self) -> Option<Upload> {
        Some(Upload {
            sha256: Sha256Digest::parse_hex(&self.sha256).ok()?,
            core_metadata: match self.core_metadata {
                Some(hex) => Some(Sha256Digest::parse_hex(&hex).ok()?),
                None => None,
            },
            filename: self.filename,
            version: self.version,
            size: self.size,
            requires_python: self.requires_python,
            uploaded_at: UNIX_EPOCH + Duration::from_millis(self.uploaded_at),
            uploader: self.uploader,
        })
    }
}

/// Who holds an upload's filename in the bucket.
#[derive(Debug)]
pub enum Claim {
    /// This replica's upload: the record was created.
    Ours,
    /// Another upload took the filename first: its record.
    Taken(Upload),
}

/// An artifact found in the bucket: its size and its bytes as they arrive.
pub struct SharedArtifact {
    pub size: u64,
    /// Where it came from, for logs: `s3://<bucket>/<key>`.
    pub location: Option<url::Url>,
    pub body: futures_util::stream::BoxStream<'static, Result<Bytes, SharedError>>,
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
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(3))
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
            let secret = std::fs::read_to_string(secret_access_key_file).map_err(|source| {
                SharedError::SecretFile {
                    path: secret_access_key_file.clone(),
                    source,
                }
            })?;
            builder = builder
                .with_access_key_id(access_key_id)
                .with_secret_access_key(secret.trim());
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
        })
    }

    /// The bucket's state as last seen (see [`Shared::watch`]).
    pub fn state(&self) -> BucketState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
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
                Ok(_) | Err(object_store::Error::NotFound { .. }) => self.note(None),
                Err(error) => self.note(Some(&error)),
            }
        }
    }

    /// The object key of the artifact `digest`.
    fn artifact_key(&self, digest: &Sha256Digest) -> String {
        format!("{}artifacts/sha256/{}", self.prefix, digest.to_hex())
    }

    fn failed(&self, key: &str) -> impl Fn(object_store::Error) -> SharedError + '_ {
        let key = key.to_owned();
        move |source| {
            if !matches!(
                source,
                object_store::Error::Generic {
                    store: "local store",
                    ..
                }
            ) {
                self.note(Some(&source));
            }
            SharedError::Request {
                bucket: self.name.clone(),
                key: key.clone(),
                source,
            }
        }
    }

    /// The artifact `digest`, if the bucket has it. The caller verifies the bytes against the
    /// digest as it does an upstream's.
    pub async fn artifact(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<SharedArtifact>, SharedError> {
        let key = self.artifact_key(digest);
        let path = ObjectPath::from(key.as_str());
        match self.bucket.get_opts(&path, GetOptions::default()).await {
            Ok(found) => {
                self.note(None);
                let size = found.meta.size;
                let bucket = self.name.clone();
                let failed_key = key.clone();
                let body = found
                    .into_stream()
                    .map(move |chunk| {
                        chunk.map_err(|source| SharedError::Request {
                            bucket: bucket.clone(),
                            key: failed_key.clone(),
                            source,
                        })
                    })
                    .boxed();
                Ok(Some(SharedArtifact {
                    size,
                    location: url::Url::parse(&format!("s3://{}/{key}", self.name)).ok(),
                    body,
                }))
            }
            Err(object_store::Error::NotFound { .. }) => {
                self.note(None);
                Ok(None)
            }
            Err(source) => Err(self.failed(&key)(source)),
        }
    }

    /// Copies the stored artifact `digest` to the bucket unless it is there already. Returns
    /// whether it copied anything.
    pub async fn offer(&self, store: &Store, digest: Sha256Digest) -> Result<bool, SharedError> {
        let key = self.artifact_key(&digest);
        let path = ObjectPath::from(key.as_str());
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.bucket.get_opts(&path, head).await {
            Ok(_) => return Ok(false),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(source) => return Err(self.failed(&key)(source)),
        }
        // Gone from the store meanwhile (evicted): nothing to copy.
        let Some(artifact) = store.artifact(&digest) else {
            return Ok(false);
        };
        match artifact.body.read(0, artifact.size) {
            Content::Bytes(bytes) => self.put(&path, &key, bytes).await?,
            Content::Stream(stream) if artifact.size <= SINGLE_PUT_LIMIT => {
                let bytes = collect(stream).await.map_err(|e| {
                    self.failed(&key)(object_store::Error::Generic {
                        store: "local store",
                        source: Box::new(e),
                    })
                })?;
                self.put(&path, &key, bytes).await?
            }
            Content::Stream(stream) => self.put_parts(&path, &key, stream).await?,
        }
        Ok(true)
    }

    async fn put(&self, path: &ObjectPath, key: &str, bytes: Bytes) -> Result<(), SharedError> {
        self.bucket
            .put_opts(path, bytes.into(), PutOptions::default())
            .await
            .map(drop)
            .map_err(self.failed(key))
    }

    async fn put_parts(
        &self,
        path: &ObjectPath,
        key: &str,
        mut stream: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
    ) -> Result<(), SharedError> {
        let upload = self
            .bucket
            .put_multipart_opts(path, PutMultipartOptions::default())
            .await
            .map_err(self.failed(key))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    writer
                        .wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(self.failed(key))?;
                    writer.put(chunk);
                }
                Err(error) => {
                    let _ = writer.abort().await;
                    return Err(self.failed(key)(object_store::Error::Generic {
                        store: "local store",
                        source: Box::new(error),
                    }));
                }
            }
        }
        writer.finish().await.map(drop).map_err(self.failed(key))
    }
}

impl Shared {
    fn upload_prefix(&self, repository: &str, project: &str) -> String {
        format!("{}uploads/{repository}/{project}/", self.prefix)
    }

    /// Takes the filename of `upload` in the bucket, first writer wins (see the module doc).
    /// The upload's body and metadata must be in the bucket already ([`Shared::offer`]).
    pub async fn claim(
        &self,
        repository: &str,
        project: &str,
        upload: &Upload,
    ) -> Result<Claim, SharedError> {
        let key = format!(
            "{}{}",
            self.upload_prefix(repository, project),
            upload.filename
        );
        let path = ObjectPath::from(key.as_str());
        let record = serde_json::to_vec(&UploadObject::of(upload)).unwrap_or_default();
        let create = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self.bucket.put_opts(&path, record.into(), create).await {
            Ok(_) => {
                self.note(None);
                Ok(Claim::Ours)
            }
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.upload_record(&path, &key).await? {
                    Some(existing) => Ok(Claim::Taken(existing)),
                    None => Err(self.failed(&key)(object_store::Error::Generic {
                        store: "shared bucket",
                        source: "the record of the upload that holds this filename is unreadable"
                            .into(),
                    })),
                }
            }
            Err(source) => Err(self.failed(&key)(source)),
        }
    }

    async fn upload_record(
        &self,
        path: &ObjectPath,
        key: &str,
    ) -> Result<Option<Upload>, SharedError> {
        let found = self
            .bucket
            .get_opts(path, GetOptions::default())
            .await
            .map_err(self.failed(key))?;
        let bytes = found.bytes().await.map_err(self.failed(key))?;
        Ok(serde_json::from_slice::<UploadObject>(&bytes)
            .ok()
            .and_then(UploadObject::upload))
    }

    /// The uploads of `project` to `repository` recorded in the bucket.
    pub async fn uploads(
        &self,
        repository: &str,
        project: &str,
    ) -> Result<Vec<Upload>, SharedError> {
        let prefix = self.upload_prefix(repository, project);
        let listed: Vec<ObjectPath> = self
            .bucket
            .list(Some(&ObjectPath::from(prefix.as_str())))
            .map(|meta| meta.map(|meta| meta.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(self.failed(&prefix))?;
        let mut uploads = Vec::with_capacity(listed.len());
        for path in listed {
            let key = path.to_string();
            match self.upload_record(&path, &key).await? {
                Some(upload) => uploads.push(upload),
                None => tracing::warn!(
                    bucket = %self.name,
                    key,
                    "skipping an unreadable upload record in the shared bucket"
                ),
            }
        }
        Ok(uploads)
    }

    /// Copies the artifact `digest` of `size` bytes from the bucket into `store` (verified
    /// against the digest), recorded as `filename` of `repository`, evictable until an upload
    /// record names it. Returns `false` when the bucket does not have it.
    pub async fn take_in(
        &self,
        store: &Store,
        record: ArtifactRecord,
    ) -> Result<bool, SharedError> {
        let Some(found) = self.artifact(&record.sha256).await? else {
            return Ok(false);
        };
        let key = self.artifact_key(&record.sha256);
        let local = |error: std::io::Error| {
            self.failed(&key)(object_store::Error::Generic {
                store: "local store",
                source: Box::new(error),
            })
        };
        let (temp, file) = store
            .create_temp()
            .map_err(|e| local(std::io::Error::other(e.to_string())))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut body = found.body;
        let mut written = 0u64;
        let outcome: Result<(), SharedError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(local)?;
            }
            file.flush().await.map_err(local)
        }
        .await;
        drop(file);
        let digest = Sha256Digest::from_bytes(hasher.finalize().into());
        if outcome.is_err() || digest != record.sha256 || written != found.size {
            let _ = std::fs::remove_file(&temp);
            outcome?;
            return Err(local(std::io::Error::other(format!(
                "the bucket's copy of {} does not match its digest",
                record.filename
            ))));
        }
        let record = ArtifactRecord {
            size: written,
            ..record
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.commit_artifact(&temp, record))
            .await
            .map_err(|e| local(std::io::Error::other(e.to_string())))?
            .map_err(|e| local(std::io::Error::other(e.to_string())))?;
        Ok(true)
    }
}

async fn collect(
    mut stream: impl Stream<Item = std::io::Result<Bytes>> + Unpin,
) -> std::io::Result<Bytes> {
    let mut all = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(prefix: &str) -> SharedConfig {
        SharedConfig {
            endpoint: url::Url::parse("http://127.0.0.1:9/").ok(),
            bucket: "wheelgate".to_owned(),
            region: "us-east-1".to_owned(),
            prefix: prefix.to_owned(),
            credentials: SharedCredentials::Environment,
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
