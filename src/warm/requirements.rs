//! requirements.txt, as pip-compile, `uv pip compile` and `uv export` write it: every requirement
//! pinned to one version (`name==version`), optionally with `--hash=sha256:…` options.
//!
//! A requirement that is not pinned is refused with its line: warm fills the cache with one
//! locked set, and `requests>=2` names no set. Includes (`-r`, `-c`) are followed relative to the
//! including file; editable and direct-URL requirements are skipped (no index serves them);
//! index options (`--index-url`, `--find-links`, …) are ignored, since warm always goes through
//! wheelgate. Environment markers are ignored too: a lock for several platforms warms them all.

use std::path::{Path, PathBuf};

use super::input::{
    prefixed_sha256, project_name, read_text, InputError, PinnedVersion, Requirement, Skipped,
    Wanted, WarmList,
};

/// How deep `-r` includes may nest before the file is taken to include itself.
const MAX_INCLUDE_DEPTH: usize = 16;

/// Reads `path` and the files it includes.
pub fn read(path: &Path) -> Result<WarmList, InputError> {
    let mut list = WarmList::default();
    read_into(path, &mut list, 0)?;
    Ok(list)
}

fn read_into(path: &Path, list: &mut WarmList, depth: usize) -> Result<(), InputError> {
    for (line, logical) in logical_lines(&read_text(path)?) {
        let error = |reason: String| InputError::Line {
            path: path.to_owned(),
            line,
            reason,
        };
        match parse_line(&logical).map_err(error)? {
            Line::Nothing => {}
            Line::Include(included) => {
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(error(format!(
                        "includes nest deeper than {MAX_INCLUDE_DEPTH} files: does a file include \
                         itself?"
                    )));
                }
                let base = path.parent().unwrap_or(Path::new("."));
                read_into(&base.join(included), list, depth + 1)?;
            }
            Line::Skip { reason } => list.skipped.push(Skipped {
                what: format!("{} line {line}: {logical}", path.display()),
                reason,
            }),
            Line::Requirement { name, wanted } => list.requirements.push(Requirement {
                project: name,
                wanted,
                origin: format!("{} line {line}", path.display()),
            }),
        }
    }
    Ok(())
}

/// The logical lines of a file with the number of their first physical line: continuations
/// (`\` at the end of a line) joined, comments (`#` at the start or after whitespace) removed.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in text.lines().enumerate() {
        let (start, mut joined) = current.take().unwrap_or((index + 1, String::new()));
        let raw = strip_comment(raw);
        match raw.trim_end().strip_suffix('\\') {
            Some(continued) => {
                joined.push_str(continued);
                joined.push(' ');
                current = Some((start, joined));
            }
            None => {
                joined.push_str(raw);
                lines.push((start, joined.trim().to_owned()));
            }
        }
    }
    if let Some((start, joined)) = current {
        lines.push((start, joined.trim().to_owned()));
    }
    lines
}

fn strip_comment(line: &str) -> &str {
    let mut previous_blank = true;
    for (at, c) in line.char_indices() {
        if c == '#' && previous_blank {
            return line.get(..at).unwrap_or(line);
        }
        previous_blank = c.is_whitespace();
    }
    line
}

/// What one logical line says.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Nothing,
    Include(PathBuf),
    Skip {
        reason: &'static str,
    },
    Requirement {
        name: crate::simple::name::ProjectName,
        wanted: Wanted,
    },
}

