//! Finding and reading the core metadata file inside an uploaded distribution, within bounds.
//!
//! A wheel carries `<name>-<version>.dist-info/METADATA` and an sdist `<name>-<version>/PKG-INFO`;
//! reading it is the only way to know that the file is what the form says. The archive is the
//! client's own construction, so nothing here trusts its sizes: the member is decompressed through
//! a cap of `max_metadata_size` bytes (a zip bomb is refused, never inflated), a zip's central
//! directory is sized from its end record before the zip crate loads it, and a `.tar.gz`, which
//! can only be read from the start, is scanned for at most `max_archive_entries` entries and
//! `max_archive_scan` decompressed bytes.

use std::borrow::Cow;
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::rc::Rc;

use flate2::read::MultiGzDecoder;
use zip::result::ZipError;
use zip::ZipArchive;

use super::error::{shown, UploadError};
use super::limits::Limits;
use crate::simple::ProjectName;

/// The name of an sdist's metadata file.
const PKG_INFO: &str = "PKG-INFO";
/// The longest tar extension header (GNU long name, PAX record set) read: real ones are a few
/// hundred bytes.
const MAX_TAR_EXTENSION: u64 = 64 << 10;

/// A core metadata file read from a distribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its path inside the archive, for messages.
    pub member: String,
    pub bytes: Vec<u8>,
}

/// Reads `<name>-<version>.dist-info/METADATA` from the wheel at `path`. `filename` is used in
/// messages; `project` is the project the wheel is for.
pub(crate) fn wheel_metadata(
    path: &Path,
    filename: &str,
    project: &ProjectName,
    limits: &Limits,
) -> Result<Found, UploadError> {
    let mut archive = open_zip(path, filename, limits)?;
    let mut found: Option<(&str, &str)> = None;
    for name in archive.file_names() {
        let Some(dir) = name.strip_suffix("/METADATA") else {
            continue;
        };
        if dir.contains('/') || !dir.ends_with(".dist-info") {
            continue;
        }
        if found.is_some() {
            return Err(UploadError::MetadataAmbiguous {
                filename: shown(filename),
                what: "top-level .dist-info/METADATA",
            });
        }
        found = Some((name, dir));
    }
    let Some((member, dir)) = found else {
        return Err(UploadError::MetadataMissing {
            filename: shown(filename),
            member: "`<name>-<version>.dist-info/METADATA`".to_owned(),
        });
    };
    // `<name>-<version>.dist-info`, the name escaped (`-` as `_`), so the last `-` separates them.
    let dir_project = dir
        .strip_suffix(".dist-info")
        .and_then(|stem| stem.rsplit_once('-'))
        .and_then(|(name, _)| ProjectName::parse(name).ok());
    if dir_project.as_ref() != Some(project) {
        return Err(UploadError::DistInfoMismatch {
            filename: shown(filename),
            dir: shown(dir),
            project: project.to_string(),
        });
    }
    let member = member.to_owned();
    let bytes = read_zip_member(&mut archive, &member, filename, limits)?;
    Ok(Found { member, bytes })
}

/// Reads `<dir>/PKG-INFO` from the `.zip` sdist at `path`.
pub(crate) fn zip_sdist_metadata(
    path: &Path,
    filename: &str,
    limits: &Limits,
) -> Result<Found, UploadError> {
    let mut archive = open_zip(path, filename, limits)?;
    let mut found: Option<&str> = None;
    for name in archive.file_names() {
        if !is_top_level_pkg_info(name.as_bytes()) {
            continue;
        }
        if found.is_some() {
            return Err(UploadError::MetadataAmbiguous {
                filename: shown(filename),
                what: "top-level PKG-INFO",
            });
        }
        found = Some(name);
    }
    let Some(member) = found.map(str::to_owned) else {
        return Err(missing_pkg_info(filename));
    };
    let bytes = read_zip_member(&mut archive, &member, filename, limits)?;
    Ok(Found { member, bytes })
}

