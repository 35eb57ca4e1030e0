//! The distributions the upload tests publish to a hosted repository (`wgpub-*`), and the
//! legacy upload form as twine sends it.
//!
//! A hosted repository keeps what clients upload, and pip and uv then install it, so these files
//! must be real (valid METADATA, WHEEL, RECORD; an sdist with PKG-INFO) yet belong to this project
//! only. They are built by the same deterministic builders as the upstream's fixtures
//! (`fixtures.rs`), and their `wgpub-` prefix keeps them apart from the `wgfx-` projects the
//! fixture upstream serves, so that a listed file can only have come from an upload.
//!
//! Some are wrong on purpose: a rebuild of `wgpub-app 1.0.0` with other bytes under the same
//! filename (the 409), wheels whose METADATA disagrees with their filename, a zip bomb (a METADATA
//! member of 100 MiB of zeros that deflates to about 100 KiB, streamed into the zip writer so
//! that building it stays cheap), and a 4 MiB wheel for the tests that stop or kill an upload
//! half-way.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::fixtures::{
    build_sdist, build_wheel, filename_stem, fixed_zip_time, normalize, padding, sha256_hex,
    FileKind,
};
use super::http::Multipart;

/// How much the zip bomb's METADATA member inflates to.
pub const BOMB_INFLATED: u64 = 100 * 1024 * 1024;

/// One distribution file to upload, with what an index page must say about it once uploaded.
#[derive(Debug, Clone)]
pub struct Dist {
    /// The project name as METADATA and the upload form write it.
    pub name: String,
    /// The PEP 503 normalised name, used in URLs.
    pub normalized: String,
    /// The version as the filename writes it.
    pub version: String,
    pub filename: String,
    pub kind: FileKind,
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// A wheel's METADATA, which `<file>.metadata` must serve byte for byte; None for sdists.
    pub metadata: Option<Vec<u8>>,
    pub metadata_sha256: Option<String>,
    pub requires_python: Option<String>,
    pub summary: String,
}

impl Dist {
    /// Writes the file into `dir` under its filename (for twine and uv) and returns its path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        super::create_dir(dir);
        let path = dir.join(&self.filename);
        std::fs::write(&path, &self.bytes)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// `bdist_wheel` or `sdist`, as the form's `filetype` says it.
    pub fn filetype(&self) -> &'static str {
        match self.kind {
            FileKind::Wheel => "bdist_wheel",
            FileKind::Sdist => "sdist",
        }
    }

    /// `py3` for the wheels (their python tag), `source` for sdists, as twine sends `pyversion`.
    pub fn pyversion(&self) -> &'static str {
        match self.kind {
            FileKind::Wheel => "py3",
            FileKind::Sdist => "source",
        }
    }
}

/// What a generated distribution is made of.
struct Spec<'a> {
    name: &'a str,
    version: &'a str,
    summary: &'a str,
    requires_python: Option<&'a str>,
    requires_dist: &'a [&'a str],
    padding_kib: u32,
    /// METADATA's `Name` when it is to disagree with the filename.
    metadata_name: Option<&'a str>,
    /// METADATA's `Version` when it is to disagree with the filename.
    metadata_version: Option<&'a str>,
}

impl<'a> Spec<'a> {
    fn new(name: &'a str, version: &'a str) -> Spec<'a> {
        Spec {
            name,
            version,
            summary: "wheelgate upload test fixture",
            requires_python: Some(">=3.8"),
            requires_dist: &[],
            padding_kib: 0,
            metadata_name: None,
            metadata_version: None,
        }
    }

    fn metadata(&self) -> String {
        let mut text = format!(
            "Metadata-Version: 2.1\nName: {}\nVersion: {}\nSummary: {}\n",
            self.metadata_name.unwrap_or(self.name),
            self.metadata_version.unwrap_or(self.version),
            self.summary
        );
        if let Some(requires_python) = self.requires_python {
            text.push_str(&format!("Requires-Python: {requires_python}\n"));
        }
        for requirement in self.requires_dist {
            text.push_str(&format!("Requires-Dist: {requirement}\n"));
        }
        text
    }

    fn init_py(&self) -> String {
        format!(
            "\"\"\"wheelgate upload test fixture {}: {}.\"\"\"\n__version__ = \"{}\"\n",
            self.name, self.summary, self.version
        )
    }

    fn dist(&self, kind: FileKind, filename: String, bytes: Vec<u8>, metadata: &str) -> Dist {
        let metadata = (kind == FileKind::Wheel).then(|| metadata.as_bytes().to_vec());
        Dist {
            name: self.name.to_owned(),
            normalized: normalize(self.name),
            version: self.version.to_owned(),
            filename,
            kind,
            sha256: sha256_hex(&bytes),
            metadata_sha256: metadata.as_deref().map(sha256_hex),
            metadata,
            bytes,
            requires_python: self.requires_python.map(str::to_owned),
            summary: self.summary.to_owned(),
        }
    }

    fn wheel(&self) -> Dist {
        let stem = filename_stem(self.name);
        let filename = format!("{stem}-{}-py3-none-any.whl", self.version);
        let metadata = self.metadata();
        let bytes = build_wheel(
            &stem,
            self.version,
            &self.init_py(),
            &metadata,
            &padding(&filename, self.padding_kib),
        )
        .unwrap_or_else(|e| panic!("building {filename}: {e}"));
        self.dist(FileKind::Wheel, filename, bytes, &metadata)
    }

    fn sdist(&self) -> Dist {
        let stem = filename_stem(self.name);
        let filename = format!("{stem}-{}.tar.gz", self.version);
        let metadata = self.metadata();
        let bytes = build_sdist(&stem, self.name, self.version, &self.init_py(), &metadata)
            .unwrap_or_else(|e| panic!("building {filename}: {e}"));
        self.dist(FileKind::Sdist, filename, bytes, &metadata)
    }
}