fn parse_line(line: &str) -> Result<Line, String> {
    if line.is_empty() {
        return Ok(Line::Nothing);
    }
    // As pip splits a line: the requirement is the words before the first option.
    let words: Vec<&str> = line.split_whitespace().collect();
    let first_option = words
        .iter()
        .position(|w| w.starts_with('-'))
        .unwrap_or(words.len());
    let (requirement, options) = words.split_at(first_option);
    if requirement.is_empty() {
        return option_line(options);
    }
    let requirement = requirement.join(" ");
    let spec = requirement.split(';').next().unwrap_or(&requirement).trim();
    if spec.contains("://") || spec.starts_with(['.', '/', '~']) || spec.contains('@') {
        return Ok(Line::Skip {
            reason: "a path or direct URL, which no index serves",
        });
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        .unwrap_or(spec.len());
    let (raw_name, rest) = spec.split_at(name_end);
    if looks_like_archive(raw_name) {
        return Ok(Line::Skip {
            reason: "a path or direct URL, which no index serves",
        });
    }
    let name = project_name(raw_name)?;
    let rest = rest.trim_start();
    let rest = match rest.strip_prefix('[') {
        Some(extras) => extras
            .split_once(']')
            .map(|(_, after)| after)
            .ok_or_else(|| format!("`{spec}`: the extras' `[` is not closed"))?,
        None => rest,
    };
    let specifier: String = rest
        .trim()
        .trim_start_matches('(')
        .trim_end_matches(')')
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let version = pinned_version(&specifier).map_err(|why| {
        format!(
            "`{spec}` {why}: warm fills the cache with a locked set, so every requirement must \
             be pinned as name==version (pip-compile, `uv pip compile` and `uv export` write such \
             files)"
        )
    })?;
    let hashes = hashes(options)?;
    Ok(Line::Requirement {
        name,
        wanted: Wanted::Version { version, hashes },
    })
}

fn looks_like_archive(word: &str) -> bool {
    [".whl", ".tar.gz", ".zip", ".tar.bz2", ".tgz"]
        .iter()
        .any(|suffix| word.ends_with(suffix))
}

fn pinned_version(specifier: &str) -> Result<PinnedVersion, String> {
    if specifier.is_empty() {
        return Err("is not pinned to a version".to_owned());
    }
    if specifier.contains(',') {
        return Err("has several version clauses, not one pinned version".to_owned());
    }
    if let Some(version) = specifier.strip_prefix("===") {
        return PinnedVersion::parse(version, true);
    }
    match specifier.strip_prefix("==") {
        Some(version) => PinnedVersion::parse(version, false),
        None => Err("is not pinned to one version".to_owned()),
    }
}

/// The `--hash` options of a requirement line; only sha256 digests can be checked against what
/// wheelgate serves.
fn hashes(options: &[&str]) -> Result<Vec<crate::simple::Sha256Digest>, String> {
    let mut found = Vec::new();
    let mut others = 0usize;
    let mut words = options.iter();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--hash") {
            Some(rest) if rest.starts_with('=') => Some(rest.trim_start_matches('=')),
            Some("") => words.next().copied(),
            _ => continue,
        };
        let value = value.ok_or("--hash needs a value, as in --hash=sha256:<hex>")?;
        match prefixed_sha256(value)? {
            Some(digest) => found.push(digest),
            None => others += 1,
        }
    }
    if found.is_empty() && others > 0 {
        return Err(
            "its hashes use other algorithms than sha256, which wheelgate serves: lock again with \
             sha256 hashes, or leave the hashes out"
                .to_owned(),
        );
    }
    Ok(found)
}

