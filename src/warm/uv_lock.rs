//! uv's lock file (`uv.lock`, format version 1): every package with the files it may install.
//!
//! A `[[package]]` whose `source` is a `registry` comes from an index: its `sdist` and `wheels`
//! are warmed by filename (the last segment of `url` or `path`, or `filename`) with the sha256 of
//! their `hash`. Packages from Git, a path, a directory, a direct URL, and the project itself
//! (`editable`, `virtual`) are skipped. Unknown keys are ignored, so newer revisions of the
//! format read as long as their version stays 1.

use std::path::Path;

use serde::Deserialize;

use super::input::{InputError, WarmList};
use super::lock::{self, LockFiles, Package as LockPackage};

/// The lock format versions this parser reads.
const SUPPORTED: &str = "uv.lock version 1";

#[derive(Deserialize)]
struct UvLock {
    version: Option<toml::Value>,
    #[serde(default)]
    package: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    source: Option<toml::Table>,
    #[serde(flatten)]
    files: LockFiles,
}

/// Reads the uv.lock at `path`.
pub fn read(path: &Path) -> Result<WarmList, InputError> {
    from(lock::read(path)?, path)
}

fn from(lock: UvLock, path: &Path) -> Result<WarmList, InputError> {
    match lock.version.as_ref().and_then(toml::Value::as_integer) {
        Some(1) => {}
        other => {
            return Err(InputError::UnsupportedVersion {
                path: path.to_owned(),
                found: match other {
                    Some(version) => format!("uv.lock version {version}"),
                    None => "no `version = 1` at the top, so not a uv.lock".to_owned(),
                },
                supported: SUPPORTED,
            })
        }
    }
    let mut list = WarmList::default();
    for package in &lock.package {
        lock::add(
            &mut list,
            path,
            LockPackage {
                name: &package.name,
                version: Some(package.version.as_deref().unwrap_or("(no version)")),
                not_from_an_index: not_from_an_index(package.source.as_ref()),
                files: &package.files,
            },
        )?;
    }
    Ok(list)
}

/// Why a package's `source` is not an index, if it is not.
fn not_from_an_index(source: Option<&toml::Table>) -> Option<&'static str> {
    let source = source?;
    if source.contains_key("registry") {
        None
    } else if source.contains_key("git") {
        Some("a Git checkout, which no index serves")
    } else if source.contains_key("url") {
        Some("a direct URL, which no index serves")
    } else {
        Some("a local project (path, directory, editable or virtual), which no index serves")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, path: &Path) -> Result<WarmList, InputError> {
        from(lock::parse(text, path)?, path)
    }
    use crate::simple::Sha256Digest;
    use crate::warm::input::Wanted;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    #[test]
    fn registry_packages_give_their_files_and_the_rest_is_skipped() {
        let text = format!(
            r#"
version = 1
revision = 3
requires-python = ">=3.8"

[[package]]
name = "demo"
version = "0.1.0"
source = {{ virtual = "." }}
dependencies = [{{ name = "wgfx-alpha" }}]

[[package]]
name = "Wgfx_Alpha"
version = "1.0.0"
source = {{ registry = "http://idx.example.invalid/simple" }}
sdist = {{ url = "http://idx.example.invalid/files/wgfx_alpha-1.0.0.tar.gz", hash = "sha256:{A}", size = 10, upload-time = 2024-01-01T00:00:00Z }}
wheels = [
    {{ url = "http://idx.example.invalid/files/wgfx_alpha-1.0.0-py3-none-any.whl", hash = "sha256:{A}", size = 10 }},
    {{ path = "wheels/wgfx_alpha-1.0.0-py2-none-any.whl", hash = "sha512:00" }},
]

[[package]]
name = "tool"
version = "2.0"
source = {{ git = "https://git.example.invalid/tool?rev=1#abc" }}
"#
        );
        let list = parse(&text, Path::new("uv.lock")).unwrap();
        assert_eq!(list.requirements.len(), 1);
        let requirement = &list.requirements[0];
        assert_eq!(requirement.project.as_str(), "wgfx-alpha");
        assert_eq!(requirement.origin, "uv.lock package Wgfx_Alpha 1.0.0");
        let Wanted::Files(files) = &requirement.wanted else {
            panic!("a lock names files: {requirement:?}")
        };
        let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "wgfx_alpha-1.0.0.tar.gz",
                "wgfx_alpha-1.0.0-py3-none-any.whl",
                "wgfx_alpha-1.0.0-py2-none-any.whl"
            ]
        );
        assert_eq!(files[0].sha256, Some(Sha256Digest::parse_hex(A).unwrap()));
        assert_eq!(files[2].sha256, None, "only sha256 is kept");
        let skipped: Vec<&str> = list.skipped.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            skipped,
            ["uv.lock package demo 0.1.0", "uv.lock package tool 2.0"]
        );
        assert!(list.skipped[1].reason.contains("Git"));
    }

    #[test]
    fn other_versions_and_broken_entries_are_refused() {
        let error = parse("version = 2\n", Path::new("uv.lock"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("uv.lock version 2") && error.contains("upgrade"),
            "{error}"
        );
        let error = parse("[[package]]\nname = \"x\"\n", Path::new("uv.lock"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a uv.lock"), "{error}");
        let error = parse(
            "version = 1\n[[package]]\nname = \"x\"\nversion = \"1\"\nsource = { registry = \"r\" }\n",
            Path::new("uv.lock"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("(x 1)") && error.contains("no sdist"),
            "{error}"
        );
        let error = parse(
            "version = 1\n[[package]]\nname = \"x\"\nversion = \"1\"\nsource = { registry = \"r\" }\n\
             wheels = [{ url = \"http://idx.example.invalid/x/../.hidden\" }]\n",
            Path::new("uv.lock"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("(x 1)"), "{error}");
        assert!(parse("version = 1\n[[package\n", Path::new("uv.lock"))
            .unwrap_err()
            .to_string()
            .contains("not valid TOML"));
    }
}
