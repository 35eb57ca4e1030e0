//! File bodies leave by `sendfile(2)` on plain-TCP connections, without being copied.
//!
//! A warm wheel is served from memory, and writing it to a socket copies every byte into the
//! kernel once more. At 1,000 connections on a 100 KiB wheel that copy was the difference between
//! wheelgate and nginx, whose `sendfile` hands the page cache's pages to the socket: the copy
//! itself, and the fresh socket memory the client's reads then miss in cache. A cold download
//! paid it too, on top of reading back the temporary file it had just written.
//!
//! hyper owns the connection and writes whatever `Bytes` a body yields, so the file cannot be
//! handed to it. Instead the store gives, beside the bytes of a hot body, the blob file that
//! holds the same bytes ([`crate::repository::FileSlice`]), and a download gives each piece with
//! where it is in the temporary file (bytes the file already holds come mapped, not read). The
//! connection offers its [`Regions`] to the handler as a request extension; the handler
//! registers each body's bytes with their file as it hands them to hyper, and [`ZeroCopy`], the
//! stream hyper writes to, recognises those bytes by their address when hyper writes them:
//! everything before them leaves by `sendmsg` with `MSG_MORE` (so the head and the body share
//! packets), the bytes themselves by `sendfile` from the file.
//!
//! Nothing here can send wrong bytes: a blob is content-addressed and never rewritten in place,
//! a temporary file's written bytes are never rewritten either, and the registered bytes are the
//! ones hyper would have written. A file that is shorter than expected (damaged behind our
//! back), or a file system that refuses `sendfile`, makes the stream write the bytes from memory
//! instead. Bytes hyper writes that are not registered (every page, every error, TLS and its
//! records) are written as before. A registered region holds a reference to its bytes, so their
//! memory cannot be reused at the same address while it is registered, and is let go once its
//! last byte is sent, or when a newer region displaces it.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::repository::FileSlice;

/// How many responses' bodies one connection keeps registered. HTTP/1 writes one response at a
/// time; HTTP/2 interleaves a few. A region displaced before it was sent is written from memory.
const KEPT: usize = 4;

/// The bodies registered on one connection, looked up by address when hyper writes. The
/// connection puts an `Arc<Regions>` in each request's extensions ([`Regions::of`]).
#[derive(Debug, Default)]
pub struct Regions(Mutex<VecDeque<Region>>);

#[derive(Debug)]
struct Region {
    bytes: Bytes,
    file: Arc<File>,
    offset: u64,
    /// Set when `sendfile` failed for this region: its bytes are written from memory.
    refused: bool,
}

impl Region {
    fn start(&self) -> usize {
        self.bytes.as_ptr() as usize
    }

    fn end(&self) -> usize {
        self.start() + self.bytes.len()
    }
}

/// Where in a blob the bytes of one slice hyper is writing are.
struct Found {
    file: Arc<File>,
    offset: u64,
    len: usize,
    refused: bool,
}

impl Regions {
    pub fn new() -> Arc<Regions> {
        Arc::new(Regions::default())
    }

    /// The regions of the connection `request` came on, when its body can leave by `sendfile`.
    pub fn of<B>(request: &http::Request<B>) -> Option<&Arc<Regions>> {
        request.extensions().get::<Arc<Regions>>()
    }

    /// Registers body bytes about to be written on this connection: `bytes` must be the very
    /// `Bytes` the response body yields (the same address), and `file` the same bytes on disk.
    pub fn register(&self, bytes: Bytes, file: FileSlice) {
        if bytes.is_empty() {
            return;
        }
        let mut regions = crate::lock(&self.0);
        if regions.len() == KEPT {
            regions.pop_front();
        }
        regions.push_back(Region {
            bytes,
            file: file.file,
            offset: file.offset,
            refused: false,
        });
    }

