//! Applying the rules to what a repository serves: the files of a project page, one file.
//!
//! A page keeps only the files the rules allow, so that pip and uv resolve to an allowed version
//! on their own; a page the rules leave with no file at all is refused as a whole, naming every
//! rule involved, because an empty page would read to a client as "no such version" rather than
//! "forbidden here". Files an audited rule would deny stay on the page; the decision names those
//! rules so that the caller logs and counts the would-deny.

use std::time::SystemTime;

use super::{Decision, FileFacts, Policy, RuleRef};
use crate::config::RepoName;
use crate::simple::page::{FileEntry, ProjectPage};

impl<'a> FileFacts<'a> {
    /// The facts of one file of `page`: the file's own, and what the page says of its project.
    pub fn of_entry(page: &'a ProjectPage, entry: &'a FileEntry) -> FileFacts<'a> {
        FileFacts {
            project: &page.name,
            version: entry.filename.version(),
            filename: entry.filename.as_str(),
            kind: entry.filename.kind(),
            upload_time: entry.upload_time.as_deref(),
            yanked: entry.yanked.is_yanked(),
            provenance: entry.provenance.is_some(),
            // On a group's page, each file is judged by the status its own repository states.
            status: entry
                .origin
                .as_ref()
                .map_or(&page.status.marker, |origin| &origin.status),
        }
    }
}

/// A project page after the rules: what is served, and the audited rules that would have left
/// files out (or refused the page) had they been enforced, each once.
pub struct PageDecision {
    pub filtered: Filtered,
    pub would_deny: Vec<RuleRef>,
}

/// What is served of a project page.
pub enum Filtered {
    /// Every file is allowed: serve the page as it is.
    Unchanged,
    /// Some files are left out; `page` holds the others.
    Reduced { page: ProjectPage, hidden: usize },
    /// The page had files and the rules allow none of them.
    Refused { rules: Vec<RuleRef> },
}

/// Decides every file of `page` as served by `repository`.
pub fn filter_page(
    policy: &Policy,
    repository: &RepoName,
    page: &ProjectPage,
    now: SystemTime,
) -> PageDecision {
    filter_page_through(policy, |_| std::slice::from_ref(repository), page, now)
}

/// Decides every file of `page` by the rules of every repository `through` names for it (a group,
/// the groups between and the member the file comes from, SPEC §5): the first DENY decides.
pub fn filter_page_through<'r>(
    policy: &Policy,
    through: impl Fn(&FileEntry) -> &'r [RepoName],
    page: &ProjectPage,
    now: SystemTime,
) -> PageDecision {
    let mut would_deny: Vec<RuleRef> = Vec::new();
    let decided = |filtered| PageDecision {
        filtered,
        would_deny: Vec::new(),
    };
    if policy.is_empty() || page.files.is_empty() {
        return decided(Filtered::Unchanged);
    }
    let mut kept = Vec::with_capacity(page.files.len());
    let mut rules: Vec<RuleRef> = Vec::new();
    for entry in &page.files {
        let repositories = through(entry);
        match policy.decide_through(repositories, &FileFacts::of_entry(page, entry), now) {
            Decision::Allow { would_deny: by, .. } => {
                kept.push(entry.clone());
                if let Some(by) = by {
                    if !would_deny.contains(&by) {
                        would_deny.push(by);
                    }
                }
            }
            Decision::Deny { by } => {
                tracing::debug!(
                    repository = %repositories.first().map_or("-", RepoName::as_str),
                    package = %page.name,
                    version = entry.filename.version().unwrap_or("-"),
                    file = entry.filename.as_str(),
                    rule = %by,
                    "file left out of the page"
                );
                if !rules.contains(&by) {
                    rules.push(by);
                }
            }
        }
    }
    let decided = |filtered| PageDecision {
        filtered,
        would_deny,
    };
    if rules.is_empty() {
        return decided(Filtered::Unchanged);
    }
    if kept.is_empty() {
        return decided(Filtered::Refused { rules });
    }
    let hidden = page.files.len() - kept.len();
    // A version leaves the PEP 700 list only when it had files and none is left; versions the
    // upstream lists without files stay as they were.
    let versions = page
        .versions
        .iter()
        .filter(|version| {
            let had = page
                .files
                .iter()
                .any(|f| f.filename.version() == Some(version.as_str()));
            !had || kept
                .iter()
                .any(|f| f.filename.version() == Some(version.as_str()))
        })
        .cloned()
        .collect();
    decided(Filtered::Reduced {
        page: ProjectPage {
            name: page.name.clone(),
            files: kept,
            versions,
            status: page.status.clone(),
            dropped: page.dropped,
        },
        hidden,
    })
}

/// How a list of rules reads in a refusal: `rule "a" in repository "r", rule "b" in …`.
pub fn describe_rules(rules: &[RuleRef]) -> String {
    rules
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
