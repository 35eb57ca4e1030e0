//! Single-flight downloads: one upstream fetch per file, however many clients ask (SPEC §4).
//!
//! When fifty clients ask for the same uncached wheel at once, the upstream must be asked once and
//! all fifty must start receiving bytes as they arrive. moka's `try_get_with` cannot do that (it
//! returns only when the loader ends), so a download is a *flight*: the first caller (the leader)
//! spawns a task that writes the upstream's body to a temporary file, and every caller, leader
//! included, follows it through its own cursor: the latest blocks from memory, anything older from
//! the file, mapped rather than read. Each [`Piece`] a reader gets says where its bytes are in
//! the file once they are written there, so the front sends them from it (`front::sendfile`).
//! Progress is published on a `tokio::sync::watch` channel, which never blocks the writer, so a
//! slow client slows nobody, and since the fetch runs in its own task a client hanging up
//! neither cancels nor restarts it.
//!
//! Blocks are hashed and written on two blocking threads of their own ([`Stages`]), handed over
//! `BATCH` at a time, while the next ones are received, and kept as the chunks they arrived in
//! (`super::chunks`), so a cold transfer costs the slowest of receiving, hashing and writing
//! rather than their sum (benches/README.md, "Cold large file", "Cold downloads by sendfile").
//!
//! The body is hashed as it is written and the last block written is withheld from every reader
//! until the sha256 is known to match the one the index declared. On a mismatch the readers get an
//! error instead of that block (so no client ever holds the complete wrong file), the temporary
//! file is deleted, nothing is committed, and the mismatch is logged and counted. The withheld
//! block is kept in memory and handed to readers from there once verified.
//!
//! A file whose `Content-Length` fits in one block (every `.metadata`, most wheels) never gets a
//! temporary file at all: it would be withheld whole until verified anyway, so it is gathered in
//! memory and handed to `commit` as bytes. A cold install asks for dozens of such files at once,
//! and creating, writing, re-reading and deleting a file for each cost more CPU than the rest of
//! the request.
//!
//! The body is held to its length as well (`size`: the `Content-Length`, else the size the index
//! page declared, never over `max_file_size`), and its length is reserved on the store's disk
//! before the first byte is written (`crate::store::Space`), so a file that would cross
//! `min_free_space` is refused with 507 instead of filling the disk half way.
//!
//! This module knows nothing about the catalog: what to do with a verified file is the `commit`
//! callback's business. The flight stays in the map until `commit`'s future has ended, so a
//! request that finds no flight is sure to find the committed entry instead.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{stream, Stream, StreamExt};
use http::StatusCode;
use sha2::{Digest as _, Sha256};
use tokio::sync::{mpsc, watch, Notify};

use super::chunks::{Chunks, Gather};
use super::size::{Announced, Expected, Length, SizeRefusal};
use crate::simple::digest::{FileKey, Sha256Digest};
use crate::store::serve::{map_bytes, read_block, BLOCK};
use crate::store::{FileSlice, NoSpace, Reservation, Space};
use crate::upstream::{FileFetch, UpstreamError};

/// How many bytes are gathered into each block published to readers. It is also the size of
/// what is withheld from readers until the digest is verified, and the largest file gathered in
/// memory rather than written.
const WRITE_BLOCK: usize = BLOCK;

/// Blocks handed to the hashing and writing stages at once. Each hand-off wakes both stages'
/// threads: with one block at a time, a cold 1 GiB transfer switched threads 15,000 times.
const BATCH: usize = 4;

/// Batches waiting for each stage of a download (hashing, writing) besides the one it works on:
/// enough to keep both busy while the next blocks are received, few enough that a download holds
/// a few MiB at most.
const QUEUED_BATCHES: usize = 1;

/// At most this many bytes of the temporary file are handed out at once to a reader behind the
/// blocks in memory: they are mapped, not read, so a larger piece costs nothing but fewer calls.
const MAPPED_PIECE: usize = 4 * BLOCK;

/// Written blocks kept in memory for readers a little behind the newest one. Readers further
/// behind get the file's bytes mapped, which costs them nothing on plain TCP (they leave by
/// `sendfile`) and a copy on TLS.
const KEPT_BLOCKS: usize = 2;

/// Why a download failed. Cloneable because one failure is reported to every reader of a flight.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DownloadError {
    /// The upstream failed: before the response headers (returned by [`Flights::join`]) or while
    /// sending the body (returned by the stream after the bytes already readable).
    #[error(transparent)]
    Upstream(Arc<UpstreamError>),
    /// The bytes do not have the sha256 the index declared.
    #[error(
        "sha256 mismatch for {what}: the index declared {expected} but the upstream sent \
         {actual}; the transfer was aborted and nothing was stored; the upstream serves a file \
         that differs from its index, so retry later or tell the index's operators"
    )]
    Mismatch {
        /// The file.
        what: String,
        /// The digest from the index.
        expected: Sha256Digest,
        /// The digest of what the upstream sent.
        actual: Sha256Digest,
    },
    /// The upstream sent more bytes than its `Content-Length` or the index page announced.
    #[error(
        "the upstream sent more than the {declared} bytes {announced} for {what}; the transfer \
         was aborted and nothing was stored; retry the request, and if it fails again the \
         upstream serves a file that differs from its index"
    )]
    TooLong {
        /// The file.
        what: String,
        /// The announced length.
        declared: u64,
        /// Who announced it.
        announced: Announced,
    },
    /// The upstream's body ended before its `Content-Length` (or the index page's size).
    #[error(
        "the upstream's body for {what} ended after {received} of the {declared} bytes \
         {announced}; the transfer was aborted and nothing was stored; retry the request"
    )]
    ShortBody {
        /// The file.
        what: String,
        /// The announced length.
        declared: u64,
        /// Who announced it.
        announced: Announced,
        /// What arrived.
        received: u64,
    },
    /// The upstream's `Content-Length` is not the size the index page declared.
    #[error(
        "the upstream announced {content_length} bytes (Content-Length) for {what} but its index \
         page declared {declared} (PEP 700 size); the transfer was refused and nothing was \
         stored; the upstream serves a file that differs from its index, so retry later or tell \
         the index's operators"
    )]
    SizeDisagrees {
        /// The file.
        what: String,
        /// The size on the index page.
        declared: u64,
        /// The upstream's `Content-Length`.
        content_length: u64,
    },
    /// The file is larger than `[server] max_file_size`.
    #[error(
        "{what} is larger than [server] max_file_size ({limit} bytes): {}; the transfer was \
         refused and nothing was stored; raise [server] max_file_size if the file is wanted",
        match announced {
            Some(length) => format!("{} {} bytes", length.announced, length.bytes),
            None => "the upstream sent more than that".to_owned(),
        }
    )]
    TooLarge {
        /// The file.
        what: String,
        /// The cap.
        limit: u64,
        /// The length announced up front; `None` when the body went over the cap as it streamed.
        announced: Option<Length>,
    },
    /// The store's disk has no room for the file (`[store] min_free_space`).
    #[error("cannot download {what}: {source}")]
    NoSpace {
        /// The file.
        what: String,
        /// How much room there is and how much is needed.
        source: NoSpace,
    },
    /// The temporary file could not be created, written or read.
    #[error(
        "cannot {action} {} for {what}: {source}; check that the store's tmp directory is \
         writable and the disk has free space",
        path.display()
    )]
    Io {
        /// The file being downloaded.
        what: String,
        /// What was being done, as a verb phrase.
        action: &'static str,
        /// The temporary file.
        path: PathBuf,
        /// What the operating system said.
        source: Arc<io::Error>,
    },
    /// The download task ended without saying how (it panicked, or the runtime is shutting down).
    #[error(
        "the download of {what} stopped before it finished (the server may be shutting down); \
         retry the request"
    )]
    Abandoned {
        /// The file.
        what: String,
    },
}

impl DownloadError {
    /// True for a download refused for its size or for lack of room, which is worth a line in
    /// the log even when it happened before the first byte.
    fn is_refusal(&self) -> bool {
        matches!(
            self,
            DownloadError::SizeDisagrees { .. }
                | DownloadError::TooLarge { .. }
                | DownloadError::TooLong { .. }
                | DownloadError::ShortBody { .. }
                | DownloadError::NoSpace { .. }
        )
    }

    /// True when the source sent other bytes than the index declared: another digest, or
    /// another length than the page's or its own `Content-Length`.
    pub fn is_wrong_bytes(&self) -> bool {
        matches!(
            self,
            DownloadError::Mismatch { .. }
                | DownloadError::SizeDisagrees { .. }
                | DownloadError::TooLong { .. }
                | DownloadError::ShortBody { .. }
        )
    }