/// Reads the first `<dir>/PKG-INFO` of the `.tar.gz` sdist at `path`.
pub(crate) fn tar_gz_sdist_metadata(
    path: &Path,
    filename: &str,
    limits: &Limits,
) -> Result<Found, UploadError> {
    let file = File::open(path).map_err(|source| UploadError::TempFile { source })?;
    let exceeded = Rc::new(Cell::new(false));
    let decompressed = Capped {
        inner: MultiGzDecoder::new(BufReader::new(file)),
        remaining: limits.max_archive_scan,
        exceeded: exceeded.clone(),
    };
    let scan_limit = || UploadError::ScanLimit {
        filename: shown(filename),
        max_entries: limits.max_archive_entries,
        max_bytes: limits.max_archive_scan,
    };
    // Past the scan limit the reader fails, and whatever error the tar crate makes of that is
    // the limit, not a corrupt archive.
    let corrupt = |error: io::Error| {
        if exceeded.get() {
            scan_limit()
        } else {
            UploadError::CorruptArchive {
                filename: shown(filename),
                format: "tar.gz",
                reason: error.to_string(),
            }
        }
    };
    let mut archive = tar::Archive::new(decompressed);
    // Raw entries: the tar crate would read a GNU long name or a PAX header of any size into
    // memory, so those are read here, under a cap.
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    let mut long_path: Option<Vec<u8>> = None;
    for (index, entry) in entries.enumerate() {
        if index as u64 >= limits.max_archive_entries {
            return Err(scan_limit());
        }
        let mut entry = entry.map_err(corrupt)?;
        let kind = entry.header().entry_type();
        if kind.is_gnu_longname() || kind.is_pax_local_extensions() {
            let mut data = Vec::new();
            (&mut entry)
                .take(MAX_TAR_EXTENSION + 1)
                .read_to_end(&mut data)
                .map_err(corrupt)?;
            if data.len() as u64 > MAX_TAR_EXTENSION {
                return Err(UploadError::CorruptArchive {
                    filename: shown(filename),
                    format: "tar.gz",
                    reason: format!("an extension header is larger than {MAX_TAR_EXTENSION} bytes"),
                });
            }
            if kind.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                long_path = Some(data);
            } else if let Some(pax_path) = pax_path(&data) {
                long_path = Some(pax_path);
            }
            continue;
        }
        if kind.is_gnu_longlink() || kind.is_pax_global_extensions() {
            continue;
        }
        let path = match long_path.take() {
            Some(path) => Cow::Owned(path),
            None => entry.path_bytes(),
        };
        if !is_top_level_pkg_info(&path) {
            continue;
        }
        let member = String::from_utf8_lossy(&path).into_owned();
        if !kind.is_file() {
            return Err(UploadError::MetadataUnreadable {
                filename: shown(filename),
                member: shown(&member),
                reason: "it is not a regular file".to_owned(),
            });
        }
        let bytes = read_capped(&mut entry, limits.max_metadata_size).map_err(|e| match e {
            Some(io) => corrupt(io),
            None => UploadError::MetadataTooLarge {
                filename: shown(filename),
                member: shown(&member),
                max: limits.max_metadata_size,
            },
        })?;
        return Ok(Found { member, bytes });
    }
    Err(missing_pkg_info(filename))
}

fn missing_pkg_info(filename: &str) -> UploadError {
    UploadError::MetadataMissing {
        filename: shown(filename),
        member: "`<name>-<version>/PKG-INFO`".to_owned(),
    }
}

/// The `path` record of a PAX extension header, if it has one.
fn pax_path(data: &[u8]) -> Option<Vec<u8>> {
    tar::PaxExtensions::new(data)
        .filter_map(Result::ok)
        .filter(|ext| ext.key_bytes() == b"path")
        .last()
        .map(|ext| ext.value_bytes().to_vec())
}

/// Whether an archive path is `<dir>/PKG-INFO` (a leading `./` allowed), the sdist's own
/// metadata rather than one of a vendored package deeper down.
fn is_top_level_pkg_info(path: &[u8]) -> bool {
    let mut parts = path
        .split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".");
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(dir), Some(file), None) if dir != b".." && file == PKG_INFO.as_bytes()
    )
}

/// Reads at most `max` bytes of `reader`. `Err(None)` when it holds more: a member that
/// decompresses beyond the cap is a possible zip bomb. An I/O error is `Err(Some(_))`.
fn read_capped(reader: impl Read, max: u64) -> Result<Vec<u8>, Option<io::Error>> {
    let mut bytes = Vec::new();
    reader
        .take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(Some)?;
    if bytes.len() as u64 > max {
        return Err(None);
    }
    Ok(bytes)
}

