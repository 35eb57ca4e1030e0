//! Group commit: one thread records what downloads and page fetches leave for the store, and
//! flushes the catalog once per batch.
//!
//! A cold install commits dozens of files and pages within a few tens of milliseconds.
//! Committed one by one, each took a blocking thread (often a freshly spawned one) and a catalog
//! flush of its own (a cold uv install of 72 files and pages: 72 flushes, now three, of 48, 20
//! and 4 jobs). Nobody waits for a commit but the flight it ends (its clients already have the
//! bytes) and a graceful stop, so a commit can wait for the batch it falls into. A flush is
//! dear beyond its write: sled hands it to its I/O pool with `notify_all`, waking seven threads
//! or more. (Measured on this machine: 48 cold pages and metadata files fetched one after
//! another cost wheelgate 13-15 ms of CPU with batches closed after 5 ms, 10 ms with batches
//! kept open while jobs keep coming; a cold uv install ~39 ms, now ~36 ms.)
//!
//! Jobs queue on a channel; once one arrives the thread lets others gather, [`LINGER`] at a time
//! while more keep coming (at most [`MAX_LINGER`] and [`MAX_BATCH`] jobs), records the whole
//! batch in one catalog transaction ([`Store::apply_batch`]: a sled transaction has its own log
//! writes, two per transaction, each waking sled's I/O pool; a cold uv install's 72 commits made
//! 144 of them and cost the pool 4-9 ms of CPU, now ~8 and under 1.5 ms), flushes once, and only
//! then reports success: a job is durable when it is reported. A page whose record replaced
//! another's blob body has that body deleted after the flush.
//!
//! The thread holds the store only weakly between batches, so dropping the last [`Store`]
//! closes the catalog (and, through the channel, ends the thread); it lets go of the store
//! before reporting.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::artifacts::{ArtifactRecord, NewArtifact};
use super::batch::{Commit, Replaced};
use super::engine::{Inner, Store};
use super::error::StoreError;
use super::pages::{PageKey, StoredPage};
use crate::simple::Sha256Digest;

/// At most this many jobs per flush, so that a long queue still reports progress.
const MAX_BATCH: usize = 256;

/// How long the thread lets jobs gather before looking at the queue again. Commits come in
/// bursts spread over tens of milliseconds (a resolver fetching page after page), so taking only
/// what is already queued still flushed every second or third job; each flush costs several
/// thread switches (sled wakes its whole I/O pool) besides the write. Sleeping rather than
/// waiting on the channel means the senders of the burst wake nobody.
const LINGER: Duration = Duration::from_millis(5);

/// A batch keeps gathering while jobs keep arriving, up to this long after its first job, so
/// that a whole burst (a cold install: 72 files and pages in ~100 ms) takes a few flushes.
/// Nobody waits for the flush but the flight that queued the job (which keeps serving its bytes
/// meanwhile) and a graceful stop.
const MAX_LINGER: Duration = Duration::from_millis(50);

/// How a queued commit ended. Shared because one failed flush fails a whole batch.
pub type Outcome = Result<(), Arc<StoreError>>;

pub(crate) enum Job {
    Artifact {
        body: NewArtifact,
        record: ArtifactRecord,
        done: oneshot::Sender<Outcome>,
    },
    /// A fetched page: its failure is logged, since its client was served already.
    Page {
        key: PageKey,
        page: StoredPage,
        /// The body, in a fsynced temporary file.
        written: PathBuf,
    },
    /// Reports once everything queued before it is durable.
    Barrier(mpsc::SyncSender<Outcome>),
}

/// The sending side, kept in the store.
pub(crate) struct Writer {
    jobs: mpsc::Sender<Job>,
    /// How many batches (flushes) the thread has written; read by tests, logged at debug level.
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
}

impl Writer {
    /// The sending side, and the queue for [`start`].
    pub(crate) fn new() -> (Writer, Queue) {
        let (jobs, queue) = mpsc::channel();
        let batches = Arc::new(AtomicU64::new(0));
        (
            Writer {
                jobs,
                batches: batches.clone(),
            },
            Queue {
                jobs: queue,
                batches,
            },
        )
    }

    /// How many batches have been written (each with one flush).
    #[cfg(test)]
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Queues `job`; fails when the thread is gone (it panicked).
    pub(crate) fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::WriterGone)
    }
}

/// The receiving side, until [`start`] hands it to the thread.
pub(crate) struct Queue {
    jobs: mpsc::Receiver<Job>,
    batches: Arc<AtomicU64>,
}

