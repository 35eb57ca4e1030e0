//! How long a download may be: the size its index page declared (PEP 700 `size`), the
//! upstream's `Content-Length`, and `[server] max_file_size`.
//!
//! A declared size is a promise like a digest: an upstream that declares 10 bytes and sends
//! 3 MB is serving something other than what its index lists, and without a cap a hostile or
//! broken upstream could fill the store's disk with one file. So the length a download must
//! have is known before its first byte where possible: the `Content-Length`, or else the declared
//! size; the two must agree, and neither may exceed the cap. The flight (`flight`) holds the body
//! to that length as it streams, and to the cap when no length is known.

use std::fmt;

use crate::simple::digest::Sha256Digest;

/// What a download is expected to be, from the page that listed it and the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The digest the page declared; `None`: the computed one is taken as is.
    pub sha256: Option<Sha256Digest>,
    /// The size the page declared (PEP 700 `size`), when it did.
    pub size: Option<u64>,
    /// `[server] max_file_size`.
    pub max_size: u64,
    /// Where the file comes from, redacted, for the logs.
    pub url: String,
}

/// Who announced a length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// The upstream's `Content-Length` header.
    ContentLength,
    /// The `size` of the file on its index page.
    IndexPage,
}

impl fmt::Display for Announced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Announced::ContentLength => "its Content-Length announced",
            Announced::IndexPage => "the index page declared (PEP 700 size)",
        })
    }
}

/// The length a body must have, and who said so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Length {
    pub bytes: u64,
    pub announced: Announced,
}

/// Why a download is refused before its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeRefusal {
    /// The `Content-Length` is not the declared size.
    Disagrees { declared: u64, content_length: u64 },
    /// The announced length is over `max_file_size`.
    TooLarge { length: Length, limit: u64 },
}

impl Expected {
    /// The length the body must have (`None`: unknown, only the cap applies), or why the
    /// download is refused before it starts.
    pub fn length(&self, content_length: Option<u64>) -> Result<Option<Length>, SizeRefusal> {
        let length = match (content_length, self.size) {
            (Some(content_length), Some(declared)) if content_length != declared => {
                return Err(SizeRefusal::Disagrees {
                    declared,
                    content_length,
                })
            }
            (Some(bytes), _) => Some(Length {
                bytes,
                announced: Announced::ContentLength,
            }),
            (None, Some(bytes)) => Some(Length {
                bytes,
                announced: Announced::IndexPage,
            }),
            (None, None) => None,
        };
        match length {
            Some(length) if length.bytes > self.max_size => Err(SizeRefusal::TooLarge {
                length,
                limit: self.max_size,
            }),
            _ => Ok(length),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(size: Option<u64>, max_size: u64) -> Expected {
        Expected {
            sha256: None,
            size,
            max_size,
            url: "https://files.example.invalid/a.whl".to_owned(),
        }
    }

    #[test]
    fn the_content_length_must_be_the_declared_size() {
        let declared = expected(Some(10), 1000);
        assert_eq!(
            declared.length(Some(3_000_000)),
            Err(SizeRefusal::Disagrees {
                declared: 10,
                content_length: 3_000_000
            })
        );
        assert_eq!(
            declared.length(Some(9)),
            Err(SizeRefusal::Disagrees {
                declared: 10,
                content_length: 9
            })
        );
        assert_eq!(
            declared.length(Some(10)),
            Ok(Some(Length {
                bytes: 10,
                announced: Announced::ContentLength
            }))
        );
    }

    #[test]
    fn a_declared_size_stands_in_for_a_missing_content_length() {
        assert_eq!(
            expected(Some(10), 1000).length(None),
            Ok(Some(Length {
                bytes: 10,
                announced: Announced::IndexPage
            }))
        );
        assert_eq!(expected(None, 1000).length(None), Ok(None));
    }

    #[test]
    fn lengths_over_the_cap_are_refused_whoever_announced_them() {
        for (declared, content_length, announced) in [
            (None, Some(1001), Announced::ContentLength),
            (Some(1001), None, Announced::IndexPage),
            (Some(1001), Some(1001), Announced::ContentLength),
        ] {
            assert_eq!(
                expected(declared, 1000).length(content_length),
                Err(SizeRefusal::TooLarge {
                    length: Length {
                        bytes: 1001,
                        announced
                    },
                    limit: 1000
                })
            );
        }
        assert!(expected(Some(1000), 1000).length(Some(1000)).is_ok());
    }
}