    /// The status a client should see when the download fails before its response started: the
    /// upstream error's own status (404, 504, 502), 502 for everything else.
    pub fn status(&self) -> StatusCode {
        match self {
            DownloadError::Upstream(error) => error.status(),
            DownloadError::NoSpace { .. } => StatusCode::INSUFFICIENT_STORAGE,
            DownloadError::Io { source, .. } if source.kind() == io::ErrorKind::StorageFull => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A verified download, handed to the `commit` callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completed {
    /// Where the body is.
    pub body: Landed,
    /// The body's sha256: the declared one, verified, or the computed one when none was declared.
    pub sha256: Sha256Digest,
    /// The body's length in bytes.
    pub size: u64,
}

/// Where a verified body is when it is handed to `commit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landed {
    /// A temporary file holding the whole body, written but not fsynced: making it durable is
    /// `commit`'s business. `commit` owns it: it moves or deletes it (what a failed commit
    /// leaves behind is removed when the store next opens).
    File(PathBuf),
    /// The whole body of a file that fit in one block; no temporary file was created.
    Memory(Bytes),
}

/// One caller's view of a flight.
#[derive(Debug)]
pub struct Download {
    /// The upstream's `Content-Length`, when it sent one.
    pub content_length: Option<u64>,
    /// True for the caller whose request started the fetch.
    pub leader: bool,
    /// The bytes, as they become readable.
    pub body: DownloadBody,
}

/// The bytes of a download, read from the growing temporary file. Ends after the last byte once
/// the digest is verified, or with the flight's error after the bytes that were already readable.
pub struct DownloadBody {
    inner: Pin<Box<dyn Stream<Item = Result<Piece, DownloadError>> + Send>>,
}

/// Bytes of a download as a reader gets them: with where the same bytes are in the temporary
/// file once they are written there, so the front can send them from the file without copying
/// (`front::sendfile`).
#[derive(Debug, Clone)]
pub struct Piece {
    pub bytes: Bytes,
    pub file: Option<FileSlice>,
}

impl Stream for DownloadBody {
    type Item = Result<Piece, DownloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl DownloadBody {
    /// Waits for the body's first bytes (or its end) and returns a body that starts with them,
    /// or the download's error when it failed before any byte could be sent. A response whose
    /// head is sent before that would break off at once, often before hyper wrote the head at
    /// all, so that the client saw a closed connection instead of a status and a reason. No time
    /// is lost: no byte can reach a client before the first readable one.
    pub async fn started(mut self) -> Result<DownloadBody, DownloadError> {
        let inner: Pin<Box<dyn Stream<Item = Result<Piece, DownloadError>> + Send>> = match self
            .next()
            .await
        {
            Some(Err(error)) => return Err(error),
            Some(Ok(first)) => Box::pin(stream::once(std::future::ready(Ok(first))).chain(self)),
            // An ended body must not be polled again.
            None => Box::pin(stream::empty()),
        };
        Ok(DownloadBody { inner })
    }
}

impl DownloadBody {
    /// Calls `noticed` if the bytes turn out not to be the declared ones (the error this body
    /// then ends with: [`DownloadError::is_wrong_bytes`]), so that their source can be told.
    pub fn on_wrong_bytes(self, noticed: impl FnOnce() + Send + 'static) -> DownloadBody {
        let mut noticed = Some(noticed);
        let inner = self.inspect(move |item| {
            if item.as_ref().is_err_and(DownloadError::is_wrong_bytes) {
                if let Some(noticed) = noticed.take() {
                    noticed();
                }
            }
        });
        DownloadBody {
            inner: Box::pin(inner),
        }
    }
}

impl fmt::Debug for DownloadBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DownloadBody").finish_non_exhaustive()
    }
}

/// The in-flight map. Shared by every remote repository of the process, through an `Arc`.
pub struct Flights {
    shared: Arc<Shared>,
}

impl fmt::Debug for Flights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Flights")
            .field("tmp_dir", &self.shared.tmp_dir)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

struct Shared {
    tmp_dir: PathBuf,
    /// The store's disk budget: a download reserves its length before it starts.
    space: Space,
    flights: Mutex<HashMap<FileKey, Flight>>,
    /// Told when the last flight lands, for a graceful stop waiting on [`Flights::all_landed`].
    landed: Notify,
    next_id: AtomicU64,
    joins: AtomicU64,
    mismatches: AtomicU64,
}

impl Shared {
    /// The map. Nothing panics while holding the lock, so a poisoned lock still holds a
    /// consistent map and is used as is.
    fn flights(&self) -> MutexGuard<'_, HashMap<FileKey, Flight>> {
        crate::lock(&self.flights)
    }
}

/// A map entry. `id` tells flights of the same key apart, so a flight only ever removes itself.
struct Flight {
    id: u64,
    progress: watch::Receiver<Progress>,
}

impl Flight {
    fn failed(&self) -> bool {
        matches!(self.progress.borrow().end, End::Failed(_))
    }
}

/// What the download task publishes to its readers.
struct Progress {
    /// Set once the upstream answered (and the temporary file exists, if there is one).
    opened: Option<Opened>,
    /// Bytes `0..readable` may be sent to clients.
    readable: u64,
    /// The latest blocks, in order and contiguous, kept in memory so that readers keeping up
    /// never read the temporary file: every readable byte before the first of them is in the
    /// file. The newest block is the one withheld until the digest is verified (it starts at
    /// `readable` until then).
    recent: VecDeque<Block>,
    end: End,
}

/// A block of the body and where it starts.
#[derive(Clone)]
struct Block {
    offset: u64,
    bytes: Chunks,
}

impl Block {
    fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

/// The response has started: the upstream answered (and the temporary file exists, if any).
#[derive(Clone)]
struct Opened {
    content_length: Option<u64>,
    /// `None` for a flight held in memory: its readable bytes are all in [`Progress::recent`].
    temp: Option<Temp>,
}

#[derive(Clone)]
struct Temp {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes `0..on_disk` are in the file: updated by the writing stage as each block is written.
    on_disk: Arc<AtomicU64>,
}

impl Temp {
    /// Whether bytes `0..end` are in the file.
    fn holds(&self, end: u64) -> bool {
        end <= self.on_disk.load(Ordering::Acquire)
    }

    /// The file's bytes from `offset` on.
    fn slice(&self, offset: u64) -> FileSlice {
        FileSlice {
            file: self.file.clone(),
            offset,
        }
    }
}

enum End {
    Running,
    /// Every byte is written and the digest matched: `readable` is the size.
    Verified,
    /// Readers get this after the bytes up to `readable`.
    Failed(DownloadError),
}

impl Flights {
    /// An empty map whose temporary files are created in `tmp_dir`, which must be on the same
    /// filesystem as the store's blobs so that committing is a rename; `space` is that disk's
    /// budget.
    pub fn new(tmp_dir: PathBuf, space: Space) -> Flights {
        Flights {
            shared: Arc::new(Shared {
                tmp_dir,
                space,
                flights: Mutex::new(HashMap::new()),
                landed: Notify::new(),
                next_id: AtomicU64::new(0),
                joins: AtomicU64::new(0),
                mismatches: AtomicU64::new(0),
            }),
        }
    }

    /// Joins the in-flight download of `key`, or starts one with `source` (the upstream request)
    /// when there is none. `source` and `commit` are dropped unused when the caller joins an
    /// existing flight. The caller is expected to have looked in the store first.
    ///
    /// Returns as soon as the upstream's response headers are known. If `source` fails, or its
    /// length disagrees with `expected` (the declared size, `max_file_size`), or the store's disk
    /// has no room for it, every caller of this flight gets the error here. Otherwise the body
    /// streams the file as it is written, held to its length, withholding the last block until
    /// the sha256 matches `expected.sha256` (with `None`, the computed digest is taken as is).
    /// On success `commit` gets the verified body (a temporary
    /// file, or the bytes) and the flight ends when its future does; its error is logged, and
    /// readers still get the verified bytes. `what` names the file in errors and logs.
    pub async fn join<S, C, F>(
        &self,
        key: FileKey,
        expected: Expected,
        what: String,
        source: S,
        commit: C,
    ) -> Result<Download, DownloadError>
    where
        S: Future<Output = Result<FileFetch, UpstreamError>> + Send + 'static,
        C: FnOnce(Completed) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let source = async move {
            let fetch = source.await?;
            Ok((fetch.content_length, fetch.body))
        };
        self.join_body(key, expected, what, source, commit).await
    }

    /// [`Flights::join`] over any body stream, so that the flight logic does not depend on where
    /// the bytes come from.
    async fn join_body<S, B, C, F>(
        &self,
        key: FileKey,
        expected: Expected,
        what: String,
        source: S,
        commit: C,
    ) -> Result<Download, DownloadError>
    where
        S: Future<Output = Result<(Option<u64>, B), UpstreamError>> + Send + 'static,
        B: Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin + 'static,
        C: FnOnce(Completed) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let (progress, leader) = {
            let mut flights = self.shared.flights();
            // A flight that failed stays in the map until its task has cleaned up; a request
            // arriving meanwhile starts a new one rather than taking the old one's error.
            match flights.get(&key).filter(|flight| !flight.failed()) {
                Some(flight) => {
                    self.shared.joins.fetch_add(1, Ordering::Relaxed);
                    (flight.progress.clone(), false)
                }
                None => {
                    let (sender, progress) = watch::channel(Progress {
                        opened: None,
                        readable: 0,
                        recent: VecDeque::new(),
                        end: End::Running,
                    });
                    let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
                    flights.insert(
                        key,
                        Flight {
                            id,
                            progress: progress.clone(),
                        },
                    );
                    let task = Task {
                        shared: self.shared.clone(),
                        key,
                        id,
                        expected,
                        what: what.clone(),
                        sender,
                    };
                    // Spawned while the map is locked, so no second leader can slip in between;
                    // `spawn` only queues the task.
                    tokio::spawn(task.run(source, commit));
                    (progress, true)
                }
            }
        };
        wait_for_headers(progress, leader, what).await
    }

    /// How many downloads are running (or committing).
    pub fn in_flight(&self) -> usize {
        self.shared.flights().len()
    }

    /// Resolves once no download is running or committing. A graceful stop waits for this: a
    /// download whose clients have all their bytes may still be fsyncing its file (seconds, for
    /// a big one) before it is queued for the store, and stopping then would lose it.
    pub async fn all_landed(&self) {
        loop {
            // Registered before the check, so a landing between the two is not missed.
            let landed = self.shared.landed.notified();
            let mut landed = std::pin::pin!(landed);
            landed.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            landed.await;
        }
    }

    /// How many callers joined a download another caller had started (for metrics).
    pub fn joins(&self) -> u64 {
        self.shared.joins.load(Ordering::Relaxed)
    }

    /// How many downloads were discarded because their sha256 did not match the index.
    pub fn mismatches(&self) -> u64 {
        self.shared.mismatches.load(Ordering::Relaxed)
    }
}

