//! PEP 751 lock files (`pylock.toml`, `pylock.<name>.toml`), lock-version 1.x.
//!
//! Each `[[packages]]` entry with an `sdist` or `wheels` comes from an index: its files are warmed
//! by `name` (or the last segment of `url` or `path`) with the sha256 of their `hashes`. Entries
//! with `vcs`, `directory` or `archive` are skipped: no index serves them. As PEP 751 asks, a
//! lock-version whose major number is not 1 is refused; unknown keys are ignored.

use std::path::Path;

use serde::Deserialize;

use super::input::{InputError, WarmList};
use super::lock::{self, LockFiles, Package as LockPackage};

const SUPPORTED: &str = "PEP 751 lock-version 1.x";

#[derive(Deserialize)]
struct Pylock {
    #[serde(rename = "lock-version")]
    lock_version: Option<String>,
    #[serde(default)]
    packages: Vec<Package>,
}

#[derive(Deserialize)]
struct Package {
    name: String,
    version: Option<String>,
    vcs: Option<toml::Value>,
    directory: Option<toml::Value>,
    archive: Option<toml::Value>,
    #[serde(flatten)]
    files: LockFiles,
}

/// Reads the PEP 751 lock file at `path`.
pub fn read(path: &Path) -> Result<WarmList, InputError> {
    from(lock::read(path)?, path)
}

fn from(lock: Pylock, path: &Path) -> Result<WarmList, InputError> {
    let major = lock
        .lock_version
        .as_deref()
        .map(|v| v.split('.').next().unwrap_or(v));
    if major != Some("1") {
        return Err(InputError::UnsupportedVersion {
            path: path.to_owned(),
            found: match &lock.lock_version {
                Some(version) => format!("lock-version {version}"),
                None => "no `lock-version` at the top, so not a PEP 751 lock file".to_owned(),
            },
            supported: SUPPORTED,
        });
    }
    let mut list = WarmList::default();
    for package in &lock.packages {
        let not_from_an_index = if package.vcs.is_some() {
            Some("a VCS checkout, which no index serves")
        } else if package.directory.is_some() {
            Some("a local directory, which no index serves")
        } else if package.archive.is_some() {
            Some("an archive from a direct URL or path, which no index serves")
        } else {
            None
        };
        lock::add(
            &mut list,
            path,
            LockPackage {
                name: &package.name,
                version: package.version.as_deref(),
                not_from_an_index,
                files: &package.files,
            },
        )?;
    }
    Ok(list)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, path: &Path) -> Result<WarmList, InputError> {
        from(lock::parse(text, path)?, path)
    }
    use crate::simple::Sha256Digest;
    use crate::warm::input::Wanted;

    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn index_packages_give_their_files_and_the_rest_is_skipped() {
        let text = format!(
            r#"
lock-version = "1.0"
requires-python = ">=3.8"
created-by = "uv"

[[packages]]
name = "wgfx-gamma-util"
version = "0.2.0"
index = "http://idx.example.invalid/simple"
sdist = {{ url = "http://idx.example.invalid/f/wgfx_gamma_util-0.2.0.tar.gz", upload-time = 2024-01-01T00:00:00Z, size = 10, hashes = {{ sha256 = "{B}" }} }}
wheels = [
    {{ name = "wgfx_gamma_util-0.2.0-py3-none-any.whl", url = "http://idx.example.invalid/f/other", hashes = {{ sha256 = "{B}", blake2b = "00" }} }},
    {{ path = "w/wgfx_gamma_util-0.2.0-py2-none-any.whl", hashes = {{ sha512 = "00" }} }},
]

[[packages]]
name = "tool"
vcs = {{ type = "git", url = "https://git.example.invalid/tool", commit-id = "abc" }}

[[packages]]
name = "local"
directory = {{ path = "." }}
"#
        );
        let list = parse(&text, Path::new("pylock.toml")).unwrap();
        assert_eq!(list.requirements.len(), 1);
        let Wanted::Files(files) = &list.requirements[0].wanted else {
            panic!("a lock names files")
        };
        let names: Vec<&str> = files.iter().map(|f| f.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "wgfx_gamma_util-0.2.0.tar.gz",
                "wgfx_gamma_util-0.2.0-py3-none-any.whl",
                "wgfx_gamma_util-0.2.0-py2-none-any.whl"
            ]
        );
        assert_eq!(files[1].sha256, Some(Sha256Digest::parse_hex(B).unwrap()));
        assert_eq!(files[2].sha256, None);
        assert_eq!(
            list.requirements[0].origin,
            "pylock.toml package wgfx-gamma-util 0.2.0"
        );
        assert_eq!(list.skipped.len(), 2);
    }

    #[test]
    fn other_lock_versions_and_broken_entries_are_refused() {
        let error = parse("lock-version = \"2.0\"\n", Path::new("pylock.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("lock-version 2.0"), "{error}");
        let error = parse("version = 1\n", Path::new("pylock.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not a PEP 751"), "{error}");
        let error = parse(
            "lock-version = \"1.0\"\n[[packages]]\nname = \"x\"\nversion = \"1\"\n",
            Path::new("pylock.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("(x 1)") && error.contains("lock again"),
            "{error}"
        );
        let error = parse(
            "lock-version = \"1.0\"\n[[packages]]\nname = \"x\"\n\
             wheels = [{ name = \"x-1-py3-none-any.whl\", hashes = { sha256 = \"00\" } }]\n",
            Path::new("pylock.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("x-1-py3-none-any.whl"), "{error}");
    }
}