/// The `Dist` that `build` makes, built on first use and then kept (each use has its own cell).
macro_rules! built_once {
    ($build:expr) => {{
        static DIST: OnceLock<Dist> = OnceLock::new();
        DIST.get_or_init(|| $build)
    }};
}

/// The wheel of `name` `version`, its `Spec` changed by `adjust`.
fn wheel_of<'a>(name: &'a str, version: &'a str, adjust: impl FnOnce(&mut Spec<'a>)) -> Dist {
    let mut spec = Spec::new(name, version);
    adjust(&mut spec);
    spec.wheel()
}

/// A plain wheel of `name` `version` (no dependencies), built anew on each call.
pub fn plain_wheel(name: &str, version: &str) -> Dist {
    Spec::new(name, version).wheel()
}

/// `wgpub-app 1.0.0`, the wheel: no dependencies, `Requires-Python: >=3.8`.
pub fn app_wheel() -> &'static Dist {
    built_once!(Spec::new("wgpub-app", "1.0.0").wheel())
}

/// `wgpub-app 1.0.0`, the sdist (`.tar.gz` with PKG-INFO).
pub fn app_sdist() -> &'static Dist {
    built_once!(Spec::new("wgpub-app", "1.0.0").sdist())
}

/// `wgpub-app 1.0.0` built again: the same filename as `app_wheel`, other bytes.
pub fn app_wheel_rebuilt() -> &'static Dist {
    built_once!(wheel_of("wgpub-app", "1.0.0", |spec| {
        spec.summary = "wheelgate upload test fixture, rebuilt"
    }))
}

/// `wgpub-app 1.1.0`, a wheel that requires `wgfx-delta>=1.0`, a project of the fixture upstream.
pub fn app_next_wheel() -> &'static Dist {
    built_once!(wheel_of("wgpub-app", "1.1.0", |spec| {
        spec.requires_dist = &["wgfx-delta>=1.0"]
    }))
}

/// `wgpub-tool 1.0.0`, a second small project (no `Requires-Python`).
pub fn tool_wheel() -> &'static Dist {
    built_once!(wheel_of("wgpub-tool", "1.0.0", |spec| {
        spec.requires_python = None
    }))
}

/// `wgpub_skew-1.0.0-py3-none-any.whl`, whose METADATA says `Version: 2.0.0`.
pub fn version_skew_wheel() -> &'static Dist {
    built_once!(wheel_of("wgpub-skew", "1.0.0", |spec| {
        spec.metadata_version = Some("2.0.0")
    }))
}

/// `wgpub_alias-1.0.0-py3-none-any.whl`, whose METADATA says `Name: wgpub-other`.
pub fn name_skew_wheel() -> &'static Dist {
    built_once!(wheel_of("wgpub-alias", "1.0.0", |spec| {
        spec.metadata_name = Some("wgpub-other")
    }))
}

/// `wgpub-big 1.0.0`, a valid 4 MiB wheel (incompressible padding), to stop or kill half-way.
pub fn big_wheel() -> &'static Dist {
    built_once!(wheel_of("wgpub-big", "1.0.0", |spec| spec.padding_kib = 4096))
}

/// `wgpub-bomb 1.0.0`, a zip bomb: a valid wheel in every respect (names, versions, RECORD)
/// except that its METADATA member, a few valid header lines and then `BOMB_INFLATED` zero
/// bytes, inflates a thousandfold. Its `metadata` field holds only the header lines.
pub fn zip_bomb() -> &'static Dist {
    built_once!({
        let spec = Spec::new("wgpub-bomb", "1.0.0");
        let stem = filename_stem(spec.name);
        let filename = format!("{stem}-{}-py3-none-any.whl", spec.version);
        let head = format!("{}\n", spec.metadata());
        let bytes = build_bomb(&stem, spec.version, &spec.init_py(), &head)
            .unwrap_or_else(|e| panic!("building {filename}: {e}"));
        spec.dist(FileKind::Wheel, filename, bytes, &head)
    })
}

