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
    /// ignored (we only pass them through); a bad sha256 is an error for the file.
    pub(super) fn add(&mut self, algorithm: &str, value: &str) -> Result<(), BadSha256> {
        let algorithm = algorithm.trim().to_ascii_lowercase();
        let value = value.trim();
        if algorithm == "sha256" {
            self.sha256 = Some(Sha256Digest::parse_hex(value).map_err(|_| BadSha256)?);
        } else if is_hash_name(&algorithm) && is_hex_value(value) && !self.has(&algorithm) {
            self.other.push((algorithm, value.to_ascii_lowercase()));
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
