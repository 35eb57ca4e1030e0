//! HTTP `Range` requests for stored artifacts (RFC 9110 §14).
//!
//! uv reads a wheel's metadata by asking for a few ranges near the end of the file when the index
//! offers no PEP 658 `.metadata`, so a stored artifact must answer `Range` with 206. Only what those
//! clients send is honoured: one range per request. Several ranges would need a
//! `multipart/byteranges` body, and the RFC lets a server ignore a `Range` header it does not want
//! to serve, so several ranges, another unit or a malformed header all yield the whole file (200).
//!
//! `If-Range` is not supported: it is not looked at, so a range is served whatever validator
//! accompanies it. This is safe for what we serve: artifacts are content-addressed and immutable,
//! so any `ETag` a client can hold for a URL still describes the bytes behind it.

/// What to send for a body of a known size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole body, with 200.
    Full,
    /// One part of it, with 206; both ends are inclusive and inside the body.
    Partial {
        /// The first byte.
        start: u64,
        /// The last byte (inclusive).
        end: u64,
    },
    /// The range lies outside the body: 416, with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Interprets a `Range` header for a body of `size` bytes.
///
/// Accepts `bytes=a-b`, `bytes=a-` and `bytes=-n` (the unit is case-insensitive, whitespace around
/// the range is tolerated). A range starting at or past `size`, or a zero-length suffix, is
/// unsatisfiable; an end past the body is clamped to its last byte. Several ranges, other units
/// and anything malformed give [`ByteRange::Full`].
pub fn parse(header: Option<&str>, size: u64) -> ByteRange {
    let Some(header) = header else {
        return ByteRange::Full;
    };
    let Some((unit, set)) = header.trim().split_once('=') else {
        return ByteRange::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return ByteRange::Full;
    }
    // RFC 9110 §5.6.1 lets recipients skip empty list elements ("bytes=0-9,").
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(spec), None) = (specs.next(), specs.next()) else {
        return ByteRange::Full;
    };
    let Some((first, last)) = spec.split_once('-') else {
        return ByteRange::Full;
    };
    match (position(first), position(last)) {
        // `bytes=-n`: the last n bytes.
        (None, Some(suffix)) if first.is_empty() => {
            if suffix == 0 || size == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: size.saturating_sub(suffix),
                    end: size - 1,
                }
            }
        }
        // `bytes=a-`: from a to the end.
        (Some(start), None) if last.is_empty() => from(start, u64::MAX, size),
        (Some(start), Some(end)) if end >= start => from(start, end, size),
        _ => ByteRange::Full,
    }
}

/// A range from `start` to `end` (inclusive, possibly past the body) for a body of `size` bytes.
fn from(start: u64, end: u64, size: u64) -> ByteRange {
    if start >= size {
        return ByteRange::Unsatisfiable;
    }
    ByteRange::Partial {
        start,
        end: end.min(size - 1),
    }
}

/// A byte position: ASCII digits only. A number too large for `u64` means "past any body we
/// could hold", so it saturates instead of making the header malformed: a huge end is clamped and
/// a huge start is unsatisfiable, which is what the client meant.
fn position(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse::<u64>().unwrap_or(u64::MAX))
}

/// The `Content-Range` value of a 206: `bytes start-end/size` (`end` inclusive).
pub fn content_range(start: u64, end: u64, size: u64) -> String {
    format!("bytes {start}-{end}/{size}")
}

/// The `Content-Range` value of a 416: `bytes */size`, telling the client how large the body is.
pub fn unsatisfied_range(size: u64) -> String {
    format!("bytes */{size}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partial(start: u64, end: u64) -> ByteRange {
        ByteRange::Partial { start, end }
    }

    #[test]
    fn parses_the_three_single_range_forms() {
        let table: &[(&str, u64, ByteRange)] = &[
            ("bytes=0-99", 1000, partial(0, 99)),
            ("bytes=10-10", 1000, partial(10, 10)),
            ("bytes=500-", 1000, partial(500, 999)),
            ("bytes=-100", 1000, partial(900, 999)),
            ("bytes=-1", 1000, partial(999, 999)),
            // A suffix longer than the body is the whole body, as a 206.
            ("bytes=-5000", 1000, partial(0, 999)),
            ("bytes=0-", 1000, partial(0, 999)),
            // An end past the body is clamped.
            ("bytes=900-5000", 1000, partial(900, 999)),
            ("bytes=0-99999999999999999999999", 1000, partial(0, 999)),
            // Unit case and surrounding whitespace are tolerated.
            ("Bytes=1-2", 10, partial(1, 2)),
            ("  bytes= 1-2 ", 10, partial(1, 2)),
            ("bytes=1-2,", 10, partial(1, 2)),
        ];
        for (header, size, expected) in table {
            assert_eq!(
                parse(Some(header), *size),
                *expected,
                "{header:?} size {size}"
            );
        }
    }

    #[test]
    fn unsatisfiable_ranges() {
        let table: &[(&str, u64)] = &[
            ("bytes=1000-", 1000),
            ("bytes=1000-2000", 1000),
            ("bytes=99999999999999999999999-", 1000),
            ("bytes=-0", 1000),
            ("bytes=0-", 0),
            ("bytes=-5", 0),
        ];
        for (header, size) in table {
            assert_eq!(
                parse(Some(header), *size),
                ByteRange::Unsatisfiable,
                "{header:?} size {size}"
            );
        }
    }

    #[test]
    fn ignored_headers_give_the_whole_body() {
        let table: &[&str] = &[
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=+1-2",
            "bytes=1 - 2x",
            "bytes=0-1,5-9",
            "items=0-1",
            "bytes=0x10-20",
            "bytes=1-2-3",
        ];
        for header in table {
            assert_eq!(parse(Some(header), 1000), ByteRange::Full, "{header:?}");
        }
        assert_eq!(parse(None, 1000), ByteRange::Full);
    }

    #[test]
    fn content_range_values() {
        assert_eq!(content_range(0, 99, 1000), "bytes 0-99/1000");
        assert_eq!(unsatisfied_range(1000), "bytes */1000");
    }
}