/// The bomb wheel: METADATA is `head` then `BOMB_INFLATED` zeros, written a MiB at a time, so
/// that neither the inflated member nor anything near its size is ever held in memory.
fn build_bomb(stem: &str, version: &str, init_py: &str, head: &str) -> Result<Vec<u8>, String> {
    const STEP: usize = 1024 * 1024;
    type Writer = zip::ZipWriter<std::io::Cursor<Vec<u8>>>;
    /// Writes the member `path` holding `content`.
    fn add_member(
        writer: &mut Writer,
        options: zip::write::SimpleFileOptions,
        path: &str,
        content: &[u8],
    ) -> Result<(), String> {
        writer
            .start_file(path, options)
            .map_err(|e| format!("{path}: {e}"))?;
        writer
            .write_all(content)
            .map_err(|e| format!("{path}: {e}"))
    }
    let dist_info = format!("{stem}-{version}.dist-info");
    let wheel_file = "Wheel-Version: 1.0\nGenerator: wheelgate-test-harness\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(fixed_zip_time()?)
        .unix_permissions(0o644);
    let mut writer: Writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut record = String::new();
    let record_line = |path: &str, digest: &[u8], size: u64| {
        let digest = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
        format!("{path},sha256={digest},{size}\n")
    };
    for (path, content) in [
        (format!("{stem}/__init__.py"), init_py),
        (format!("{dist_info}/WHEEL"), wheel_file),
    ] {
        add_member(&mut writer, options, &path, content.as_bytes())?;
        record.push_str(&record_line(
            &path,
            &Sha256::digest(content.as_bytes()),
            content.len() as u64,
        ));
    }
    let metadata_path = format!("{dist_info}/METADATA");
    add_member(&mut writer, options, &metadata_path, head.as_bytes())?;
    let mut hasher = Sha256::new();
    hasher.update(head.as_bytes());
    let zeros = vec![0u8; STEP];
    let mut written = 0u64;
    while written < BOMB_INFLATED {
        let step = zeros
            .get(..(BOMB_INFLATED - written).min(STEP as u64) as usize)
            .unwrap_or_default();
        writer
            .write_all(step)
            .map_err(|e| format!("{metadata_path}: {e}"))?;
        hasher.update(step);
        written += step.len() as u64;
    }
    record.push_str(&record_line(
        &metadata_path,
        &hasher.finalize(),
        head.len() as u64 + BOMB_INFLATED,
    ));
    let record_path = format!("{dist_info}/RECORD");
    record.push_str(&format!("{record_path},,\n"));
    add_member(&mut writer, options, &record_path, record.as_bytes())?;
    let cursor = writer.finish().map_err(|e| e.to_string())?;
    Ok(cursor.into_inner())
}

/// A legacy-API upload form (`multipart/form-data`) as twine builds it: the `:action`, the
/// protocol version, the core metadata fields, the digests, and the file as `content`.
#[derive(Debug, Clone)]
pub struct UploadForm {
    fields: Vec<(String, String)>,
    filename: String,
    content: Vec<u8>,
}

