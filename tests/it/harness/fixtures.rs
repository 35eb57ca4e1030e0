//! The fixture packages: real, installable wheels and sdists generated in memory from
//! `fixtures/projects.toml`.
//!
//! The tests must prove that pip and uv install *through the index under test*, so the packages have
//! to be real (valid `RECORD`, `METADATA`, `WHEEL`) yet belong to this project only. They are built
//! deterministically (fixed timestamps, fixed gzip header) so that a file's sha256 is the same in
//! every run and a hash mismatch always means something changed the bytes in transit.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The description of the fixture projects, compiled into the test binary.
const PROJECTS_TOML: &str = include_str!("../../../fixtures/projects.toml");

/// Where the upstream serves a project's files from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileOrigin {
    /// The upstream's own origin, which requires the token.
    Main,
    /// A second origin with absolute links and no auth.
    Second,
    /// An origin listed in `auth_hosts`, which requires the token.
    Third,
    /// A main-origin link answering 302 to the second origin.
    Redirect,
}

/// How main-origin links are written in upstream pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LinkStyle {
    #[default]
    Relative,
    Absolute,
}

/// The kind of a distribution file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    Wheel,
    Sdist,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectsFile {
    project: Vec<ProjectSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectSpec {
    name: String,
    origin: FileOrigin,
    #[serde(default)]
    links: LinkStyle,
    #[serde(default)]
    corrupt: bool,
    #[serde(default)]
    no_hash: bool,
    /// A PEP 792 status marker for the whole project.
    status: Option<String>,
    /// The reason the index gives for the status.
    status_reason: Option<String>,
    release: Vec<ReleaseSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseSpec {
    version: String,
    files: Vec<FileKind>,
    #[serde(default)]
    requires_dist: Vec<String>,
    requires_python: Option<String>,
    yanked: Option<String>,
    /// A fixed PEP 700 upload time for the release's files (RFC 3339).
    upload_time: Option<String>,
    /// An age (`90s`, `10m`, `1h`, `3d`): the upload time follows the real clock.
    uploaded_ago: Option<String>,
    /// KiB of incompressible bytes added to the wheel, so that the store keeps it as a blob file
    /// rather than inline in its catalog.
    padding_kib: Option<u32>,
    /// The index offers a PEP 740 provenance for each of the release's files.
    #[serde(default)]
    provenance: bool,
}

/// The PEP 700 upload time of a file, as the upstream serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadTime {
    /// Always this RFC 3339 instant.
    Fixed(String),
    /// This long before the moment the page is served, so that a cooldown rule sees a fresh
    /// release whenever the test runs.
    Ago(Duration),
}

impl UploadTime {
    /// The upload time as a page served at `now` writes it (RFC 3339, UTC, microseconds).
    pub fn at(&self, now: SystemTime) -> String {
        match self {
            UploadTime::Fixed(text) => text.clone(),
            UploadTime::Ago(age) => {
                let instant = now.checked_sub(*age).unwrap_or(SystemTime::UNIX_EPOCH);
                chrono::DateTime::<chrono::Utc>::from(instant)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            }
        }
    }

    /// The upload time of a page served now.
    pub fn now(&self) -> String {
        self.at(SystemTime::now())
    }
}

/// `90s`, `10m`, `1h`, `3d` as a duration.
fn parse_age(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .len()
        .checked_sub(1)
        .filter(|&i| text.is_char_boundary(i));
    let (number, unit) = unit_at.map(|i| text.split_at(i)).unwrap_or((text, ""));
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "uploaded_ago {text:?} must end in s, m, h or d, as in \"1h\""
            ))
        }
    };
    let count: u64 = number
        .parse()
        .map_err(|e| format!("uploaded_ago {text:?}: {number:?} is not a whole number ({e})"))?;
    Ok(Duration::from_secs(count * seconds_per_unit))
}

/// Every fixture project, in the order of `projects.toml`.
#[derive(Debug)]
pub struct Catalog {
    pub projects: Vec<Project>,
}

/// One fixture project and its generated files.
#[derive(Debug)]
pub struct Project {
    /// The name as the upstream displays it (possibly not normalised).
    pub name: String,
    /// The PEP 503 normalised name, used in URLs.
    pub normalized: String,
    pub origin: FileOrigin,
    pub links: LinkStyle,
    /// The upstream publishes no digest for its files: no `hashes` entry, no `#sha256=` fragment,
    /// no metadata digest (wheelgate must key them by URL until it has fetched them).
    pub no_hash: bool,
    /// The PEP 792 status marker the upstream states (none: it says nothing, i.e. `active`).
    pub status: Option<String>,
    pub status_reason: Option<String>,
    /// Versions in release order.
    pub versions: Vec<String>,
    pub files: Vec<DistFile>,
}

