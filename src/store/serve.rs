//! Streaming stored bodies to clients without holding them in memory.
//!
//! Artifacts can be gigabytes (SPEC §4: memory stays bounded whatever the artifact size), so a
//! stored body is never read whole: it is read in blocks of [`BLOCK`] bytes, each read done with
//! positioned I/O (`pread`) on a blocking thread, and handed to hyper one block at a time. A block is
//! only read when hyper asks for the next one, so a slow client holds at most a block or two in
//! memory, never the file. Positioned reads need no shared cursor, which is also what lets the
//! downloads in [`super::flight`] read a file while it is being written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{self, BoxStream};
#[cfg(test)]
use futures_util::Stream;

/// The bytes of a stored artifact: in memory (small and hot files, inline catalog bodies) or an
/// open blob file. Holding the file open keeps its bytes readable even if the artifact is evicted
/// while a transfer runs. Callers only ever ask for a range of it ([`ArtifactBody::read`]), so
/// how a body is held stays the store's business.
#[derive(Debug)]
pub struct ArtifactBody(Held);

#[derive(Debug)]
enum Held {
    /// In memory; with the blob that holds the same bytes, when it is open.
    Memory {
        bytes: Bytes,
        file: Option<Arc<File>>,
    },
    File(File),
}

/// A range of a stored body: bytes already in memory, or a stream of blocks read on demand.
pub enum Content {
    /// With where the same bytes are on disk, when the blob is open: the front sends them from
    /// there without copying (`front::sendfile`).
    Bytes(Bytes, Option<FileSlice>),
    Stream(BoxStream<'static, io::Result<Bytes>>),
}

/// Hot bodies smaller than this come without their blob: copying them costs less than a
/// `sendfile` beside the head, and they would take places among the [`OPEN_BLOBS`] kept open.
pub const FILE_SLICE_MIN: u64 = 32 * 1024;

/// How many blob files of hot bodies stay open for `sendfile`: part of the descriptors the front
/// keeps aside from its connection cap (`front::limit::RESERVED_FILES`).
pub const OPEN_BLOBS: u64 = 32;

/// Bytes of a blob file from `offset` on: the same bytes as the [`Content::Bytes`] they come with.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub offset: u64,
}

impl ArtifactBody {
    pub(crate) fn memory(bytes: Bytes) -> ArtifactBody {
        ArtifactBody(Held::Memory { bytes, file: None })
    }

    /// In memory, and in `file` too.
    pub(crate) fn memory_on_disk(bytes: Bytes, file: Arc<File>) -> ArtifactBody {
        ArtifactBody(Held::Memory {
            bytes,
            file: Some(file),
        })
    }

    pub(crate) fn file(file: File) -> ArtifactBody {
        ArtifactBody(Held::File(file))
    }

    /// `len` bytes from `start`; the caller has checked the range against the artifact's size.
    pub fn read(self, start: u64, len: u64) -> Content {
        match self.0 {
            Held::Memory { bytes, file } => {
                let from = usize::try_from(start)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let to = usize::try_from(start.saturating_add(len))
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                let file = file.map(|file| FileSlice {
                    file,
                    offset: from as u64,
                });
                Content::Bytes(bytes.slice(from..to), file)
            }
            Held::File(file) => Content::Stream(file_stream(file, start, len)),
        }
    }
}

/// How many bytes are read and sent at a time: large enough that the per-block cost (a blocking
/// task and a syscall) is negligible, small enough that many concurrent clients stay cheap.
pub const BLOCK: usize = 256 * 1024;

