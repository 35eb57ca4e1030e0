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

use super::cached::{Page, Refusal, RenderKey, Rendered};
use super::file::{FileInfo, Located, ServedFile};
use super::{Kind, Repositories, Repository, ServeError};
use crate::access::{Caller, Role};
use crate::config::Mode;
use crate::config::RepoName;
use crate::metrics::{Denial, DenialKind};
use crate::policy::enforce::{describe_rules, filter_page_through, Filtered, PageDecision};
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

/// The audited rules (or controls) that would have refused a request served anyway, named as a
/// refusal names them; the front sends it as `X-Wheelgate-Audit` and the access log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WouldDeny(pub String);

/// A request served although audited policy would have refused it or left files out of it:
/// what [`Repositories::count_would_deny`] records.
pub(crate) struct WouldDenyOf<'a> {
    /// A `[[rule]]` or an origin control (a `[[package_group]]`) in `mode = "audit"`.
    pub kind: DenialKind,
    pub repository: &'a RepoName,
    pub package: &'a ProjectName,
    pub version: Option<&'a str>,
    /// What was served: `page`, or the file (or its metadata) by name.
    pub what: &'a str,
    /// The rules' or group's bare names, for the metric's `name` label.
    pub names: &'a str,
    /// The same as a refusal names them, for the log.
    pub by: &'a str,
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
        Ok(view
            .render_off_workers(key, |index| {
                let body = match format {
                    Format::Json => render_index_json(index),
                    Format::HtmlV1 | Format::Html => render_index_html(index, "").into_bytes(),
                };
                Rendered::new(Bytes::from(body), format.content_type())
            })
            .await)
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
        let admission = self
            .admitted_page(name, repository, project, || {
                format!("every file of {project} in repository {name}")
            })
            .await?;
        let origin_audit = admission.audited_on_page(name).cloned();
        let view = admission.view;
        let PageRequest { format, depth } = request;
        let now = SystemTime::now();
        let key = RenderKey {
            format,
            repository: name.as_str(),
            depth,
            minute: self.policy_minute(now),
        };
        let mut page = view
            .render_off_workers(key, |page| {
                self.note_ingestion(name, page);
                let links = match &self.public_url {
                    Some(base) => Links::absolute(base, name.as_str()),
                    None => Links::relative(depth, name.as_str()),
                };
                let render = |page: &ProjectPage| {
                    let body = match format {
                        Format::Json => render_project_json(page, &links),
                        Format::HtmlV1 | Format::Html => {
                            render_project_html(page, &links).into_bytes()
                        }
                    };
                    Rendered::new(Bytes::from(body), format.content_type())
                };
                let through = |entry: &FileEntry| repository.through(name, entry);
                let PageDecision {
                    filtered,
                    would_deny,
                } = filter_page_through(&self.policy, through, page, now);
                let rendered = match filtered {
                    Filtered::Unchanged => render(page),
                    Filtered::Reduced { page, hidden } => {
                        self.counters
                            .hidden_files
                            .fetch_add(hidden as u64, Ordering::Relaxed);
                        render(&page)
                    }
                    Filtered::Refused { rules } => Rendered::denied(Refusal {
                        rules: describe_rules(&rules),
                        names: rule_names(&rules),
                    }),
                };
                if would_deny.is_empty() {
                    rendered
                } else {
                    rendered.with_audit(Refusal {
                        rules: describe_rules(&would_deny),
                        names: rule_names(&would_deny),
                    })
                }
            })
            .await;
        if let Some(refusal) = &page.rendered().denied {
            self.metrics().record_denial(Denial {
                repository: name,
                package: project,
                version: None,
                kind: DenialKind::Rule,
                name: &refusal.names,
                mode: Mode::Enforce,
            });
            tracing::info!(
                repository = %name,
                package = %project,
                rules = %refusal.rules,
                "page refused: the download rules allow none of its files"
            );
            return Err(ServeError::Denied {
                what: format!("every file of {project} in repository {name}"),
                rules: refusal.rules.clone(),
                cache: Some(page.status),
            });
        }
        if let Some(audit) = &page.rendered().audited {
            self.count_would_deny(WouldDenyOf {
                kind: DenialKind::Rule,
                repository: name,
                package: project,
                version: None,
                what: "page",
                names: &audit.names,
                by: &audit.rules,
            });
        }
        if let Some(control) = origin_audit {
            let by = control.to_string();
            self.count_would_deny(WouldDenyOf {
                kind: DenialKind::Origin,
                repository: name,
                package: project,
                version: None,
                what: "page",
                names: control.name(),
                by: &by,
            });
            page.audit = Some(WouldDeny(by));
        }
        Ok(page)
    }

    /// What a client would receive for a file, without fetching it (HEAD). Decided like
    /// [`Repositories::file`].
    pub async fn file_info(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<(FileInfo, Option<WouldDeny>), ServeError> {
        let (repository, located, would_deny) = self.allowed(caller, request).await?;
        Ok((repository.file_info(&located, request.part)?, would_deny))
    }

    /// A file, its PEP 658 metadata or its PEP 740 provenance: located on its project's page,
    /// decided by the rules, then opened from the store or fetched. Served with the audited
    /// rules that would have refused it, if any.
    pub async fn file(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<(ServedFile, Option<WouldDeny>), ServeError> {
        let (repository, located, would_deny) = self.allowed(caller, request).await?;
        Ok((repository.open(&located, request.part).await?, would_deny))
    }

    /// Finds a requested file on its page and applies the rules to it; an audited rule that
    /// would have refused it is counted and returned.
    async fn allowed(
        &self,
        caller: &Caller,
        request: &FileRequest,
    ) -> Result<(&Repository, Located, Option<WouldDeny>), ServeError> {
        let (name, repository) = self.find_for(caller, Role::Read, Some(&request.repo))?;
        let what = || format!("{} (repository {name})", request.part.of(&request.filename));
        let admission = self
            .admitted_page(name, repository, &request.project, what)
            .await?;
        let Some(position) = admission.view.cached.value.files.iter().position(|f| {
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
        let origin_audit = admission
            .audited_for(name, &admission.view.cached.value.files[position])
            .cloned();
        let located = Located::new(admission.view.cached, position);
        let entry = located.entry();
        let facts = FileFacts::of_entry(&located.page.value, entry);
        let through = repository.through(name, entry);
        let decision = self
            .policy
            .decide_through(through, &facts, SystemTime::now());
        if let Decision::Deny { by } = &decision {
            self.metrics().record_denial(Denial {
                repository: name,
                package: &located.page.value.name,
                version: facts.version,
                kind: DenialKind::Rule,
                name: by.rule.as_str(),
                mode: Mode::Enforce,
            });
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
        // Served: what audited rules and package groups would have refused is recorded.
        let what = request.part.of(&entry.filename).to_string();
        let mut audits: Vec<String> = Vec::new();
        if let Some(by) = decision.would_deny() {
            let rules = by.to_string();
            self.count_would_deny(WouldDenyOf {
                kind: DenialKind::Rule,
                repository: name,
                package: &request.project,
                version: facts.version,
                what: &what,
                names: by.rule.as_str(),
                by: &rules,
            });
            audits.push(rules);
        }
        if let Some(control) = origin_audit {
            let by = control.to_string();
            self.count_would_deny(WouldDenyOf {
                kind: DenialKind::Origin,
                repository: name,
                package: &request.project,
                version: facts.version,
                what: &what,
                names: control.name(),
                by: &by,
            });
            audits.push(by);
        }
        let audit = (!audits.is_empty()).then(|| WouldDeny(audits.join("; ")));
        Ok((repository, located, audit))
    }

    /// The one place a would-deny is recorded: a request served although audited rules or
    /// audited package groups would have refused it or left files out of it. Counted in
    /// `wheelgate_denials_total{mode="audit"}`, listed on the status page and logged; the
    /// access-log line of the request names them after `audit=`.
    pub(crate) fn count_would_deny(&self, audit: WouldDenyOf<'_>) {
        self.metrics().record_denial(Denial {
            repository: audit.repository,
            package: audit.package,
            version: audit.version,
            kind: audit.kind,
            name: audit.names,
            mode: Mode::Audit,
        });
        tracing::info!(
            kind = audit.kind.as_str(),
            repository = %audit.repository,
            package = %audit.package,
            what = audit.what,
            audit = audit.by,
            "served in audit mode: an audited {} would deny this",
            match audit.kind {
                DenialKind::Rule => "rule",
                DenialKind::Origin => "package group",
            }
        );
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

/// The names of the rules that refused a page, for the denials metric: `a` or `a,b`.
fn rule_names(rules: &[crate::policy::RuleRef]) -> String {
    let mut names: Vec<&str> = rules.iter().map(|r| r.rule.as_str()).collect();
    names.dedup();
    names.join(",")
}