/// One generated distribution file with everything an index page says about it.
#[derive(Debug)]
pub struct DistFile {
    pub filename: String,
    pub version: String,
    pub kind: FileKind,
    /// The true bytes; their sha256 is what pages declare.
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// The wheel's `METADATA` (served as `<file>.metadata`, PEP 658); sdists have none.
    pub metadata: Option<Vec<u8>>,
    pub metadata_sha256: Option<String>,
    pub requires_python: Option<String>,
    pub yanked: Option<String>,
    /// PEP 700 upload time.
    pub upload_time: UploadTime,
    /// Served with altered bytes while the upstream is in "corrupt" state.
    pub corrupt: bool,
    /// The PEP 740 provenance the upstream serves for the file, if it offers one.
    pub provenance: Option<Vec<u8>>,
}

impl DistFile {
    /// The bytes the upstream serves while corruption is on: same length, one byte flipped in the
    /// middle, so only a digest check (not a length check) can notice.
    pub fn corrupted_bytes(&self) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        let middle = bytes.len() / 2;
        if let Some(byte) = bytes.get_mut(middle) {
            *byte ^= 0x5a;
        }
        bytes
    }
}

impl Catalog {
    /// The project with this normalised name, if any.
    pub fn project(&self, normalized: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.normalized == normalized)
    }

    /// The project with this normalised name; panics with the list of known names otherwise.
    pub fn expect_project(&self, normalized: &str) -> &Project {
        self.project(normalized).unwrap_or_else(|| {
            let known: Vec<&str> = self
                .projects
                .iter()
                .map(|p| p.normalized.as_str())
                .collect();
            panic!("no fixture project {normalized:?}; fixtures/projects.toml defines {known:?}")
        })
    }

    /// The file with this filename in any project.
    pub fn file(&self, filename: &str) -> Option<(&Project, &DistFile)> {
        self.projects.iter().find_map(|p| {
            p.files
                .iter()
                .find(|f| f.filename == filename)
                .map(|f| (p, f))
        })
    }
}

impl Project {
    /// The file with this filename; panics naming the project's files otherwise.
    pub fn expect_file(&self, filename: &str) -> &DistFile {
        self.files
            .iter()
            .find(|f| f.filename == filename)
            .unwrap_or_else(|| {
                let known: Vec<&str> = self.files.iter().map(|f| f.filename.as_str()).collect();
                panic!(
                    "fixture project {} has no file {filename:?}; it has {known:?}",
                    self.normalized
                )
            })
    }

    /// The wheel of this version; panics if the fixtures define none.
    pub fn wheel(&self, version: &str) -> &DistFile {
        self.files
            .iter()
            .find(|f| f.version == version && f.kind == FileKind::Wheel)
            .unwrap_or_else(|| {
                panic!(
                    "fixture project {} has no wheel for {version}",
                    self.normalized
                )
            })
    }
}

/// The catalog, generated once per test process.
pub fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(|| match build_catalog(PROJECTS_TOML) {
        Ok(catalog) => catalog,
        Err(e) => panic!("fixtures/projects.toml: {e}"),
    })
}

/// PEP 503 normalisation: lowercase, runs of `-`, `_` and `.` become one `-`.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator_run = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator_run {
                out.push('-');
            }
            in_separator_run = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator_run = false;
        }
    }
    out
}