/// Waits until the flight has opened its temporary file (or failed before that).
async fn wait_for_headers(
    mut progress: watch::Receiver<Progress>,
    leader: bool,
    what: String,
) -> Result<Download, DownloadError> {
    let mut task_gone = false;
    loop {
        let opened = {
            let now = progress.borrow_and_update();
            if let End::Failed(error) = &now.end {
                if now.opened.is_none() {
                    return Err(error.clone());
                }
            }
            now.opened.clone()
        };
        if let Some(opened) = opened {
            let content_length = opened.content_length;
            let reader = Reader {
                progress,
                opened,
                position: 0,
                what,
            };
            return Ok(Download {
                content_length,
                leader,
                body: reader.into_body(),
            });
        }
        if task_gone {
            return Err(DownloadError::Abandoned { what });
        }
        // The task publishes its last state before dropping the sender, so look once more
        // after it is gone.
        task_gone = progress.changed().await.is_err();
    }
}

/// One caller's cursor in the temporary file.
struct Reader {
    progress: watch::Receiver<Progress>,
    opened: Opened,
    position: u64,
    what: String,
}

impl Reader {
    fn into_body(self) -> DownloadBody {
        let body = stream::unfold(Some(self), |state| async move {
            let mut reader = state?;
            match reader.next().await? {
                Ok(block) => Some((Ok(block), Some(reader))),
                // Nothing follows an error.
                Err(error) => Some((Err(error), None)),
            }
        });
        DownloadBody {
            inner: Box::pin(body),
        }
    }

    /// The next readable block, the end, or the flight's error once the readable bytes are out.
    async fn next(&mut self) -> Option<Result<Piece, DownloadError>> {
        let mut task_gone = false;
        loop {
            let position = self.position;
            let (readable, end, in_memory, in_file) = {
                let now = self.progress.borrow_and_update();
                let end = match &now.end {
                    End::Running => None,
                    End::Verified => Some(Ok(())),
                    End::Failed(error) => Some(Err(error.clone())),
                };
                let in_memory = now
                    .recent
                    .iter()
                    .find(|block| block.offset <= position && position < block.end())
                    .cloned();
                // Readable bytes before the first block in memory are in the file.
                let in_file = now
                    .recent
                    .front()
                    .map_or(now.readable, |first| first.offset);
                (now.readable, end, in_memory, in_file)
            };
            if position < readable {
                if let Some(block) = in_memory {
                    let start = usize::try_from(position - block.offset).unwrap_or(usize::MAX);
                    let stop = usize::try_from(readable.min(block.end()) - block.offset)
                        .unwrap_or(usize::MAX);
                    let bytes = block
                        .bytes
                        .slice_from(start, stop.saturating_sub(start).min(BLOCK));
                    self.position += bytes.len() as u64;
                    let file = self
                        .opened
                        .temp
                        .as_ref()
                        .filter(|temp| temp.holds(self.position))
                        .map(|temp| temp.slice(position));
                    return Some(Ok(Piece { bytes, file }));
                }
                // A flight in memory publishes its bytes as one block, so there is a file
                // whenever readable bytes are not in memory.
                let Some(temp) = &self.opened.temp else {
                    debug_assert!(false, "readable bytes outside the block of a memory flight");
                    return Some(Err(DownloadError::Abandoned {
                        what: self.what.clone(),
                    }));
                };
                let len = usize::try_from(in_file.saturating_sub(position))
                    .unwrap_or(usize::MAX)
                    .min(MAPPED_PIECE);
                // Mapped rather than read: the front most often sends these bytes from the file,
                // so they are never touched here. Where mapping fails, they are read.
                let read = match map_bytes(&temp.file, position, len) {
                    Ok(bytes) => Ok(bytes),
                    Err(_) => read_block(temp.file.clone(), position, len.min(BLOCK)).await,
                };
                return Some(match read {
                    Ok(bytes) => {
                        self.position += bytes.len() as u64;
                        Ok(Piece {
                            bytes,
                            file: Some(temp.slice(position)),
                        })
                    }
                    Err(source) => Err(DownloadError::Io {
                        what: self.what.clone(),
                        action: "read the temporary file",
                        path: temp.path.clone(),
                        source: Arc::new(source),
                    }),
                });
            }
            match end {
                Some(Ok(())) => return None,
                Some(Err(error)) => return Some(Err(error)),
                None if task_gone => {
                    return Some(Err(DownloadError::Abandoned {
                        what: self.what.clone(),
                    }))
                }
                None => task_gone = self.progress.changed().await.is_err(),
            }
        }
    }
}

/// The leader's download task.
struct Task {
    shared: Arc<Shared>,
    key: FileKey,
    id: u64,
    expected: Expected,
    what: String,
    sender: watch::Sender<Progress>,
}

/// Removes the flight from the map and deletes its temporary file when the task ends, however it
/// ends (a panic or a runtime shutting down included), so a failed flight never blocks the next.
struct Landing {
    shared: Arc<Shared>,
    key: FileKey,
    id: u64,
    temp: Option<PathBuf>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        if let Some(path) = self.temp.take() {
            // Normal paths delete the file on a blocking thread first; this is the fallback.
            let _ = std::fs::remove_file(path);
        }
        let mut flights = self.shared.flights();
        if flights
            .get(&self.key)
            .is_some_and(|flight| flight.id == self.id)
        {
            flights.remove(&self.key);
        }
        if flights.is_empty() {
            self.shared.landed.notify_waiters();
        }
    }
}

/// What a successful transfer leaves for the commit.
struct Transferred {
    body: Landed,
    sha256: Sha256Digest,
    size: u64,
}

