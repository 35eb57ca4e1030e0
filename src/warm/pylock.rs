//! PEP 751 lock files (`pylock.toml`, `pylock.<name>.toml`), lock-version 1.x.
//!
//! Each `[[packages]]` entry with an `sdist` or `wheels` comes from an index: its files are warmed
//! by `name` (or the last segment of `url` or `path`) with the sha256 of their `hashes`. Entries
//! with `vcs`, `directory` or `archive` are skipped: no index serves them. As PEP 751 asks, a
//! lock-version whose major number is not 1 is refused; unknown keys are ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::input::{
    dist_filename, last_segment, project_name, InputError, LockedFile, Requirement, Skipped,
    Wanted, WarmList,
};
use crate::simple::Sha256Digest;

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
    sdist: Option<LockFile>,
    #[serde(default)]
    wheels: Vec<LockFile>,
}

#[derive(Deserialize)]
struct LockFile {
    name: Option<String>,
    url: Option<String>,
    path: Option<String>,
    #[serde(default)]
    hashes: BTreeMap<String, String>,
}

/// Reads the PEP 751 lock file at `path`.
pub fn read(path: &Path) -> Result<WarmList, InputError> {
    let text = std::fs::read_to_string(path).map_err(|source| InputError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

fn parse(text: &str, path: &Path) -> Result<WarmList, InputError> {
    let lock: Pylock = toml::from_str(text).map_err(|source| InputError::Toml {
        path: path.to_owned(),
        source,
    })?;
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
    for package in lock.packages {
        let label = match &package.version {
            Some(version) => format!("{} {version}", package.name),
            None => package.name.clone(),
        };
        let error = |reason: String| InputError::Package {
            path: path.to_owned(),
            package: label.clone(),
            reason,
        };
        let source = if package.vcs.is_some() {
            Some("a VCS checkout, which no index serves")
        } else if package.directory.is_some() {
            Some("a local directory, which no index serves")
        } else if package.archive.is_some() {
            Some("an archive from a direct URL or path, which no index serves")
        } else {
            None
        };
        if let Some(reason) = source {
            list.skipped.push(Skipped {
                what: format!("{} package {label}", path.display()),
                reason,
            });
            continue;
        }
        let project = project_name(&package.name).map_err(&error)?;
        let files = package
            .sdist
            .iter()
            .chain(&package.wheels)
            .map(locked_file)
            .collect::<Result<Vec<_>, _>>()
            .map_err(&error)?;
        if files.is_empty() {
            return Err(error(
                "it has no sdist, wheels, vcs, directory or archive: lock again".to_owned(),
            ));
        }
        list.requirements.push(Requirement {
            project,
            wanted: Wanted::Files(files),
            origin: format!("{} package {label}", path.display()),
        });
    }
    Ok(list)
}

fn locked_file(file: &LockFile) -> Result<LockedFile, String> {
    let name = file
        .name
        .clone()
        .or_else(|| file.url.as_deref().and_then(last_segment))
        .or_else(|| file.path.as_deref().and_then(last_segment))
        .ok_or("a file has no name, url or path to name it")?;
    let filename = dist_filename(&name)?;
    let sha256 = file
        .hashes
        .iter()
        .find(|(algorithm, _)| algorithm.eq_ignore_ascii_case("sha256"))
        .map(|(_, hex)| Sha256Digest::parse_hex(hex).map_err(|e| format!("{name}: {e}")))
        .transpose()?;
    Ok(LockedFile { filename, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;

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
