//! What a cache command found or did, as the admin channel carries it (JSON) and as the command
//! prints it (lines a person reads: counts, and sizes with units and exact bytes).
//!
//! The same report comes back whether the command asked the running server or opened the store
//! itself, so the two paths print the same lines. Fields are plain data (digests as hex) so
//! that a command and a server of neighbouring versions still understand each other; fields
//! added later get `#[serde(default)]`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::store::{BodyUser, Damaged, Problem, Repair, Verification};

/// One cache command's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Report {
    Stats(StatsReport),
    Verify(VerifyReport),
    Gc(GcReport),
    Purge(PurgeReport),
    Origin(crate::origin::explain::OriginReport),
}

impl Report {
    /// Whether the command must exit 1: `verify` found damage.
    pub fn found_damage(&self) -> bool {
        matches!(self, Report::Verify(report) if !report.damaged.is_empty())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Report::Stats(report) => report.fmt(f),
            Report::Verify(report) => report.fmt(f),
            Report::Gc(report) => report.fmt(f),
            Report::Purge(report) => report.fmt(f),
            Report::Origin(report) => report.fmt(f),
        }
    }
}

/// `cache stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// The store directory.
    pub store: String,
    /// Stored files (artifacts, PEP 658 metadata included) and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Of those, the hosted uploads, which are never evicted.
    pub hosted_files: u64,
    pub hosted_bytes: u64,
    /// Index pages kept.
    pub pages: u64,
    /// The cap on `bytes` the store works under.
    pub max_size: u64,
}

impl fmt::Display for StatsReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store: {}", self.store)?;
        writeln!(f, "files: {}, {}", self.files, size(self.bytes))?;
        writeln!(
            f,
            "hosted uploads (never evicted): {}, {}",
            plural(self.hosted_files, "file"),
            size(self.hosted_bytes)
        )?;
        writeln!(f, "pages: {}", self.pages)?;
        writeln!(
            f,
            "max_size: {}, {} used",
            size(self.max_size),
            percent(self.bytes, self.max_size)
        )
    }
}

/// `cache verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub files: u64,
    pub bytes: u64,
    pub page_bodies: u64,
    pub damaged: Vec<DamagedReport>,
}

/// One damaged body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DamagedReport {
    /// The digest it is stored under, hex.
    pub sha256: String,
    /// What is wrong, in words.
    pub problem: String,
    /// What it was the body of, in words.
    pub used_by: Vec<String>,
    pub repair: RepairReport,
}

/// What was done about a damaged body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairReport {
    Removed,
    Kept,
    UploadsForgotten,
}

impl From<Verification> for VerifyReport {
    fn from(verification: Verification) -> VerifyReport {
        VerifyReport {
            files: verification.files,
            bytes: verification.file_bytes,
            page_bodies: verification.page_bodies,
            damaged: verification.damaged.into_iter().map(damaged).collect(),
        }
    }
}

fn damaged(damaged: Damaged) -> DamagedReport {
    let problem = match damaged.problem {
        Problem::Missing => "its stored body is missing".to_owned(),
        Problem::Differs { actual, size } => {
            format!("its {size} bytes hash to sha256 {actual}")
        }
        Problem::Unreadable(reason) => format!("its stored body cannot be read: {reason}"),
    };
    let used_by = damaged
        .used_by
        .into_iter()
        .map(|user| match user {
            BodyUser::File {
                repository,
                filename,
            } => format!("the file {filename} (repository {repository})"),
            BodyUser::Upload(upload) => upload.to_string(),
            BodyUser::Page(page) => page.to_string(),
        })
        .collect();
    DamagedReport {
        sha256: damaged.sha256.to_hex(),
        problem,
        used_by,
        repair: match damaged.repair {
            Repair::Removed => RepairReport::Removed,
            Repair::Kept => RepairReport::Kept,
            Repair::UploadsForgotten => RepairReport::UploadsForgotten,
        },
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "checked {}, {}, and {}",
            plural(self.files, "file"),
            size(self.bytes),
            plural(self.page_bodies, "page body")
        )?;
        for damaged in &self.damaged {
            let what = if damaged.used_by.is_empty() {
                "a stored body".to_owned()
            } else {
                damaged.used_by.join(", ")
            };
            let repair = match damaged.repair {
                RepairReport::Removed => {
                    "removed: it is fetched again from the upstream when next asked for"
                }
                RepairReport::Kept => {
                    "KEPT, since it is the only copy of a hosted upload: publish the file again \
                     after `wheelgate cache verify --forget-damaged-uploads`, or restore the \
                     store from a backup"
                }
                RepairReport::UploadsForgotten => {
                    "the uploads were forgotten: publish the file again"
                }
            };
            writeln!(
                f,
                "damaged: {what}, stored as sha256 {}: {}; {repair}",
                damaged.sha256, damaged.problem
            )?;
        }
        match self.damaged.len() {
            0 => writeln!(f, "every stored body matches its sha256"),
            n => writeln!(f, "{} found", plural(n as u64, "damaged body")),
        }
    }
}

