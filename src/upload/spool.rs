//! Writing the uploaded file to disk as it arrives, hashing it on the way.
//!
//! The file part of an upload streams in as chunks on an async task. Hashing (three digests) and
//! writing a gigabyte are CPU and blocking work, so they run on one blocking thread that receives
//! the chunks through a small bounded channel: the async side only hands chunks over, memory stays
//! at a few chunks whatever the file's size, and a slow disk slows the client down (backpressure)
//! instead of filling memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest as _};
use bytes::Bytes;
use md5::Md5;
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::content::{ContentFile, Digests, TempPath};
use super::error::UploadError;
use crate::simple::Sha256Digest;

/// Chunks in flight between the request and the writing thread.
const CHANNEL_CHUNKS: usize = 8;
/// The writing thread's buffer: fewer, larger writes for the small chunks HTTP/2 delivers.
const WRITE_BUFFER: usize = 256 << 10;
/// Tries at a fresh random name before giving up (a clash of 128 random bits means something is
/// wrong with the randomness, not bad luck).
const NAME_TRIES: usize = 4;

/// A temporary file being written. Dropping it (an error, or the request's future dropped when the
/// client hangs up) deletes the file; the writing thread then sees the channel close and ends.
pub(crate) struct Spool {
    path: TempPath,
    chunks: mpsc::Sender<Bytes>,
    writer: JoinHandle<io::Result<(File, u64, Digests)>>,
}

impl Spool {
    /// Creates `upload-<random>` in `dir` and starts the writing thread.
    pub(crate) async fn create(dir: &Path) -> Result<Spool, UploadError> {
        let (file, path) = create_unique(dir).await?;
        let (chunks, receiver) = mpsc::channel(CHANNEL_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || write_chunks(file, receiver));
        Ok(Spool {
            path,
            chunks,
            writer,
        })
    }

    /// Hands one chunk to the writing thread, waiting while it is behind.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), UploadError> {
        if self.chunks.send(chunk).await.is_err() {
            // The thread stopped early: it failed, and says why when joined.
            return Err(self.join().await.err().unwrap_or_else(|| {
                temp_error(io::Error::other("the writing thread stopped early"))
            }));
        }
        Ok(())
    }

    /// Waits for the last chunk to be written and returns the complete file.
    pub(crate) async fn finish(self, filename: String) -> Result<ContentFile, UploadError> {
        let Spool {
            path,
            chunks,
            writer,
        } = self;
        drop(chunks);
        let (file, size, digests) = joined(writer).await?;
        Ok(ContentFile::new(file, path, filename, size, digests))
    }

    async fn join(&mut self) -> Result<(File, u64, Digests), UploadError> {
        joined(&mut self.writer).await
    }
}

/// The writing thread's outcome, its failures as our I/O errors.
async fn joined(
    writer: impl std::future::Future<
        Output = Result<io::Result<(File, u64, Digests)>, tokio::task::JoinError>,
    >,
) -> Result<(File, u64, Digests), UploadError> {
    match writer.await {
        Ok(result) => result.map_err(temp_error),
        Err(joined) => Err(temp_error(io::Error::other(format!(
            "the writing thread failed: {joined}"
        )))),
    }
}

fn temp_error(source: io::Error) -> UploadError {
    UploadError::TempFile { source }
}

async fn create_unique(dir: &Path) -> Result<(File, TempPath), UploadError> {
    let mut last_error = None;
    for _ in 0..NAME_TRIES {
        let path = dir.join(format!("upload-{:032x}", rand::random::<u128>()));
        let opened = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .await;
        match opened {
            // Only a file this call created is ever deleted by the guard.
            Ok(file) => return Ok((file.into_std().await, TempPath::new(path))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => return Err(temp_error(e)),
        }
    }
    Err(temp_error(last_error.unwrap_or_else(|| {
        io::Error::other("no free temporary name")
    })))
}

/// The writing thread: hashes and writes every chunk until the sender is dropped.
fn write_chunks(file: File, mut chunks: mpsc::Receiver<Bytes>) -> io::Result<(File, u64, Digests)> {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hashers = Hashers::default();
    let mut size = 0u64;
    while let Some(chunk) = chunks.blocking_recv() {
        hashers.update(&chunk);
        out.write_all(&chunk)?;
        size += chunk.len() as u64;
    }
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    Ok((file, size, hashers.finish()))
}

/// The three incremental hashers, fed the same bytes.
#[derive(Default)]
struct Hashers {
    sha256: Sha256,
    blake2_256: Blake2b<U32>,
    md5: Md5,
}

impl Hashers {
    fn update(&mut self, bytes: &[u8]) {
        self.sha256.update(bytes);
        self.blake2_256.update(bytes);
        self.md5.update(bytes);
    }

    fn finish(self) -> Digests {
        Digests {
            sha256: Sha256Digest::from_bytes(self.sha256.finalize().into()),
            blake2_256: self.blake2_256.finalize().into(),
            md5: self.md5.finalize().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_hashes_and_deletes_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).await.unwrap();
        spool.write(Bytes::from_static(b"hello ")).await.unwrap();
        spool.write(Bytes::from_static(b"world")).await.unwrap();
        let content = spool.finish("x.whl".to_owned()).await.unwrap();
        assert_eq!(content.size(), 11);
        assert_eq!(std::fs::read(content.path()).unwrap(), b"hello world");
        assert_eq!(content.sha256(), Sha256Digest::of(b"hello world"));
        // Known vectors for "hello world".
        assert_eq!(
            content.digests().md5_hex(),
            "5eb63bbbe01eeed093cb22bb8f5acdc3"
        );
        assert_eq!(
            content.digests().blake2_256_hex(),
            "256c83b297114d201b30179f3f0ef0cace9783622da5974326b436178aeef610"
        );
        content.sync_all().unwrap();
        let path = content.path().to_owned();
        drop(content);
        assert!(!path.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn into_path_keeps_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).await.unwrap();
        spool.write(Bytes::from_static(b"kept")).await.unwrap();
        let content = spool.finish("x.whl".to_owned()).await.unwrap();
        let path = content.into_path();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert!(path.starts_with(dir.path()));
        assert!(path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("upload-")));
    }

    #[tokio::test]
    async fn an_abandoned_spool_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).await.unwrap();
        spool.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(spool);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_server_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Spool::create(&dir.path().join("missing"))
            .await
            .err()
            .unwrap();
        assert_eq!(err.status(), http::StatusCode::INTERNAL_SERVER_ERROR);
    }
}