impl UploadForm {
    /// The form for `dist`, every field consistent with the file; `sha256_digest` is the only
    /// digest (add `md5_digest` or `blake2_256_digest` with `set`).
    pub fn of(dist: &Dist) -> UploadForm {
        let mut fields: Vec<(String, String)> = [
            (":action", "file_upload"),
            ("protocol_version", "1"),
            ("metadata_version", "2.1"),
            ("name", dist.name.as_str()),
            ("version", dist.version.as_str()),
            ("filetype", dist.filetype()),
            ("pyversion", dist.pyversion()),
            ("summary", dist.summary.as_str()),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        if let Some(requires_python) = &dist.requires_python {
            fields.push(("requires_python".to_owned(), requires_python.clone()));
        }
        fields.push(("sha256_digest".to_owned(), dist.sha256.clone()));
        UploadForm {
            fields,
            filename: dist.filename.clone(),
            content: dist.bytes.clone(),
        }
    }

    /// The form with field `name` set to `value` (replaced where present, added otherwise).
    pub fn set(mut self, name: &str, value: &str) -> UploadForm {
        match self.fields.iter_mut().find(|(k, _)| k == name) {
            Some(field) => field.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
        self
    }

    /// The form with `content` in place of the file's bytes (the fields unchanged).
    pub fn with_content(mut self, content: &[u8]) -> UploadForm {
        self.content = content.to_vec();
        self
    }

    /// The value of field `name`, if the form has it.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The multipart body: the fields in order, then the file.
    pub fn multipart(&self) -> Multipart {
        let mut form = Multipart::new();
        for (name, value) in &self.fields {
            form.text(name, value);
        }
        form.file("content", &self.filename, &self.content);
        form
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn member(dist: &Dist, path: &str) -> Vec<u8> {
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(dist.bytes.clone())).expect("a zip");
        let mut content = Vec::new();
        archive
            .by_name(path)
            .unwrap_or_else(|e| panic!("{}: no {path}: {e}", dist.filename))
            .read_to_end(&mut content)
            .expect("read");
        content
    }

    #[test]
    fn the_rebuilt_wheel_shares_the_filename_not_the_bytes() {
        let (first, rebuilt) = (app_wheel(), app_wheel_rebuilt());
        assert_eq!(first.filename, "wgpub_app-1.0.0-py3-none-any.whl");
        assert_eq!(rebuilt.filename, first.filename);
        assert_ne!(rebuilt.sha256, first.sha256);
        assert_eq!(app_sdist().filename, "wgpub_app-1.0.0.tar.gz");
        assert_eq!(app_sdist().metadata, None);
        assert_eq!(
            Spec::new("wgpub-app", "1.0.0").wheel().sha256,
            first.sha256,
            "reproducible"
        );
        assert_eq!(
            Some(member(first, "wgpub_app-1.0.0.dist-info/METADATA")),
            first.metadata
        );
        let next = String::from_utf8(member(
            app_next_wheel(),
            "wgpub_app-1.1.0.dist-info/METADATA",
        ))
        .expect("utf-8");
        assert!(
            next.contains("\nRequires-Dist: wgfx-delta>=1.0\n"),
            "{next}"
        );
    }

    #[test]
    fn skewed_wheels_disagree_with_their_filenames_only_in_metadata() {
        let skew = version_skew_wheel();
        assert_eq!(skew.filename, "wgpub_skew-1.0.0-py3-none-any.whl");
        let metadata =
            String::from_utf8(member(skew, "wgpub_skew-1.0.0.dist-info/METADATA")).expect("utf-8");
        assert!(
            metadata.contains("\nName: wgpub-skew\nVersion: 2.0.0\n"),
            "{metadata}"
        );
        let alias = name_skew_wheel();
        let metadata = String::from_utf8(member(alias, "wgpub_alias-1.0.0.dist-info/METADATA"))
            .expect("utf-8");
        assert!(
            metadata.contains("\nName: wgpub-other\nVersion: 1.0.0\n"),
            "{metadata}"
        );
        let form = UploadForm::of(alias);
        assert_eq!(
            (form.field("name"), form.field("version")),
            (Some("wgpub-alias"), Some("1.0.0")),
            "the form agrees with the filename"
        );
    }

    #[test]
    fn the_bomb_is_small_and_inflates_a_thousandfold() {
        let bomb = zip_bomb();
        assert!(
            bomb.bytes.len() < 256 * 1024,
            "{} is {} bytes compressed",
            bomb.filename,
            bomb.bytes.len()
        );
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(bomb.bytes.clone())).expect("a zip");
        let mut metadata = archive
            .by_name("wgpub_bomb-1.0.0.dist-info/METADATA")
            .expect("METADATA");
        assert!(
            metadata.size() > BOMB_INFLATED,
            "declared {}",
            metadata.size()
        );
        let mut head = vec![0u8; 64];
        metadata.read_exact(&mut head).expect("read the head");
        assert!(head.starts_with(b"Metadata-Version: 2.1\nName: wgpub-bomb\n"));
    }

    #[test]
    fn the_big_wheel_is_a_few_mib() {
        let big = big_wheel();
        assert!(big.bytes.len() > 4 * 1024 * 1024, "{}", big.bytes.len());
        assert!(big.bytes.len() < 5 * 1024 * 1024, "{}", big.bytes.len());
    }

    #[test]
    fn forms_carry_the_file_and_its_fields() {
        let form = UploadForm::of(app_sdist())
            .set("sha256_digest", "00")
            .set("md5_digest", "11");
        assert_eq!(form.field("filetype"), Some("sdist"));
        assert_eq!(form.field("pyversion"), Some("source"));
        assert_eq!(form.field("requires_python"), Some(">=3.8"));
        assert_eq!(form.field("sha256_digest"), Some("00"));
        assert_eq!(form.field("md5_digest"), Some("11"));
        let body = form.multipart().body();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("name=\"content\"; filename=\"wgpub_app-1.0.0.tar.gz\""));
        assert!(body
            .windows(app_sdist().bytes.len())
            .any(|w| w == app_sdist().bytes.as_slice()));
    }
}