/// The sha256 of some bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn build_catalog(text: &str) -> Result<Catalog, String> {
    let parsed: ProjectsFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::new();
    let mut projects = Vec::new();
    for (project_index, spec) in parsed.project.iter().enumerate() {
        let normalized = normalize(&spec.name);
        if !seen.insert(normalized.clone()) {
            return Err(format!(
                "project {:?} is defined twice (normalised {normalized})",
                spec.name
            ));
        }
        let mut files = Vec::new();
        for (release_index, release) in spec.release.iter().enumerate() {
            for (file_index, kind) in release.files.iter().enumerate() {
                let upload_time = match (&release.upload_time, &release.uploaded_ago) {
                    (Some(_), Some(_)) => {
                        return Err(format!(
                            "{} {}: give upload_time or uploaded_ago, not both",
                            spec.name, release.version
                        ))
                    }
                    (Some(fixed), None) => UploadTime::Fixed(fixed.clone()),
                    (None, Some(age)) => UploadTime::Ago(parse_age(age)?),
                    (None, None) => UploadTime::Fixed(format!(
                        "2024-{:02}-{:02}T{:02}:{:02}:00.000000Z",
                        project_index % 12 + 1,
                        release_index + 1,
                        file_index + 8,
                        (project_index * 7) % 60
                    )),
                };
                files.push(build_file(spec, release, *kind, upload_time)?);
            }
        }
        projects.push(Project {
            name: spec.name.clone(),
            normalized,
            origin: spec.origin,
            links: spec.links,
            no_hash: spec.no_hash,
            status: spec.status.clone(),
            status_reason: spec.status_reason.clone(),
            versions: spec.release.iter().map(|r| r.version.clone()).collect(),
            files,
        });
    }
    Ok(Catalog { projects })
}

/// The name as it appears in wheel and sdist filenames (binary distribution format: normalised,
/// with `_` as the separator).
pub fn filename_stem(name: &str) -> String {
    normalize(name).replace('-', "_")
}

fn build_file(
    project: &ProjectSpec,
    release: &ReleaseSpec,
    kind: FileKind,
    upload_time: UploadTime,
) -> Result<DistFile, String> {
    let stem = filename_stem(&project.name);
    let metadata = core_metadata(&project.name, release);
    let init_py = format!(
        "\"\"\"wheelgate test fixture {name}.\"\"\"\n__version__ = \"{version}\"\n",
        name = project.name,
        version = release.version
    );
    let (filename, bytes, metadata) = match kind {
        FileKind::Wheel => {
            let filename = format!("{stem}-{}-py3-none-any.whl", release.version);
            let padding = padding(&filename, release.padding_kib.unwrap_or(0));
            let bytes = build_wheel(&stem, &release.version, &init_py, &metadata, &padding)
                .map_err(|e| format!("building {filename}: {e}"))?;
            (filename, bytes, Some(metadata.into_bytes()))
        }
        FileKind::Sdist => {
            let filename = format!("{stem}-{}.tar.gz", release.version);
            let bytes = build_sdist(&stem, &project.name, &release.version, &init_py, &metadata)
                .map_err(|e| format!("building {filename}: {e}"))?;
            (filename, bytes, None)
        }
    };
    let sha256 = sha256_hex(&bytes);
    Ok(DistFile {
        provenance: release
            .provenance
            .then(|| provenance_object(&filename, &sha256)),
        sha256,
        metadata_sha256: metadata.as_deref().map(sha256_hex),
        filename,
        version: release.version.clone(),
        kind,
        bytes,
        metadata,
        requires_python: release.requires_python.clone(),
        yanked: release.yanked.clone(),
        upload_time,
        corrupt: project.corrupt && kind == FileKind::Wheel,
    })
}

/// A PEP 740 provenance object for a file, shaped like an index's (one bundle, one attestation
/// whose in-toto statement names the file and its sha256). It is not signed: wheelgate passes
/// provenance through without verifying it, so only its bytes matter to the tests.
pub fn provenance_object(filename: &str, sha256: &str) -> Vec<u8> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": filename, "digest": { "sha256": sha256 } }],
        "predicateType": "https://attestations.example.invalid/publish/v1",
        "predicate": null,
    });
    serde_json::json!({
        "version": 1,
        "attestation_bundles": [{
            "publisher": { "kind": "wheelgate-test-fixture", "claims": null },
            "attestations": [{
                "version": 1,
                "verification_material": {
                    "certificate": b64(format!("fixture certificate for {filename}").as_bytes()),
                    "transparency_entries": [],
                },
                "envelope": {
                    "statement": b64(statement.to_string().as_bytes()),
                    "signature": b64(format!("fixture signature of {sha256}").as_bytes()),
                },
            }],
        }],
    })
    .to_string()
    .into_bytes()
}

fn core_metadata(name: &str, release: &ReleaseSpec) -> String {
    let mut text = format!(
        "Metadata-Version: 2.1\nName: {name}\nVersion: {}\nSummary: wheelgate test fixture\n",
        release.version
    );
    if let Some(requires_python) = &release.requires_python {
        text.push_str(&format!("Requires-Python: {requires_python}\n"));
    }
    for requirement in &release.requires_dist {
        text.push_str(&format!("Requires-Dist: {requirement}\n"));
    }
    text
}

