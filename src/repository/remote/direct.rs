//! Large downloads are written to their temporary file with `O_DIRECT`, past the page cache.
//!
//! A buffered write copies every byte into page-cache pages, and a file that was never on this
//! machine needs new pages for all of it: a cold 1 GiB transfer spent more CPU there than on its
//! sha256 (benches/README.md, "Cold large file"), and pushed out of the cache the small, hot files
//! that are worth keeping there. Direct writes go from one reused, aligned buffer to the disk.
//!
//! `O_DIRECT` wants the buffer, the length and the file offset aligned, and the bytes arrive in
//! chunks of any size, so they are copied into a [`STAGING`]-byte aligned buffer, written whole
//! at offsets that are multiples of it, and the last partial buffer is written through the
//! ordinary descriptor. A file system that refuses `O_DIRECT` (tmpfs) gets buffered writes, as
//! smaller files always do. Readers of a file being written are unaffected: they read what is
//! on disk through the ordinary descriptor, and the kernel keeps both views coherent.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Downloads announced at least this long are written directly.
pub(super) const DIRECT_MIN: u64 = 64 * 1024 * 1024;

/// The aligned buffer each direct write is made of; a multiple of every block size in use.
const STAGING: usize = 1024 * 1024;

/// The alignment of the buffer (a page: at least any device's logical block size).
const ALIGN: usize = 4096;

/// Opens another descriptor of `path` for direct writes; `None` where the file system refuses.
pub(super) fn open(path: &Path) -> Option<File> {
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    {
        Ok(file) => Some(file),
        Err(error) => {
            tracing::debug!(
                temp = %path.display(),
                %error,
                "direct writes are not available here; writing through the page cache"
            );
            None
        }
    }
}

/// An aligned, zeroed heap buffer of [`STAGING`] bytes.
struct Aligned {
    pointer: std::ptr::NonNull<u8>,
}

// SAFETY: the buffer is owned exclusively, like a Vec<u8>.
unsafe impl Send for Aligned {}

impl Aligned {
    fn layout() -> Layout {
        // STAGING and ALIGN are constants that form a valid layout (checked by a test).
        Layout::from_size_align(STAGING, ALIGN).unwrap_or_else(|_| Layout::new::<u8>())
    }

    fn new() -> io::Result<Aligned> {
        // SAFETY: the layout has a non-zero size.
        let pointer = unsafe { alloc::alloc_zeroed(Aligned::layout()) };
        std::ptr::NonNull::new(pointer)
            .map(|pointer| Aligned { pointer })
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the allocation is STAGING bytes long, initialised and owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), STAGING) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { alloc::dealloc(self.pointer.as_ptr(), Aligned::layout()) }
    }
}

/// Writes a file from offset 0 on: whole staging buffers directly, the rest through `buffered`.
pub(super) struct DirectWriter {
    direct: File,
    staging: Aligned,
    filled: usize,
    /// Bytes in the file: always a multiple of [`STAGING`] until [`DirectWriter::finish`].
    written: u64,
}

impl DirectWriter {
    pub(super) fn new(direct: File) -> io::Result<DirectWriter> {
        Ok(DirectWriter {
            direct,
            staging: Aligned::new()?,
            filled: 0,
            written: 0,
        })
    }

    /// Takes the next bytes of the file; returns how many bytes are in the file now.
    pub(super) fn write(&mut self, mut bytes: &[u8]) -> io::Result<u64> {
        while !bytes.is_empty() {
            let take = bytes.len().min(STAGING - self.filled);
            self.staging.bytes()[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == STAGING {
                let offset = self.written;
                let direct = &self.direct;
                direct.write_all_at(self.staging.bytes(), offset)?;
                self.written += STAGING as u64;
                self.filled = 0;
            }
        }
        Ok(self.written)
    }

    /// Writes the last, partial buffer through `buffered` (no alignment needed there); returns
    /// the file's size.
    pub(super) fn finish(mut self, buffered: &File) -> io::Result<u64> {
        if self.filled > 0 {
            let filled = self.filled;
            buffered.write_all_at(&self.staging.bytes()[..filled], self.written)?;
            self.written += filled as u64;
        }
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_staging_layout_is_valid_and_aligned() {
        assert!(Layout::from_size_align(STAGING, ALIGN).is_ok());
        assert_eq!(STAGING % ALIGN, 0);
        let mut buffer = Aligned::new().unwrap();
        assert_eq!(buffer.bytes().as_ptr() as usize % ALIGN, 0);
    }

    /// Bytes in uneven chunks come out whole, whether the file system takes direct writes or
    /// not (then the test writes through an ordinary descriptor, as `open` falling back would).
    #[test]
    fn uneven_chunks_make_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file.part");
        let buffered = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let direct = open(&path).unwrap_or_else(|| buffered.try_clone().unwrap());
        let content: Vec<u8> = (0..STAGING * 2 + 12_345).map(|i| (i % 253) as u8).collect();
        let mut writer = DirectWriter::new(direct).unwrap();
        let mut on_disk = 0;
        for chunk in content.chunks(70_001) {
            let now = writer.write(chunk).unwrap();
            assert!(now >= on_disk && now % STAGING as u64 == 0);
            on_disk = now;
        }
        assert_eq!(on_disk, 2 * STAGING as u64);
        assert_eq!(writer.finish(&buffered).unwrap(), content.len() as u64);
        let mut read = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut read).unwrap();
        assert!(read == content);
    }
}
