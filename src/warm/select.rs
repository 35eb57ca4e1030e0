//! Which files of a project page a requirement wants, and what each must hash to.
//!
//! A lock names its files: each is found on the page by filename, and one the page does not list
//! (the download rules leave denied files out of pages) is asked for directly by its sha256, so
//! that wheelgate answers why (a 403 naming the rule, or a 404). A requirements.txt pin wants
//! every file of its version, or with hashes those whose sha256 is one of them. Pure: the page is
//! already parsed, nothing is fetched here.

use url::Url;

use super::input::{LockedFile, PinnedVersion, Requirement, Wanted};
use crate::simple::page::{CoreMetadata, FileEntry, ProjectPage};
use crate::simple::Sha256Digest;

/// One file to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileJob {
    pub filename: String,
    pub url: Url,
    /// The body's sha256 must be one of these (none: wheelgate's own check is all there is).
    pub expected: Vec<Sha256Digest>,
    /// The PEP 658 metadata the page offers with it.
    pub metadata: Option<MetadataJob>,
}

/// A file's `.metadata`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataJob {
    pub url: Url,
    pub sha256: Option<Sha256Digest>,
}

/// A wanted file that cannot be asked for, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub what: String,
    pub reason: String,
}

/// What a requirement wants from its page.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub jobs: Vec<FileJob>,
    pub problems: Vec<Problem>,
}

/// The files `requirement` wants from `page`, which was read from `page_url`.
pub fn select(requirement: &Requirement, page: &ProjectPage, page_url: &Url) -> Selection {
    match &requirement.wanted {
        Wanted::Files(files) => select_locked(requirement, files, page, page_url),
        Wanted::Version { version, hashes } => {
            select_version(requirement, version, hashes, page, page_url)
        }
    }
}

fn select_locked(
    requirement: &Requirement,
    files: &[LockedFile],
    page: &ProjectPage,
    page_url: &Url,
) -> Selection {
    let mut selection = Selection::default();
    for locked in files {
        let name = locked.filename.as_str();
        let entry = page.files.iter().find(|f| f.filename.as_str() == name);
        match (entry, locked.sha256) {
            (Some(entry), Some(wanted)) if entry.sha256.is_some_and(|seen| seen != wanted) => {
                selection.problems.push(Problem {
                    what: name.to_owned(),
                    reason: format!(
                        "the index now serves other bytes under this name (sha256 {}) than {} \
                         locked (sha256 {wanted}); lock again",
                        entry.sha256.map(|d| d.to_string()).unwrap_or_default(),
                        requirement.origin
                    ),
                });
            }
            (Some(entry), wanted) => selection
                .jobs
                .push(job(entry, wanted.into_iter().collect())),
            (None, Some(sha256)) => match direct_url(page_url, requirement, sha256, name) {
                Some(url) => selection.jobs.push(FileJob {
                    filename: name.to_owned(),
                    url,
                    expected: vec![sha256],
                    metadata: None,
                }),
                None => selection.problems.push(not_listed(name, page_url)),
            },
            (None, None) => selection.problems.push(not_listed(name, page_url)),
        }
    }
    selection
}

fn not_listed(name: &str, page_url: &Url) -> Problem {
    Problem {
        what: name.to_owned(),
        reason: format!(
            "{page_url} does not list it, and the lock gives no sha256 to ask for it directly"
        ),
    }
}

fn select_version(
    requirement: &Requirement,
    version: &PinnedVersion,
    hashes: &[Sha256Digest],
    page: &ProjectPage,
    page_url: &Url,
) -> Selection {
    let of_version: Vec<&FileEntry> = page
        .files
        .iter()
        .filter(|f| f.filename.version().is_some_and(|v| version.matches(v)))
        .collect();
    let jobs: Vec<FileJob> = of_version
        .iter()
        .filter_map(|entry| match entry.sha256 {
            Some(digest) if hashes.is_empty() || hashes.contains(&digest) => {
                Some(job(entry, vec![digest]))
            }
            Some(_) => None,
            // No digest on the page: the body must hash to one of the requirement's.
            None => Some(job(entry, hashes.to_vec())),
        })
        .collect();
    let what = format!("{}{version}", requirement.project);
    let problems = if !jobs.is_empty() {
        Vec::new()
    } else if of_version.is_empty() {
        vec![Problem {
            what,
            reason: format!(
                "{page_url} lists no file of this version ({}): check the version, and whether \
                 the download rules deny it (`wheelgate rules test`), since denied files are left \
                 out of pages",
                requirement.origin
            ),
        }]
    } else {
        vec![Problem {
            what,
            reason: format!(
                "{page_url} lists {} files of this version, none with a sha256 among the hashes \
                 of {}: the index serves other bytes than were locked; lock again",
                of_version.len(),
                requirement.origin
            ),
        }]
    };
    Selection { jobs, problems }
}

