//! Package-level origin records in the store: for each (repository, package), whether versions
//! may be published there and whether upstreams may add versions of it, and the event that
//! decided so (SPEC §6, `crate::origin::package`).
//!
//! A record is made once, by the first event, and never changed by later ones: the first upload
//! to a hosted repository (in the very transaction that records the upload, so a listed upload
//! always has its record) or the first ingestion through a remote. `[[package_origin]]` in the
//! configuration overrides a record without touching it.
//!
//! Every origin decision reads these records, a warm group page several times, so the records
//! are mirrored in memory at open and the mirror is updated after each write: this process is
//! the only writer (sled locks the store), so the mirror is exact.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use super::catalog::{origin_key, Catalog};
use super::engine::Store;
use super::error::StoreError;
use crate::origin::record::{Allowance, OriginRecord};

/// Maps read on every request hash with foldhash: a few times faster than the default SipHash
/// on short names, and the keys are names the configuration or the store wrote.
type Fast = foldhash::fast::RandomState;

/// One repository's records, by package.
type ByPackage = HashMap<Box<str>, OriginRecord, Fast>;

/// The records by repository, then package.
#[derive(Debug, Default)]
pub(crate) struct Mirror(RwLock<HashMap<Box<str>, ByPackage, Fast>>);

impl Mirror {
    /// Every readable record of `catalog`; unreadable ones are logged and ignored (as if the
    /// package had none, which a later event records again).
    pub(crate) fn load(catalog: &Catalog) -> Result<Mirror, StoreError> {
        let scan = catalog.origin_records()?;
        for (key, reason) in &scan.bad {
            tracing::warn!(key = %String::from_utf8_lossy(key), %reason, "skipping an unreadable package origin record");
        }
        let mut map: HashMap<Box<str>, ByPackage, Fast> = HashMap::default();
        for (key, record) in scan.good {
            let mut parts = key.splitn(2, |&b| b == 0);
            let (Some(repository), Some(project)) = (parts.next(), parts.next()) else {
                continue;
            };
            let (Ok(repository), Ok(project)) = (
                std::str::from_utf8(repository),
                std::str::from_utf8(project),
            ) else {
                continue;
            };
            map.entry(repository.into())
                .or_default()
                .insert(project.into(), record);
        }
        Ok(Mirror(RwLock::new(map)))
    }

    fn get(&self, repository: &str, project: &str) -> Option<OriginRecord> {
        let map = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(repository)?.get(project).cloned()
    }

    fn allowances(&self, repository: &str, project: &str) -> Option<(Allowance, Allowance)> {
        let map = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let record = map.get(repository)?.get(project)?;
        Some((record.publish, record.upstream))
    }

    fn contains(&self, repository: &str, project: &str) -> bool {
        let map = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(repository).is_some_and(|m| m.contains_key(project))
    }

    fn set(&self, repository: &str, project: &str, record: OriginRecord) {
        let mut map = self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.entry(repository.into())
            .or_default()
            .insert(project.into(), record);
    }
}

impl Store {
    /// The origin record of `project` (normalised) in `repository`, if one was made.
    pub fn origin_record(&self, repository: &str, project: &str) -> Option<OriginRecord> {
        self.inner.origins.get(repository, project)
    }

    /// The publish and upstream settings of the record of `project` in `repository`, if any:
    /// what a request asks, read without copying the record.
    pub fn origin_allowances(
        &self,
        repository: &str,
        project: &str,
    ) -> Option<(Allowance, Allowance)> {
        self.inner.origins.allowances(repository, project)
    }

    /// Records that `project` was first ingested through the remote `repository`, unless a
    /// record exists. Not flushed: sled writes it out within half a second, and losing it in a
    /// crash only delays it to the next ingestion. Returns the record when this call made it
    /// (`None`: one was there already), for the replicas sharing a bucket to hear of it.
    pub fn record_ingestion(
        &self,
        repository: &str,
        project: &str,
        at: SystemTime,
    ) -> Result<Option<OriginRecord>, StoreError> {
        self.record_origin(repository, project, OriginRecord::first_ingestion(at))
    }

    /// Records `record` for `project` in `repository` unless a record exists: one another
    /// replica made first (taken in from the shared bucket), or a first ingestion. Returns the
    /// record when this call made it (`None`: one was there already).
    pub fn record_origin(
        &self,
        repository: &str,
        project: &str,
        record: OriginRecord,
    ) -> Result<Option<OriginRecord>, StoreError> {
        if self.inner.origins.contains(repository, project) {
            return Ok(None);
        }
        let in_force = self
            .inner
            .catalog
            .record_origin_if_absent(&origin_key(repository, project), &record)?;
        let made = in_force == record;
        self.inner.origins.set(repository, project, in_force);
        Ok(made.then_some(record))
    }

    /// Brings the mirror up to date after an upload recorded (or did not replace) the record.
    pub(super) fn mirror_first_upload(
        &self,
        repository: &str,
        project: &str,
        record: OriginRecord,
    ) {
        if !self.inner.origins.contains(repository, project) {
            self.inner.origins.set(repository, project, record);
        }
    }
}
