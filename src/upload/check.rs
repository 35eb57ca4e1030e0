//! Deciding whether a received upload is the distribution the form says it is.
//!
//! A hosted repository serves what was uploaded to everyone who installs from it, so an upload is
//! accepted only when every account of it agrees: the digests the client computed and the bytes
//! that arrived, the form's name and version, the filename's, and the core metadata inside the
//! archive (which is what installers will read, and which is served as the PEP 658 `.metadata` of
//! a wheel). Checking is synchronous and reads the temporary file: run it on a blocking thread.

use bytes::Bytes;

use super::content::ContentFile;
use super::error::{shown, UploadError};
use super::form::Form;
use super::inspect::{self, Found};
use super::limits::Limits;
use super::metadata::{CoreMetadata, MetadataError};
use super::receive::Received;
use crate::simple::{DistFilename, DistKind, ProjectName, Sha256Digest};

/// The only action this server takes.
const FILE_UPLOAD: &str = "file_upload";

/// An upload that passed every check, with its file still to be committed by the caller (it is
/// deleted if this value is dropped; see [`ContentFile`]).
#[derive(Debug)]
pub struct Checked {
    /// The project, PEP 503-normalised.
    pub project: ProjectName,
    pub filename: DistFilename,
    /// [`DistKind::Wheel`] or [`DistKind::Sdist`], never [`DistKind::Other`].
    pub kind: DistKind,
    /// The version as the filename spells it.
    pub version: String,
    pub sha256: Sha256Digest,
    /// The file's size in bytes.
    pub size: u64,
    /// `Requires-Python` from the core metadata, or else from the form.
    pub requires_python: Option<String>,
    /// A wheel's `METADATA` file exactly as it is in the wheel, to be served as its PEP 658
    /// `.metadata`; `None` for an sdist.
    pub core_metadata: Option<Bytes>,
    pub content: ContentFile,
    pub form: Form,
}

/// Checks a received upload. Every refusal is a 400 naming the field or the file, except a 500
/// when the temporary file cannot be read; on any error the temporary file is deleted.
///
/// Blocking: it reads the archive's directory and decompresses its metadata file (at most
/// `limits.max_metadata_size` bytes; for a `.tar.gz` sdist, up to `limits.max_archive_scan`
/// bytes while looking for `PKG-INFO`). Call it from `spawn_blocking`.
pub fn check(received: Received, limits: &Limits) -> Result<Checked, UploadError> {
    let Received { form, content } = received;
    match form.action.as_deref() {
        Some(FILE_UPLOAD) => {}
        Some(other) => {
            return Err(UploadError::UnsupportedAction {
                shown: shown(other),
            })
        }
        None => return Err(UploadError::MissingField { field: ":action" }),
    }
    let name = form
        .name
        .as_deref()
        .ok_or(UploadError::MissingField { field: "name" })?;
    let version = form
        .version
        .as_deref()
        .ok_or(UploadError::MissingField { field: "version" })?;
    let form_project =
        ProjectName::parse(name).map_err(|source| UploadError::BadProjectName { source })?;
    check_digests(&form, &content)?;

    let filename = DistFilename::parse(content.filename())
        .map_err(|source| UploadError::BadFilename { source })?;
    let format = ArchiveFormat::of(&filename)?;
    let (Some(file_project), Some(file_version)) = (filename.project(), filename.version()) else {
        return Err(UploadError::NotADistribution {
            filename: shown(filename.as_str()),
        });
    };
    check_filetype(form.filetype.as_deref(), &filename)?;
    if *file_project != form_project {
        return Err(UploadError::NameMismatch {
            filename: shown(filename.as_str()),
            form: shown(name),
            file: file_project.to_string(),
        });
    }
    if !same_version(version, file_version) {
        return Err(UploadError::VersionMismatch {
            filename: shown(filename.as_str()),
            form: shown(version),
            file: shown(file_version),
        });
    }

    let path = content.path();
    let found = match format {
        ArchiveFormat::Wheel => {
            inspect::wheel_metadata(path, filename.as_str(), file_project, limits)?
        }
        ArchiveFormat::TarGz => inspect::tar_gz_sdist_metadata(path, filename.as_str(), limits)?,
        ArchiveFormat::Zip => inspect::zip_sdist_metadata(path, filename.as_str(), limits)?,
    };
    let requires_python = check_metadata(&found, &filename, file_project, file_version)?
        .or_else(|| form.requires_python.clone());

    let kind = filename.kind();
    Ok(Checked {
        project: file_project.clone(),
        version: file_version.to_owned(),
        kind,
        sha256: content.sha256(),
        size: content.size(),
        requires_python,
        core_metadata: (kind == DistKind::Wheel).then(|| Bytes::from(found.bytes)),
        filename,
        content,
        form,
    })
}