/// Starts the thread for the store behind `store`.
pub(crate) fn start(store: Weak<Inner>, queue: Queue) -> Result<(), StoreError> {
    thread::Builder::new()
        .name("wheelgate-store".to_owned())
        .spawn(move || run(store, queue))
        .map(drop)
        .map_err(|source| StoreError::Thread { source })
}

fn run(store: Weak<Inner>, queue: Queue) {
    // `recv` fails once the store, and with it the sender, is gone.
    while let Ok(first) = queue.jobs.recv() {
        let started = Instant::now();
        let mut batch = Vec::with_capacity(16);
        batch.push(first);
        loop {
            thread::sleep(LINGER);
            let before = batch.len();
            batch.extend(queue.jobs.try_iter().take(MAX_BATCH - before));
            let quiet = batch.len() == before;
            if quiet || batch.len() >= MAX_BATCH || started.elapsed() >= MAX_LINGER {
                break;
            }
        }
        let Some(inner) = store.upgrade() else {
            // The store is closing: whoever queued these is told by their dropped senders.
            break;
        };
        let jobs = batch.len();
        let reports = write_batch(&Store::from_inner(inner), batch);
        let written = queue.batches.fetch_add(1, Ordering::Relaxed) + 1;
        tracing::debug!(jobs, batches = written, "store batch written");
        // The store is released (it was the temporary above) before anyone hears back.
        for report in reports {
            report.send();
        }
    }
}

/// Somebody waiting for a job's outcome.
enum Report {
    Artifact(oneshot::Sender<Outcome>, Outcome),
    Barrier(mpsc::SyncSender<Outcome>, Outcome),
}

impl Report {
    fn send(self) {
        // A receiver that stopped waiting (its request task ended) does not need the answer.
        match self {
            Report::Artifact(done, outcome) => {
                let _ = done.send(outcome);
            }
            Report::Barrier(done, outcome) => {
                let _ = done.send(outcome);
            }
        }
    }
}

