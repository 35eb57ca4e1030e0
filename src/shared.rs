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
//! The bucket is reached with the `object_store` crate (its HTTP client on rustls with the
//! process's ring provider), signed with the credentials `[store.shared]` names or the
//! `AWS_*` environment variables, read when the store opens.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, PutMultipartOptions, PutOptions, WriteMultipart};

use crate::config::{SharedConfig, SharedCredentials};
use crate::simple::Sha256Digest;
use crate::store::{Content, Store};

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
            .with_region(&config.region);
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
        })
    }

    /// The object key of the artifact `digest`.
    fn artifact_key(&self, digest: &Sha256Digest) -> String {
        format!("{}artifacts/sha256/{}", self.prefix, digest.to_hex())
    }

    fn failed(&self, key: &str) -> impl Fn(object_store::Error) -> SharedError + '_ {
        let key = key.to_owned();
        move |source| SharedError::Request {
            bucket: self.name.clone(),
            key: key.clone(),
            source,
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
            Err(object_store::Error::NotFound { .. }) => Ok(None),
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
