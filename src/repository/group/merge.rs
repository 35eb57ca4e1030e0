//! How a group's page is made from its members' pages: pure functions, so the rules of the
//! merge (member order decides, each file remembers where it came from) are tested on their own.

use std::collections::HashSet;
use std::sync::Arc;

use crate::config::RepoName;
use crate::simple::name::ProjectName;
use crate::simple::page::{Origin, ProjectIndex, ProjectPage};

/// The page of `project` made from the members that have it, in member order: a filename
/// offered by two members is the first one's (its bytes and digest), each file records the
/// member it comes from, the versions are every member's (first seen first), and the project's
/// status is the first member's.
pub fn merge_pages(project: &ProjectName, pages: &[(&RepoName, &ProjectPage)]) -> ProjectPage {
    let capacity = pages.iter().map(|(_, page)| page.files.len()).sum();
    let mut files = Vec::with_capacity(capacity);
    let mut filenames: HashSet<&str> = HashSet::with_capacity(capacity);
    let mut versions = Vec::new();
    let mut seen_versions: HashSet<&str> = HashSet::new();
    let mut dropped = 0;
    for (member, page) in pages {
        let origin = Arc::new(Origin {
            repository: (*member).clone(),
            status: page.status.marker.clone(),
        });
        for entry in &page.files {
            if filenames.insert(entry.filename.as_str()) {
                let mut entry = entry.clone();
                entry.origin = Some(origin.clone());
                files.push(entry);
            }
        }
        for version in &page.versions {
            if seen_versions.insert(version) {
                versions.push(version.clone());
            }
        }
        dropped += page.dropped;
    }
    ProjectPage {
        name: project.clone(),
        files,
        versions,
        status: pages
            .first()
            .map(|(_, page)| page.status.clone())
            .unwrap_or_default(),
        dropped,
    }
}

/// Every project any member lists.
pub fn merge_indexes(indexes: &[&ProjectIndex]) -> ProjectIndex {
    let names = indexes
        .iter()
        .flat_map(|index| index.projects.iter().cloned())
        .collect();
    ProjectIndex::from_unsorted(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::page::{parse_project_json, StatusMarker};

    fn page(project: &str, files: &[(&str, &str)], status: Option<&str>) -> ProjectPage {
        let files: Vec<String> = files
            .iter()
            .map(|(name, sha)| {
                format!(
                    r#"{{"filename":"{name}","url":"https://files.example.invalid/{name}","hashes":{{"sha256":"{}"}}}}"#,
                    sha.repeat(64)
                )
            })
            .collect();
        let status = status
            .map(|s| format!(r#","project-status":{{"status":"{s}"}}"#))
            .unwrap_or_default();
        let body = format!(
            r#"{{"meta":{{"api-version":"1.4"}},"name":"{project}","files":[{}]{status}}}"#,
            files.join(",")
        );
        let url =
            url::Url::parse(&format!("https://index.example.invalid/simple/{project}/")).unwrap();
        parse_project_json(body.as_bytes(), &url, &ProjectName::parse(project).unwrap()).unwrap()
    }

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    #[test]
    fn the_first_member_wins_a_filename_and_each_file_knows_its_member() {
        let internal = page("acme", &[("acme-1.0.tar.gz", "a")], None);
        let pypi = page(
            "acme",
            &[("acme-1.0.tar.gz", "b"), ("acme-2.0.tar.gz", "c")],
            Some("archived"),
        );
        let (first, second) = (repo("internal"), repo("pypi"));
        let project = ProjectName::parse("acme").unwrap();
        let merged = merge_pages(&project, &[(&first, &internal), (&second, &pypi)]);
        let files: Vec<(&str, String, &str)> = merged
            .files
            .iter()
            .map(|f| {
                (
                    f.filename.as_str(),
                    f.sha256.unwrap().to_string(),
                    f.origin.as_ref().unwrap().repository.as_str(),
                )
            })
            .collect();
        assert_eq!(
            files,
            [
                ("acme-1.0.tar.gz", "a".repeat(64), "internal"),
                ("acme-2.0.tar.gz", "c".repeat(64), "pypi"),
            ]
        );
        assert_eq!(merged.versions, ["1.0", "2.0"]);
        // The page states the first member's status; each file keeps its own member's.
        assert_eq!(merged.status.marker, StatusMarker::Active);
        assert_eq!(
            merged.files[1].origin.as_ref().unwrap().status,
            StatusMarker::Archived
        );
        // Order decides: the other way round, pypi's bytes win.
        let merged = merge_pages(&project, &[(&second, &pypi), (&first, &internal)]);
        assert_eq!(merged.files.len(), 2);
        assert_eq!(merged.files[0].sha256.unwrap().to_string(), "b".repeat(64));
        assert_eq!(merged.status.marker, StatusMarker::Archived);
    }

    #[test]
    fn indexes_are_united() {
        let names = |list: &[&str]| {
            ProjectIndex::from_unsorted(
                list.iter()
                    .map(|n| ProjectName::parse(n).unwrap())
                    .collect(),
            )
        };
        let merged = merge_indexes(&[&names(&["b", "a"]), &names(&["c", "a"])]);
        let got: Vec<&str> = merged.projects.iter().map(|p| p.as_str()).collect();
        assert_eq!(got, ["a", "b", "c"]);
    }
}
