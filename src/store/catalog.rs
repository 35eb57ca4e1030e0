//! The sled catalog: typed records over a handful of trees.
//!
//! sled is only the catalog (see the `store` module doc for the measurements behind that): it
//! holds small records, and every body is a blob file. Every multi-record change is one sled
//! transaction across the trees it touches, so an artifact and its URL pin, or a page record
//! and the removal of an old inline body, appear and disappear together; the store writer
//! records a whole batch of commits in one ([`Catalog::record_all`]). Records are JSON (small,
//! debuggable with any sled dump, and tolerant of added fields); artifact keys are the raw 32
//! digest bytes.
//!
//! | tree              | key                           | value                              |
//! |-------------------|-------------------------------|------------------------------------|
//! | `meta`            | `format`                      | format version, u32 big-endian     |
//! | `artifacts`       | sha256 (32 bytes)             | [`ArtifactEntry`] as JSON          |
//! | `artifact_bodies` | sha256 (32 bytes)             | bodies earlier versions kept here  |
//! | `url_pins`        | sha256 of the upstream URL    | content sha256 (32 bytes)          |
//! | `pages`           | [`page_key`] bytes            | [`PageEntry`] as JSON              |
//! | `page_bodies`     | [`page_key`] bytes            | bodies earlier versions kept here  |
//! | `uploads`         | [`upload_key`] bytes          | [`UploadEntry`] as JSON            |
//! | `origins`         | [`origin_key`] bytes          | [`OriginRecord`] as JSON           |
//!
//! Versions before 2026-12 kept bodies under 64 KiB in `artifact_bodies` and `page_bodies`;
//! `store::legacy` moves them to blobs when such a store opens, and the two trees stay empty.

use std::convert::Infallible;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sled::transaction::{ConflictableTransactionResult, TransactionError};
use sled::{IVec, Transactional};

use super::error::StoreError;
use super::PageKey;
use crate::origin::record::OriginRecord;
use crate::simple::Sha256Digest;

/// The store layout this binary writes and understands. Bump it when a record's meaning
/// changes incompatibly; an older binary then refuses the store instead of misreading it.
pub(crate) const FORMAT_VERSION: u32 = 1;

/// sled's page cache. Records are small and the hot pages live in moka in front of the store,
/// so a small cache is enough, and sled's memory grows with bytes written regardless.
const CACHE_CAPACITY: u64 = 8 << 20;

const FORMAT_KEY: &[u8] = b"format";

/// The catalog record of one stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ArtifactEntry {
    pub size: u64,
    pub repository: String,
    pub filename: String,
    /// `false` for hosted uploads, which eviction must never remove.
    pub evictable: bool,
    /// The body is in `artifact_bodies` rather than a blob file: only in stores written before
    /// 2026-12 (moved out at open), or where that body did not match its digest.
    pub inline: bool,
    /// Last use in milliseconds since the Unix epoch, as of the last recency persist.
    pub last_use: u64,
    /// URL keys pinned to this digest, so that removing the artifact removes its pins.
    #[serde(default)]
    pub url_keys: Vec<HexDigest>,
}

/// The catalog record of one stored page: its validators and where its body is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PageEntry {
    pub content_type: Option<String>,
    pub final_url: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub fetched_at: u64,
    pub body: PageBody,
}

/// Where a page's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum PageBody {
    Inline { size: u64 },
    Blob { sha256: HexDigest, size: u64 },
}

impl PageBody {
    pub(crate) fn blob(&self) -> Option<Sha256Digest> {
        match self {
            PageBody::Inline { .. } => None,
            PageBody::Blob { sha256, .. } => Some(sha256.0),
        }
    }
}

/// One change of a [`Catalog::record_all`]: a record with its inline body and pin.
#[derive(Debug)]
pub(crate) enum Change<'a> {
    /// Inserts or replaces an artifact record, with its inline body (when given; `None` leaves
    /// the body tree alone) and a new URL pin (when given).
    Artifact {
        digest: Sha256Digest,
        entry: &'a ArtifactEntry,
        pin: Option<Sha256Digest>,
    },
    /// Inserts or replaces a page record, removing the inline body an earlier version may have
    /// left for it.
    Page {
        key: &'a PageKey,
        entry: &'a PageEntry,
    },
}