/// `cache gc`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// The cap evicted down to.
    pub max_size: u64,
    pub evicted_files: u64,
    pub evicted_bytes: u64,
    /// What the store holds afterwards.
    pub files: u64,
    pub bytes: u64,
    pub hosted_bytes: u64,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.evicted_files == 0 {
            writeln!(f, "nothing to evict")?;
        } else {
            writeln!(
                f,
                "evicted {}, {}, least recently used first",
                plural(self.evicted_files, "file"),
                size(self.evicted_bytes)
            )?;
        }
        writeln!(
            f,
            "the store holds {}, {}, for a max_size of {}",
            plural(self.files, "file"),
            size(self.bytes),
            size(self.max_size)
        )?;
        if self.bytes > self.max_size {
            writeln!(
                f,
                "still over max_size: hosted uploads take {} and are never evicted; raise \
                 [store] max_size",
                size(self.hosted_bytes)
            )?;
        }
        Ok(())
    }
}

/// `cache purge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// The normalised project name.
    pub project: String,
    /// Each remote repository purged, and whether it had a stored page of the project.
    pub repositories: Vec<(String, bool)>,
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (repository, forgotten) in &self.repositories {
            if *forgotten {
                writeln!(
                    f,
                    "forgot the page of {} in repository {repository}: the next request fetches \
                     it from the upstream",
                    self.project
                )?;
            } else {
                writeln!(
                    f,
                    "repository {repository} had no stored page of {}",
                    self.project
                )?;
            }
        }
        Ok(())
    }
}

/// `n thing` or `n things`.
fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else if let Some(stem) = thing.strip_suffix('y') {
        format!("{n} {stem}ies")
    } else {
        format!("{n} {thing}s")
    }
}

/// A size for people: `512 bytes`, `1.5 MiB (1572864 bytes)`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return if bytes == 1 {
            "1 byte".to_owned()
        } else {
            format!("{bytes} bytes")
        };
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {} ({bytes} bytes)", UNITS[unit])
}

/// `part` as a share of `whole`, `12.5%`.
fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_have_units_and_exact_bytes() {
        assert_eq!(size(0), "0 bytes");
        assert_eq!(size(1), "1 byte");
        assert_eq!(size(1023), "1023 bytes");
        assert_eq!(size(1024), "1.0 KiB (1024 bytes)");
        assert_eq!(size(3 << 20), "3.0 MiB (3145728 bytes)");
        assert_eq!(size(5 << 29), "2.5 GiB (2684354560 bytes)");
        assert_eq!(size(u64::MAX), "16384.0 PiB (18446744073709551615 bytes)");
    }

    #[test]
    fn counts_are_pluralised() {
        assert_eq!(plural(1, "file"), "1 file");
        assert_eq!(plural(0, "file"), "0 files");
        assert_eq!(plural(2, "page body"), "2 page bodies");
        assert_eq!(percent(1, 8), "12.5%");
        assert_eq!(percent(1, 0), "-");
    }

    #[test]
    fn reports_round_trip_through_json() {
        let reports = [
            Report::Stats(StatsReport {
                store: "/s".to_owned(),
                files: 3,
                bytes: 3 << 20,
                hosted_files: 1,
                hosted_bytes: 1 << 20,
                pages: 2,
                max_size: 20 << 30,
            }),
            Report::Verify(VerifyReport {
                files: 1,
                bytes: 10,
                page_bodies: 0,
                damaged: vec![DamagedReport {
                    sha256: "ab".repeat(32),
                    problem: "its stored body is missing".to_owned(),
                    used_by: vec!["the file a.whl (repository pypi)".to_owned()],
                    repair: RepairReport::Removed,
                }],
            }),
            Report::Gc(GcReport {
                max_size: 1,
                evicted_files: 0,
                evicted_bytes: 0,
                files: 0,
                bytes: 0,
                hosted_bytes: 0,
            }),
            Report::Purge(PurgeReport {
                project: "wgfx-app".to_owned(),
                repositories: vec![("pypi".to_owned(), true)],
            }),
        ];
        for report in reports {
            let json = serde_json::to_string(&report).unwrap();
            assert_eq!(serde_json::from_str::<Report>(&json).unwrap(), report);
        }
    }

    #[test]
    fn verify_lines_name_the_file_the_problem_and_what_was_done() {
        let report = VerifyReport {
            files: 3,
            bytes: 3 << 20,
            page_bodies: 1,
            damaged: vec![DamagedReport {
                sha256: "ab".repeat(32),
                problem: "its stored body is missing".to_owned(),
                used_by: vec!["the file a-1.0-py3-none-any.whl (repository pypi)".to_owned()],
                repair: RepairReport::Removed,
            }],
        };
        let text = report.to_string();
        assert!(
            text.starts_with("checked 3 files, 3.0 MiB (3145728 bytes), and 1 page body\n"),
            "{text}"
        );
        assert!(text.contains(
            "damaged: the file a-1.0-py3-none-any.whl (repository pypi), stored as sha256 abab"
        ));
        assert!(text.contains("removed: it is fetched again"));
        assert!(text.ends_with("1 damaged body found\n"), "{text}");
        assert!(Report::Verify(report).found_damage());
    }

    #[test]
    fn gc_says_when_hosted_uploads_keep_the_store_over_max_size() {
        let report = GcReport {
            max_size: 1 << 20,
            evicted_files: 2,
            evicted_bytes: 2 << 20,
            files: 1,
            bytes: 2 << 20,
            hosted_bytes: 2 << 20,
        };
        let text = report.to_string();
        assert!(text.contains("evicted 2 files, 2.0 MiB"), "{text}");
        assert!(text.contains("still over max_size"), "{text}");
    }
}