/// How the distribution is packed, from its filename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArchiveFormat {
    Wheel,
    TarGz,
    Zip,
}

impl ArchiveFormat {
    fn of(filename: &DistFilename) -> Result<ArchiveFormat, UploadError> {
        let raw = filename.as_str();
        match filename.kind() {
            DistKind::Wheel => Ok(ArchiveFormat::Wheel),
            DistKind::Sdist if ends_with_ignore_case(raw, ".tar.gz") => Ok(ArchiveFormat::TarGz),
            DistKind::Sdist if ends_with_ignore_case(raw, ".zip") => Ok(ArchiveFormat::Zip),
            DistKind::Sdist => Err(UploadError::UnsupportedSdistFormat {
                filename: shown(raw),
            }),
            DistKind::Other => Err(UploadError::NotADistribution {
                filename: shown(raw),
            }),
        }
    }
}

fn ends_with_ignore_case(raw: &str, suffix: &str) -> bool {
    raw.len() >= suffix.len()
        && raw
            .get(raw.len() - suffix.len()..)
            .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
}

/// Every digest the client sent must be the digest of the bytes that arrived. Sending none is
/// allowed: the sha256 was computed here anyway.
fn check_digests(form: &Form, content: &ContentFile) -> Result<(), UploadError> {
    let digests = content.digests();
    let pairs = [
        ("sha256_digest", &form.sha256_digest, digests.sha256_hex()),
        (
            "blake2_256_digest",
            &form.blake2_256_digest,
            digests.blake2_256_hex(),
        ),
        ("md5_digest", &form.md5_digest, digests.md5_hex()),
    ];
    for (field, sent, computed) in pairs {
        let Some(sent) = sent.as_deref() else {
            continue;
        };
        if !sent.trim().eq_ignore_ascii_case(&computed) {
            return Err(UploadError::DigestMismatch {
                field,
                filename: shown(content.filename()),
                sent: shown(sent),
                computed,
            });
        }
    }
    Ok(())
}

/// The form's `filetype`, when sent, must name the kind the filename has.
fn check_filetype(filetype: Option<&str>, filename: &DistFilename) -> Result<(), UploadError> {
    let Some(filetype) = filetype else {
        return Ok(());
    };
    let expected = match filename.kind() {
        DistKind::Wheel => "bdist_wheel",
        _ => "sdist",
    };
    if filetype == expected {
        return Ok(());
    }
    Err(UploadError::FiletypeMismatch {
        filename: shown(filename.as_str()),
        filetype: shown(filetype),
        kind: match filename.kind() {
            DistKind::Wheel => "wheel",
            _ => "source distribution",
        },
    })
}

