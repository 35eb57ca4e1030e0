//! Generated artifacts: files too large, too slow or too broken to be real fixture wheels.
//!
//! The store tests need a 200 MiB file (memory stays bounded, kill -9 mid-transfer), a file whose
//! transfer the test can hold open (single flight), a blob-sized file whose bytes betray its
//! declared sha256 (nothing is committed), three plain 1 MiB files to fill a store capped by
//! `max_size` (least recently used eviction), two 8 MiB ones read cold by a slow reader, and a
//! 300 KiB one that stays in memory once warm.
//! None of them is ever installed, so their bytes are deterministic pseudo-random data computed
//! on the fly from the offset: any range can be produced again without holding the file in
//! memory, and the upstream streams them chunk by chunk.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// The size of the chunks the upstream sends (and of the generation steps).
pub const CHUNK: usize = 64 * 1024;

const MIB: u64 = 1024 * 1024;

/// How the upstream delivers a generated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Chunk after chunk (slowed down only by the upstream's throttle).
    Plain,
    /// The first `after` bytes, then nothing until the test releases the upstream's gate.
    Gated { after: u64 },
    /// Like `Plain`, but with one byte altered while the upstream's corruption switch is on.
    Corruptible,
}

/// One generated distribution file, served by the main origin under `/files/`.
#[derive(Debug)]
pub struct Generated {
    pub project: &'static str,
    pub version: &'static str,
    pub filename: &'static str,
    pub size: u64,
    pub delivery: Delivery,
    seed: u64,
    sha256: OnceLock<String>,
}

/// Every generated file. Each has its own project, so that a test reasons about one file only.
static GENERATED: [Generated; 9] = [
    Generated {
        project: "wgfx-huge",
        version: "1.0.0",
        filename: "wgfx_huge-1.0.0-py3-none-any.whl",
        size: 200 * MIB,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_6875_6765,
        sha256: OnceLock::new(),
    },
    Generated {
        project: "wgfx-slow",
        version: "1.0.0",
        filename: "wgfx_slow-1.0.0-py3-none-any.whl",
        size: 3 * MIB,
        delivery: Delivery::Gated { after: MIB },
        seed: 0x7767_6678_736c_6f77,
        sha256: OnceLock::new(),
    },
    Generated {
        project: "wgfx-badhash",
        version: "1.0.0",
        filename: "wgfx_badhash-1.0.0-py3-none-any.whl",
        // Well above the 64 KiB under which the store keeps bodies inline, so it is a blob.
        size: MIB,
        delivery: Delivery::Corruptible,
        seed: 0x7767_6678_6261_6468,
        sha256: OnceLock::new(),
    },
    // Three plain blob-sized files of one size, so that a `max_size` of 2.5 MiB holds any two of
    // them but not all three.
    Generated {
        project: "wgfx-lru-a",
        version: "1.0.0",
        filename: "wgfx_lru_a-1.0.0-py3-none-any.whl",
        size: MIB,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_6c72_7561,
        sha256: OnceLock::new(),
    },
    Generated {
        project: "wgfx-lru-b",
        version: "1.0.0",
        filename: "wgfx_lru_b-1.0.0-py3-none-any.whl",
        size: MIB,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_6c72_7562,
        sha256: OnceLock::new(),
    },
    Generated {
        project: "wgfx-lru-c",
        version: "1.0.0",
        filename: "wgfx_lru_c-1.0.0-py3-none-any.whl",
        size: MIB,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_6c72_7563,
        sha256: OnceLock::new(),
    },
    // Two cold files of several blocks, so that a reader far behind the download gets the
    // temporary file's bytes (mapped, and sent by sendfile on plain connections): one read over
    // HTTP/1.1, one over HTTP/2.
    Generated {
        project: "wgfx-cold-a",
        version: "1.0.0",
        filename: "wgfx_cold_a-1.0.0-py3-none-any.whl",
        size: 8 * MIB + 12_345,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_636f_6c61,
        sha256: OnceLock::new(),
    },
    Generated {
        project: "wgfx-cold-b",
        version: "1.0.0",
        filename: "wgfx_cold_b-1.0.0-py3-none-any.whl",
        size: 8 * MIB + 54_321,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_636f_6c62,
        sha256: OnceLock::new(),
    },
    // Small enough to be kept in memory once warm and large enough to leave by sendfile
    // (src/front/sendfile.rs), and larger than a socket's send buffer, so writes are partial.
    Generated {
        project: "wgfx-warm",
        version: "1.0.0",
        filename: "wgfx_warm-1.0.0-py3-none-any.whl",
        size: 300 * 1024,
        delivery: Delivery::Plain,
        seed: 0x7767_6678_7761_726d,
        sha256: OnceLock::new(),
    },
];

/// All generated files.
pub fn all() -> &'static [Generated] {
    &GENERATED
}

/// The generated file of a project, if the project is a generated one.
pub fn find(project: &str) -> Option<&'static Generated> {
    GENERATED.iter().find(|g| g.project == project)
}

