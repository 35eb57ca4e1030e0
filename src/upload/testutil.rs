//! Builders for the tests: multipart bodies written by hand and streamed in chunks, and wheels
//! and sdists made in memory.
//!
//! The upload tests need real archives and real request bodies, but no third-party files: these
//! build the smallest ones that are still what the tools produce.

use std::borrow::Cow;
use std::convert::Infallible;
use std::io::{Cursor, Write};
use std::path::Path;

use bytes::Bytes;
use flate2::write::GzEncoder;
use futures_util::{stream, Stream};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::error::UploadError;
use super::limits::Limits;
use super::receive::{receive, Received};

pub const BOUNDARY: &str = "wheelgate-test-boundary-3f9c";
pub const CONTENT_TYPE: &str = "multipart/form-data; boundary=wheelgate-test-boundary-3f9c";

/// One part of a multipart body.
pub struct Part<'a> {
    name: &'a str,
    filename: Option<&'a str>,
    body: Cow<'a, [u8]>,
}

impl<'a> Part<'a> {
    pub fn text(name: &'a str, value: &'a str) -> Part<'a> {
        Part::bytes(name, value.as_bytes())
    }

    pub fn bytes(name: &'a str, value: &'a [u8]) -> Part<'a> {
        Part {
            name,
            filename: None,
            body: Cow::Borrowed(value),
        }
    }

    pub fn file(name: &'a str, filename: &'a str, body: &'a [u8]) -> Part<'a> {
        Part {
            name,
            filename: Some(filename),
            body: Cow::Borrowed(body),
        }
    }
}

/// A `multipart/form-data` body as twine writes it.
pub fn multipart(parts: &[Part<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for part in parts {
        out.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
        match part.filename {
            Some(filename) => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"; filename=\"{filename}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
            None => out.extend_from_slice(
                format!(
                    "Content-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    part.name
                )
                .as_bytes(),
            ),
        }
        out.extend_from_slice(&part.body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

/// `body` as a request body arriving in chunks of `chunk` bytes.
pub fn chunked(
    body: &[u8],
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Unpin {
    let chunks: Vec<Result<Bytes, Infallible>> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

/// Receives the multipart body of `parts`, arriving in chunks of `chunk` bytes, into `dir`.
pub async fn receive_multipart(
    parts: &[Part<'_>],
    chunk: usize,
    dir: &Path,
    limits: &Limits,
) -> Result<Received, UploadError> {
    receive(chunked(&multipart(parts), chunk), CONTENT_TYPE, dir, limits).await
}

/// Core metadata with the given name and version.
pub fn core_metadata(name: &str, version: &str) -> String {
    format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: A test package\n\
         Requires-Python: >=3.8\nClassifier: Programming Language :: Python :: 3\n\n\
         The description.\n"
    )
}

fn deflated() -> SimpleFileOptions {
    SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
}

/// A wheel whose `.dist-info` directory is `<dist_info>.dist-info`, holding `metadata`.
pub fn wheel(dist_info: &str, metadata: &str) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let files = [
        ("demo/__init__.py".to_owned(), "VALUE = 1\n".to_owned()),
        (
            format!("{dist_info}.dist-info/METADATA"),
            metadata.to_owned(),
        ),
        (
            format!("{dist_info}.dist-info/WHEEL"),
            "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n".to_owned(),
        ),
        (format!("{dist_info}.dist-info/RECORD"), String::new()),
    ];
    for (name, body) in files {
        zip.start_file(name, deflated()).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A zip with the given members, in order.
pub fn zip_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, body) in members {
        zip.start_file(*name, deflated()).unwrap();
        zip.write_all(body).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A wheel whose METADATA is a few headers followed by `zeros` zero bytes, written a chunk at a
/// time so that the test never holds them: a zip bomb.
pub fn bomb_wheel(dist_info: &str, name: &str, version: &str, zeros: usize) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    zip.start_file(
        format!("{dist_info}.dist-info/METADATA"),
        deflated().compression_level(Some(1)),
    )
    .unwrap();
    zip.write_all(core_metadata(name, version).as_bytes())
        .unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = zeros;
    while left > 0 {
        let n = left.min(chunk.len());
        zip.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    zip.finish().unwrap().into_inner()
}

/// Rewrites the uncompressed size a zip declares for `member` (in its local header and its
/// central directory record), as a hostile archive would.
pub fn lie_about_size(zip: &mut [u8], member: &str, size: u32) {
    let name = member.as_bytes();
    let mut patched = 0;
    for at in 0..zip.len().saturating_sub(46) {
        let (name_len_at, name_at, size_at) = match &zip[at..at + 4] {
            b"PK\x03\x04" => (at + 26, at + 30, at + 22),
            b"PK\x01\x02" => (at + 28, at + 46, at + 24),
            _ => continue,
        };
        let name_len = usize::from(u16::from_le_bytes([zip[name_len_at], zip[name_len_at + 1]]));
        if zip.get(name_at..name_at + name_len) != Some(name) {
            continue;
        }
        zip[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
        patched += 1;
    }
    assert_eq!(patched, 2, "the local header and the central record");
}

/// A `.tar.gz` sdist with the given members (path, contents), in order.
pub fn tar_gz_of(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for (path, body) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *body).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

/// A `.tar.gz` sdist `<dir>/` holding `PKG-INFO` with `metadata` after a source file.
pub fn sdist_tar_gz(dir: &str, metadata: &str) -> Vec<u8> {
    tar_gz_of(&[
        (&format!("{dir}/demo/__init__.py"), b"VALUE = 1\n"),
        (&format!("{dir}/demo/sub/PKG-INFO"), b"Name: vendored\n"),
        (&format!("{dir}/PKG-INFO"), metadata.as_bytes()),
        (&format!("{dir}/pyproject.toml"), b"[project]\n"),
    ])
}

/// A `.zip` sdist `<dir>/` holding `PKG-INFO` with `metadata`.
pub fn sdist_zip(dir: &str, metadata: &str) -> Vec<u8> {
    zip_of(&[
        (&format!("{dir}/demo/__init__.py"), b"VALUE = 1\n"),
        (&format!("{dir}/PKG-INFO"), metadata.as_bytes()),
    ])
}
