//! Files in the shared bucket: asked for before the upstream, copied there after an upstream
//! fetch, and taken in from there (see the `shared` module doc).

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, PutMultipartOptions, PutOptions, WriteMultipart};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;

use super::{Shared, SharedError};
use crate::simple::Sha256Digest;
use crate::store::{ArtifactRecord, Content, Store};

/// Parts of a multipart copy: big enough for few requests, small enough to hold a few in memory.
const PART_SIZE: usize = 8 << 20;

/// How many parts of one copy are in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Bodies up to this size are copied in one request.
const SINGLE_PUT_LIMIT: u64 = PART_SIZE as u64;

/// An artifact found in the bucket: its size and its bytes as they arrive.
pub struct SharedArtifact {
    pub size: u64,
    /// Where it came from, for logs: `s3://<bucket>/<key>`.
    pub location: Option<url::Url>,
    pub body: futures_util::stream::BoxStream<'static, Result<Bytes, SharedError>>,
}

impl Shared {
    /// The object key of the artifact `digest`.
    pub(super) fn artifact_key(&self, digest: &Sha256Digest) -> String {
        format!("{}artifacts/sha256/{}", self.prefix, digest.to_hex())
    }

    /// The artifact `digest`, if the bucket has a copy this replica still trusts. The caller
    /// verifies the bytes against the digest as it does an upstream's, and tells
    /// [`Shared::distrust`] when they do not match.
    pub async fn artifact(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<SharedArtifact>, SharedError> {
        if !self.trusts(digest) {
            return Ok(None);
        }
        self.reachable()?;
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
        self.reachable()?;
        let key = self.artifact_key(&digest);
        let path = ObjectPath::from(key.as_str());
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        // A copy known to be wrong is overwritten with the verified one.
        let replacing = !self.trusts(&digest);
        if !replacing {
            match self.bucket.get_opts(&path, head).await {
                Ok(_) => return Ok(false),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(source) => return Err(self.failed(&key)(source)),
            }
        }
        // Gone from the store meanwhile (evicted): nothing to copy.
        let Some(artifact) = store.artifact(&digest) else {
            return Ok(false);
        };
        match artifact.body.read(0, artifact.size) {
            Content::Bytes(bytes, _) => self.put(&path, &key, bytes).await?,
            Content::Stream(stream) if artifact.size <= SINGLE_PUT_LIMIT => {
                let bytes = collect(stream).await.map_err(|e| self.local(&key, e))?;
                self.put(&path, &key, bytes).await?
            }
            Content::Stream(stream) => self.put_parts(&path, &key, stream).await?,
        }
        if replacing {
            self.distrusted().remove(&digest);
            tracing::info!(bucket = %self.name, key, "replaced the shared bucket's wrong copy with the verified file");
        }
        Ok(true)
    }

    /// The bucket's copy of `digest` did not match it: this replica fetches the file from the
    /// upstream from now on, and its next verified copy overwrites the bucket's.
    pub fn distrust(&self, digest: Sha256Digest) {
        if self.distrusted().insert(digest) {
            tracing::error!(
                bucket = %self.name,
                key = %self.artifact_key(&digest),
                "the shared bucket's copy of a file does not match its digest; fetching it from \
                 the upstream instead, whose verified copy will replace it"
            );
        }
    }

    fn trusts(&self, digest: &Sha256Digest) -> bool {
        !self.distrusted().contains(digest)
    }

    fn distrusted(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<Sha256Digest>> {
        self.distrusted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
                    return Err(self.local(key, error));
                }
            }
        }
        writer.finish().await.map(drop).map_err(self.failed(key))
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
        let local = |reason: &dyn std::fmt::Display| self.local(&key, reason);
        let (temp, file) = store.create_temp().map_err(|e| local(&e))?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hasher = Sha256::new();
        let mut body = found.body;
        let mut written = 0u64;
        let outcome: Result<(), SharedError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                written += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(|e| local(&e))?;
            }
            file.flush().await.map_err(|e| local(&e))
        }
        .await;
        drop(file);
        let digest = Sha256Digest::from_bytes(hasher.finalize().into());
        if outcome.is_err() || digest != record.sha256 || written != found.size {
            let _ = std::fs::remove_file(&temp);
            outcome?;
            return Err(SharedError::Mismatch {
                bucket: self.name.clone(),
                key,
            });
        }
        let record = ArtifactRecord {
            size: written,
            ..record
        };
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.commit_artifact(&temp, record))
            .await
            .map_err(|e| local(&e))?
            .map_err(|e| local(&e))?;
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