/// The core metadata must name the project and version of the filename (and so of the form).
/// Returns its `Requires-Python`.
fn check_metadata(
    found: &Found,
    filename: &DistFilename,
    project: &ProjectName,
    version: &str,
) -> Result<Option<String>, UploadError> {
    let unreadable = |error: MetadataError| UploadError::MetadataUnreadable {
        filename: shown(filename.as_str()),
        member: shown(&found.member),
        reason: error.to_string(),
    };
    let place = || format!("{} in {}", shown(&found.member), shown(filename.as_str()));
    let metadata = CoreMetadata::parse(&found.bytes).map_err(unreadable)?;
    let name = metadata.name().map_err(unreadable)?;
    if ProjectName::parse(name).ok().as_ref() != Some(project) {
        return Err(UploadError::MetadataMismatch {
            place: place(),
            header: "Name:",
            metadata: shown(name),
            what: "project",
            expected: project.to_string(),
        });
    }
    let metadata_version = metadata.version().map_err(unreadable)?;
    if !same_version(metadata_version, version) {
        return Err(UploadError::MetadataMismatch {
            place: place(),
            header: "Version:",
            metadata: shown(metadata_version),
            what: "version",
            expected: shown(version),
        });
    }
    Ok(metadata
        .requires_python()
        .map_err(unreadable)?
        .map(str::to_owned))
}

