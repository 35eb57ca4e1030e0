//! A block of a download kept as the chunks the upstream's body arrived in, never copied into a
//! buffer of its own: the hash, the write to the temporary file (one `pwritev`) and the readers
//! all use the same bytes. Gathering 1 GiB into blocks first cost a memory copy of the whole body
//! and a fresh buffer per block (benches/README.md, "Cold large file").

use std::fs::File;
use std::io;
use std::sync::Arc;

use bytes::Bytes;

/// At most this many buffers go to one `pwritev` (Linux's `IOV_MAX`).
const MAX_IOVECS: usize = 1024;

/// Contiguous bytes held as the chunks they arrived in. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub(super) struct Chunks {
    parts: Arc<[Bytes]>,
    len: usize,
}

impl Chunks {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The chunks, in order.
    pub(super) fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Up to `max` bytes from `start` on, from one chunk (no copy); empty past the end.
    pub(super) fn slice_from(&self, start: usize, max: usize) -> Bytes {
        let mut at = 0;
        for part in self.parts.iter() {
            if start < at + part.len() {
                let from = start - at;
                let to = part.len().min(from.saturating_add(max));
                return part.slice(from..to);
            }
            at += part.len();
        }
        Bytes::new()
    }

    /// Writes every byte at `offset` of `file` with positioned, vectored writes.
    pub(super) fn write_all_at(&self, file: &File, mut offset: u64) -> io::Result<()> {
        let mut index = 0;
        // Bytes of `parts[index]` already written.
        let mut skip = 0;
        loop {
            // Written chunks, and empty ones, are passed over.
            while index < self.parts.len() && self.parts[index].len() == skip {
                index += 1;
                skip = 0;
            }
            if index == self.parts.len() {
                return Ok(());
            }
            let slices: Vec<io::IoSlice<'_>> = self.parts[index..]
                .iter()
                .take(MAX_IOVECS)
                .enumerate()
                .map(|(i, part)| io::IoSlice::new(if i == 0 { &part[skip..] } else { part }))
                .collect();
            let mut written = match rustix::io::pwritev(file, &slices, offset) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => written,
                Err(rustix::io::Errno::INTR) => continue,
                Err(errno) => return Err(errno.into()),
            };
            offset += written as u64;
            while written > 0 {
                let left = self.parts[index].len() - skip;
                if written < left {
                    skip += written;
                    written = 0;
                } else {
                    written -= left;
                    index += 1;
                    skip = 0;
                }
            }
        }
    }
}

impl From<Bytes> for Chunks {
    fn from(bytes: Bytes) -> Chunks {
        let len = bytes.len();
        Chunks {
            parts: Arc::from([bytes]),
            len,
        }
    }
}

/// Gathers a body's chunks into [`Chunks`] of `size` bytes (the last one shorter); it never
/// holds more than one block, splitting (without copying) a chunk that crosses a block's end.
#[derive(Debug)]
pub(super) struct Gather {
    size: usize,
    parts: Vec<Bytes>,
    len: usize,
}

impl Gather {
    pub(super) fn new(size: usize) -> Gather {
        Gather {
            size,
            parts: Vec::new(),
            len: 0,
        }
    }

    /// Takes as much of `chunk` as fits in the current block; returns the rest.
    pub(super) fn fill(&mut self, mut chunk: Bytes) -> Bytes {
        let room = self.size.saturating_sub(self.len);
        let now = if chunk.len() <= room {
            std::mem::take(&mut chunk)
        } else {
            chunk.split_to(room)
        };
        if !now.is_empty() {
            self.len += now.len();
            self.parts.push(now);
        }
        chunk
    }

    pub(super) fn is_full(&self) -> bool {
        self.len >= self.size
    }

    /// Bytes gathered so far.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The gathered block; the next one starts empty.
    pub(super) fn take(&mut self) -> Chunks {
        let len = std::mem::take(&mut self.len);
        Chunks {
            parts: std::mem::take(&mut self.parts).into(),
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn chunks_are_gathered_into_blocks_of_the_size_without_copying() {
        let data = Bytes::from(pattern(10_000));
        let mut gather = Gather::new(4096);
        let mut blocks = Vec::new();
        for piece in data.chunks(700).map(|c| data.slice_ref(c)) {
            let mut rest = piece;
            while !rest.is_empty() {
                rest = gather.fill(rest);
                assert!(gather.len() <= 4096);
                if gather.is_full() {
                    blocks.push(gather.take());
                }
            }
        }
        blocks.push(gather.take());
        let sizes: Vec<usize> = blocks.iter().map(Chunks::len).collect();
        assert_eq!(sizes, vec![4096, 4096, 1808]);
        let joined: Vec<u8> = blocks
            .iter()
            .flat_map(|b| b.parts().iter().flat_map(|p| p.iter().copied()))
            .collect();
        assert_eq!(joined, data.to_vec());
        // The parts point into the original bytes: nothing was copied.
        let first = &blocks[0].parts()[0];
        assert_eq!(first.as_ptr(), data.as_ptr());
    }

    #[test]
    fn slices_come_from_one_chunk_and_stop_at_the_end() {
        let data = Bytes::from(pattern(3000));
        let mut gather = Gather::new(10_000);
        for piece in data.chunks(1000).map(|c| data.slice_ref(c)) {
            assert!(gather.fill(piece).is_empty());
        }
        let block = gather.take();
        assert_eq!(block.slice_from(0, 5000), data.slice(0..1000));
        assert_eq!(block.slice_from(1500, 5000), data.slice(1500..2000));
        assert_eq!(block.slice_from(1500, 100), data.slice(1500..1600));
        assert!(block.slice_from(3000, 10).is_empty());
    }

    #[test]
    fn a_block_is_written_whole_at_its_offset() {
        let data = Bytes::from(pattern(5000));
        let mut gather = Gather::new(5000);
        for piece in data.chunks(333).map(|c| data.slice_ref(c)) {
            assert!(gather.fill(piece).is_empty());
        }
        assert!(gather.fill(Bytes::new()).is_empty());
        let block = gather.take();
        let mut file = tempfile::tempfile().unwrap();
        block.write_all_at(&file, 100).unwrap();
        let mut written = Vec::new();
        file.read_to_end(&mut written).unwrap();
        assert_eq!(&written[..100], &[0u8; 100][..]);
        assert_eq!(&written[100..], &data[..]);
    }
}