impl Task {
    async fn run<S, B, C, F>(self, source: S, commit: C)
    where
        S: Future<Output = Result<(Option<u64>, B), UpstreamError>> + Send + 'static,
        B: Stream<Item = Result<Bytes, UpstreamError>> + Send + Unpin + 'static,
        C: FnOnce(Completed) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let mut landing = Landing {
            shared: self.shared.clone(),
            key: self.key,
            id: self.id,
            temp: None,
        };
        match self.transfer(source, &mut landing).await {
            Ok(done) => {
                // The commit owns the temporary file from here on.
                landing.temp = None;
                self.commit(done, commit).await;
            }
            Err(error) => {
                let readable = self.sender.borrow().readable;
                if landing.temp.is_some() && !matches!(error, DownloadError::Mismatch { .. }) {
                    tracing::warn!(
                        file = %self.what,
                        key = %self.key,
                        url = %self.expected.url,
                        declared_size = ?self.expected.size,
                        readable_bytes = readable,
                        error = %error,
                        "download failed mid-transfer; clients were cut off and nothing was stored"
                    );
                } else if error.is_refusal() {
                    tracing::warn!(
                        file = %self.what,
                        key = %self.key,
                        url = %self.expected.url,
                        declared_size = ?self.expected.size,
                        error = %error,
                        "download refused; nothing was stored"
                    );
                }
                self.sender.send_modify(|now| now.end = End::Failed(error));
            }
        }
        if let Some(path) = landing.temp.take() {
            remove_temp(path, &self.what).await;
        }
        drop(landing);
    }

    /// Fetches, writes and verifies the body, publishing progress as blocks are written.
    async fn transfer<S, B>(
        &self,
        source: S,
        landing: &mut Landing,
    ) -> Result<Transferred, DownloadError>
    where
        S: Future<Output = Result<(Option<u64>, B), UpstreamError>>,
        B: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
    {
        let (content_length, body) = source
            .await
            .map_err(|error| DownloadError::Upstream(Arc::new(error)))?;
        let length = self
            .expected
            .length(content_length)
            .map_err(|refusal| self.refused(refusal))?;
        let reservation = self
            .shared
            .space
            .reserve(length.map_or(0, |length| length.bytes))
            .map_err(|source| self.no_space(source))?;
        match length {
            Some(length) if length.bytes <= WRITE_BLOCK as u64 => {
                self.transfer_in_memory(length, body).await
            }
            _ => {
                self.transfer_to_file(length, body, landing, reservation)
                    .await
            }
        }
    }

    /// A body announced to fit in one block: gathered and hashed in memory (hashing a block as
    /// it arrives costs microseconds, less than a hop to a blocking thread).
    async fn transfer_in_memory<B>(
        &self,
        length: Length,
        mut body: B,
    ) -> Result<Transferred, DownloadError>
    where
        B: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
    {
        self.sender.send_modify(|now| {
            now.opened = Some(Opened {
                content_length: Some(length.bytes),
                temp: None,
            })
        });
        let mut buffer = Vec::with_capacity(usize::try_from(length.bytes).unwrap_or(0));
        let mut hasher = Sha256::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| DownloadError::Upstream(Arc::new(error)))?;
            if (buffer.len() + chunk.len()) as u64 > length.bytes {
                return Err(self.too_long(length));
            }
            hasher.update(&chunk);
            buffer.extend_from_slice(&chunk);
        }
        let size = buffer.len() as u64;
        self.check_length(Some(length), size)?;
        let sha256 = self.verify(hasher, size)?;
        let bytes = Bytes::from(buffer);
        self.publish_verified(0, Chunks::from(bytes.clone()));
        Ok(Transferred {
            body: Landed::Memory(bytes),
            sha256,
            size,
        })
    }

    /// Any other body: written block by block to a temporary file that readers follow.
    async fn transfer_to_file<B>(
        &self,
        length: Option<Length>,
        mut body: B,
        landing: &mut Landing,
        reservation: Reservation,
    ) -> Result<Transferred, DownloadError>
    where
        B: Stream<Item = Result<Bytes, UpstreamError>> + Unpin,
    {
        let path =
            self.shared
                .tmp_dir
                .join(format!("{}.{:016x}.part", self.key, rand::random::<u64>()));
        let (file, mut reservation) = create_temp(path.clone(), reservation)
            .await
            .map_err(|source| self.io_error("create the temporary file", &path, source))?;
        landing.temp = Some(path.clone());
        let file = Arc::new(file);
        let mut stages = Stages::start(file.clone());
        self.sender.send_modify(|now| {
            now.opened = Some(Opened {
                content_length: length.map(|length| length.bytes),
                temp: Some(Temp {
                    file,
                    path: path.clone(),
                    on_disk: stages.on_disk.clone(),
                }),
            })
        });

        let mut gather = Gather::new(WRITE_BLOCK);
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| DownloadError::Upstream(Arc::new(error)))?;
            received += chunk.len() as u64;
            match length {
                Some(length) if received > length.bytes => return Err(self.too_long(length)),
                None if received > self.expected.max_size => {
                    return Err(DownloadError::TooLarge {
                        what: self.what.clone(),
                        limit: self.expected.max_size,
                        announced: None,
                    })
                }
                _ => {}
            }
            let mut rest = chunk;
            while !rest.is_empty() {
                rest = gather.fill(rest);
                if gather.is_full() {
                    let block = gather.take();
                    reservation
                        .write(block.len() as u64, stages.unwritten())
                        .map_err(|source| self.no_space(source))?;
                    let offset = stages.queued;
                    if stages.push(block.clone()).await.is_err() {
                        let source = stages.failure().await;
                        return Err(self.io_error("write the temporary file", &path, source));
                    }
                    // The newest block is held back: readers may read up to where it starts.
                    let written = stages.written();
                    self.sender.send_modify(|now| {
                        now.recent.push_back(Block {
                            offset,
                            bytes: block,
                        });
                        now.readable = offset;
                        while now.recent.len() > KEPT_BLOCKS
                            && now
                                .recent
                                .front()
                                .is_some_and(|first| first.end() <= written)
                        {
                            now.recent.pop_front();
                        }
                    });
                }
            }
        }
        self.check_length(length, received)?;
        let tail = gather.take();
        reservation
            .write(tail.len() as u64, stages.unwritten())
            .map_err(|source| self.no_space(source))?;
        let tail_offset = stages.queued;
        if !tail.is_empty() && stages.push(tail.clone()).await.is_err() {
            let source = stages.failure().await;
            return Err(self.io_error("write the temporary file", &path, source));
        }
        let (hasher, size) = stages
            .finish()
            .await
            .map_err(|source| self.io_error("write the temporary file", &path, source))?;
        let sha256 = self.verify(hasher, size)?;
        self.publish_verified(tail_offset, tail);
        Ok(Transferred {
            body: Landed::File(path),
            sha256,
            size,
        })
    }

    fn too_long(&self, length: Length) -> DownloadError {
        DownloadError::TooLong {
            what: self.what.clone(),
            declared: length.bytes,
            announced: length.announced,
        }
    }

    fn refused(&self, refusal: SizeRefusal) -> DownloadError {
        let what = self.what.clone();
        match refusal {
            SizeRefusal::Disagrees {
                declared,
                content_length,
            } => DownloadError::SizeDisagrees {
                what,
                declared,
                content_length,
            },
            SizeRefusal::TooLarge { length, limit } => DownloadError::TooLarge {
                what,
                limit,
                announced: Some(length),
            },
        }
    }

    fn no_space(&self, source: NoSpace) -> DownloadError {
        DownloadError::NoSpace {
            what: self.what.clone(),
            source,
        }
    }

    /// A body that ended before its announced length is an error.
    fn check_length(&self, length: Option<Length>, received: u64) -> Result<(), DownloadError> {
        match length {
            Some(length) if received < length.bytes => Err(DownloadError::ShortBody {
                what: self.what.clone(),
                declared: length.bytes,
                announced: length.announced,
                received,
            }),
            _ => Ok(()),
        }
    }

    /// The body's digest, if it is the one the index declared (or none was declared).
    fn verify(&self, hasher: Sha256, size: u64) -> Result<Sha256Digest, DownloadError> {
        let actual = Sha256Digest::from_bytes(hasher.finalize().into());
        match self.expected.sha256 {
            Some(expected) if actual != expected => {
                self.shared.mismatches.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    file = %self.what,
                    key = %self.key,
                    %expected,
                    %actual,
                    size,
                    "sha256 mismatch: the upstream sent different bytes than its index declared; \
                     transfers aborted, nothing stored"
                );
                Err(DownloadError::Mismatch {
                    what: self.what.clone(),
                    expected,
                    actual,
                })
            }
            _ => Ok(actual),
        }
    }

    /// Releases the withheld last block (`tail`, starting at `offset`) to every reader.
    fn publish_verified(&self, offset: u64, tail: Chunks) {
        self.sender.send_modify(|now| {
            now.readable = offset + tail.len() as u64;
            if !tail.is_empty() && now.recent.back().is_none_or(|last| last.offset < offset) {
                now.recent.push_back(Block {
                    offset,
                    bytes: tail,
                });
            }
            now.end = End::Verified;
        });
    }

    /// Hands the verified body to `commit`, which owns it from then on. Readers are already
    /// reading the verified bytes; a failure here only means the file is not stored.
    async fn commit<C, F>(&self, done: Transferred, commit: C)
    where
        C: FnOnce(Completed) -> F + Send + 'static,
        F: Future<Output = Result<(), String>> + Send + 'static,
    {
        let sha256 = done.sha256;
        let completed = Completed {
            body: done.body,
            sha256,
            size: done.size,
        };
        if let Err(reason) = commit(completed).await {
            tracing::error!(
                file = %self.what,
                key = %self.key,
                %sha256,
                %reason,
                "a verified download could not be stored; clients got it, the next request \
                 fetches it again"
            );
        }
    }

    fn io_error(&self, action: &'static str, path: &Path, source: io::Error) -> DownloadError {
        DownloadError::Io {
            what: self.what.clone(),
            action,
            path: path.to_owned(),
            source: Arc::new(source),
        }
    }
}

/// A stage of [`Stages`] is gone.
struct Stopped;

/// Blocks handed to the stages together.
type Batch = Arc<[Chunks]>;

/// The two blocking stages every block of a file goes through, each on a thread of its own and
/// in order: the sha256, and the write to the temporary file. Receiving the next blocks, hashing
/// these and writing the ones before run at once, so a cold transfer costs the slowest of the
/// three rather than their sum (benches/README.md, "Cold large file"). Blocks are handed over
/// [`BATCH`] at a time, and each stage holds at most [`QUEUED_BATCHES`] batches waiting, so a slow
/// disk slows the upstream instead of filling memory.
struct Stages {
    to_hash: mpsc::Sender<Batch>,
    to_write: mpsc::Sender<Batch>,
    hashing: tokio::task::JoinHandle<Sha256>,
    writing: tokio::task::JoinHandle<io::Result<u64>>,
    /// How far the writing stage has got: bytes `0..on_disk` are in the file. Readers see it too
    /// ([`Temp::on_disk`]).
    on_disk: Arc<AtomicU64>,
    /// Bytes pushed so far, handed to the stages or pending.
    queued: u64,
    /// Blocks pushed and not handed over yet: the next batch.
    pending: Vec<Chunks>,
}

impl Stages {
    fn start(file: Arc<File>) -> Stages {
        let (to_hash, mut hash_queue) = mpsc::channel::<Batch>(QUEUED_BATCHES);
        let (to_write, mut write_queue) = mpsc::channel::<Batch>(QUEUED_BATCHES);
        let on_disk = Arc::new(AtomicU64::new(0));
        let hashing = tokio::task::spawn_blocking(move || {
            let mut hasher = Sha256::new();
            while let Some(batch) = hash_queue.blocking_recv() {
                for part in batch.iter().flat_map(Chunks::parts) {
                    hasher.update(part);
                }
            }
            hasher
        });
        let writing = {
            let on_disk = on_disk.clone();
            tokio::task::spawn_blocking(move || {
                let mut offset = 0u64;
                while let Some(batch) = write_queue.blocking_recv() {
                    // Block by block, so readers see each one on disk as soon as it is.
                    for block in batch.iter() {
                        block.write_all_at(&file, offset)?;
                        offset += block.len() as u64;
                        on_disk.store(offset, Ordering::Release);
                    }
                }
                Ok(offset)
            })
        };
        Stages {
            to_hash,
            to_write,
            hashing,
            writing,
            on_disk,
            queued: 0,
            pending: Vec::with_capacity(BATCH),
        }
    }

    /// Queues the next block, handing a batch to the stages once there are [`BATCH`] of them;
    /// waits while a stage has [`QUEUED_BATCHES`] batches waiting. An error means a stage stopped
    /// (the write failed): [`Stages::failure`] says why.
    async fn push(&mut self, block: Chunks) -> Result<(), Stopped> {
        self.queued += block.len() as u64;
        self.pending.push(block);
        if self.pending.len() < BATCH {
            return Ok(());
        }
        self.hand_over().await
    }

    /// Hands the pending blocks to both stages as one batch.
    async fn hand_over(&mut self) -> Result<(), Stopped> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch: Batch = std::mem::take(&mut self.pending).into();
        self.to_hash
            .send(batch.clone())
            .await
            .map_err(|_| Stopped)?;
        self.to_write.send(batch).await.map_err(|_| Stopped)
    }

    /// Why a stage stopped before the end.
    async fn failure(self) -> io::Error {
        match self.finish().await {
            Err(error) => error,
            Ok(_) => io::Error::other("the hashing stage stopped before the end"),
        }
    }

    /// Bytes already in the file.
    fn written(&self) -> u64 {
        self.on_disk.load(Ordering::Acquire)
    }

    /// Bytes queued and not in the file yet: what the disk's free space does not show.
    fn unwritten(&self) -> u64 {
        self.queued.saturating_sub(self.written())
    }

    /// Waits for both stages to finish the queued blocks: the hash of the whole body and its size.
    async fn finish(mut self) -> io::Result<(Sha256, u64)> {
        // A stage that stopped says why below.
        let _ = self.hand_over().await;
        let Stages {
            to_hash,
            to_write,
            hashing,
            writing,
            ..
        } = self;
        drop((to_hash, to_write));
        let size = writing
            .await
            .map_err(|join| io::Error::other(format!("the write task failed: {join}")))??;
        let hasher = hashing
            .await
            .map_err(|join| io::Error::other(format!("the hash task failed: {join}")))?;
        Ok((hasher, size))
    }
}