/// A line that starts with an option: an include, an editable requirement, or an option warm
/// has no use for.
fn option_line(options: &[&str]) -> Result<Line, String> {
    let Some((first, rest)) = options.split_first() else {
        return Ok(Line::Nothing);
    };
    let (option, inline) = match first.split_once('=') {
        Some((option, value)) => (option, Some(value)),
        None => (*first, None),
    };
    // `-rfile` as well as `-r file`.
    let (option, inline) = match (option, inline) {
        (short, None)
            if short.len() > 2 && (short.starts_with("-r") || short.starts_with("-c")) =>
        {
            short.split_at(2)
        }
        (option, inline) => (option, inline.unwrap_or_default()),
    };
    match option {
        "-r" | "--requirement" | "-c" | "--constraint" => {
            let target = if inline.is_empty() {
                rest.first().copied().unwrap_or_default()
            } else {
                inline
            };
            if target.is_empty() {
                return Err(format!("{option} needs a file name"));
            }
            Ok(Line::Include(PathBuf::from(target)))
        }
        "-e" | "--editable" => Ok(Line::Skip {
            reason: "an editable project, which no index serves",
        }),
        _ => Ok(Line::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::name::ProjectName;
    use crate::simple::Sha256Digest;

    fn digest(c: char) -> Sha256Digest {
        Sha256Digest::parse_hex(&c.to_string().repeat(64)).unwrap()
    }

    fn pinned(name: &str, version: &str, hashes: Vec<Sha256Digest>) -> Line {
        Line::Requirement {
            name: ProjectName::parse(name).unwrap(),
            wanted: Wanted::Version {
                version: PinnedVersion::parse(version, false).unwrap(),
                hashes,
            },
        }
    }

    #[test]
    fn uv_export_output_is_read() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!(
            "# This file was autogenerated by uv via the following command:\n\
             #    uv export --format requirements-txt\n\
             -e .\n\
             Wgfx_Alpha==1.0.0 \\\n    --hash=sha256:{a} \\\n    --hash=sha256:{b}\n    # via wgfx-app\n\
             wgfx-far==1.1.0 ; python_version >= '3.8' --hash sha256:{a}\n\
             wgfx-hop[cli] == 1.0   # pinned by hand\n"
        );
        let lines = logical_lines(&text);
        assert_eq!(
            lines[3].0, 4,
            "a continued line is numbered by its first line"
        );
        let parsed: Vec<Line> = lines
            .iter()
            .map(|(_, l)| parse_line(l).unwrap())
            .filter(|l| *l != Line::Nothing)
            .collect();
        assert_eq!(
            parsed,
            vec![
                Line::Skip {
                    reason: "an editable project, which no index serves"
                },
                pinned("wgfx-alpha", "1.0.0", vec![digest('a'), digest('b')]),
                pinned("wgfx-far", "1.1.0", vec![digest('a')]),
                pinned("wgfx-hop", "1.0", vec![]),
            ]
        );
    }

    #[test]
    fn unpinned_requirements_are_refused_with_a_reason() {
        for (line, why) in [
            ("requests", "is not pinned to a version"),
            ("requests>=2", "not pinned to one version"),
            ("requests>=2,<3", "several version clauses"),
            ("requests==2.*", "wildcard"),
        ] {
            let error = parse_line(line).unwrap_err();
            assert!(error.contains(why), "{line}: {error}");
            assert!(error.contains("name==version"), "{line}: {error}");
        }
        assert!(parse_line("wgfx-a==1 --hash=md5:00")
            .unwrap_err()
            .contains("sha256"));
        assert!(parse_line("wgfx-a==1 --hash")
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_line("wgfx a==1").is_err());
    }

    #[test]
    fn options_and_direct_references() {
        for line in [
            "--index-url http://idx.example.invalid/simple/",
            "-i http://idx.example.invalid/simple/",
            "--extra-index-url=http://idx.example.invalid/simple/",
            "--find-links ./wheels",
            "--require-hashes",
            "--only-binary :all:",
            "# a comment",
            "",
        ] {
            assert_eq!(
                parse_line(strip_comment(line).trim()).unwrap(),
                Line::Nothing,
                "{line}"
            );
        }
        for line in [
            "-r base.txt",
            "--requirement=base.txt",
            "-rbase.txt",
            "-c base.txt",
        ] {
            assert_eq!(
                parse_line(line).unwrap(),
                Line::Include(PathBuf::from("base.txt")),
                "{line}"
            );
        }
        for line in [
            "pkg @ https://files.example.invalid/pkg-1.0.tar.gz",
            "./local/pkg",
            "https://files.example.invalid/pkg-1.0-py3-none-any.whl",
            "pkg-1.0-py3-none-any.whl",
            "--editable ./tools",
        ] {
            assert!(
                matches!(parse_line(line).unwrap(), Line::Skip { .. }),
                "{line}"
            );
        }
        assert_eq!(
            parse_line("wgfx-odd===1.0-custom").unwrap(),
            Line::Requirement {
                name: ProjectName::parse("wgfx-odd").unwrap(),
                wanted: Wanted::Version {
                    version: PinnedVersion::Arbitrary("1.0-custom".into()),
                    hashes: vec![]
                }
            }
        );
    }

    #[test]
    fn includes_are_followed_and_errors_name_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/base.txt"), "wgfx-delta==1.5.0\n").unwrap();
        std::fs::write(
            dir.path().join("requirements.txt"),
            "-r sub/base.txt\nwgfx-alpha==1.0.0\n-e ./tools\n",
        )
        .unwrap();
        let list = read(&dir.path().join("requirements.txt")).unwrap();
        let names: Vec<&str> = list
            .requirements
            .iter()
            .map(|r| r.project.as_str())
            .collect();
        assert_eq!(names, ["wgfx-delta", "wgfx-alpha"]);
        assert!(list.requirements[0].origin.ends_with("base.txt line 1"));
        assert_eq!(list.skipped.len(), 1);
        assert!(list.skipped[0].what.contains("line 3: -e ./tools"));

        std::fs::write(dir.path().join("loop.txt"), "-r loop.txt\n").unwrap();
        let error = read(&dir.path().join("loop.txt")).unwrap_err().to_string();
        assert!(error.contains("include"), "{error}");
        std::fs::write(
            dir.path().join("bad.txt"),
            "wgfx-alpha==1.0.0\n\nrequests\n",
        )
        .unwrap();
        let error = read(&dir.path().join("bad.txt")).unwrap_err().to_string();
        assert!(error.contains("bad.txt line 3"), "{error}");
        let error = read(&dir.path().join("absent.txt"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("absent.txt"), "{error}");
    }
}