    /// The first of `bufs` that begins in a registered region, with where its bytes are (clipped
    /// to the region's end).
    fn find(&self, bufs: &[IoSlice<'_>]) -> Option<(usize, Found)> {
        let regions = crate::lock(&self.0);
        if regions.is_empty() {
            return None;
        }
        bufs.iter().enumerate().find_map(|(i, slice)| {
            let at = slice.as_ptr() as usize;
            let region = regions
                .iter()
                .find(|r| r.start() <= at && at < r.end() && !slice.is_empty())?;
            Some((
                i,
                Found {
                    file: Arc::clone(&region.file),
                    offset: region.offset + (at - region.start()) as u64,
                    len: slice.len().min(region.end() - at),
                    refused: region.refused,
                },
            ))
        })
    }

    /// After `sent` bytes of `slice` left: a region whose last byte left is let go.
    fn sent(&self, slice: &[u8], sent: usize) {
        let end = slice.as_ptr() as usize + sent;
        crate::lock(&self.0).retain(|r| !(r.start() < end && end == r.end()));
    }

    /// `sendfile` failed for the region `slice` begins in: write it from memory from now on.
    fn refuse(&self, slice: &[u8]) {
        let at = slice.as_ptr() as usize;
        for region in crate::lock(&self.0).iter_mut() {
            if region.start() <= at && at < region.end() {
                region.refused = true;
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        crate::lock(&self.0).len()
    }
}

/// A plain-TCP connection whose registered bodies leave by `sendfile`.
pub struct ZeroCopy {
    stream: TcpStream,
    regions: Arc<Regions>,
}

impl ZeroCopy {
    pub fn new(stream: TcpStream, regions: Arc<Regions>) -> ZeroCopy {
        ZeroCopy { stream, regions }
    }

    /// One attempt at `bufs`, of which `bufs[first]` begins in a registered region: the slices
    /// before it by `sendmsg` (held back with `MSG_MORE` for the body), then the region's part of
    /// that slice by `sendfile`. How many bytes left, or `WouldBlock` when none did.
    fn write_through(
        &self,
        bufs: &[IoSlice<'_>],
        first: usize,
        found: &Found,
    ) -> io::Result<usize> {
        let socket = self.stream.as_raw_fd();
        let before: usize = bufs[..first].iter().map(|b| b.len()).sum();
        let mut done = 0;
        if before > 0 {
            let sent = send_more(socket, &bufs[..first])?;
            done += sent;
            if sent < before {
                return Ok(done);
            }
        }
        let slice: &[u8] = &bufs[first];
        let sent = if found.refused {
            send_copy(socket, &slice[..found.len])
        } else {
            match send_file(socket, &found.file, found.offset, found.len) {
                // The blob ends early: the bytes in memory are what the client must get.
                Ok(0) => {
                    self.regions.refuse(slice);
                    send_copy(socket, &slice[..found.len])
                }
                Err(error) if refuses_sendfile(&error) => {
                    tracing::debug!(%error, "sendfile refused; writing the body from memory");
                    self.regions.refuse(slice);
                    send_copy(socket, &slice[..found.len])
                }
                other => other,
            }
        };
        match sent {
            Ok(sent) => {
                self.regions.sent(slice, sent);
                Ok(done + sent)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock && done > 0 => Ok(done),
            Err(error) => Err(error),
        }
    }
}

/// Errors after which this blob is written from memory instead: the file system or file cannot
/// be sent from (`EINVAL`, `ENOSYS`, `EOVERFLOW`), or reading it failed (`EIO`).
fn refuses_sendfile(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOVERFLOW | libc::EIO | libc::ESPIPE)
    )
}

/// `sendmsg` of `bufs` with `MSG_MORE`: the kernel holds a partial packet for what follows.
fn send_more(socket: i32, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; the iovecs point into `bufs`, which outlive the call, and
    // IoSlice is ABI-compatible with iovec on Unix.
    let sent = unsafe {
        let mut message: libc::msghdr = std::mem::zeroed();
        message.msg_iov = bufs.as_ptr() as *mut libc::iovec;
        message.msg_iovlen = bufs.len().min(libc::c_int::MAX as usize) as _;
        libc::sendmsg(socket, &message, libc::MSG_MORE | libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// `send` of bytes from memory (the fallback for a region `sendfile` cannot serve).
fn send_copy(socket: i32, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: `bytes` is valid for its length for the duration of the call.
    let sent = unsafe {
        libc::send(
            socket,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

/// `sendfile` of `len` bytes of `file` from `offset`; 0 when the file ends at `offset`.
fn send_file(socket: i32, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: both descriptors are open for the call; the kernel writes only `offset`.
    let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut offset, len) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

impl AsyncRead for ZeroCopy {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ZeroCopy {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some((first, found)) = self.regions.find(bufs) else {
            return Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        };
        let this = &*self;
        loop {
            ready!(this.stream.poll_write_ready(cx))?;
            // A `WouldBlock` from the closure clears the readiness, so the next poll waits.
            match this.stream.try_io(Interest::WRITABLE, || {
                this.write_through(bufs, first, &found)
            }) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                other => return Poll::Ready(other),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn blob(bytes: &[u8]) -> Arc<File> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(bytes).unwrap();
        Arc::new(file)
    }

    async fn pair(regions: Arc<Regions>) -> (ZeroCopy, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (ZeroCopy::new(accepted.unwrap().0, regions), client.unwrap())
    }

    /// Writes `bufs` whole through `stream` the way hyper does (vectored, advancing on partial
    /// writes), then closes it.
    async fn write_all(mut stream: ZeroCopy, parts: Vec<Bytes>) {
        let mut parts: VecDeque<Bytes> = parts.into();
        while !parts.is_empty() {
            let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
            let mut n = stream.write_vectored(&slices).await.unwrap();
            assert!(n > 0);
            while n > 0 {
                let front = parts.front_mut().unwrap();
                let take = n.min(front.len());
                let _ = front.split_to(take);
                n -= take;
                if front.is_empty() {
                    parts.pop_front();
                }
            }
        }
        stream.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_registered_body_leaves_from_its_file_after_the_head() {
        let regions = Regions::new();
        let (server, mut client) = pair(regions.clone()).await;
        // Memory and file differ on purpose: what arrives shows which one was sent.
        let memory = Bytes::from(vec![b'm'; 300_000]);
        let file = blob(&[b'f'; 300_000]);
        regions.register(memory.clone(), FileSlice { file, offset: 0 });
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
        let writer = tokio::spawn(write_all(server, vec![head.clone(), memory]));
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        assert_eq!(&received[..head.len()], &head[..]);
        assert!(received[head.len()..].iter().all(|&b| b == b'f'));
        assert_eq!(received.len(), head.len() + 300_000);
        assert_eq!(regions.len(), 0, "a region whose last byte left is let go");
    }

    #[tokio::test]
    async fn a_range_is_sent_from_its_offset_in_the_file() {
        let regions = Regions::new();
        let (server, mut client) = pair(regions.clone()).await;
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let whole = Bytes::from(content.clone());
        let range = whole.slice(70_000..150_000);
        regions.register(
            range.clone(),
            FileSlice {
                file: blob(&content),
                offset: 70_000,
            },
        );
        let writer = tokio::spawn(write_all(server, vec![range]));
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        assert!(received == content[70_000..150_000]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_bytes_is_completed_from_memory() {
        let regions = Regions::new();
        let (server, mut client) = pair(regions.clone()).await;
        let memory = Bytes::from(vec![b'm'; 100_000]);
        regions.register(
            memory.clone(),
            FileSlice {
                file: blob(&[b'f'; 40_000]),
                offset: 0,
            },
        );
        let writer = tokio::spawn(write_all(server, vec![memory]));
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        // What the file had, then the rest from memory: the response is never cut short.
        assert_eq!(received.len(), 100_000);
        assert!(received[..40_000].iter().all(|&b| b == b'f'));
        assert!(received[40_000..].iter().all(|&b| b == b'm'));
    }

    #[tokio::test]
    async fn bytes_not_registered_are_written_as_given() {
        let regions = Regions::new();
        let (server, mut client) = pair(regions.clone()).await;
        let registered = Bytes::from(vec![b'm'; 1000]);
        regions.register(
            registered,
            FileSlice {
                file: blob(&[b'f'; 1000]),
                offset: 0,
            },
        );
        // Equal content at another address: not the registered body.
        let other = Bytes::from(vec![b'm'; 1000]);
        let writer = tokio::spawn(write_all(server, vec![other]));
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        assert!(received.iter().all(|&b| b == b'm'));
        assert_eq!(regions.len(), 1);
    }

    #[test]
    fn a_connection_keeps_only_its_latest_regions() {
        let regions = Regions::default();
        let file = blob(b"x");
        let mut all = Vec::new();
        for _ in 0..KEPT + 2 {
            let bytes = Bytes::from(vec![1u8; 10]);
            all.push(bytes.clone());
            regions.register(
                bytes,
                FileSlice {
                    file: file.clone(),
                    offset: 0,
                },
            );
        }
        assert_eq!(regions.len(), KEPT);
        assert!(regions.find(&[IoSlice::new(&all[0])]).is_none());
        assert!(regions.find(&[IoSlice::new(&all[KEPT + 1])]).is_some());
    }
}
