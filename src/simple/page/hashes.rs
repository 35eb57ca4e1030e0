//! The digests a page publishes for a file.
//!
//! JSON pages give them in a `hashes` dictionary, both formats in the URL fragment, HTML pages in
//! PEP 658 attribute values too. The sha256 is the digest wheelgate verifies downloads against, so
//! a malformed one makes the file unusable; digests of other algorithms are only passed through,
//! so one that does not look like hex is left out.

use crate::simple::digest::Sha256Digest;

pub(super) fn is_hash_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn is_hex_value(value: &str) -> bool {
    !value.is_empty() && value.len() <= 256 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How many digests of algorithms other than sha256 a file keeps. Real indexes publish one or
/// two (md5, blake2b_256); an upstream that sends thousands would otherwise cost a scan of the
/// kept ones per entry (quadratic) and memory per file.
pub(super) const MAX_OTHER_HASHES: usize = 16;

/// A malformed sha256 makes a file unusable: we could not verify what we serve.
pub(super) struct BadSha256;

#[derive(Default)]
pub(super) struct Hashes {
    sha256: Option<Sha256Digest>,
    other: Vec<(String, String)>,
}

impl Hashes {
    pub(super) fn has(&self, algorithm: &str) -> bool {
        if algorithm == "sha256" {
            self.sha256.is_some()
        } else {
            self.other.iter().any(|(a, _)| a == algorithm)
        }
    }

    /// Records one published digest. Digests of other algorithms that do not look like hex are
    /// ignored (we only pass them through); a bad sha256 is an error for the file. Past the cap,
    /// another algorithm's digest costs a comparison, not an allocation.
    pub(super) fn add(&mut self, algorithm: &str, value: &str) -> Result<(), BadSha256> {
        let algorithm = algorithm.trim();
        let value = value.trim();
        if algorithm.eq_ignore_ascii_case("sha256") {
            self.sha256 = Some(Sha256Digest::parse_hex(value).map_err(|_| BadSha256)?);
        } else if self.other.len() < MAX_OTHER_HASHES
            && is_hash_name(algorithm)
            && is_hex_value(value)
        {
            let algorithm = algorithm.to_ascii_lowercase();
            if !self.has(&algorithm) {
                self.other.push((algorithm, value.to_ascii_lowercase()));
            }
        }
        Ok(())
    }

    /// The sha256 and the other digests, sorted by algorithm so pages render the same whatever
    /// order the upstream used.
    pub(super) fn finish(mut self) -> (Option<Sha256Digest>, Vec<(String, String)>) {
        self.other.sort_unstable();
        (self.sha256, self.other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hostile page with tens of thousands of digests for one file keeps a bounded number,
    /// so adding them is linear (each scan is over at most `MAX_OTHER_HASHES`).
    #[test]
    fn other_digests_are_capped() {
        let mut hashes = Hashes::default();
        for n in 0..40_000 {
            hashes.add(&format!("algo{n}"), "abcdef").ok().unwrap();
        }
        hashes.add("sha256", &"a".repeat(64)).ok().unwrap();
        let (sha256, other) = hashes.finish();
        assert!(sha256.is_some());
        assert_eq!(other.len(), MAX_OTHER_HASHES);
    }
}