/// The generated file of `project`; panics naming the generated projects otherwise.
pub fn expect(project: &str) -> &'static Generated {
    find(project).unwrap_or_else(|| {
        let known: Vec<&str> = GENERATED.iter().map(|g| g.project).collect();
        panic!("no generated fixture {project:?}; harness/generated.rs defines {known:?}")
    })
}

/// The gated fixture (`wgfx-slow`): the upstream sends its first `after` bytes, then holds the
/// rest until the test releases the gate. Returns the fixture and `after`.
pub fn expect_gated() -> (&'static Generated, u64) {
    let slow = expect("wgfx-slow");
    match slow.delivery {
        Delivery::Gated { after } => (slow, after),
        _ => panic!("wgfx-slow must be a gated fixture"),
    }
}

/// SplitMix64 of the word index: stateless, so every word can be computed from its position.
fn word(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Generated {
    /// Where the main origin serves it: `/files/<project>/<filename>`.
    pub fn path(&self) -> String {
        format!("/files/{}/{}", self.project, self.filename)
    }

    /// The offset of the byte altered while corruption is on (the middle, as for the catalog's
    /// corrupt wheel: same length, so only a digest check can notice).
    pub fn corrupted_offset(&self) -> u64 {
        self.size / 2
    }

    /// The true bytes in `start..end` (clamped to the file).
    pub fn bytes(&self, start: u64, end: u64) -> Vec<u8> {
        let end = end.min(self.size);
        if start >= end {
            return Vec::new();
        }
        let first_word = start / 8;
        let last_word = end.div_ceil(8);
        let mut out = Vec::with_capacity(((last_word - first_word) * 8) as usize);
        for index in first_word..last_word {
            out.extend_from_slice(&word(self.seed, index).to_le_bytes());
        }
        let skip = (start % 8) as usize;
        out.drain(..skip);
        out.truncate((end - start) as usize);
        out
    }

    /// The bytes the upstream sends for `start..end`, altered when `corrupt` is set and the file
    /// is the corruptible one.
    pub fn served_bytes(&self, start: u64, end: u64, corrupt: bool) -> Vec<u8> {
        let mut bytes = self.bytes(start, end);
        let target = self.corrupted_offset();
        if corrupt && self.delivery == Delivery::Corruptible && (start..end).contains(&target) {
            if let Some(byte) = bytes.get_mut((target - start) as usize) {
                *byte ^= 0x5a;
            }
        }
        bytes
    }

    /// The sha256 of the true bytes, lowercase hex; computed once, chunk by chunk.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| self.digest_of(false))
    }

    /// The sha256 of what the upstream serves while corruption is on.
    pub fn corrupted_sha256(&self) -> String {
        self.digest_of(true)
    }

    fn digest_of(&self, corrupt: bool) -> String {
        let mut hasher = Sha256::new();
        let mut offset = 0;
        while offset < self.size {
            let end = (offset + CHUNK as u64).min(self.size);
            hasher.update(self.served_bytes(offset, end, corrupt));
            offset = end;
        }
        hex::encode(hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_range_matches_the_whole() {
        let slow = expect("wgfx-slow");
        let whole = slow.bytes(0, 4096);
        assert_eq!(whole.len(), 4096);
        for (start, end) in [(0, 1), (3, 17), (8, 16), (1000, 4096), (4095, 4096)] {
            assert_eq!(
                slow.bytes(start, end),
                whole[start as usize..end as usize],
                "{start}..{end}"
            );
        }
        let tail = slow.bytes(slow.size - 10, slow.size + 50);
        assert_eq!(tail.len(), 10, "ranges are clamped to the file");
        assert!(slow.bytes(slow.size, slow.size + 1).is_empty());
    }

    #[test]
    fn files_differ_and_are_not_constant() {
        let a = expect("wgfx-slow").bytes(0, 64);
        let b = expect("wgfx-badhash").bytes(0, 64);
        assert_ne!(a, b, "each file has its own seed");
        assert!(
            a.iter().any(|&x| x != a[0]),
            "pseudo-random, not a constant fill"
        );
        let openings: std::collections::BTreeSet<Vec<u8>> =
            all().iter().map(|g| g.bytes(0, 64)).collect();
        assert_eq!(
            openings.len(),
            all().len(),
            "no two generated files share their bytes"
        );
    }

    #[test]
    fn corruption_changes_one_byte_and_the_digest() {
        let bad = expect("wgfx-badhash");
        let middle = bad.corrupted_offset();
        let clean = bad.served_bytes(middle - 4, middle + 4, false);
        let broken = bad.served_bytes(middle - 4, middle + 4, true);
        let differing = clean.iter().zip(&broken).filter(|(a, b)| a != b).count();
        assert_eq!(differing, 1);
        assert_eq!(
            bad.served_bytes(0, 64, true),
            bad.bytes(0, 64),
            "only the middle byte changes"
        );
        assert_ne!(bad.corrupted_sha256(), bad.sha256());
        let slow = expect("wgfx-slow");
        assert_eq!(
            slow.served_bytes(0, slow.size, true).len() as u64,
            slow.size
        );
        assert_eq!(
            crate::harness::fixtures::sha256_hex(&slow.served_bytes(0, slow.size, true)),
            slow.sha256(),
            "only the corruptible file is ever altered"
        );
    }
}
