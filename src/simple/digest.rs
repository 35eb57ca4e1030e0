//! SHA-256 digests and the file keys built from them.
//!
//! Artifacts are content-addressed (SPEC §4), so a digest is an identity, not a string: it is parsed
//! once from upstream pages or client paths into 32 bytes and compared as such. [`FileKey`] is the
//! path segment naming a file in our URLs; a file whose upstream published no digest is keyed by the
//! digest of its upstream URL until its content digest is known.

use std::fmt;

use sha2::{Digest as _, Sha256};

const HEX_LEN: usize = 64;

/// The value of one hexadecimal digit, either case.
/// Each byte's value as a hexadecimal digit, or `0xFF`: one lookup a digit rather than three
/// range tests, since every file request decodes 64 of them.
const NIBBLES: [u8; 256] = {
    let mut table = [0xFF; 256];
    let mut digit = 0;
    while digit < 256 {
        let byte = digit as u8;
        table[digit] = match byte {
            b'0'..=b'9' => byte - b'0',
            b'a'..=b'f' => byte - b'a' + 10,
            b'A'..=b'F' => byte - b'A' + 10,
            _ => 0xFF,
        };
        digit += 1;
    }
    table
};

const URL_KEY_PREFIX: &str = "url-";

/// Why a string is not a SHA-256 digest or a file key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    #[error(
        "the sha256 digest `{shown}` is {len} characters long: a sha256 digest is exactly 64 \
         hexadecimal characters"
    )]
    WrongLength { shown: String, len: usize },
    #[error(
        "the sha256 digest `{shown}` contains {found:?} at position {position}: only hexadecimal \
         digits are allowed"
    )]
    NotHex {
        shown: String,
        found: char,
        position: usize,
    },
    #[error(
        "the file key `{shown}` is not in canonical form: file keys are 64 lowercase hexadecimal \
         characters, optionally prefixed with `url-`; use the link from the project page"
    )]
    NotCanonical { shown: String },
}

/// Shortens untrusted input before it goes into an error message, so a hostile multi-megabyte
/// "digest" cannot bloat logs.
fn shown(s: &str) -> String {
    const MAX_SHOWN: usize = 80;
    if s.len() <= MAX_SHOWN {
        return s.to_owned();
    }
    let mut end = MAX_SHOWN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", s.get(..end).unwrap_or_default())
}

/// A SHA-256 digest. Displays as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// Parses 64 hexadecimal characters, in either case (upstreams are not consistent).
    pub fn parse_hex(s: &str) -> Result<Self, DigestError> {
        if s.len() != HEX_LEN {
            return Err(DigestError::WrongLength {
                shown: shown(s),
                len: s.chars().count(),
            });
        }
        let mut out = [0u8; 32];
        // Any invalid digit sets a high bit here; checked once at the end.
        let mut invalid = 0u8;
        for (byte, pair) in out.iter_mut().zip(s.as_bytes().chunks_exact(2)) {
            let (high, low) = (NIBBLES[usize::from(pair[0])], NIBBLES[usize::from(pair[1])]);
            invalid |= high | low;
            *byte = high << 4 | (low & 0x0F);
        }
        if invalid & 0xF0 != 0 {
            let (position, found) = s
                .char_indices()
                .find(|(_, c)| !c.is_ascii_hexdigit())
                .unwrap_or((0, '?'));
            return Err(DigestError::NotHex {
                shown: shown(s),
                found,
                position,
            });
        }
        Ok(Sha256Digest(out))
    }

    /// The digest as 64 lowercase hexadecimal characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest as 64 lowercase hexadecimal bytes, without allocating.
    pub fn hex_bytes(&self) -> [u8; HEX_LEN] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; HEX_LEN];
        for (pair, byte) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 0x0f)];
        }
        out
    }

    /// The SHA-256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Sha256Digest(Sha256::digest(bytes).into())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Wraps raw bytes, for digests computed with an incremental hasher while streaming.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Sha256Digest(bytes)
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex_bytes();
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sha256Digest::parse_hex(s)
    }
}

/// The path segment identifying a file in our URLs (`/<repo>/files/<project>/<key>/<filename>`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum FileKey {
    /// The upstream published the file's sha256: the key is the content digest itself.
    Sha256(Sha256Digest),
    /// The upstream published no digest: the key is the sha256 of the file's upstream URL
    /// (without fragment) until the content has been fetched and hashed.
    Url(Sha256Digest),
}