/// Streams `len` bytes of `file` starting at `offset`, one block of up to [`BLOCK`] bytes at a
/// time, each read on a blocking thread.
///
/// A file shorter than `offset + len` (a store damaged behind our back) ends the stream with an
/// `UnexpectedEof` error instead of short data, so hyper aborts the response rather than
/// pretending it was complete.
fn file_stream(file: File, offset: u64, len: u64) -> BoxStream<'static, io::Result<Bytes>> {
    let end = offset.saturating_add(len);
    let state = Some((Arc::new(file), offset));
    Box::pin(stream::unfold(state, move |state| async move {
        let (file, position) = state?;
        if position >= end {
            return None;
        }
        let want = usize::try_from(end - position)
            .unwrap_or(usize::MAX)
            .min(BLOCK);
        match read_block(file.clone(), position, want).await {
            Ok(block) => {
                let next = position + block.len() as u64;
                Some((Ok(block), Some((file, next))))
            }
            // Nothing useful can follow a failed read: end the stream after the error.
            Err(error) => Some((Err(error), None)),
        }
    }))
}

/// Maps `len` bytes of `file` from `position` into memory, read-only, without reading them: for
/// bytes the front most often sends from the file itself (`front::sendfile`), so that they are
/// only ever touched (paged in from the page cache) when it cannot. Mapping does no I/O, so it
/// needs no blocking thread. `len` must not reach past what is already written to the file.
pub(crate) fn map_bytes(file: &File, position: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and private to the returned `Bytes`. Its range is
    // already written and wheelgate never rewrites or truncates written bytes of a file (blobs
    // and temporary files only grow, and are replaced by rename or unlinked, which leaves a
    // mapping valid). Only a process outside wheelgate truncating a file in the store's own
    // directory could make a read of the mapping fault.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(position)
            .len(len)
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

/// Reads exactly `len` bytes at `position` on a blocking thread.
pub(crate) async fn read_block(file: Arc<File>, position: u64, len: usize) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; len];
        file.read_exact_at(&mut buffer, position).map_err(|error| {
            if error.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the stored file ends before byte {}: it was truncated outside wheelgate; \
                         run `wheelgate cache verify`",
                        position + len as u64
                    ),
                )
            } else {
                error
            }
        })?;
        Ok(Bytes::from(buffer))
    })
    .await
    .map_err(|join| io::Error::other(format!("reading a stored file was interrupted: {join}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    async fn collect(
        stream: impl Stream<Item = io::Result<Bytes>> + Unpin,
    ) -> (Vec<u8>, Vec<usize>, Option<io::Error>) {
        let mut stream = stream;
        let (mut out, mut sizes) = (Vec::new(), Vec::new());
        while let Some(item) = stream.next().await {
            match item {
                Ok(block) => {
                    sizes.push(block.len());
                    out.extend_from_slice(&block);
                }
                Err(error) => return (out, sizes, Some(error)),
            }
        }
        (out, sizes, None)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn streams_the_requested_slice_in_blocks() {
        let data = pattern(BLOCK * 2 + 1000);
        let cases: &[(u64, u64)] = &[
            (0, data.len() as u64),
            (0, 0),
            (10, 20),
            (BLOCK as u64 - 5, 10),
            (100, BLOCK as u64 * 2),
            (data.len() as u64 - 1, 1),
        ];
        for &(offset, len) in cases {
            let (got, sizes, error) = collect(file_stream(file_with(&data), offset, len)).await;
            assert!(error.is_none(), "offset {offset} len {len}: {error:?}");
            let (start, end) = (offset as usize, (offset + len) as usize);
            assert_eq!(got, &data[start..end], "offset {offset} len {len}");
            assert!(sizes.iter().all(|&s| s > 0 && s <= BLOCK), "{sizes:?}");
        }
    }

    #[tokio::test]
    async fn whole_file_uses_full_blocks() {
        let data = pattern(BLOCK * 2 + 7);
        let (got, sizes, error) =
            collect(file_stream(file_with(&data), 0, data.len() as u64)).await;
        assert!(error.is_none());
        assert_eq!(got, data);
        assert_eq!(sizes, vec![BLOCK, BLOCK, 7]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_promised_ends_with_an_error() {
        let data = pattern(1000);
        let (got, _, error) = collect(file_stream(file_with(&data), 500, 1000)).await;
        assert!(
            got.is_empty(),
            "a short block must not be sent as if complete"
        );
        let error = error.expect("a truncated file must fail the stream");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        assert!(error.to_string().contains("truncated"), "{error}");
    }
}