/// Opens a zip archive once its end record shows a central directory within the limits.
fn open_zip(
    path: &Path,
    filename: &str,
    limits: &Limits,
) -> Result<ZipArchive<BufReader<File>>, UploadError> {
    let mut file = File::open(path).map_err(|source| UploadError::TempFile { source })?;
    let corrupt = |reason: String| UploadError::CorruptArchive {
        filename: shown(filename),
        format: "zip",
        reason,
    };
    let directory = central_directory(&mut file)
        .map_err(|e| corrupt(e.to_string()))?
        .ok_or_else(|| corrupt("it has no end of central directory record".to_owned()))?;
    if directory.entries > limits.max_archive_entries || directory.size > limits.max_archive_scan {
        return Err(UploadError::ArchiveTooLarge {
            filename: shown(filename),
            max: limits.max_archive_entries,
            max_bytes: limits.max_archive_scan,
        });
    }
    ZipArchive::new(BufReader::new(file)).map_err(|e| corrupt(zip_reason(&e)))
}

/// Reads one member through the metadata cap.
fn read_zip_member(
    archive: &mut ZipArchive<BufReader<File>>,
    member: &str,
    filename: &str,
    limits: &Limits,
) -> Result<Vec<u8>, UploadError> {
    let unreadable = |reason: String| UploadError::MetadataUnreadable {
        filename: shown(filename),
        member: shown(member),
        reason,
    };
    let too_large = || UploadError::MetadataTooLarge {
        filename: shown(filename),
        member: shown(member),
        max: limits.max_metadata_size,
    };
    let entry = archive
        .by_name(member)
        .map_err(|e| unreadable(zip_reason(&e)))?;
    // The declared size settles most cases at once; the cap below covers a declared size that lies.
    if entry.size() > limits.max_metadata_size {
        return Err(too_large());
    }
    read_capped(entry, limits.max_metadata_size).map_err(|e| match e {
        Some(io) => unreadable(io.to_string()),
        None => too_large(),
    })
}

fn zip_reason(error: &ZipError) -> String {
    match error {
        ZipError::UnsupportedArchive(what) => {
            format!("{what}; only stored and deflate members can be read")
        }
        other => other.to_string(),
    }
}

/// What a zip's end of central directory record says of the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CentralDirectory {
    entries: u64,
    size: u64,
}

const EOCD_SIGNATURE: &[u8; 4] = b"PK\x05\x06";
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIGNATURE: &[u8; 4] = b"PK\x06\x07";
const ZIP64_LOCATOR_LEN: u64 = 20;
const ZIP64_EOCD_SIGNATURE: &[u8; 4] = b"PK\x06\x06";
const ZIP64_EOCD_LEN: usize = 56;

/// Finds the end of central directory record the way the zip crate looks first (the last one in
/// the file's final 64 KiB whose comment fits) and reads the entry count and directory size from
/// it, or from its ZIP64 record. The zip crate allocates for every entry it reads, so this is
/// checked before it is called; `None` when there is no such record.
fn central_directory(file: &mut File) -> io::Result<Option<CentralDirectory>> {
    let len = file.seek(SeekFrom::End(0))?;
    let tail_len = len.min((EOCD_LEN + usize::from(u16::MAX)) as u64);
    let tail_start = len - tail_len;
    let mut tail = vec![0; tail_len as usize];
    file.seek(SeekFrom::Start(tail_start))?;
    file.read_exact(&mut tail)?;
    let Some(at) = (0..tail.len().saturating_sub(EOCD_LEN - 1))
        .rev()
        .find(|&i| {
            tail.get(i..i + 4) == Some(&EOCD_SIGNATURE[..])
                && i + EOCD_LEN + usize::from(le_u16(&tail, i + 20)) <= tail.len()
        })
    else {
        return Ok(None);
    };
    let entries = le_u16(&tail, at + 10);
    let size = le_u32(&tail, at + 12);
    let offset = le_u32(&tail, at + 16);
    let mut directory = CentralDirectory {
        entries: u64::from(entries),
        size: u64::from(size),
    };
    let may_be_zip64 = entries == u16::MAX || size == u32::MAX || offset == u32::MAX;
    let eocd_position = tail_start + at as u64;
    if may_be_zip64 && eocd_position >= ZIP64_LOCATOR_LEN {
        let mut locator = [0u8; ZIP64_LOCATOR_LEN as usize];
        file.seek(SeekFrom::Start(eocd_position - ZIP64_LOCATOR_LEN))?;
        file.read_exact(&mut locator)?;
        if &locator[..4] == ZIP64_LOCATOR_SIGNATURE {
            let record_position = le_u64(&locator, 8);
            let mut record = [0u8; ZIP64_EOCD_LEN];
            file.seek(SeekFrom::Start(record_position))?;
            file.read_exact(&mut record)?;
            if &record[..4] != ZIP64_EOCD_SIGNATURE {
                return Ok(None);
            }
            directory = CentralDirectory {
                entries: le_u64(&record, 32),
                size: le_u64(&record, 40),
            };
        }
    }
    Ok(Some(directory))
}