/// A fixed timestamp for archive members, so that the archives' bytes are reproducible.
pub fn fixed_zip_time() -> Result<zip::DateTime, String> {
    zip::DateTime::from_date_and_time(2024, 1, 1, 0, 0, 0).map_err(|e| e.to_string())
}

const FIXED_MTIME: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z

/// `kib` KiB of pseudo-random bytes derived from `seed` (a chain of sha256 blocks): deflate cannot
/// shrink them, so the wheel grows by about as much, and they are the same in every run.
pub fn padding(seed: &str, kib: u32) -> Vec<u8> {
    let len = kib as usize * 1024;
    let mut out = Vec::with_capacity(len);
    let mut counter: u64 = 0;
    while out.len() < len {
        let mut hasher = Sha256::new();
        hasher.update(seed.as_bytes());
        hasher.update(counter.to_le_bytes());
        out.extend_from_slice(&hasher.finalize());
        counter += 1;
    }
    out.truncate(len);
    out
}

/// A pure-Python wheel (`py3-none-any`): `<stem>/__init__.py`, `padding.bin` when `padding` is not
/// empty, and a `.dist-info` with `metadata` as METADATA, WHEEL and a RECORD that matches.
pub fn build_wheel(
    stem: &str,
    version: &str,
    init_py: &str,
    metadata: &str,
    padding: &[u8],
) -> Result<Vec<u8>, String> {
    let dist_info = format!("{stem}-{version}.dist-info");
    let wheel_file = "Wheel-Version: 1.0\nGenerator: wheelgate-test-harness\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut members: Vec<(String, Vec<u8>)> = vec![
        (format!("{stem}/__init__.py"), init_py.as_bytes().to_vec()),
        (
            format!("{dist_info}/METADATA"),
            metadata.as_bytes().to_vec(),
        ),
        (format!("{dist_info}/WHEEL"), wheel_file.as_bytes().to_vec()),
    ];
    if !padding.is_empty() {
        members.push((format!("{stem}/padding.bin"), padding.to_vec()));
    }
    let mut record = String::new();
    for (path, content) in &members {
        let digest =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(content));
        record.push_str(&format!("{path},sha256={digest},{}\n", content.len()));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));

    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .last_modified_time(fixed_zip_time()?)
        .unix_permissions(0o644);
    let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let record_member = (format!("{dist_info}/RECORD"), record.into_bytes());
    for (path, content) in members.iter().chain(std::iter::once(&record_member)) {
        writer
            .start_file(path.as_str(), options)
            .map_err(|e| format!("{path}: {e}"))?;
        writer
            .write_all(content)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    let cursor = writer.finish().map_err(|e| e.to_string())?;
    Ok(cursor.into_inner())
}