fn job(entry: &FileEntry, expected: Vec<Sha256Digest>) -> FileJob {
    let metadata = match entry.core_metadata {
        CoreMetadata::Absent => None,
        CoreMetadata::Present { sha256 } => Some(MetadataJob {
            url: metadata_url(&entry.url),
            sha256,
        }),
    };
    FileJob {
        filename: entry.filename.as_str().to_owned(),
        url: entry.url.clone(),
        expected,
        metadata,
    }
}

/// PEP 658: the metadata sits at the file's URL with `.metadata` appended.
fn metadata_url(file: &Url) -> Url {
    let mut url = file.clone();
    let path = format!("{}.metadata", url.path());
    url.set_path(&path);
    url.set_fragment(None);
    url
}

/// `/<repo>/files/<project>/<sha256>/<filename>` next to the page
/// `/<repo>/simple/<project>/`: the file as wheelgate's own links name it (SPEC §2).
fn direct_url(
    page_url: &Url,
    requirement: &Requirement,
    sha256: Sha256Digest,
    filename: &str,
) -> Option<Url> {
    let mut url = page_url.join("../../files/").ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().extend([
        requirement.project.as_str(),
        &sha256.to_hex(),
        filename,
    ]);
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::filename::DistFilename;
    use crate::simple::name::ProjectName;
    use crate::simple::page::Yanked;

    fn digest(c: char) -> Sha256Digest {
        Sha256Digest::parse_hex(&c.to_string().repeat(64)).unwrap()
    }

    fn page_url() -> Url {
        Url::parse("http://127.0.0.1:9/pypi/simple/wgfx-alpha/").unwrap()
    }

    fn entry(filename: &str, sha256: Option<Sha256Digest>, metadata: CoreMetadata) -> FileEntry {
        FileEntry {
            filename: DistFilename::parse(filename).unwrap(),
            url: page_url()
                .join(&format!("../../files/wgfx-alpha/k/{filename}"))
                .unwrap(),
            sha256,
            other_hashes: vec![],
            requires_python: None,
            yanked: Yanked::No,
            core_metadata: metadata,
            size: None,
            upload_time: None,
            provenance: None,
            origin: None,
        }
    }

    fn page() -> ProjectPage {
        ProjectPage {
            status: Default::default(),
            name: ProjectName::parse("wgfx-alpha").unwrap(),
            files: vec![
                entry(
                    "wgfx_alpha-1.0.0-py3-none-any.whl",
                    Some(digest('a')),
                    CoreMetadata::Present {
                        sha256: Some(digest('9')),
                    },
                ),
                entry(
                    "wgfx_alpha-1.0.0.tar.gz",
                    Some(digest('b')),
                    CoreMetadata::Absent,
                ),
                entry(
                    "wgfx_alpha-1.2.0.tar.gz",
                    Some(digest('c')),
                    CoreMetadata::Absent,
                ),
                entry(
                    "wgfx_alpha-1.0-py2-none-any.whl",
                    None,
                    CoreMetadata::Absent,
                ),
            ],
            versions: vec![],
            dropped: 0,
        }
    }

    fn requirement(wanted: Wanted) -> Requirement {
        Requirement {
            project: ProjectName::parse("wgfx-alpha").unwrap(),
            wanted,
            origin: "requirements.txt line 1".to_owned(),
        }
    }

    fn pin(version: &str, hashes: Vec<Sha256Digest>) -> Wanted {
        Wanted::Version {
            version: PinnedVersion::parse(version, false).unwrap(),
            hashes,
        }
    }

    fn names(selection: &Selection) -> Vec<&str> {
        selection.jobs.iter().map(|j| j.filename.as_str()).collect()
    }

    #[test]
    fn a_pin_wants_every_file_of_its_version() {
        let selection = select(&requirement(pin("1.0", vec![])), &page(), &page_url());
        assert_eq!(
            names(&selection),
            [
                "wgfx_alpha-1.0.0-py3-none-any.whl",
                "wgfx_alpha-1.0.0.tar.gz",
                "wgfx_alpha-1.0-py2-none-any.whl"
            ]
        );
        assert!(selection.problems.is_empty());
        let wheel = &selection.jobs[0];
        assert_eq!(wheel.expected, [digest('a')]);
        let metadata = wheel.metadata.as_ref().unwrap();
        assert_eq!(
            metadata.url.as_str(),
            "http://127.0.0.1:9/pypi/files/wgfx-alpha/k/wgfx_alpha-1.0.0-py3-none-any.whl.metadata"
        );
        assert_eq!(metadata.sha256, Some(digest('9')));
        assert!(selection.jobs[2].expected.is_empty());
    }

    #[test]
    fn hashes_narrow_a_pin() {
        let selection = select(
            &requirement(pin("1.0.0", vec![digest('b'), digest('e')])),
            &page(),
            &page_url(),
        );
        assert_eq!(
            names(&selection),
            ["wgfx_alpha-1.0.0.tar.gz", "wgfx_alpha-1.0-py2-none-any.whl"]
        );
        assert_eq!(
            selection.jobs[1].expected,
            [digest('b'), digest('e')],
            "a file without a digest on the page must hash to one of the requirement's"
        );
        let selection = select(
            &requirement(pin("1.2.0", vec![digest('e')])),
            &page(),
            &page_url(),
        );
        assert!(selection.jobs.is_empty());
        assert!(selection.problems[0].reason.contains("none with a sha256"));
        let selection = select(&requirement(pin("9.9", vec![])), &page(), &page_url());
        assert_eq!(selection.problems[0].what, "wgfx-alpha==9.9");
        assert!(selection.problems[0]
            .reason
            .contains("no file of this version"));
    }

    #[test]
    fn locked_files_are_found_by_name_or_asked_for_directly() {
        let locked = |name: &str, sha256: Option<Sha256Digest>| LockedFile {
            filename: DistFilename::parse(name).unwrap(),
            sha256,
        };
        let wanted = Wanted::Files(vec![
            locked("wgfx_alpha-1.0.0-py3-none-any.whl", Some(digest('a'))),
            locked("wgfx_alpha-1.0.0.tar.gz", Some(digest('f'))),
            locked("wgfx_alpha-1.0-py2-none-any.whl", None),
            locked("wgfx_alpha-1.0.0-cp312-win_amd64.whl", Some(digest('d'))),
            locked("wgfx_alpha-0.1.tar.gz", None),
        ]);
        let selection = select(&requirement(wanted), &page(), &page_url());
        assert_eq!(
            names(&selection),
            [
                "wgfx_alpha-1.0.0-py3-none-any.whl",
                "wgfx_alpha-1.0-py2-none-any.whl",
                "wgfx_alpha-1.0.0-cp312-win_amd64.whl"
            ]
        );
        assert!(selection.jobs[1].expected.is_empty());
        let direct = &selection.jobs[2];
        assert_eq!(
            direct.url.as_str(),
            format!(
                "http://127.0.0.1:9/pypi/files/wgfx-alpha/{}/wgfx_alpha-1.0.0-cp312-win_amd64.whl",
                digest('d')
            )
        );
        assert_eq!(direct.expected, [digest('d')]);
        let problems: Vec<&str> = selection.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(
            problems,
            ["wgfx_alpha-1.0.0.tar.gz", "wgfx_alpha-0.1.tar.gz"]
        );
        assert!(selection.problems[0].reason.contains("other bytes"));
        assert!(selection.problems[1].reason.contains("does not list it"));
    }
}