fn le_u16(bytes: &[u8], at: usize) -> u16 {
    let mut out = [0u8; 2];
    if let Some(src) = bytes.get(at..at + 2) {
        out.copy_from_slice(src);
    }
    u16::from_le_bytes(out)
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        out.copy_from_slice(src);
    }
    u32::from_le_bytes(out)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        out.copy_from_slice(src);
    }
    u64::from_le_bytes(out)
}

/// A reader that fails once it has given `remaining` bytes, and says so in `exceeded`.
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // One byte more tells the end of the archive from an archive that goes on.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("the scan limit was reached"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::upload::testutil;

    fn directory_of(zip: &[u8]) -> Option<CentralDirectory> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(zip).unwrap();
        central_directory(&mut file).unwrap()
    }

    #[test]
    fn end_record_with_a_comment() {
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        writer.set_comment("a comment that ends with PK\u{5}\u{6} to mislead");
        for name in ["a", "b", "c"] {
            writer
                .start_file(name, zip::write::SimpleFileOptions::default())
                .unwrap();
        }
        let zip = writer.finish().unwrap().into_inner();
        let directory = directory_of(&zip).unwrap();
        assert_eq!(directory.entries, 3);
        assert!(directory.size > 0 && directory.size < 200, "{directory:?}");
    }

    #[test]
    fn no_end_record() {
        assert_eq!(directory_of(b""), None);
        assert_eq!(directory_of(b"PK\x03\x04 and nothing else"), None);
        let zip = testutil::zip_of(&[("a", b"x")]);
        assert_eq!(
            directory_of(&zip[..zip.len() - 1]),
            None,
            "a cut end record"
        );
    }

    #[test]
    fn zip64_end_record() {
        // Past 65,535 entries the count only fits in the ZIP64 record.
        let mut writer = zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for i in 0..70_000 {
            writer.start_file(format!("f{i}"), stored).unwrap();
        }
        let zip = writer.finish().unwrap().into_inner();
        assert_eq!(directory_of(&zip).map(|d| d.entries), Some(70_000));
    }

    #[test]
    fn top_level_pkg_info() {
        for path in [
            "demo-1.0/PKG-INFO",
            "./demo-1.0/PKG-INFO",
            "demo-1.0//PKG-INFO",
        ] {
            assert!(is_top_level_pkg_info(path.as_bytes()), "{path}");
        }
        for path in [
            "PKG-INFO",
            "../PKG-INFO",
            "demo-1.0/src/PKG-INFO",
            "demo-1.0/PKG-INFO/x",
            "demo-1.0/pkg-info",
        ] {
            assert!(!is_top_level_pkg_info(path.as_bytes()), "{path}");
        }
    }

    #[test]
    fn pax_path_records() {
        // `<len> <key>=<value>\n`, where the length counts its own digits.
        let record = |key: &str, value: &str| {
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            format!("{len} {key}={value}\n")
        };
        let data = record("mtime", "1") + &record("path", "demo-1.0/PKG-INFO");
        assert_eq!(
            pax_path(data.as_bytes()),
            Some(b"demo-1.0/PKG-INFO".to_vec())
        );
        assert_eq!(pax_path(record("mtime", "1").as_bytes()), None);
    }
}