/// What a [`Change::Page`] replaced: `None` when there was no record, `Some(None)` when the
/// old record was unreadable.
pub(crate) type ReplacedPage = Option<Option<PageEntry>>;

/// A digest stored as lowercase hex inside JSON records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HexDigest(pub Sha256Digest);

impl Serialize for HexDigest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.to_hex())
    }
}

impl<'de> Deserialize<'de> for HexDigest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Sha256Digest::parse_hex(&text)
            .map(HexDigest)
            .map_err(serde::de::Error::custom)
    }
}

/// The catalog key of a page: the repository's length (so that no repository name can be
/// a prefix trick), the repository, then `i` for the root index or `p` and the project.
pub(crate) fn page_key(key: &PageKey) -> Vec<u8> {
    let repository = key.repository.as_bytes();
    let project = key.project.as_deref().map(str::as_bytes);
    let mut out = Vec::with_capacity(9 + repository.len() + project.map_or(0, <[u8]>::len));
    out.extend_from_slice(&(repository.len() as u64).to_be_bytes());
    out.extend_from_slice(repository);
    match project {
        None => out.push(b'i'),
        Some(project) => {
            out.push(b'p');
            out.extend_from_slice(project);
        }
    }
    out
}

/// The page a catalog key names: the inverse of [`page_key`]. `None` for bytes that no
/// `page_key` produced.
pub(crate) fn parse_page_key(raw: &[u8]) -> Option<PageKey> {
    let (length, rest) = raw.split_first_chunk::<8>()?;
    let length = usize::try_from(u64::from_be_bytes(*length)).ok()?;
    let repository = std::str::from_utf8(rest.get(..length)?).ok()?.to_owned();
    let project = match rest.get(length..)? {
        [b'i'] => None,
        [b'p', project @ ..] => Some(std::str::from_utf8(project).ok()?.to_owned()),
        _ => return None,
    };
    Some(PageKey {
        repository,
        project,
    })
}

/// Records read in one pass at open: the decodable ones, and the keys of those that are not
/// (dropped by recovery, since nothing can use them).
#[derive(Debug)]
pub(crate) struct Scan<K, V> {
    pub good: Vec<(K, V)>,
    pub bad: Vec<(IVec, String)>,
}

impl<K, V> Default for Scan<K, V> {
    fn default() -> Self {
        Scan {
            good: Vec::new(),
            bad: Vec::new(),
        }
    }
}