/// Creates a new temporary file (never reusing an existing one) open for reading and writing,
/// with the bytes `reservation` holds (a known length) allocated on disk where it can be.
async fn create_temp(
    path: PathBuf,
    mut reservation: Reservation,
) -> io::Result<(File, Reservation)> {
    tokio::task::spawn_blocking(move || {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        reservation.preallocate(&file);
        Ok((file, reservation))
    })
    .await
    .map_err(|join| io::Error::other(format!("the create task failed: {join}")))?
}

/// Deletes what is left of a temporary file; a file `commit` already moved away is fine.
async fn remove_temp(path: PathBuf, what: &str) {
    let shown = path.clone();
    let removed = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
    let error = match removed {
        Ok(Ok(())) => return,
        Ok(Err(error)) if error.kind() == io::ErrorKind::NotFound => return,
        Ok(Err(error)) => error.to_string(),
        Err(join) => join.to_string(),
    };
    tracing::warn!(
        file = %what,
        temp = %shown.display(),
        %error,
        "cannot delete a temporary download file; delete it by hand"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;
    use tokio::sync::mpsc;
    use url::Url;

    type Body = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

    /// A body stream that implements `Unpin`, as `join_body` requires.
    struct TestBody(Body);

    impl Stream for TestBody {
        type Item = Result<Bytes, UpstreamError>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.as_mut().poll_next(cx)
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| ((i % 251) as u8) ^ seed).collect()
    }

    fn chunked(data: &[u8], chunk: usize) -> TestBody {
        let chunks: Vec<_> = data
            .chunks(chunk)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        TestBody(Box::pin(stream::iter(chunks)))
    }

    fn from_channel(receiver: mpsc::Receiver<Result<Bytes, UpstreamError>>) -> TestBody {
        TestBody(Box::pin(stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        )))
    }

    /// What a test download expects: the digest, no declared size, no cap.
    fn expect(sha256: Option<Sha256Digest>) -> Expected {
        Expected {
            sha256,
            size: None,
            max_size: u64::MAX,
            url: "https://files.example.invalid/a.whl".to_owned(),
        }
    }

    /// A disk budget with no floor.
    fn unlimited() -> Space {
        Space::new(Path::new("/"), 0)
    }

    fn key(name: &str) -> FileKey {
        FileKey::for_url(&format!("https://files.example.invalid/{name}"))
    }

    fn not_found() -> UpstreamError {
        UpstreamError::NotFound {
            url: (&Url::parse("https://files.example.invalid/a.whl").unwrap()).into(),
            status: StatusCode::NOT_FOUND,
        }
    }

    /// What the commit callbacks saw: each call's `Completed` and the sha256 of the file's
    /// content at that moment.
    #[derive(Clone, Default)]
    struct Commits(Arc<Mutex<Vec<(Completed, Sha256Digest)>>>);

    impl Commits {
        /// A commit that hashes the body, then moves it (or writes it) to `moved_to` if given, or
        /// else deletes a temporary file.
        fn callback(
            &self,
            moved_to: Option<PathBuf>,
        ) -> impl FnOnce(Completed) -> std::future::Ready<Result<(), String>> + Send + 'static
        {
            let seen = self.0.clone();
            move |completed: Completed| {
                let record = || -> Result<(), String> {
                    let content = match &completed.body {
                        Landed::File(temp) => {
                            let mut file = File::open(temp).map_err(|e| e.to_string())?;
                            let mut hasher = Sha256::new();
                            io::copy(&mut file, &mut hasher).map_err(|e| e.to_string())?;
                            // The commit owns the file: moved, or deleted like a real commit.
                            match moved_to {
                                Some(target) => std::fs::rename(temp, target),
                                None => std::fs::remove_file(temp),
                            }
                            .map_err(|e| e.to_string())?;
                            Sha256Digest::from_bytes(hasher.finalize().into())
                        }
                        Landed::Memory(bytes) => {
                            if let Some(target) = moved_to {
                                std::fs::write(target, bytes).map_err(|e| e.to_string())?;
                            }
                            Sha256Digest::of(bytes)
                        }
                    };
                    seen.lock().unwrap().push((completed.clone(), content));
                    Ok(())
                };
                std::future::ready(record())
            }
        }

        fn calls(&self) -> Vec<(Completed, Sha256Digest)> {
            self.0.lock().unwrap().clone()
        }
    }

    /// Reads a body to its end: the bytes, and the error it ended with, if any.
    async fn drain(mut body: DownloadBody) -> (Vec<u8>, Option<DownloadError>) {
        let mut out = Vec::new();
        while let Some(item) = body.next().await {
            match item {
                Ok(block) => {
                    let block = block.bytes;
                    assert!(
                        !block.is_empty() && block.len() <= MAPPED_PIECE,
                        "block of {}",
                        block.len()
                    );
                    out.extend_from_slice(&block);
                }
                Err(error) => return (out, Some(error)),
            }
        }
        (out, None)
    }

    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !condition() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    fn temp_files(dir: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn the_types_cross_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        fn sent<T: Send + Unpin + 'static>() {}
        shared::<Flights>();
        shared::<DownloadError>();
        sent::<Download>();
        sent::<DownloadBody>();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_joins_share_one_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::new(dir.path().to_owned(), unlimited()));
        let data = Arc::new(pattern(3 * WRITE_BLOCK + 12_345, 7));
        let digest = Sha256Digest::of(&data);
        let polled = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let commits = Commits::default();
        let blob = blobs.path().join("blob");

        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (flights, data, polled, commits) = (
                flights.clone(),
                data.clone(),
                polled.clone(),
                commits.clone(),
            );
            let mut gate = gate.clone();
            let blob = blob.clone();
            tasks.push(tokio::spawn(async move {
                let source = async move {
                    polled.fetch_add(1, Ordering::SeqCst);
                    let _ = gate.wait_for(|open| *open).await;
                    Ok((Some(data.len() as u64), chunked(&data, 10_000)))
                };
                let download = flights
                    .join_body(
                        key("a.whl"),
                        expect(Some(digest)),
                        "a.whl".into(),
                        source,
                        commits.callback(Some(blob)),
                    )
                    .await
                    .unwrap();
                assert_eq!(
                    download.content_length,
                    Some(3 * WRITE_BLOCK as u64 + 12_345)
                );
                let leader = download.leader;
                let (bytes, error) = drain(download.body).await;
                (leader, bytes, error)
            }));
        }
        eventually("every join", || flights.joins() == 19).await;
        assert_eq!(flights.in_flight(), 1);
        open.send_replace(true);

        let mut leaders = 0;
        for task in tasks {
            let (leader, bytes, error) = task.await.unwrap();
            assert!(error.is_none(), "{error:?}");
            assert!(bytes == *data, "a reader got different bytes");
            leaders += usize::from(leader);
        }
        assert_eq!(leaders, 1);
        assert_eq!(
            polled.load(Ordering::SeqCst),
            1,
            "the upstream must be asked once"
        );
        eventually("the flight to land", || flights.in_flight() == 0).await;
        let calls = commits.calls();
        assert_eq!(calls.len(), 1);
        let (completed, content) = &calls[0];
        assert_eq!(completed.sha256, digest);
        assert_eq!(*content, digest);
        assert_eq!(completed.size, data.len() as u64);
        assert_eq!(std::fs::read(&blob).unwrap(), *data);
        assert!(temp_files(dir.path()).is_empty());
        assert_eq!(flights.mismatches(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn all_landed_waits_for_a_download_nobody_reads_any_more() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::new(dir.path().to_owned(), unlimited()));
        tokio::time::timeout(Duration::from_secs(1), flights.all_landed())
            .await
            .expect("with no download, all have landed");
        let (sender, receiver) = mpsc::channel(16);
        let commits = Commits::default();
        let download = flights
            .join_body(
                key("c.whl"),
                expect(None),
                "c.whl".into(),
                async move { Ok((None, from_channel(receiver))) },
                commits.callback(None),
            )
            .await
            .unwrap();
        // Its only reader goes away; the download goes on.
        drop(download);
        let landed = tokio::spawn({
            let flights = flights.clone();
            async move { flights.all_landed().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!landed.is_finished(), "the download is still running");
        sender.send(Ok(Bytes::from_static(b"wheel"))).await.unwrap();
        drop(sender);
        tokio::time::timeout(Duration::from_secs(10), landed)
            .await
            .expect("all_landed resolves once the download is committed")
            .unwrap();
        assert_eq!(flights.in_flight(), 0);
        assert_eq!(
            commits.0.lock().unwrap().len(),
            1,
            "the download was committed before it landed"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_get_bytes_before_the_upstream_finishes() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(5 * WRITE_BLOCK, 1);
        let (sender, receiver) = mpsc::channel(1024);
        let body = from_channel(receiver);
        let commits = Commits::default();
        let leader = flights
            .join_body(
                key("b.whl"),
                expect(None),
                "b.whl".into(),
                async move { Ok((None, body)) },
                commits.callback(None),
            )
            .await
            .unwrap();
        let follower = flights
            .join_body(
                key("b.whl"),
                expect(None),
                "b.whl".into(),
                async { Ok((None, chunked(b"other", 1))) },
                commits.callback(None),
            )
            .await
            .unwrap();
        assert!(leader.leader && !follower.leader);
        assert_eq!(leader.content_length, None);

        let (first_half, second_half) = data.split_at(3 * WRITE_BLOCK);
        for chunk in first_half.chunks(50_000) {
            sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        let mut bodies = [leader.body, follower.body];
        let mut received = [Vec::new(), Vec::new()];
        for (body, out) in bodies.iter_mut().zip(received.iter_mut()) {
            while out.len() < WRITE_BLOCK {
                let block = tokio::time::timeout(Duration::from_secs(10), body.next())
                    .await
                    .expect("bytes must flow while the upstream is still sending")
                    .unwrap()
                    .unwrap();
                out.extend_from_slice(&block.bytes);
            }
            assert!(
                out.len() < first_half.len(),
                "the last block written is withheld"
            );
        }
        assert_eq!(flights.in_flight(), 1, "the upstream has not finished yet");

        for chunk in second_half.chunks(50_000) {
            sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        drop(sender);
        for (body, mut out) in bodies.into_iter().zip(received) {
            let (rest, error) = drain(body).await;
            assert!(error.is_none(), "{error:?}");
            out.extend_from_slice(&rest);
            assert!(out == data);
        }
        eventually("the flight to land", || flights.in_flight() == 0).await;
        let calls = commits.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(
            calls[0].0.sha256,
            Sha256Digest::of(&data),
            "the computed digest is final"
        );
        assert_eq!(calls[0].0.size, data.len() as u64);
    }

    #[tokio::test]
    async fn a_failed_flight_not_yet_landed_is_not_joined() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        // A flight that has failed and whose task has not removed it from the map yet.
        let (failed, progress) = watch::channel(Progress {
            opened: None,
            readable: 0,
            recent: VecDeque::new(),
            end: End::Failed(DownloadError::Abandoned {
                what: "f.whl".into(),
            }),
        });
        flights
            .shared
            .flights()
            .insert(key("f.whl"), Flight { id: 999, progress });
        let data = pattern(1000, 3);
        let commits = Commits::default();
        let download = flights
            .join_body(
                key("f.whl"),
                expect(Some(Sha256Digest::of(&data))),
                "f.whl".into(),
                {
                    let data = data.clone();
                    async move { Ok((Some(1000), chunked(&data, 100))) }
                },
                commits.callback(None),
            )
            .await
            .unwrap();
        assert!(download.leader, "a new flight started");
        let (bytes, error) = drain(download.body).await;
        assert!(error.is_none(), "{error:?}");
        assert!(bytes == data);
        drop(failed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_far_behind_reads_from_the_file_what_memory_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let blocks = 2 * (KEPT_BLOCKS + BATCH * (QUEUED_BATCHES + 2));
        let data = pattern(blocks * WRITE_BLOCK + 321, 5);
        let (sender, receiver) = mpsc::channel(1024);
        let body = from_channel(receiver);
        let commits = Commits::default();
        let size = data.len() as u64;
        let download = flights
            .join_body(
                key("far.whl"),
                expect(Some(Sha256Digest::of(&data))),
                "far.whl".into(),
                async move { Ok((Some(size), body)) },
                commits.callback(None),
            )
            .await
            .unwrap();
        // Everything but the last block arrives while this reader reads nothing: most of the
        // file is then only in the temporary file.
        let (most, last) = data.split_at(blocks * WRITE_BLOCK);
        for chunk in most.chunks(100_000) {
            sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        let progress = flights.shared.flights()[&key("far.whl")].progress.clone();
        eventually("the body to be written", || {
            let now = progress.borrow();
            now.readable == (blocks as u64 - 1) * WRITE_BLOCK as u64
                && now.recent.len() <= KEPT_BLOCKS + BATCH * (QUEUED_BATCHES + 2)
        })
        .await;
        assert!(
            progress.borrow().recent.front().unwrap().offset > 0,
            "written blocks were let go"
        );
        let in_memory_from = progress.borrow().recent.front().unwrap().offset;
        sender.send(Ok(Bytes::copy_from_slice(last))).await.unwrap();
        drop(sender);
        let mut body = download.body;
        let (mut bytes, mut from_file) = (Vec::new(), 0);
        while let Some(piece) = body.next().await {
            let piece = piece.unwrap();
            let at = bytes.len() as u64;
            // Each piece says where the same bytes are in the file once they are written there,
            // so the front can send them from it (`front::sendfile`).
            if let Some(slice) = &piece.file {
                assert_eq!(slice.offset, at);
                let mut on_disk = vec![0; piece.bytes.len()];
                slice
                    .file
                    .read_exact_at(&mut on_disk, slice.offset)
                    .unwrap();
                assert!(
                    on_disk == piece.bytes,
                    "the piece at {at} differs from its file"
                );
                from_file += 1;
            } else {
                assert!(
                    at >= in_memory_from,
                    "a piece only in the file came without it"
                );
            }
            bytes.extend_from_slice(&piece.bytes);
        }
        assert!(bytes == data);
        assert!(from_file > 0);
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert_eq!(commits.calls().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_hanging_up_does_not_cancel_the_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(6 * WRITE_BLOCK + 3, 2);
        let (sender, receiver) = mpsc::channel(1024);
        let body = from_channel(receiver);
        let commits = Commits::default();
        let polled = Arc::new(AtomicUsize::new(0));
        let length = data.len() as u64;
        let join = |source_polled: Arc<AtomicUsize>, body: Option<TestBody>| {
            flights.join_body(
                key("c.whl"),
                expect(Some(Sha256Digest::of(&data))),
                "c.whl".into(),
                async move {
                    source_polled.fetch_add(1, Ordering::SeqCst);
                    Ok((Some(length), body.unwrap_or_else(|| chunked(b"", 1))))
                },
                commits.callback(None),
            )
        };
        let mut quitter = join(polled.clone(), Some(body)).await.unwrap();
        let stayer = join(polled.clone(), None).await.unwrap();
        for chunk in data[..3 * WRITE_BLOCK].chunks(40_000) {
            sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        let first = quitter.body.next().await.unwrap().unwrap();
        assert!(!first.bytes.is_empty());
        drop(quitter);
        for chunk in data[3 * WRITE_BLOCK..].chunks(40_000) {
            sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .unwrap();
        }
        drop(sender);
        let (bytes, error) = drain(stayer.body).await;
        assert!(error.is_none(), "{error:?}");
        assert!(bytes == data);
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert_eq!(commits.calls().len(), 1);
        assert_eq!(polled.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_mismatch_fails_every_reader_and_withholds_the_last_block() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::new(dir.path().to_owned(), unlimited()));
        let data = pattern(4 * WRITE_BLOCK + 999, 3);
        let wrong = Sha256Digest::of(b"what the index declared");
        let commits = Commits::default();
        let (open, gate) = watch::channel(false);
        let mut readers = Vec::new();
        for _ in 0..3 {
            let (flights, data, commits) = (flights.clone(), data.clone(), commits.clone());
            let mut gate = gate.clone();
            readers.push(tokio::spawn(async move {
                let source = async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Ok((Some(data.len() as u64), chunked(&data, 30_000)))
                };
                let download = flights
                    .join_body(
                        key("d.whl"),
                        expect(Some(wrong)),
                        "d-1.0-py3-none-any.whl".into(),
                        source,
                        commits.callback(None),
                    )
                    .await
                    .unwrap();
                drain(download.body).await
            }));
        }
        eventually("every join", || flights.joins() == 2).await;
        open.send_replace(true);
        for reader in readers {
            let (bytes, error) = reader.await.unwrap();
            match error {
                Some(DownloadError::Mismatch {
                    what,
                    expected,
                    actual,
                }) => {
                    assert_eq!(what, "d-1.0-py3-none-any.whl");
                    assert_eq!(expected, wrong);
                    assert_eq!(actual, Sha256Digest::of(&data));
                }
                other => panic!("expected a mismatch, got {other:?}"),
            }
            // The final write (the 999-byte tail) and the block before it were never readable.
            assert!(
                bytes.len() <= data.len() - 999 - WRITE_BLOCK,
                "{} bytes leaked",
                bytes.len()
            );
            assert_eq!(bytes, data[..bytes.len()]);
        }
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert!(
            commits.calls().is_empty(),
            "a mismatching file must not be committed"
        );
        assert!(
            temp_files(dir.path()).is_empty(),
            "the temporary file must be deleted"
        );
        assert_eq!(flights.mismatches(), 1);
        let message = DownloadError::Mismatch {
            what: "d.whl".into(),
            expected: wrong,
            actual: wrong,
        }
        .to_string();
        assert!(
            message.contains("d.whl") && message.contains(&wrong.to_hex()),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_announced_to_fit_in_one_block_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::new(dir.path().to_owned(), unlimited()));
        let data = pattern(100_000, 3);
        let digest = Sha256Digest::of(&data);
        let commits = Commits::default();
        let (sender, receiver) = mpsc::channel(4);
        let len = data.len() as u64;
        let leader = flights
            .join_body(
                key("m.whl"),
                expect(Some(digest)),
                "m.whl".into(),
                async move { Ok((Some(len), from_channel(receiver))) },
                commits.callback(None),
            )
            .await
            .unwrap();
        assert_eq!(leader.content_length, Some(len));
        sender
            .send(Ok(Bytes::copy_from_slice(&data[..40_000])))
            .await
            .unwrap();
        // A follower joins halfway; nothing is on disk meanwhile.
        let follower = flights
            .join_body(
                key("m.whl"),
                expect(Some(digest)),
                "m.whl".into(),
                async { Err::<(Option<u64>, TestBody), _>(not_found()) },
                commits.callback(None),
            )
            .await
            .unwrap();
        assert!(!follower.leader);
        assert!(temp_files(dir.path()).is_empty());
        sender
            .send(Ok(Bytes::copy_from_slice(&data[40_000..])))
            .await
            .unwrap();
        drop(sender);
        for body in [leader.body, follower.body] {
            let (bytes, error) = drain(body).await;
            assert!(error.is_none(), "{error:?}");
            assert!(bytes == data);
        }
        eventually("the flight to land", || flights.in_flight() == 0).await;
        let calls = commits.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0.body, Landed::Memory(Bytes::from(data)));
        assert_eq!((calls[0].0.sha256, calls[0].1), (digest, digest));
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn one_block_is_the_limit_for_memory_and_unknown_lengths_go_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        for (len, announced, in_memory) in [
            (WRITE_BLOCK, true, true),
            (WRITE_BLOCK + 1, true, false),
            (10, false, false),
        ] {
            let data = pattern(len, 9);
            let commits = Commits::default();
            let body = chunked(&data, 50_000);
            let content_length = announced.then_some(len as u64);
            let download = flights
                .join_body(
                    key(&format!("{len}-{announced}.whl")),
                    expect(Some(Sha256Digest::of(&data))),
                    "n.whl".into(),
                    async move { Ok((content_length, body)) },
                    commits.callback(None),
                )
                .await
                .unwrap();
            let (bytes, error) = drain(download.body).await;
            assert!(error.is_none() && bytes == data, "{len}: {error:?}");
            eventually("the flight to land", || flights.in_flight() == 0).await;
            let calls = commits.calls();
            assert_eq!(
                matches!(calls[0].0.body, Landed::Memory(_)),
                in_memory,
                "{len} bytes, announced: {announced}"
            );
            assert_eq!(calls[0].1, Sha256Digest::of(&data));
        }
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_small_mismatching_file_delivers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        // An unknown length goes through a temporary file, an announced one stays in memory.
        for (n, content_length) in [None, Some(12)].into_iter().enumerate() {
            let commits = Commits::default();
            let download = flights
                .join_body(
                    key(&format!("e{n}.whl")),
                    expect(Some(Sha256Digest::of(b"declared"))),
                    "e.whl".into(),
                    async move { Ok((content_length, chunked(b"actual bytes", 5))) },
                    commits.callback(None),
                )
                .await
                .unwrap();
            let (bytes, error) = drain(download.body).await;
            assert!(bytes.is_empty(), "{content_length:?}");
            assert!(
                matches!(error, Some(DownloadError::Mismatch { .. })),
                "{content_length:?}: {error:?}"
            );
            eventually("the flight to land", || flights.in_flight() == 0).await;
            assert!(commits.calls().is_empty());
        }
        assert_eq!(flights.mismatches(), 2);
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_body_that_fails_before_its_first_byte_is_an_error_once_started() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(3 * WRITE_BLOCK + 5, 9);
        // In memory (an announced length), through a file (none), and cut short before any
        // block was readable.
        let cases: [(&str, Option<u64>, Vec<u8>, Sha256Digest); 3] = [
            (
                "m.whl",
                Some(12),
                b"actual bytes".to_vec(),
                Sha256Digest::of(b"declared"),
            ),
            (
                "t.whl",
                None,
                data[..1000].to_vec(),
                Sha256Digest::of(&data),
            ),
            (
                "s.whl",
                Some(data.len() as u64),
                data[..WRITE_BLOCK].to_vec(),
                Sha256Digest::of(&data),
            ),
        ];
        for (name, length, sent, declared) in cases {
            let download = flights
                .join_body(
                    key(name),
                    expect(Some(declared)),
                    name.into(),
                    async move { Ok((length, chunked(&sent, 100))) },
                    Commits::default().callback(None),
                )
                .await
                .unwrap();
            let error = download.body.started().await.err();
            assert!(
                matches!(
                    error,
                    Some(DownloadError::Mismatch { .. } | DownloadError::ShortBody { .. })
                ),
                "{name}: {error:?}"
            );
        }
        for (name, length) in [
            ("whole.whl", Some(data.len() as u64)),
            ("unknown.whl", None),
        ] {
            let body = chunked(&data, 10_000);
            let download = flights
                .join_body(
                    key(name),
                    expect(Some(Sha256Digest::of(&data))),
                    name.into(),
                    async move { Ok((length, body)) },
                    Commits::default().callback(None),
                )
                .await
                .unwrap();
            let started = download.body.started().await.unwrap();
            let (bytes, error) = drain(started).await;
            assert!(error.is_none(), "{name}: {error:?}");
            assert!(bytes == data, "{name}: the first bytes are kept");
        }
        let empty = flights
            .join_body(
                key("empty.whl"),
                expect(Some(Sha256Digest::of(b""))),
                "empty.whl".into(),
                async { Ok((Some(0), chunked(b"", 1))) },
                Commits::default().callback(None),
            )
            .await
            .unwrap();
        let (bytes, error) = drain(empty.body.started().await.unwrap()).await;
        assert!(bytes.is_empty() && error.is_none(), "{error:?}");
        eventually("the flights to land", || flights.in_flight() == 0).await;
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upstream_error_fails_every_join() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Arc::new(Flights::new(dir.path().to_owned(), unlimited()));
        let commits = Commits::default();
        let (open, gate) = watch::channel(false);
        let mut joins = Vec::new();
        for _ in 0..5 {
            let (flights, commits) = (flights.clone(), commits.clone());
            let mut gate = gate.clone();
            joins.push(tokio::spawn(async move {
                let source = async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Err::<(Option<u64>, TestBody), _>(not_found())
                };
                flights
                    .join_body(
                        key("f.whl"),
                        expect(None),
                        "f.whl".into(),
                        source,
                        commits.callback(None),
                    )
                    .await
            }));
        }
        eventually("every join", || flights.joins() == 4).await;
        open.send_replace(true);
        for join in joins {
            let error = join.await.unwrap().unwrap_err();
            assert!(
                matches!(&error, DownloadError::Upstream(e) if e.is_not_found()),
                "{error:?}"
            );
            assert_eq!(error.status(), StatusCode::NOT_FOUND);
        }
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert!(commits.calls().is_empty());
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_body_error_comes_after_the_readable_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(3 * WRITE_BLOCK, 4);
        let mut chunks: Vec<Result<Bytes, UpstreamError>> = data
            .chunks(WRITE_BLOCK)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        chunks.push(Err(not_found()));
        let body = TestBody(Box::pin(stream::iter(chunks)));
        let commits = Commits::default();
        let download = flights
            .join_body(
                key("g.whl"),
                expect(None),
                "g.whl".into(),
                async { Ok((None, body)) },
                commits.callback(None),
            )
            .await
            .unwrap();
        let (bytes, error) = drain(download.body).await;
        assert!(
            matches!(error, Some(DownloadError::Upstream(_))),
            "{error:?}"
        );
        assert_eq!(
            bytes,
            data[..2 * WRITE_BLOCK],
            "the blocks before the last one were readable"
        );
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert!(commits.calls().is_empty());
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn content_length_must_match_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(1000, 5);
        for (declared, name) in [(999u64, "long.whl"), (1001, "short.whl")] {
            let commits = Commits::default();
            let body = chunked(&data, 100);
            let download = flights
                .join_body(
                    key(name),
                    expect(None),
                    name.into(),
                    async move { Ok((Some(declared), body)) },
                    commits.callback(None),
                )
                .await
                .unwrap();
            let (bytes, error) = drain(download.body).await;
            assert!(
                bytes.is_empty(),
                "{name}: nothing was verified, nothing may be sent"
            );
            match (declared, error) {
                (
                    999,
                    Some(DownloadError::TooLong {
                        what,
                        declared: 999,
                        announced: Announced::ContentLength,
                    }),
                ) => assert_eq!(what, name),
                (
                    1001,
                    Some(DownloadError::ShortBody {
                        declared: 1001,
                        received: 1000,
                        ..
                    }),
                ) => {}
                (_, other) => panic!("{name}: unexpected {other:?}"),
            }
            eventually("the flight to land", || flights.in_flight() == 0).await;
            assert!(commits.calls().is_empty(), "{name}");
        }
        assert!(temp_files(dir.path()).is_empty());
    }

    /// Joins a flight for `data` sent in 64 KiB chunks with `content_length`, expecting
    /// `expected`; the outcome of the join and, when it started, the bytes and error of its body.
    async fn sized_download(
        flights: &Flights,
        name: &str,
        expected: Expected,
        content_length: Option<u64>,
        data: Vec<u8>,
    ) -> Result<(Vec<u8>, Option<DownloadError>), DownloadError> {
        let commits = Commits::default();
        let body = chunked(&data, 65_536);
        let joined = flights
            .join_body(
                key(name),
                expected,
                name.into(),
                async move { Ok((content_length, body)) },
                commits.callback(None),
            )
            .await;
        let result = match joined {
            Ok(download) => Ok(drain(download.body).await),
            Err(error) => Err(error),
        };
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert!(
            commits.calls().is_empty() || matches!(result, Ok((_, None))),
            "{name}"
        );
        result
    }

    fn sized(size: Option<u64>, max_size: u64) -> Expected {
        Expected {
            size,
            max_size,
            ..expect(None)
        }
    }

    #[tokio::test]
    async fn a_content_length_other_than_the_declared_size_is_refused_before_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let data = pattern(3_000_000, 2);
        let error = sized_download(
            &flights,
            "big.whl",
            sized(Some(10), u64::MAX),
            Some(3_000_000),
            data,
        )
        .await
        .unwrap_err();
        match &error {
            DownloadError::SizeDisagrees {
                what,
                declared: 10,
                content_length: 3_000_000,
            } => assert_eq!(what, "big.whl"),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert!(error.to_string().contains("PEP 700 size"), "{error}");
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_declared_size_holds_a_body_without_content_length() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        // Declared 10 bytes, 3 MB sent: cut at the first chunk past 10, nothing readable.
        let (bytes, error) = sized_download(
            &flights,
            "long.whl",
            sized(Some(10), u64::MAX),
            None,
            pattern(3_000_000, 3),
        )
        .await
        .unwrap();
        assert!(bytes.is_empty());
        assert!(
            matches!(
                error,
                Some(DownloadError::TooLong {
                    declared: 10,
                    announced: Announced::IndexPage,
                    ..
                })
            ),
            "{error:?}"
        );
        // Declared more than a block, fewer bytes sent: the end is short, the tail withheld.
        let declared = 3 * WRITE_BLOCK as u64;
        let (bytes, error) = sized_download(
            &flights,
            "short.whl",
            sized(Some(declared), u64::MAX),
            None,
            pattern(2 * WRITE_BLOCK + 10, 4),
        )
        .await
        .unwrap();
        assert!(
            bytes.len() < 2 * WRITE_BLOCK + 10,
            "the last block was withheld"
        );
        assert!(
            matches!(
                error,
                Some(DownloadError::ShortBody {
                    announced: Announced::IndexPage,
                    received,
                    ..
                }) if received == 2 * WRITE_BLOCK as u64 + 10
            ),
            "{error:?}"
        );
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn max_file_size_refuses_an_announced_length_and_cuts_an_unannounced_one() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let limit = 2 * WRITE_BLOCK as u64;
        let data = pattern(4 * WRITE_BLOCK, 6);
        let announced = sized_download(
            &flights,
            "a.whl",
            sized(None, limit),
            Some(data.len() as u64),
            data.clone(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                announced,
                DownloadError::TooLarge {
                    limit: l,
                    announced: Some(Length {
                        bytes,
                        announced: Announced::ContentLength,
                    }),
                    ..
                } if l == limit && bytes == 4 * WRITE_BLOCK as u64
            ),
            "{announced:?}"
        );
        let message = announced.to_string();
        assert!(
            message.contains("max_file_size") && message.contains("a.whl"),
            "{message}"
        );
        let declared = sized_download(
            &flights,
            "b.whl",
            sized(Some(4 * WRITE_BLOCK as u64), limit),
            None,
            data.clone(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(declared, DownloadError::TooLarge { .. }),
            "{declared:?}"
        );
        let (bytes, error) = sized_download(&flights, "c.whl", sized(None, limit), None, data)
            .await
            .unwrap();
        assert!(bytes.len() as u64 <= limit);
        assert!(
            matches!(
                error,
                Some(DownloadError::TooLarge {
                    announced: None,
                    ..
                })
            ),
            "{error:?}"
        );
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_download_that_would_fill_the_disk_is_refused_with_507() {
        let dir = tempfile::tempdir().unwrap();
        let full = Space::new(dir.path(), u64::MAX / 4);
        let flights = Flights::new(dir.path().to_owned(), full.clone());
        let data = pattern(3 * WRITE_BLOCK, 7);
        let error = sized_download(
            &flights,
            "a.whl",
            expect(None),
            Some(data.len() as u64),
            data,
        )
        .await
        .unwrap_err();
        assert!(matches!(error, DownloadError::NoSpace { .. }), "{error:?}");
        assert_eq!(error.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(error.to_string().contains("min_free_space"), "{error}");
        assert_eq!(full.pending(), 0);
        assert!(temp_files(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn a_new_join_after_landing_starts_a_new_flight() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let commits = Commits::default();
        let polled = Arc::new(AtomicUsize::new(0));
        for _ in 0..2 {
            let polled = polled.clone();
            let source = async move {
                polled.fetch_add(1, Ordering::SeqCst);
                Ok((Some(5), chunked(b"hello", 2)))
            };
            let download = flights
                .join_body(
                    key("h.whl"),
                    expect(None),
                    "h.whl".into(),
                    source,
                    commits.callback(None),
                )
                .await
                .unwrap();
            assert!(download.leader);
            let (bytes, error) = drain(download.body).await;
            assert!(error.is_none());
            assert_eq!(bytes, b"hello");
            eventually("the flight to land", || flights.in_flight() == 0).await;
        }
        assert_eq!(polled.load(Ordering::SeqCst), 2);
        assert_eq!(commits.calls().len(), 2);
        assert_eq!(flights.joins(), 0);
    }

    #[tokio::test]
    async fn an_empty_file_is_verified_and_committed() {
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let commits = Commits::default();
        let download = flights
            .join_body(
                key("empty.whl"),
                expect(Some(Sha256Digest::of(b""))),
                "empty.whl".into(),
                async { Ok((Some(0), chunked(b"", 1))) },
                commits.callback(None),
            )
            .await
            .unwrap();
        let (bytes, error) = drain(download.body).await;
        assert!(bytes.is_empty() && error.is_none(), "{error:?}");
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert_eq!(commits.calls().len(), 1);
        assert_eq!(commits.calls()[0].0.size, 0);
    }

    #[tokio::test]
    async fn a_missing_tmp_dir_fails_the_join_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir");
        let flights = Flights::new(missing.clone(), unlimited());
        let error = flights
            .join_body(
                key("i.whl"),
                expect(None),
                "i.whl".into(),
                async { Ok((None, chunked(b"x", 1))) },
                Commits::default().callback(None),
            )
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, DownloadError::Io { .. }), "{error:?}");
        assert!(
            message.contains("no-such-dir") && message.contains("i.whl"),
            "{message}"
        );
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        eventually("the flight to land", || flights.in_flight() == 0).await;
    }

    /// The resident set size of this process, from /proc.
    fn rss_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    #[tokio::test]
    async fn blocks_are_gathered_one_at_most_then_hashed_and_written_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = Arc::new(tempfile::tempfile_in(dir.path()).unwrap());
        let mut gather = Gather::new(WRITE_BLOCK);
        let mut stages = Stages::start(file.clone());
        // One upstream chunk far larger than a block, as a misbehaving peer could send.
        let huge = pattern(10 * WRITE_BLOCK + 17, 9);
        let mut rest = Bytes::from(huge.clone());
        let mut pushes = 0;
        while !rest.is_empty() {
            rest = gather.fill(rest);
            assert!(gather.len() <= WRITE_BLOCK);
            if gather.is_full() {
                assert!(stages.push(gather.take()).await.is_ok());
                pushes += 1;
            }
        }
        assert!(stages.push(gather.take()).await.is_ok());
        assert_eq!(pushes, 10);
        assert_eq!(stages.queued, huge.len() as u64);
        let (hasher, size) = stages.finish().await.unwrap();
        assert_eq!(size, huge.len() as u64);
        assert_eq!(
            Sha256Digest::from_bytes(hasher.finalize().into()),
            Sha256Digest::of(&huge)
        );
        let mut written = Vec::new();
        io::Read::read_to_end(&mut &*file, &mut written).unwrap();
        assert!(written == huge);
    }

    #[tokio::test]
    async fn a_failed_write_stops_the_stages_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only");
        std::fs::write(&path, b"").unwrap();
        // Open for reading only: every write fails with EBADF.
        let file = Arc::new(File::open(&path).unwrap());
        let mut stages = Stages::start(file);
        let mut stopped = false;
        // The queues take a few batches before the failure is seen.
        for _ in 0..BATCH * (2 * QUEUED_BATCHES + 4) {
            if stages
                .push(Chunks::from(Bytes::from(vec![1u8; 1024])))
                .await
                .is_err()
            {
                stopped = true;
                break;
            }
        }
        assert!(stopped, "pushing went on after the write failed");
        let error = stages.failure().await;
        assert_eq!(
            error.raw_os_error(),
            Some(rustix::io::Errno::BADF.raw_os_error()),
            "{error}"
        );
    }

    /// Set in the child process that runs the large-file test alone, so that its memory
    /// measurement is not disturbed by the tests running beside it.
    const ALONE: &str = "WHEELGATE_FLIGHT_TEST_ALONE";

    #[test]
    fn a_large_file_streams_with_bounded_memory() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        if std::env::var_os(ALONE).is_some() {
            runtime.block_on(stream_a_large_file(true));
            return;
        }
        // Check the streaming here, and the memory in a process of its own.
        runtime.block_on(stream_a_large_file(false));
        let module = module_path!().split_once("::").map_or("", |(_, rest)| rest);
        let name = format!("{module}::a_large_file_streams_with_bounded_memory");
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name.as_str(), "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test: {stdout}"
        );
    }

    async fn stream_a_large_file(measure: bool) {
        const SIZE: usize = 64 * 1024 * 1024;
        const CHUNK: usize = 64 * 1024;
        fn chunk_at(index: usize) -> Bytes {
            Bytes::from(pattern(CHUNK, (index % 256) as u8))
        }
        let expected = {
            let mut hasher = Sha256::new();
            for index in 0..SIZE / CHUNK {
                hasher.update(chunk_at(index));
            }
            Sha256Digest::from_bytes(hasher.finalize().into())
        };
        let dir = tempfile::tempdir().unwrap();
        let flights = Flights::new(dir.path().to_owned(), unlimited());
        let commits = Commits::default();
        let generator = TestBody(Box::pin(stream::iter(
            (0..SIZE / CHUNK).map(|i| Ok(chunk_at(i))),
        )));
        let baseline = rss_bytes().unwrap_or(0);
        let download = flights
            .join_body(
                key("big.whl"),
                expect(Some(expected)),
                "big.whl".into(),
                async move { Ok((Some(SIZE as u64), generator)) },
                commits.callback(None),
            )
            .await
            .unwrap();
        let mut body = download.body;
        let (mut total, mut hasher, mut peak) = (0usize, Sha256::new(), 0u64);
        while let Some(block) = body.next().await {
            let block = block.unwrap().bytes;
            assert!(
                block.len() <= MAPPED_PIECE,
                "a block of {} bytes",
                block.len()
            );
            total += block.len();
            hasher.update(&block);
            if measure {
                peak = peak.max(rss_bytes().unwrap_or(0));
            }
        }
        assert_eq!(total, SIZE);
        assert_eq!(Sha256Digest::from_bytes(hasher.finalize().into()), expected);
        if measure {
            // Holding the file anywhere would add its 64 MiB; the blocks in flight are a few MiB.
            let growth = peak.saturating_sub(baseline);
            eprintln!("resident set grew by {growth} bytes while streaming {SIZE} bytes");
            assert!(
                growth < 24 * 1024 * 1024,
                "RSS grew by {growth} bytes while streaming"
            );
        }
        eventually("the flight to land", || flights.in_flight() == 0).await;
        assert_eq!(commits.calls().len(), 1);
        assert_eq!(commits.calls()[0].1, expected);
    }
}