/// Whether two spellings are the same version: equal under PEP 440 (`1.0` is `1.0.0`, `1.0RC1` is
/// `1.0rc1`) when both parse, else equal as strings.
fn same_version(a: &str, b: &str) -> bool {
    match (
        a.parse::<pep440_rs::Version>(),
        b.parse::<pep440_rs::Version>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use tempfile::TempDir;

    use super::*;
    use crate::upload::testutil::{self, receive_multipart, Part};

    /// Checks `upload`, which must be refused (see [`Upload::refused`]) with an error matching
    /// `pattern`; evaluates to the error.
    macro_rules! assert_refused {
        ($upload:expr, $pattern:pat) => {{
            let err = $upload.refused().await;
            assert!(matches!(err, $pattern), "{err}");
            err
        }};
    }

    /// The form twine sends for `file`, with every digest right.
    struct Upload {
        filename: String,
        file: Vec<u8>,
        fields: Vec<(&'static str, String)>,
    }

    impl Upload {
        fn new(name: &str, version: &str, filename: &str, file: Vec<u8>) -> Upload {
            let digests = (
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&file)),
                hex::encode(
                    <blake2::Blake2b<blake2::digest::consts::U32> as blake2::Digest>::digest(&file),
                ),
                hex::encode(<md5::Md5 as md5::Digest>::digest(&file)),
            );
            let filetype = if filename.ends_with(".whl") {
                "bdist_wheel"
            } else {
                "sdist"
            };
            Upload {
                filename: filename.to_owned(),
                fields: vec![
                    (":action", FILE_UPLOAD.to_owned()),
                    ("protocol_version", "1".to_owned()),
                    ("name", name.to_owned()),
                    ("version", version.to_owned()),
                    ("filetype", filetype.to_owned()),
                    ("pyversion", "py3".to_owned()),
                    ("metadata_version", "2.1".to_owned()),
                    ("sha256_digest", digests.0),
                    ("blake2_256_digest", digests.1),
                    ("md5_digest", digests.2),
                    ("requires_python", ">=3.7".to_owned()),
                    (
                        "classifiers",
                        "Programming Language :: Python :: 3".to_owned(),
                    ),
                ],
                file,
            }
        }

        fn set(mut self, field: &'static str, value: &str) -> Upload {
            self.fields.retain(|(f, _)| *f != field);
            self.fields.push((field, value.to_owned()));
            self
        }

        fn without(mut self, field: &'static str) -> Upload {
            self.fields.retain(|(f, _)| *f != field);
            self
        }

        async fn receive(&self) -> (TempDir, Received) {
            let dir = tempfile::tempdir().unwrap();
            let mut parts: Vec<Part<'_>> = self
                .fields
                .iter()
                .map(|(name, value)| Part::text(name, value))
                .collect();
            parts.push(Part::file("content", &self.filename, &self.file));
            let received = receive_multipart(&parts, 16 << 10, dir.path(), &Limits::default())
                .await
                .unwrap();
            (dir, received)
        }

        async fn check(&self) -> Result<Checked, UploadError> {
            self.check_with(&Limits::default()).await
        }

        /// Checks the upload; the temporary directory goes when this returns, and the file in it
        /// with it (a test that reads the file uses [`Upload::checked`]).
        async fn check_with(&self, limits: &Limits) -> Result<Checked, UploadError> {
            self.checked(limits).await.1
        }

        async fn checked(&self, limits: &Limits) -> (TempDir, Result<Checked, UploadError>) {
            let (dir, received) = self.receive().await;
            let result = check(received, limits);
            if result.is_err() {
                assert_eq!(entries(dir.path()), 0, "a refused upload leaves no file");
            }
            (dir, result)
        }

        async fn refused(&self) -> UploadError {
            let err = self.check().await.unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{err}");
            let message = err.to_string();
            assert!(!message.contains('\n'), "one line: {message}");
            assert!(message.len() < 600, "short: {message}");
            err
        }
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    /// `foo-bar 1.0` as the wheel `foo_bar-1.0-py3-none-any.whl`, its bytes `file`.
    fn foo_bar_wheel(file: Vec<u8>) -> Upload {
        Upload::new("foo-bar", "1.0", "foo_bar-1.0-py3-none-any.whl", file)
    }

    /// `demo 1.0` as the sdist `demo-1.0.<extension>`, its bytes `file`.
    fn demo_sdist(extension: &str, file: Vec<u8>) -> Upload {
        Upload::new("demo", "1.0", &format!("demo-1.0.{extension}"), file)
    }

    /// `owned` borrowed as the `(path, bytes)` members `zip_of` and `tar_gz_of` take, then `last`.
    fn members_then<'a>(
        owned: &'a [(String, Vec<u8>)],
        last: (&'a str, &'a [u8]),
    ) -> Vec<(&'a str, &'a [u8])> {
        owned
            .iter()
            .map(|(p, b)| (p.as_str(), b.as_slice()))
            .chain([last])
            .collect()
    }

    fn good_wheel() -> Upload {
        let metadata = testutil::core_metadata("Foo_Bar", "1.0.0");
        foo_bar_wheel(testutil::wheel("foo_bar-1.0", &metadata))
    }

    #[tokio::test]
    async fn a_good_wheel() {
        let upload = good_wheel();
        let (_dir, checked) = upload.checked(&Limits::default()).await;
        let checked = checked.unwrap();
        assert_eq!(checked.project.as_str(), "foo-bar");
        assert_eq!(checked.filename.as_str(), "foo_bar-1.0-py3-none-any.whl");
        assert_eq!(checked.kind, DistKind::Wheel);
        assert_eq!(checked.version, "1.0");
        assert_eq!(checked.sha256, Sha256Digest::of(&upload.file));
        assert_eq!(checked.size, upload.file.len() as u64);
        assert_eq!(checked.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(
            checked.core_metadata.as_deref(),
            Some(testutil::core_metadata("Foo_Bar", "1.0.0").as_bytes())
        );
        assert_eq!(checked.form.name.as_deref(), Some("foo-bar"));
        assert_eq!(
            checked.form.values("classifiers"),
            ["Programming Language :: Python :: 3"]
        );
        assert_eq!(std::fs::read(checked.content.path()).unwrap(), upload.file);
        let path = checked.content.path().to_owned();
        drop(checked);
        assert!(!path.exists(), "dropping the result deletes the file");
    }

    #[tokio::test]
    async fn a_good_sdist_tar_gz() {
        let metadata =
            testutil::core_metadata("foo.bar", "2.0rc1").replace("Requires-Python: >=3.8\n", "");
        let upload = Upload::new(
            "Foo.Bar",
            "2.0rc1",
            "foo_bar-2.0rc1.tar.gz",
            testutil::sdist_tar_gz("foo_bar-2.0rc1", &metadata),
        );
        let checked = upload.check().await.unwrap();
        assert_eq!(checked.project.as_str(), "foo-bar");
        assert_eq!(checked.kind, DistKind::Sdist);
        assert_eq!(checked.version, "2.0rc1");
        assert_eq!(checked.core_metadata, None);
        assert_eq!(
            checked.requires_python.as_deref(),
            Some(">=3.7"),
            "the form's, when the metadata has none"
        );
    }

    #[tokio::test]
    async fn a_good_sdist_zip() {
        let metadata = testutil::core_metadata("demo", "0.1");
        let upload = Upload::new(
            "demo",
            "0.1",
            "demo-0.1.zip",
            testutil::sdist_zip("demo-0.1", &metadata),
        );
        let checked = upload.check().await.unwrap();
        assert_eq!(checked.kind, DistKind::Sdist);
        assert_eq!(checked.requires_python.as_deref(), Some(">=3.8"));
    }

    #[tokio::test]
    async fn a_tar_gz_with_a_long_directory_name() {
        // Past 100 bytes the tar builder writes a GNU long-name entry before the member.
        let dir = format!("demo-{}", "0.".repeat(60) + "1");
        let version = &dir["demo-".len()..];
        let metadata = testutil::core_metadata("demo", version);
        let upload = Upload::new(
            "demo",
            version,
            &format!("{dir}.tar.gz"),
            testutil::sdist_tar_gz(&dir, &metadata),
        );
        let checked = upload.check().await.unwrap();
        assert_eq!(checked.version, version);
    }

    #[tokio::test]
    async fn no_digests_at_all_is_fine() {
        let upload = good_wheel()
            .without("sha256_digest")
            .without("blake2_256_digest")
            .without("md5_digest");
        upload.check().await.unwrap();
        // Empty values, as some clients send, are no values.
        let upload = good_wheel().set("md5_digest", "");
        upload.check().await.unwrap();
    }

    #[tokio::test]
    async fn digests_compare_case_insensitively() {
        let upload = good_wheel();
        let upper: Vec<(&'static str, String)> = upload
            .fields
            .iter()
            .filter(|(f, _)| f.ends_with("_digest"))
            .map(|(f, v)| (*f, v.to_ascii_uppercase()))
            .collect();
        let mut upload = upload;
        for (field, value) in upper {
            upload = upload.set(field, &value);
        }
        upload.check().await.unwrap();
    }

    #[tokio::test]
    async fn every_digest_mismatch_is_refused() {
        for field in ["sha256_digest", "blake2_256_digest", "md5_digest"] {
            let wrong = if field == "md5_digest" {
                "0".repeat(32)
            } else {
                "0".repeat(64)
            };
            let err = good_wheel().set(field, &wrong).refused().await;
            match &err {
                UploadError::DigestMismatch {
                    field: f, filename, ..
                } => {
                    assert_eq!(*f, field);
                    assert!(filename.contains("foo_bar-1.0"), "{err}");
                }
                other => panic!("{field}: {other}"),
            }
            assert!(err.to_string().contains(field), "{err}");
        }
        assert_refused!(
            good_wheel().set("sha256_digest", "not hex"),
            UploadError::DigestMismatch { .. }
        );
    }

    #[tokio::test]
    async fn action_and_required_fields() {
        let err = assert_refused!(
            good_wheel().set(":action", "remove_pkg"),
            UploadError::UnsupportedAction { .. }
        );
        assert!(err.to_string().contains("remove_pkg"), "{err}");
        for field in [":action", "name", "version"] {
            let err = good_wheel().without(field).refused().await;
            assert!(
                matches!(err, UploadError::MissingField { field: f } if f == field),
                "{field}: {err}"
            );
        }
        assert_refused!(
            good_wheel().set("name", "foo bar"),
            UploadError::BadProjectName { .. }
        );
    }

    #[tokio::test]
    async fn name_normalisation_passes() {
        for name in ["Foo_Bar", "foo-bar", "FOO.bar", "foo__bar"] {
            good_wheel().set("name", name).check().await.unwrap();
        }
    }

    #[tokio::test]
    async fn pep440_equal_versions_pass() {
        for version in ["1.0", "1.0.0", "1", "v1.0", "1.0.0.0"] {
            good_wheel()
                .set("version", version)
                .check()
                .await
                .unwrap_or_else(|e| panic!("{version}: {e}"));
        }
    }

    #[tokio::test]
    async fn the_form_must_agree_with_the_filename() {
        let err = assert_refused!(
            good_wheel().set("name", "other"),
            UploadError::NameMismatch { .. }
        );
        assert!(err.to_string().contains("foo-bar"), "{err}");
        let err = assert_refused!(
            good_wheel().set("version", "1.1"),
            UploadError::VersionMismatch { .. }
        );
        assert!(err.to_string().contains("1.1"), "{err}");
        assert_refused!(
            good_wheel().set("filetype", "sdist"),
            UploadError::FiletypeMismatch { .. }
        );
    }

    #[tokio::test]
    async fn unparseable_versions_compare_as_strings() {
        let metadata = testutil::core_metadata("demo", "1.0.foo");
        let upload = |form_version: &str| {
            Upload::new(
                "demo",
                form_version,
                "demo-1.0.foo.tar.gz",
                testutil::sdist_tar_gz("demo-1.0.foo", &metadata),
            )
        };
        upload("1.0.foo").check().await.unwrap();
        assert_refused!(upload("1.0.FOO"), UploadError::VersionMismatch { .. });
    }

    #[tokio::test]
    async fn the_metadata_must_agree() {
        let wheel = |metadata: &str| foo_bar_wheel(testutil::wheel("foo_bar-1.0", metadata));
        let err = assert_refused!(
            wheel(&testutil::core_metadata("other", "1.0")),
            UploadError::MetadataMismatch {
                header: "Name:",
                ..
            }
        );
        assert!(err.to_string().contains("METADATA"), "{err}");
        assert_refused!(
            wheel(&testutil::core_metadata("foo-bar", "1.0.1")),
            UploadError::MetadataMismatch {
                header: "Version:",
                ..
            }
        );
        assert_refused!(
            wheel("Metadata-Version: 2.1\nVersion: 1.0\n"),
            UploadError::MetadataUnreadable { .. }
        );

        let sdist = demo_sdist(
            "tar.gz",
            testutil::sdist_tar_gz("demo-1.0", &testutil::core_metadata("demo", "2.0")),
        );
        assert_refused!(
            sdist,
            UploadError::MetadataMismatch {
                header: "Version:",
                ..
            }
        );
    }

    #[tokio::test]
    async fn wheel_structure() {
        let metadata = testutil::core_metadata("foo-bar", "1.0");
        assert_refused!(
            foo_bar_wheel(testutil::zip_of(&[("foo_bar/__init__.py", b"")])),
            UploadError::MetadataMissing { .. }
        );
        assert_refused!(
            foo_bar_wheel(testutil::zip_of(&[
                ("foo_bar-1.0.dist-info/METADATA", metadata.as_bytes()),
                ("foo_bar-1.1.dist-info/METADATA", metadata.as_bytes()),
            ])),
            UploadError::MetadataAmbiguous { .. }
        );
        assert_refused!(
            foo_bar_wheel(testutil::wheel("other-1.0", &metadata)),
            UploadError::DistInfoMismatch { .. }
        );
        assert_refused!(
            foo_bar_wheel(b"PK\x03\x04 this is not a zip".to_vec()),
            UploadError::CorruptArchive { .. }
        );
        // A deeper METADATA (a vendored package's) is not the wheel's.
        assert_refused!(
            foo_bar_wheel(testutil::zip_of(&[(
                "vendor/foo_bar-1.0.dist-info/METADATA",
                metadata.as_bytes(),
            )])),
            UploadError::MetadataMissing { .. }
        );
    }

    #[tokio::test]
    async fn sdist_structure() {
        let metadata = testutil::core_metadata("demo", "1.0");
        let tgz = |file: Vec<u8>| demo_sdist("tar.gz", file);
        assert_refused!(
            tgz(testutil::tar_gz_of(&[("demo-1.0/setup.py", b"")])),
            UploadError::MetadataMissing { .. }
        );
        assert_refused!(
            tgz(b"\x1f\x8b not really gzip".to_vec()),
            UploadError::CorruptArchive { .. }
        );
        // A PKG-INFO at the top of the archive, or deeper down, is not the sdist's.
        assert_refused!(
            tgz(testutil::tar_gz_of(&[
                ("PKG-INFO", metadata.as_bytes()),
                ("demo-1.0/src/demo.egg-info/PKG-INFO", metadata.as_bytes()),
            ])),
            UploadError::MetadataMissing { .. }
        );
        // `./` prefixes are allowed.
        tgz(testutil::tar_gz_of(&[(
            "./demo-1.0/PKG-INFO",
            metadata.as_bytes(),
        )]))
        .check()
        .await
        .unwrap();

        let zip = |file: Vec<u8>| demo_sdist("zip", file);
        assert_refused!(
            zip(testutil::zip_of(&[
                ("a/PKG-INFO", metadata.as_bytes()),
                ("b/PKG-INFO", metadata.as_bytes()),
            ])),
            UploadError::MetadataAmbiguous { .. }
        );
    }

    #[tokio::test]
    async fn only_wheels_and_tar_gz_or_zip_sdists() {
        for (filename, expected) in [
            ("demo-1.0.tar.bz2", "format"),
            ("demo-1.0.tgz", "format"),
            ("demo-1.0-py3.8.egg", "not"),
            ("demo.tar.gz", "not"),
            ("README", "not"),
        ] {
            let upload =
                Upload::new("demo", "1.0", filename, b"bytes".to_vec()).without("filetype");
            let err = upload.refused().await;
            match expected {
                "format" => assert!(
                    matches!(err, UploadError::UnsupportedSdistFormat { .. }),
                    "{filename}: {err}"
                ),
                _ => assert!(
                    matches!(err, UploadError::NotADistribution { .. }),
                    "{filename}: {err}"
                ),
            }
        }
        assert_refused!(
            Upload::new("demo", "1.0", "../demo-1.0.tar.gz", b"x".to_vec()),
            UploadError::BadFilename { .. }
        );
    }

    #[tokio::test]
    async fn a_zip_bomb_is_refused_quickly() {
        let bomb = testutil::bomb_wheel("foo_bar-1.0", "foo-bar", "1.0", 100 << 20);
        assert!(bomb.len() < 1 << 20, "{} bytes compressed", bomb.len());
        let mut lying = bomb.clone();
        testutil::lie_about_size(&mut lying, "foo_bar-1.0.dist-info/METADATA", 4096);
        for (what, file) in [("honest size", bomb), ("declared size lies", lying)] {
            let upload = foo_bar_wheel(file);
            let started = Instant::now();
            let err = upload.refused().await;
            assert!(
                matches!(err, UploadError::MetadataTooLarge { max, .. } if max == 1 << 20),
                "{what}: {err}"
            );
            assert!(err.to_string().contains("zip bomb"), "{err}");
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what}: {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn oversized_pkg_info_and_scan_limits() {
        let limits = Limits {
            max_metadata_size: 64,
            ..Limits::default()
        };
        let metadata = testutil::core_metadata("demo", "1.0");
        let upload = demo_sdist("tar.gz", testutil::sdist_tar_gz("demo-1.0", &metadata));
        let err = upload.check_with(&limits).await.unwrap_err();
        assert!(matches!(err, UploadError::MetadataTooLarge { .. }), "{err}");

        // PKG-INFO behind many entries, or behind much data.
        let filler: Vec<(String, Vec<u8>)> = (0..50)
            .map(|i| (format!("demo-1.0/f{i}"), vec![b'x'; 4096]))
            .collect();
        let members = members_then(&filler, ("demo-1.0/PKG-INFO", metadata.as_bytes()));
        let upload = demo_sdist("tar.gz", testutil::tar_gz_of(&members));
        upload.check().await.unwrap();
        for limits in [
            Limits {
                max_archive_entries: 10,
                ..Limits::default()
            },
            Limits {
                max_archive_scan: 64 << 10,
                ..Limits::default()
            },
        ] {
            let err = upload.check_with(&limits).await.unwrap_err();
            assert!(matches!(err, UploadError::ScanLimit { .. }), "{err}");
        }
    }

    #[tokio::test]
    async fn zip_directories_are_bounded() {
        let members: Vec<(String, Vec<u8>)> = (0..20)
            .map(|i| (format!("foo_bar/m{i}.py"), Vec::new()))
            .collect();
        let metadata = testutil::core_metadata("foo-bar", "1.0");
        let all = members_then(
            &members,
            ("foo_bar-1.0.dist-info/METADATA", metadata.as_bytes()),
        );
        let upload = foo_bar_wheel(testutil::zip_of(&all));
        upload.check().await.unwrap();
        let limits = Limits {
            max_archive_entries: 10,
            ..Limits::default()
        };
        let err = upload.check_with(&limits).await.unwrap_err();
        assert!(matches!(err, UploadError::ArchiveTooLarge { .. }), "{err}");
    }

    /// How long a 200 MiB wheel takes to spool and to check: a measurement, not a test
    /// (`cargo test --release --lib upload -- --ignored --nocapture`).
    #[tokio::test]
    #[ignore]
    async fn timing_of_a_200_mib_wheel() {
        use std::io::{Read as _, Write as _};
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source.whl");
        {
            let file = std::fs::File::create(&source).unwrap();
            let mut zip = zip::ZipWriter::new(file);
            let stored = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(true);
            zip.start_file("foo_bar/data.bin", stored).unwrap();
            let mut block = vec![0u8; 1 << 20];
            for (i, b) in block.iter_mut().enumerate() {
                *b = (i.wrapping_mul(2_654_435_761) >> 13) as u8;
            }
            for _ in 0..200 {
                zip.write_all(&block).unwrap();
            }
            zip.start_file("foo_bar-1.0.dist-info/METADATA", stored)
                .unwrap();
            zip.write_all(testutil::core_metadata("foo-bar", "1.0").as_bytes())
                .unwrap();
            zip.finish().unwrap();
        }
        let started = Instant::now();
        let mut spool = crate::upload::spool::Spool::create(dir.path())
            .await
            .unwrap();
        let mut file = std::fs::File::open(&source).unwrap();
        let mut chunk = vec![0u8; 256 << 10];
        loop {
            let n = file.read(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            spool
                .write(Bytes::copy_from_slice(&chunk[..n]))
                .await
                .unwrap();
        }
        let content = spool
            .finish("foo_bar-1.0-py3-none-any.whl".to_owned())
            .await
            .unwrap();
        let spooled = started.elapsed();
        let form = Form {
            action: Some(FILE_UPLOAD.to_owned()),
            name: Some("foo-bar".to_owned()),
            version: Some("1.0".to_owned()),
            sha256_digest: Some(content.digests().sha256_hex()),
            ..Form::default()
        };
        let started = Instant::now();
        let checked = check(Received { form, content }, &Limits::default()).unwrap();
        let checking = started.elapsed();
        let started = Instant::now();
        checked.content.sync_all().unwrap();
        println!(
            "{} bytes: spooled (hashed and written) in {spooled:?}, checked in {checking:?}, \
             fsynced in {:?}",
            checked.size,
            started.elapsed()
        );
    }
}
