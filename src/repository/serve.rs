//! The decisions of the repository layer: which page a caller gets and whether a file may be
//! served, the same way for every kind of repository.
//!
//! A project page is filtered by the download rules before it is rendered, and the rendering is
//! kept with the page, so the rules run once per page revision (and per minute when a rule reads
//! `now`), not per request. A file is looked up on the very page that lists it and decided with
//! the same facts, so the page and the file's URL cannot disagree. Before either, the origin
//! controls (`origin`) leave out the members a package may not come from.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;

use super::cached::{Page, RenderKey, Rendered};
use super::file::{FileInfo, Located, ServedFile};
use super::{Kind, Repositories, Repository, ServeError};
use crate::access::{Caller, Role};
use crate::config::RepoName;
use crate::policy::enforce::{describe_rules, filter_page_through, Filtered};
use crate::policy::{Decision, FileFacts};
use crate::simple::digest::FileKey;
use crate::simple::filename::DistFilename;
use crate::simple::name::ProjectName;
use crate::simple::negotiate::Format;
use crate::simple::page::{FileEntry, ProjectIndex, ProjectPage};
use crate::simple::part::FilePart;
use crate::simple::render::{
    render_index_html, render_index_json, render_project_html, render_project_json, Links,
};

/// How a page is asked for, beyond the repository and the project.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub format: Format,
    /// How many path segments the page sits below the server root: relative links climb that
    /// many.
    pub depth: usize,
}

/// A file request: `/<repo>/files/<project>/<key>/<filename>[.metadata|.provenance]`, as typed
/// values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    pub repo: RepoName,
    pub project: ProjectName,
    pub key: FileKey,
    pub filename: DistFilename,
    /// The file itself, its PEP 658 core metadata or its PEP 740 provenance.
    pub part: FilePart,
}

impl Repositories {
    /// The list of projects of `repo` (the default repository for `None`).
    pub async fn index_page(
        &self,
        caller: &Caller,
        repo: Option<&RepoName>,
        format: Format,
    ) -> Result<Page<ProjectIndex>, ServeError> {
        let (name, repository) = self.find_for(caller, Role::Read, repo)?;
        let view = repository.index().await?;
        let key = RenderKey {
            format,
            repository: name.as_str(),
            depth: 0,
            minute: 0,
        };
        Ok(view.render(key, |index| {
            let body = match format {
                Format::Json => render_index_json(index),
                Format::HtmlV1 | Format::Html => render_index_html(index, "").into_bytes(),
            };
            Rendered::new(Bytes::from(body), format.content_type())
        }))
    }

    /// The page of `project` in `repo`, with the files the rules deny left out; a page they
    /// leave with no file is a refusal naming every rule involved.
    pub async fn project_page(
        &self,
        caller: &Caller,
        repo: Option<&RepoName>,
        project: &ProjectName,
        request: PageRequest,
    ) -> Result<Page<ProjectPage>, ServeError> {
        let (name, repository) = self.find_for(caller, Role::Read, repo)?;
        let view = self
            .admitted_page(name, repository, project, || {
                format!("every file of {project} in repository {name}")
            })
            .await?;
        let PageRequest { format, depth } = request;
        let now = SystemTime::now();
        let key = RenderKey {
            format,
            repository: name.as_str(),
            depth,
            minute: self.policy_minute(now),
        };
        let page = view.render(key, |page| {
            self.note_ingestion(name, page);
            let links = match &self.public_url {
                Some(base) => Links::absolute(base, name.as_str()),
                None => Links::relative(depth, name.as_str()),
            };
            let render = |page: &ProjectPage| {
                let body = match format {
                    Format::Json => render_project_json(page, &links),
                    Format::HtmlV1 | Format::Html => render_project_html(page, &links).into_bytes(),
                };
                Rendered::new(Bytes::from(body), format.content_type())
            };
            let through = |entry: &FileEntry| repository.through(name, entry);
            match filter_page_through(&self.policy, through, page, now) {
                Filtered::Unchanged => render(page),
                Filtered::Reduced { page, hidden } => {
                    self.counters
                        .hidden_files
                        .fetch_add(hidden as u64, Ordering::Relaxed);
                    render(&page)
                }
                Filtered::Refused { rules } => Rendered::denied(describe_rules(&rules)),
            }
        });
        if let Some(rules) = &page.rendered().denied {
            self.counters.denials.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                repository = %name,
                package = %project,
                rules = %rules,
                "page refused: the download rules allow none of its files"
            );
            return Err(ServeError::Denied {
                what: format!("every file of {project} in repository {name}"),
                rules: rules.clone(),
                cache: Some(page.status),
            });
        }
        Ok(page)
    }

    /// What a client would receive for a file, without fetching it (HEAD). Decided like
    /// [`Repositories::file`].
    pub async fn file_info(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<FileInfo, ServeError> {
        let (repository, located) = self.allowed(caller, request).await?;
        repository.file_info(&located, request.part)
    }

    /// A file, its PEP 658 metadata or its PEP 740 provenance: located on its project's page,
    /// decided by the rules, then opened from the store or fetched.
    pub async fn file(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<ServedFile, ServeError> {
        let (repository, located) = self.allowed(caller, request).await?;
        repository.open(&located, request.part).await
    }

    /// Finds a requested file on its page and applies the rules to it.
    async fn allowed(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<(&Repository, Located), ServeError> {
        let (name, repository) = self.find_for(caller, Role::Read, Some(&request.repo))?;
        let what = || format!("{} (repository {name})", request.part.of(&request.filename));
        let view = self
            .admitted_page(name, repository, &request.project, what)
            .await?;
        let Some(position) = view.cached.value.files.iter().position(|f| {
            f.filename.as_str() == request.filename.as_str() && f.key() == request.key
        }) else {
            // Not on the page: a member the origin controls left out may have offered it.
            if let Some(control) = self.hidden_by(name, repository, &request.project) {
                return Err(self.origin_denied(name, &request.project, what(), control));
            }
            return Err(ServeError::FileNotFound {
                repo: name.clone(),
                project: request.project.clone(),
                filename: request.filename.as_str().to_owned(),
                key: request.key.to_string(),
            });
        };
        let located = Located::new(view.cached, position);
        let entry = located.entry();
        let facts = FileFacts::of_entry(&located.page.value, entry);
        let through = repository.through(name, entry);
        if let Decision::Deny { by } =
            self.policy
                .decide_through(through, &facts, SystemTime::now())
        {
            self.counters.denials.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                repository = %name,
                package = %located.page.value.name,
                version = facts.version.unwrap_or("-"),
                file = facts.filename,
                rule = %by,
                "download refused"
            );
            return Err(ServeError::Denied {
                what: format!("{} (repository {name})", request.part.of(&entry.filename)),
                rules: by.to_string(),
                cache: None,
            });
        }
        Ok((repository, located))
    }

    /// When a rule reads `now`, renderings are redone each minute so that a cooldown ends on
    /// time; otherwise one rendering serves until the page changes.
    fn policy_minute(&self, now: SystemTime) -> u64 {
        if self.policy.uses_now() {
            now.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs() / 60)
                .unwrap_or(0)
        } else {
            0
        }
    }
}