fn write_batch(store: &Store, batch: Vec<Job>) -> Vec<Report> {
    // Who hears of each commit, in the order of the commits.
    enum Waiting {
        Artifact {
            done: oneshot::Sender<Outcome>,
            filename: String,
            sha256: Sha256Digest,
        },
        Page(PageKey),
    }
    let mut reports = Vec::new();
    let mut commits = Vec::with_capacity(batch.len());
    let mut waiting = Vec::with_capacity(batch.len());
    for job in batch {
        match job {
            Job::Artifact { body, record, done } => {
                waiting.push(Waiting::Artifact {
                    done,
                    filename: record.filename.clone(),
                    sha256: record.sha256,
                });
                commits.push(Commit::Artifact { body, record });
            }
            Job::Page { key, page, written } => {
                waiting.push(Waiting::Page(key.clone()));
                commits.push(Commit::Page {
                    key,
                    page,
                    written: Some(written),
                });
            }
            // Nothing to record: its report says the batch it joined was flushed.
            Job::Barrier(done) => reports.push(Report::Barrier(done, Ok(()))),
        }
    }
    let mut replaced: Vec<Replaced> = Vec::new();
    let mut pages = 0usize;
    for (waiting, result) in waiting.into_iter().zip(store.apply_batch(commits)) {
        match waiting {
            Waiting::Artifact {
                done,
                filename,
                sha256,
            } => {
                let outcome = result.map(drop).inspect_err(|error| {
                    tracing::error!(
                        file = %filename,
                        %sha256,
                        %error,
                        "a verified download could not be stored; clients got it, the next \
                         request fetches it again"
                    );
                });
                reports.push(Report::Artifact(done, outcome));
            }
            Waiting::Page(key) => match result {
                Ok(old) => {
                    pages += 1;
                    replaced.push(old);
                }
                Err(error) => {
                    tracing::warn!(%error, "could not store {key}; it was served anyway");
                }
            },
        }
    }
    let flushed = store.flush_catalog().map_err(Arc::new);
    match &flushed {
        Ok(()) => replaced
            .into_iter()
            .for_each(|old| store.forget_replaced(old)),
        Err(error) => {
            tracing::error!(
                %error,
                pages,
                "could not flush the store's catalog; what this batch recorded may be lost in a \
                 crash"
            );
            // Bodies of replaced pages stay: the records naming them may still be the durable
            // ones, and the next open removes whatever nothing names.
            drop(replaced);
        }
    }
    reports
        .into_iter()
        .map(|report| match (report, &flushed) {
            (report, Ok(())) => report,
            (Report::Artifact(done, Ok(())), Err(error)) => {
                Report::Artifact(done, Err(error.clone()))
            }
            (Report::Barrier(done, _), Err(error)) => Report::Barrier(done, Err(error.clone())),
            (report, Err(_)) => report,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use crate::simple::Sha256Digest;
    use crate::store::{ArtifactRecord, NewArtifact, PageKey, Store, StoreOptions, StoredPage};

    fn open(dir: &std::path::Path) -> Store {
        Store::reopen(StoreOptions {
            path: dir.to_path_buf(),
            max_size: u64::MAX,
            memory: 0,
        })
        .unwrap()
    }

    fn page_key(n: usize) -> PageKey {
        PageKey {
            repository: "pypi".to_owned(),
            project: Some(format!("p{n}")),
        }
    }

    fn page(n: usize) -> StoredPage {
        StoredPage {
            body: Bytes::from(format!("<a>{n}</a>")),
            content_type: Some("text/html".to_owned()),
            final_url: "https://example.invalid/simple/".to_owned(),
            etag: None,
            last_modified: None,
            fetched_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    fn record(body: &[u8], name: &str) -> ArtifactRecord {
        ArtifactRecord {
            sha256: Sha256Digest::of(body),
            size: body.len() as u64,
            repository: "pypi".to_owned(),
            filename: name.to_owned(),
            url_key: None,
            evictable: true,
            used_at: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_commits_share_flushes_and_are_durable_when_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bodies: Vec<Vec<u8>> = (0..20u8)
            .map(|n| vec![n; 1000 + 10_000 * n as usize])
            .collect();
        {
            let store = open(dir.path());
            let mut outcomes = Vec::new();
            for n in 0..200 {
                store.queue_page(page_key(n), page(n));
            }
            for (n, body) in bodies.iter().enumerate() {
                let queued = store.queue_artifact(
                    NewArtifact::Memory(Bytes::from(body.clone())),
                    record(body, &format!("{n}.whl")),
                );
                outcomes.push(tokio::spawn(queued));
            }
            for outcome in outcomes {
                outcome.await.unwrap().unwrap();
            }
            let batches = store.inner_writer_batches();
            assert!(
                (1..=110).contains(&batches),
                "220 jobs in {batches} batches"
            );
            // Pages are not awaited one by one: flush waits for them.
            tokio::task::spawn_blocking(move || store.flush())
                .await
                .unwrap()
                .unwrap();
        }
        let store = open(dir.path());
        for body in &bodies {
            assert!(store.contains(&Sha256Digest::of(body)));
        }
        for n in 0..200 {
            let stored = store.page(&page_key(n)).unwrap().expect("a queued page");
            assert_eq!(stored.body, page(n).body);
        }
    }

    #[tokio::test]
    async fn a_trickle_of_commits_gathers_into_few_flushes() {
        // A resolver's pages arrive a couple of milliseconds apart for tens of milliseconds:
        // the batch keeps gathering while they come. Closing each batch after one LINGER, the
        // same trickle took about 20 flushes.
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let started = std::time::Instant::now();
        let mut last = started;
        // A batch may close where the trickle paused for a LINGER: a loaded machine stalls the
        // 2 ms sleeps now and then, and those pauses are counted rather than failing the test.
        let mut pauses: u64 = 0;
        for n in 0..40 {
            store.queue_page(page_key(n), page(n));
            tokio::time::sleep(Duration::from_millis(2)).await;
            let now = std::time::Instant::now();
            if now - last >= super::LINGER {
                pauses += 1;
            }
            last = now;
        }
        let trickle = started.elapsed();
        let flushed = store.clone();
        tokio::task::spawn_blocking(move || flushed.flush())
            .await
            .unwrap()
            .unwrap();
        let batches = store.inner_writer_batches();
        // About 100 ms of trickle: two or three gatherings of at most MAX_LINGER, the barrier's,
        // and one more for each pause.
        let gatherings = (trickle.as_millis() / super::MAX_LINGER.as_millis()) as u64 + 3;
        let bound = gatherings + pauses;
        assert!(
            (1..=bound).contains(&batches),
            "40 jobs over {trickle:?} with {pauses} pauses in {batches} batches (at most {bound})"
        );
        for n in 0..40 {
            assert!(store.page(&page_key(n)).unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn reported_commits_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        for n in 0..20u8 {
            let store = open(dir.path());
            let body = vec![n; 100];
            store
                .queue_artifact(
                    NewArtifact::Memory(Bytes::from(body.clone())),
                    record(&body, "a.whl"),
                )
                .await
                .unwrap();
            drop(store);
        }
        assert_eq!(open(dir.path()).stats().artifacts, 20);
    }
}