/// An sdist (`.tar.gz`) with `metadata` as PKG-INFO, a setuptools `pyproject.toml` and the package.
pub fn build_sdist(
    stem: &str,
    name: &str,
    version: &str,
    init_py: &str,
    metadata: &str,
) -> Result<Vec<u8>, String> {
    let root = format!("{stem}-{version}");
    let pyproject = format!(
        "[build-system]\nrequires = [\"setuptools>=61\"]\nbuild-backend = \"setuptools.build_meta\"\n\n\
         [project]\nname = \"{name}\"\nversion = \"{version}\"\n"
    );
    let members: Vec<(String, &[u8])> = vec![
        (format!("{root}/PKG-INFO"), metadata.as_bytes()),
        (format!("{root}/pyproject.toml"), pyproject.as_bytes()),
        (format!("{root}/{stem}/__init__.py"), init_py.as_bytes()),
    ];
    let gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    let mut builder = tar::Builder::new(gz);
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, content) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(FIXED_MTIME);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &path, content)
            .map_err(|e| format!("{path}: {e}"))?;
    }
    let gz = builder.into_inner().map_err(|e| e.to_string())?;
    gz.finish().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn normalize_follows_pep_503() {
        assert_eq!(normalize("wgfx_Gamma.Util"), "wgfx-gamma-util");
        assert_eq!(normalize("A--B__c..D"), "a-b-c-d");
        assert_eq!(normalize("plain"), "plain");
    }

    #[test]
    fn catalog_is_deterministic_and_large_enough() {
        let first = build_catalog(PROJECTS_TOML).expect("fixtures build");
        let second = build_catalog(PROJECTS_TOML).expect("fixtures build");
        assert!(
            first.projects.len() >= 10,
            "issue 2 asks for at least ten projects"
        );
        for (a, b) in first.projects.iter().zip(&second.projects) {
            for (fa, fb) in a.files.iter().zip(&b.files) {
                assert_eq!(fa.sha256, fb.sha256, "{} is not reproducible", fa.filename);
            }
        }
    }

    #[test]
    fn wheels_have_a_consistent_record() {
        let catalog = catalog();
        let (_, wheel) = catalog
            .file("wgfx_gamma_util-0.2.0-py3-none-any.whl")
            .expect("gamma wheel exists");
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(wheel.bytes.clone())).expect("a zip");
        let mut record = String::new();
        archive
            .by_name("wgfx_gamma_util-0.2.0.dist-info/RECORD")
            .expect("RECORD")
            .read_to_string(&mut record)
            .expect("utf-8");
        let mut checked = 0;
        for line in record.lines() {
            let fields: Vec<&str> = line.split(',').collect();
            let [path, hash, size] = fields.as_slice() else {
                panic!("bad RECORD line {line:?}")
            };
            if hash.is_empty() {
                continue;
            }
            let mut content = Vec::new();
            archive
                .by_name(path)
                .expect("member")
                .read_to_end(&mut content)
                .expect("read");
            let digest =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(&content));
            assert_eq!(*hash, format!("sha256={digest}"), "{path}");
            assert_eq!(*size, content.len().to_string(), "{path}");
            checked += 1;
        }
        assert_eq!(checked, 3);
        let mut metadata = Vec::new();
        archive
            .by_name("wgfx_gamma_util-0.2.0.dist-info/METADATA")
            .expect("METADATA")
            .read_to_end(&mut metadata)
            .expect("read");
        assert_eq!(
            Some(metadata),
            wheel.metadata,
            "the .metadata file must equal the wheel's METADATA"
        );
    }

    #[test]
    fn upload_times_are_fixed_or_follow_the_clock() {
        assert_eq!(parse_age("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("3d"), Ok(Duration::from_secs(3 * 86_400)));
        assert!(parse_age("1w").is_err() && parse_age("h").is_err() && parse_age("").is_err());

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_064_800); // 2025-11-25T10:00:00Z
        assert_eq!(
            UploadTime::Ago(Duration::from_secs(3600)).at(now),
            "2025-11-25T09:00:00.000000Z"
        );
        let fixed = UploadTime::Fixed("2025-11-02T10:00:00.000000Z".into());
        assert_eq!(fixed.at(now), "2025-11-02T10:00:00.000000Z");

        let fresh = catalog().expect_project("wgfx-fresh");
        assert_eq!(fresh.wheel("1.0").upload_time, fixed);
        assert_eq!(
            fresh.wheel("1.1").upload_time,
            UploadTime::Ago(Duration::from_secs(3600))
        );
    }

    #[test]
    fn corruption_keeps_the_length_and_changes_the_digest() {
        let (_, file) = catalog()
            .file("wgfx_corrupt-1.0.0-py3-none-any.whl")
            .expect("corrupt wheel");
        assert!(file.corrupt);
        let bad = file.corrupted_bytes();
        assert_eq!(bad.len(), file.bytes.len());
        assert_ne!(sha256_hex(&bad), file.sha256);
    }

    #[test]
    fn the_hashless_project_has_a_padded_blob_sized_wheel() {
        let project = catalog().expect_project("wgfx-nohash");
        assert!(project.no_hash);
        assert!(
            !catalog().expect_project("wgfx-app").no_hash,
            "digests are published unless asked otherwise"
        );
        let wheel = project.wheel("1.0.0");
        assert!(
            wheel.bytes.len() >= 64 * 1024,
            "{} is {} bytes: it must not fit inline in the store",
            wheel.filename,
            wheel.bytes.len()
        );
        let mut archive =
            zip::ZipArchive::new(std::io::Cursor::new(wheel.bytes.clone())).expect("a zip");
        let mut record = String::new();
        archive
            .by_name("wgfx_nohash-1.0.0.dist-info/RECORD")
            .expect("RECORD")
            .read_to_string(&mut record)
            .expect("utf-8");
        assert!(
            record
                .lines()
                .any(|line| line.starts_with("wgfx_nohash/padding.bin,sha256=")),
            "{record}"
        );

        assert_eq!(padding("seed", 2), padding("seed", 2), "deterministic");
        assert_eq!(padding("seed", 2).len(), 2048);
        assert_ne!(padding("seed", 1), padding("other", 1));
        assert!(padding("seed", 0).is_empty());
    }
}