/// The opened catalog of one store.
pub(crate) struct Catalog {
    path: PathBuf,
    db: sled::Db,
    meta: sled::Tree,
    artifacts: sled::Tree,
    artifact_bodies: sled::Tree,
    url_pins: sled::Tree,
    pages: sled::Tree,
    page_bodies: sled::Tree,
    uploads: sled::Tree,
    origins: sled::Tree,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Opens (creating if absent) the sled database at `path`. `store` names the store
    /// directory in the lock error, since that is what the operator configured.
    pub(crate) fn open(path: &Path, store: &Path) -> Result<Catalog, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_CAPACITY)
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(io) if is_lock_error(io) => StoreError::Locked {
                    path: store.to_path_buf(),
                },
                _ => StoreError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Catalog {
            meta: tree("meta")?,
            artifacts: tree("artifacts")?,
            artifact_bodies: tree("artifact_bodies")?,
            url_pins: tree("url_pins")?,
            pages: tree("pages")?,
            page_bodies: tree("page_bodies")?,
            uploads: tree("uploads")?,
            origins: tree("origins")?,
            path: path.to_path_buf(),
            db,
        })
    }

    fn failed(&self, action: &'static str) -> impl Fn(sled::Error) -> StoreError + '_ {
        move |source| StoreError::Catalog {
            path: self.path.clone(),
            action,
            source,
        }
    }

    fn tx_failed(
        &self,
        action: &'static str,
    ) -> impl Fn(TransactionError<Infallible>) -> StoreError + '_ {
        move |error| match error {
            TransactionError::Storage(source) => StoreError::Catalog {
                path: self.path.clone(),
                action,
                source,
            },
            TransactionError::Abort(never) => match never {},
        }
    }

    fn corrupt(&self, what: impl Into<String>, reason: impl fmt::Display) -> StoreError {
        StoreError::CorruptRecord {
            path: self.path.clone(),
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Records [`FORMAT_VERSION`] in a new catalog; refuses a catalog of a newer format.
    pub(crate) fn check_format(&self, store: &Path) -> Result<(), StoreError> {
        let stored = self
            .meta
            .get(FORMAT_KEY)
            .map_err(self.failed("read the format version"))?;
        let Some(stored) = stored else {
            // A catalog without a version is one we are creating: the version goes in before
            // any record, so an older catalog never lacks it.
            self.meta
                .insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                .map_err(self.failed("record the format version"))?;
            return self.flush();
        };
        let bytes: [u8; 4] = stored
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::UnknownFormat {
                path: self.path.clone(),
                reason: format!("{} bytes where 4 were expected", stored.len()),
            })?;
        let found = u32::from_be_bytes(bytes);
        if found > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path: store.to_path_buf(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        if found == 0 {
            return Err(StoreError::UnknownFormat {
                path: self.path.clone(),
                reason: "format 0 was never written by any wheelgate".to_owned(),
            });
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn set_format_for_test(&self, version: u32) {
        self.meta.insert(FORMAT_KEY, &version.to_be_bytes()).ok();
        self.db.flush().ok();
    }

    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map_err(self.failed("flush to disk"))
            .map(drop)
    }

    // ---- artifacts

    /// Every artifact record. Reads records only, never inline bodies, so open stays quick.
    pub(crate) fn artifact_records(&self) -> Result<Scan<Sha256Digest, ArtifactEntry>, StoreError> {
        let mut scan = Scan::default();
        for item in self.artifacts.iter() {
            let (key, value) = item.map_err(self.failed("read the artifact records"))?;
            match decode_artifact(&key, &value) {
                Ok(decoded) => scan.good.push(decoded),
                Err(reason) => scan.bad.push((key, reason)),
            }
        }
        Ok(scan)
    }

    pub(crate) fn artifact(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<ArtifactEntry>, StoreError> {
        let Some(value) = self
            .artifacts
            .get(digest.as_bytes())
            .map_err(self.failed("read an artifact record"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| self.corrupt(format!("artifact {digest}"), e))
    }

    pub(crate) fn artifact_body(&self, digest: &Sha256Digest) -> Result<Option<IVec>, StoreError> {
        self.artifact_bodies
            .get(digest.as_bytes())
            .map_err(self.failed("read an artifact body"))
    }

    /// Applies `changes` in order, all or none: one sled transaction for the lot. Returns what
    /// each page change replaced (`None` for artifact changes).
    ///
    /// One transaction for a whole writer batch rather than one per change, because each sled
    /// transaction writes its own log buffers out (twice: sled seals the buffer before and
    /// after the transaction's manifest), every write handed to sled's I/O pool with a
    /// `notify_all` that wakes its seven threads. Measured: a cold uv install's 72 commits made
    /// 144 log writes and cost sled's pool 4-9 ms of CPU; one transaction per batch, under 1.5 ms.
    pub(crate) fn record_all(
        &self,
        changes: &[Change<'_>],
    ) -> Result<Vec<ReplacedPage>, StoreError> {
        // Encoded once: a transaction's closure may run again after a conflict.
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = changes
            .iter()
            .map(|change| match change {
                Change::Artifact { digest, entry, .. } => {
                    (digest.as_bytes().to_vec(), encode(*entry))
                }
                Change::Page { key, entry, .. } => (page_key(key), encode(*entry)),
            })
            .collect();
        let trees = (
            &self.artifacts,
            &self.url_pins,
            &self.pages,
            &self.page_bodies,
        );
        let olds = trees
            .transaction(
                |(artifacts, pins, pages, page_bodies)| -> ConflictableTransactionResult<_, Infallible> {
                    let mut olds = Vec::with_capacity(changes.len());
                    for (change, (key, record)) in changes.iter().zip(&encoded) {
                        let old = match change {
                            Change::Artifact { digest, pin, .. } => {
                                artifacts.insert(key.as_slice(), record.as_slice())?;
                                if let Some(url_key) = pin {
                                    pins.insert(url_key.as_bytes(), digest.as_bytes())?;
                                }
                                None
                            }
                            Change::Page { .. } => {
                                let old = pages.insert(key.as_slice(), record.as_slice())?;
                                page_bodies.remove(key.as_slice())?;
                                old
                            }
                        };
                        olds.push(old);
                    }
                    Ok(olds)
                },
            )
            .map_err(self.tx_failed("record artifacts and pages"))?;
        Ok(changes
            .iter()
            .zip(olds)
            .map(|(change, old)| match change {
                Change::Artifact { .. } => None,
                Change::Page { .. } => old.map(|old| serde_json::from_slice(&old).ok()),
            })
            .collect())
    }

    /// [`Catalog::record_all`] for one artifact change.
    pub(crate) fn put_artifact(
        &self,
        digest: &Sha256Digest,
        entry: &ArtifactEntry,
        pin: Option<&Sha256Digest>,
    ) -> Result<(), StoreError> {
        self.record_all(&[Change::Artifact {
            digest: *digest,
            entry,
            pin: pin.copied(),
        }])
        .map(drop)
    }

    /// Removes an artifact record, its inline body and the URL pins still pointing at it, in
    /// one transaction. Returns the removed pins' URL keys, or `None` if there was no record.
    pub(crate) fn remove_artifact(
        &self,
        digest: &Sha256Digest,
    ) -> Result<Option<Vec<Sha256Digest>>, StoreError> {
        (&self.artifacts, &self.artifact_bodies, &self.url_pins)
            .transaction(
                |(artifacts, bodies, pins)| -> ConflictableTransactionResult<_, Infallible> {
                    let Some(old) = artifacts.remove(digest.as_bytes())? else {
                        return Ok(None);
                    };
                    bodies.remove(digest.as_bytes())?;
                    // An undecodable record cannot name its pins; they then point at a digest that
                    // is not stored, which only costs a refetch.
                    let url_keys = serde_json::from_slice::<ArtifactEntry>(&old)
                        .map(|e| e.url_keys)
                        .unwrap_or_default();
                    let mut removed = Vec::new();
                    for HexDigest(url_key) in url_keys {
                        let points_here = pins
                            .get(url_key.as_bytes())?
                            .is_some_and(|d| d.as_ref() == digest.as_bytes());
                        if points_here {
                            pins.remove(url_key.as_bytes())?;
                            removed.push(url_key);
                        }
                    }
                    Ok(Some(removed))
                },
            )
            .map_err(self.tx_failed("remove an artifact"))
    }

    /// Drops an artifact record found undecodable at open, with whatever body it had.
    pub(crate) fn drop_artifact_key(&self, key: &[u8]) -> Result<(), StoreError> {
        (&self.artifacts, &self.artifact_bodies)
            .transaction(
                |(artifacts, bodies)| -> ConflictableTransactionResult<(), Infallible> {
                    artifacts.remove(key)?;
                    bodies.remove(key)?;
                    Ok(())
                },
            )
            .map_err(self.tx_failed("drop an unreadable artifact record"))
    }

    /// Writes new last-use stamps into the records that still exist, in one batch. Returns how
    /// many records were updated.
    pub(crate) fn set_last_use(&self, stamps: &[(Sha256Digest, u64)]) -> Result<usize, StoreError> {
        let mut batch = sled::Batch::default();
        let mut updated = 0;
        for (digest, stamp) in stamps {
            // A record removed since the use needs no stamp; an undecodable one is left for
            // recovery rather than overwritten with guesses.
            let Ok(Some(mut entry)) = self.artifact(digest) else {
                continue;
            };
            entry.last_use = *stamp;
            batch.insert(digest.as_bytes().as_slice(), encode(&entry));
            updated += 1;
        }
        self.artifacts
            .apply_batch(batch)
            .map_err(self.failed("record last-use times"))?;
        Ok(updated)
    }

    /// Every URL pin.
    pub(crate) fn pins(&self) -> Result<Scan<Sha256Digest, Sha256Digest>, StoreError> {
        let mut scan = Scan::default();
        for item in self.url_pins.iter() {
            let (key, value) = item.map_err(self.failed("read the url pins"))?;
            match (digest_of(&key), digest_of(&value)) {
                (Some(url_key), Some(digest)) => scan.good.push((url_key, digest)),
                _ => scan
                    .bad
                    .push((key, "a url pin is not two 32-byte digests".to_owned())),
            }
        }
        Ok(scan)
    }

    pub(crate) fn drop_pin_key(&self, key: &[u8]) -> Result<(), StoreError> {
        self.url_pins
            .remove(key)
            .map_err(self.failed("drop an unreadable url pin"))
            .map(drop)
    }

    // ---- pages

    /// Every page record, by raw key.
    pub(crate) fn page_records(&self) -> Result<Scan<IVec, PageEntry>, StoreError> {
        let mut scan = Scan::default();
        for item in self.pages.iter() {
            let (key, value) = item.map_err(self.failed("read the page records"))?;
            match serde_json::from_slice(&value) {
                Ok(entry) => scan.good.push((key, entry)),
                Err(e) => scan.bad.push((key, e.to_string())),
            }
        }
        Ok(scan)
    }

    pub(crate) fn page(&self, key: &PageKey) -> Result<Option<PageEntry>, StoreError> {
        let Some(value) = self
            .pages
            .get(page_key(key))
            .map_err(self.failed("read a page record"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| self.corrupt(key.to_string(), e))
    }

    pub(crate) fn page_body(&self, key: &PageKey) -> Result<Option<IVec>, StoreError> {
        self.page_bodies
            .get(page_key(key))
            .map_err(self.failed("read a page body"))
    }

    /// Replaces a page record's fields, leaving its body alone.
    pub(crate) fn update_page(&self, key: &PageKey, entry: &PageEntry) -> Result<(), StoreError> {
        self.pages
            .insert(page_key(key), encode(entry))
            .map_err(self.failed("update a page record"))
            .map(drop)
    }

    /// Removes a page record (by [`page_key`]) and its inline body. Returns the removed record,
    /// if any and readable (`Some(None)` for an unreadable one).
    pub(crate) fn remove_page_key(
        &self,
        raw: &[u8],
    ) -> Result<Option<Option<PageEntry>>, StoreError> {
        let old = (&self.pages, &self.page_bodies)
            .transaction(
                |(pages, bodies)| -> ConflictableTransactionResult<_, Infallible> {
                    let old = pages.remove(raw)?;
                    bodies.remove(raw)?;
                    Ok(old)
                },
            )
            .map_err(self.tx_failed("remove a page"))?;
        Ok(old.map(|old| serde_json::from_slice(&old).ok()))
    }

    // ---- bodies earlier versions kept inline

    /// The digests of artifacts whose bodies an earlier version kept in `artifact_bodies`.
    pub(crate) fn inline_artifact_digests(&self) -> Result<Vec<Sha256Digest>, StoreError> {
        let keys: Vec<IVec> = self
            .artifact_bodies
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(self.failed("list the inline artifact bodies"))?;
        Ok(keys.iter().filter_map(|key| digest_of(key)).collect())
    }

    /// The keys of pages whose bodies an earlier version kept in `page_bodies`.
    pub(crate) fn inline_page_keys(&self) -> Result<Vec<IVec>, StoreError> {
        self.page_bodies
            .iter()
            .keys()
            .collect::<Result<_, _>>()
            .map_err(self.failed("list the inline page bodies"))
    }

    /// The inline body of the page at catalog key `raw`.
    pub(crate) fn inline_page_body(&self, raw: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.page_bodies
            .get(raw)
            .map_err(self.failed("read a page body"))
    }

    /// Marks an artifact's body as its blob (which the caller installed) and drops the inline
    /// copy, in one transaction. A body without a record is just dropped.
    pub(crate) fn artifact_body_moved(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let key = digest.as_bytes();
        let record = match self.artifact(digest)? {
            Some(mut entry) => {
                entry.inline = false;
                Some(encode(&entry))
            }
            None => None,
        };
        (&self.artifacts, &self.artifact_bodies)
            .transaction(
                |(artifacts, bodies)| -> ConflictableTransactionResult<_, Infallible> {
                    if let Some(record) = &record {
                        artifacts.insert(key.as_slice(), record.as_slice())?;
                    }
                    bodies.remove(key.as_slice())?;
                    Ok(())
                },
            )
            .map_err(self.tx_failed("move an artifact body out of the catalog"))
    }

    /// Points the page record at `raw` to its body's blob (which the caller installed) and
    /// drops the inline copy, in one transaction. A body without a record is just dropped.
    pub(crate) fn page_body_moved(
        &self,
        raw: &[u8],
        blob: &Sha256Digest,
        size: u64,
    ) -> Result<(), StoreError> {
        let record = self
            .pages
            .get(raw)
            .map_err(self.failed("read a page record"))?
            .and_then(|value| serde_json::from_slice::<PageEntry>(&value).ok())
            .map(|mut entry| {
                entry.body = PageBody::Blob {
                    sha256: HexDigest(*blob),
                    size,
                };
                encode(&entry)
            });
        (&self.pages, &self.page_bodies)
            .transaction(
                |(pages, bodies)| -> ConflictableTransactionResult<_, Infallible> {
                    if let Some(record) = &record {
                        pages.insert(raw, record.as_slice())?;
                    }
                    bodies.remove(raw)?;
                    Ok(())
                },
            )
            .map_err(self.tx_failed("move a page body out of the catalog"))
    }

    /// What versions before 2026-12 wrote for a small artifact: its record marked inline and
    /// its body in `artifact_bodies`.
    #[cfg(test)]
    pub(crate) fn put_legacy_inline_artifact(
        &self,
        digest: &Sha256Digest,
        entry: &ArtifactEntry,
        body: &[u8],
    ) {
        let entry = ArtifactEntry {
            inline: true,
            ..entry.clone()
        };
        self.artifacts
            .insert(digest.as_bytes(), encode(&entry))
            .and_then(|_| self.artifact_bodies.insert(digest.as_bytes(), body))
            .expect("a legacy record");
    }

    /// What versions before 2026-12 wrote for a small page: its record inline, its body in
    /// `page_bodies`.
    #[cfg(test)]
    pub(crate) fn put_legacy_inline_page(&self, key: &PageKey, entry: &PageEntry, body: &[u8]) {
        let entry = PageEntry {
            body: PageBody::Inline {
                size: body.len() as u64,
            },
            ..entry.clone()
        };
        self.pages
            .insert(page_key(key), encode(&entry))
            .and_then(|_| self.page_bodies.insert(page_key(key), body))
            .expect("a legacy page");
    }
}

/// The catalog record of one file uploaded to a hosted repository. Its body is an artifact
/// (never evicted) named by `sha256`; its PEP 658 metadata, when it has some, another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UploadEntry {
    pub version: String,
    pub sha256: HexDigest,
    pub size: u64,
    #[serde(default)]
    pub requires_python: Option<String>,
    #[serde(default)]
    pub core_metadata: Option<HexDigest>,
    /// Milliseconds since the Unix epoch.
    pub uploaded_at: u64,
    /// The user who uploaded it.
    pub uploader: String,
}

/// What [`Catalog::record_upload`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    New,
    /// The filename was already recorded, with this content digest (`None`: unreadable).
    Exists(Option<Sha256Digest>),
    /// A body was not recorded (evicted since it was committed); nothing was written.
    BodyMissing,
}

/// `repository \0 project \0 filename`: names cannot contain NUL, so keys are unambiguous,
/// and a project's uploads are one prefix scan.
pub(crate) fn upload_key(repository: &str, project: &str, filename: &str) -> Vec<u8> {
    let mut key = upload_prefix(repository, Some(project));
    key.extend_from_slice(filename.as_bytes());
    key
}

/// The key prefix of a repository's uploads, or of one project's.
pub(crate) fn upload_prefix(repository: &str, project: Option<&str>) -> Vec<u8> {
    let mut key = Vec::with_capacity(128);
    key.extend_from_slice(repository.as_bytes());
    key.push(0);
    if let Some(project) = project {
        key.extend_from_slice(project.as_bytes());
        key.push(0);
    }
    key
}

impl Catalog {
    /// One upload's record.
    pub(crate) fn upload(&self, key: &[u8]) -> Result<Option<UploadEntry>, StoreError> {
        let Some(value) = self
            .uploads
            .get(key)
            .map_err(self.failed("read an upload"))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&value)
            .map(Some)
            .map_err(|e| self.corrupt("an upload record", e))
    }

    /// The upload records under `prefix`, as (key, record), in key order; unreadable ones are
    /// reported in `bad`.
    pub(crate) fn uploads(&self, prefix: &[u8]) -> Result<Scan<IVec, UploadEntry>, StoreError> {
        let mut scan = Scan::default();
        for item in self.uploads.scan_prefix(prefix) {
            let (key, value) = item.map_err(self.failed("read the upload records"))?;
            match serde_json::from_slice(&value) {
                Ok(entry) => scan.good.push((key, entry)),
                Err(error) => scan.bad.push((key, error.to_string())),
            }
        }
        Ok(scan)
    }

    /// Records an upload and makes its artifacts non-evictable, in one transaction: an
    /// upload is never listed with a body that could be evicted, and of two uploads of one
    /// filename only the first is recorded.
    pub(crate) fn record_upload(
        &self,
        key: &[u8],
        entry: &UploadEntry,
        artifacts: &[Sha256Digest],
        first: (&[u8], &OriginRecord),
    ) -> Result<Recorded, StoreError> {
        let upload = encode(entry);
        let (origin_key, origin) = (first.0, encode(first.1));
        let result = (&self.uploads, &self.artifacts, &self.origins).transaction(
            |(uploads, records, origins)| -> ConflictableTransactionResult<Recorded, Infallible> {
                if let Some(old) = uploads.get(key)? {
                    let existing = serde_json::from_slice::<UploadEntry>(&old)
                        .map(|old| old.sha256.0)
                        .ok();
                    return Ok(Recorded::Exists(existing));
                }
                for digest in artifacts {
                    let Some(old) = records.get(digest.as_bytes())? else {
                        return Ok(Recorded::BodyMissing);
                    };
                    if let Ok(mut record) = serde_json::from_slice::<ArtifactEntry>(&old) {
                        if record.evictable {
                            record.evictable = false;
                            records.insert(digest.as_bytes().as_slice(), encode(&record))?;
                        }
                    }
                }
                uploads.insert(key, upload.as_slice())?;
                // The first upload of the package to this repository makes its origin record.
                if origins.get(origin_key)?.is_none() {
                    origins.insert(origin_key, origin.as_slice())?;
                }
                Ok(Recorded::New)
            },
        );
        result.map_err(self.tx_failed("record an upload"))
    }

    /// Drops an upload record that cannot be read.
    pub(crate) fn drop_upload_key(&self, key: &[u8]) -> Result<(), StoreError> {
        self.uploads
            .remove(key)
            .map(drop)
            .map_err(self.failed("drop an upload record"))
    }
}

/// `repository \0 project`: the key of a package-level origin record.
pub(crate) fn origin_key(repository: &str, project: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(repository.len() + project.len() + 1);
    key.extend_from_slice(repository.as_bytes());
    key.push(0);
    key.extend_from_slice(project.as_bytes());
    key
}

impl Catalog {
    /// Every package-level origin record; unreadable ones are reported in `bad`.
    pub(crate) fn origin_records(&self) -> Result<Scan<IVec, OriginRecord>, StoreError> {
        let mut scan = Scan::default();
        for item in self.origins.iter() {
            let (key, value) = item.map_err(self.failed("read the origin records"))?;
            match serde_json::from_slice(&value) {
                Ok(record) => scan.good.push((key, record)),
                Err(error) => scan.bad.push((key, error.to_string())),
            }
        }
        Ok(scan)
    }

    /// Writes `record` under `key` unless a record is there; returns the record in force.
    pub(crate) fn record_origin_if_absent(
        &self,
        key: &[u8],
        record: &OriginRecord,
    ) -> Result<OriginRecord, StoreError> {
        let encoded = encode(record);
        match self
            .origins
            .compare_and_swap(key, None::<&[u8]>, Some(encoded.as_slice()))
            .map_err(self.failed("record a package origin"))?
        {
            Ok(()) => Ok(record.clone()),
            Err(existing) => match existing.current {
                Some(current) => serde_json::from_slice(&current)
                    .map_err(|e| self.corrupt("a package origin record", e)),
                None => Ok(record.clone()),
            },
        }
    }
}

/// Whether sled failed to open because another process holds the catalog's lock. sled 0.34
/// reports this only as an `io::ErrorKind::Other` with this text (src/config.rs, `try_lock`).
fn is_lock_error(error: &std::io::Error) -> bool {
    error.to_string().contains("could not acquire lock")
}

fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Records are plain structs of strings, integers and options: serialising them to JSON
    // cannot fail, and an empty record would be rejected on the next read rather than trusted.
    serde_json::to_vec(record).unwrap_or_default()
}

fn digest_of(bytes: &[u8]) -> Option<Sha256Digest> {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .map(Sha256Digest::from_bytes)
}

fn decode_artifact(key: &[u8], value: &[u8]) -> Result<(Sha256Digest, ArtifactEntry), String> {
    let digest =
        digest_of(key).ok_or_else(|| format!("a key of {} bytes is not a sha256", key.len()))?;
    let entry = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    Ok((digest, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(repository: &str, project: Option<&str>) -> PageKey {
        PageKey {
            repository: repository.to_owned(),
            project: project.map(str::to_owned),
        }
    }

    #[test]
    fn page_keys_are_unambiguous() {
        let keys = [
            page_key(&key("pypi", None)),
            page_key(&key("pypi", Some(""))),
            page_key(&key("pypi", Some("i"))),
            page_key(&key("pypip", None)),
            page_key(&key("pyp", Some("ip"))),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in keys.iter().skip(i + 1) {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn page_keys_parse_back() {
        for page in [
            key("pypi", None),
            key("pypi", Some("")),
            key("pyp", Some("ip")),
            key("a.b-c", Some("wgfx-app")),
        ] {
            assert_eq!(parse_page_key(&page_key(&page)), Some(page));
        }
        assert_eq!(parse_page_key(b""), None);
        assert_eq!(parse_page_key(&[0, 0, 0, 0, 0, 0, 0, 9, b'a']), None);
        let mut trailing = page_key(&key("pypi", None));
        trailing.push(b'x');
        assert_eq!(parse_page_key(&trailing), None);
    }

    #[test]
    fn records_round_trip_as_json() {
        let entry = ArtifactEntry {
            size: 5,
            repository: "pypi".to_owned(),
            filename: "a-1.0-py3-none-any.whl".to_owned(),
            evictable: true,
            inline: true,
            last_use: 42,
            url_keys: vec![HexDigest(Sha256Digest::of(b"u"))],
        };
        let bytes = encode(&entry);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(text.contains(&Sha256Digest::of(b"u").to_hex()), "{text}");
        assert_eq!(
            serde_json::from_slice::<ArtifactEntry>(&bytes).unwrap(),
            entry
        );

        let page = PageEntry {
            content_type: Some("text/html".to_owned()),
            final_url: "https://example.invalid/simple/a/".to_owned(),
            etag: None,
            last_modified: Some("Mon, 01 Jan 2024 00:00:00 GMT".to_owned()),
            fetched_at: 7,
            body: PageBody::Blob {
                sha256: HexDigest(Sha256Digest::of(b"p")),
                size: 70_000,
            },
        };
        let decoded: PageEntry = serde_json::from_slice(&encode(&page)).unwrap();
        assert_eq!(decoded, page);
        assert_eq!(decoded.body.blob(), Some(Sha256Digest::of(b"p")));
    }

    #[test]
    fn bad_records_are_reported_not_trusted() {
        assert!(decode_artifact(&[1, 2, 3], b"{}").is_err());
        assert!(decode_artifact(&[0; 32], b"not json").is_err());
        let bad_digest = br#"{"kind":"blob","sha256":"zz","size":1}"#;
        assert!(serde_json::from_slice::<PageBody>(bad_digest).is_err());
    }

    #[test]
    fn lock_error_is_recognised_by_sled_text() {
        let sled_text = std::io::Error::other(
            "could not acquire lock on \"/s/catalog/db\": Os { code: 11, kind: WouldBlock }",
        );
        assert!(is_lock_error(&sled_text));
        assert!(!is_lock_error(&std::io::Error::other("permission denied")));
    }
}