impl FileKey {
    /// Parses a key segment from one of our URLs. Only the canonical spelling we render is
    /// accepted (lowercase hex), so every file has exactly one URL and one cache identity.
    pub fn parse(segment: &str) -> Result<FileKey, DigestError> {
        let (hex_part, is_url) = match segment.strip_prefix(URL_KEY_PREFIX) {
            Some(rest) => (rest, true),
            None => (segment, false),
        };
        let digest = Sha256Digest::parse_hex(hex_part)?;
        if hex_part.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(DigestError::NotCanonical {
                shown: shown(segment),
            });
        }
        Ok(if is_url {
            FileKey::Url(digest)
        } else {
            FileKey::Sha256(digest)
        })
    }

    /// The key for a file known only by its upstream URL.
    pub fn for_url(url_without_fragment: &str) -> FileKey {
        FileKey::Url(Sha256Digest::of(url_without_fragment.as_bytes()))
    }

    /// The content digest, when this key is one.
    pub fn content_digest(&self) -> Option<Sha256Digest> {
        match self {
            FileKey::Sha256(d) => Some(*d),
            FileKey::Url(_) => None,
        }
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileKey::Sha256(d) => write!(f, "{d}"),
            FileKey::Url(d) => write!(f, "{URL_KEY_PREFIX}{d}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn of_matches_known_vector() {
        assert_eq!(Sha256Digest::of(b"").to_hex(), EMPTY_SHA256);
        assert_eq!(Sha256Digest::of(b"").to_string(), EMPTY_SHA256);
    }

    #[test]
    fn parse_accepts_upper_hex_and_displays_lower() {
        let upper = EMPTY_SHA256.to_ascii_uppercase();
        let d = Sha256Digest::parse_hex(&upper).unwrap();
        assert_eq!(d, Sha256Digest::of(b""));
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(d.as_bytes()[0], 0xe3);
    }

    #[test]
    fn parse_rejects_bad_length_and_chars() {
        assert!(matches!(
            Sha256Digest::parse_hex(&EMPTY_SHA256[..63]),
            Err(DigestError::WrongLength { len: 63, .. })
        ));
        assert!(matches!(
            Sha256Digest::parse_hex(""),
            Err(DigestError::WrongLength { len: 0, .. })
        ));
        let mut bad = EMPTY_SHA256.to_owned();
        bad.replace_range(10..11, "g");
        assert!(matches!(
            Sha256Digest::parse_hex(&bad),
            Err(DigestError::NotHex {
                found: 'g',
                position: 10,
                ..
            })
        ));
        // 64 bytes but containing a multi-byte character: must not panic on a char boundary.
        let mut multi = "é".to_owned();
        multi.push_str(&EMPTY_SHA256[..62]);
        assert_eq!(multi.len(), 64);
        assert!(Sha256Digest::parse_hex(&multi).is_err());
    }

    #[test]
    fn long_input_is_shortened_in_errors() {
        let huge = "z".repeat(10_000);
        let msg = Sha256Digest::parse_hex(&huge).unwrap_err().to_string();
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn file_key_round_trip() {
        let d = Sha256Digest::of(b"wheel bytes");
        for key in [
            FileKey::Sha256(d),
            FileKey::Url(d),
            FileKey::for_url("https://files.example.invalid/a.whl"),
        ] {
            let segment = key.to_string();
            assert_eq!(FileKey::parse(&segment).unwrap(), key, "{segment}");
        }
        assert!(FileKey::Url(d).to_string().starts_with("url-"));
        assert_eq!(FileKey::Sha256(d).content_digest(), Some(d));
        assert_eq!(FileKey::Url(d).content_digest(), None);
    }

    #[test]
    fn file_key_rejects_non_canonical() {
        let upper = EMPTY_SHA256.to_ascii_uppercase();
        assert!(matches!(
            FileKey::parse(&upper),
            Err(DigestError::NotCanonical { .. })
        ));
        assert!(FileKey::parse(&format!("URL-{EMPTY_SHA256}")).is_err());
        assert!(FileKey::parse(&format!("url-{EMPTY_SHA256}x")).is_err());
        assert!(FileKey::parse("url-").is_err());
        assert!(FileKey::parse("..").is_err());
    }
}
