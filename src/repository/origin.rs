//! Where the repository layer applies the origin controls (SPEC §6, `crate::origin::package`):
//! before a page is fetched or merged, when a file is looked up, and before an upload is
//! committed. Pages, files, `.metadata`, provenance and uploads all come through here, so they
//! agree for every repository and every spelling of a name (names are [`ProjectName`]s,
//! normalised before they reach this layer).
//!
//! The decision is per package and per way a file travels (the served repository, the groups
//! between, the repository that holds it), not per file: every version a member offers of a
//! package came in the same way. So a blocked member is left out before anything is fetched:
//! a group does not ask it for its page (a blocked file is never fetched upstream, nor its
//! page), and a remote blocked for a package is not asked at all. A request for a file of a
//! blocked member, which no page lists, is a 403 naming the control rather than a 404, and so is
//! a page that the controls leave without any member.
//!
//! Recording: a page served with files from a remote repository records the package's first
//! ingestion through that remote (once per rendering; the store keeps the first). With
//! replicas sharing a bucket, a new record is shared there, and an upload first takes in the
//! records other replicas made (`crate::shared`).

use std::str::FromStr;
use std::time::SystemTime;

use pep440_rs::Version;

use super::cached::PageView;
use super::group::Source;
use super::hosted::HostedError;
use super::serve::WouldDenyOf;
use super::{Kind, Repositories, Repository, ServeError};
use crate::config::{Mode, RepoName};
use crate::metrics::{Denial, DenialKind};
use crate::origin::package::{Control, Verdict};
use crate::simple::name::ProjectName;
use crate::simple::page::{FileEntry, ProjectPage};

/// What the origin controls leave of a repository for one package.
pub(super) struct Admitted {
    /// For a group, by member position: the members left out (empty when none is).
    pub blocked: Vec<bool>,
    /// The control that left out the first member left out (or the repository itself).
    pub control: Option<Control>,
    /// The repositories holding files (the members, or the repository itself) that a package
    /// group in audit mode would have left out, with that group: served, and recorded as
    /// would-denies when their files are.
    pub audited: Vec<(RepoName, Control)>,
}

/// A page the origin controls admit, with the audited controls that would have left some of
/// its members out.
pub(super) struct Admission {
    pub view: PageView<ProjectPage>,
    pub audited: Vec<(RepoName, Control)>,
}

impl Admission {
    /// The audited control that would have left out the repository holding `entry` (a
    /// group's member, or the repository `name` itself).
    pub fn audited_for(&self, name: &RepoName, entry: &FileEntry) -> Option<&Control> {
        let holder = entry
            .origin
            .as_ref()
            .map_or(name, |origin| &origin.repository);
        self.audited
            .iter()
            .find(|(source, _)| source == holder)
            .map(|(_, control)| control)
    }

    /// The first audited control whose repository has files on the page.
    pub fn audited_on_page(&self, name: &RepoName) -> Option<&Control> {
        self.view
            .cached
            .value
            .files
            .iter()
            .find_map(|entry| self.audited_for(name, entry))
    }
}

impl Repositories {
    /// Which members of `repository` (called `name`) may offer `project`.
    pub(super) fn admitted(
        &self,
        name: &RepoName,
        repository: &Repository,
        project: &ProjectName,
    ) -> Admitted {
        let mut admitted = Admitted {
            blocked: Vec::new(),
            control: None,
            audited: Vec::new(),
        };
        match repository {
            Repository::Source(Source::Hosted(_)) => {}
            Repository::Source(Source::Remote(_)) => {
                match self.origins.serve(std::slice::from_ref(name), project) {
                    Verdict::Allowed => {}
                    Verdict::Blocked(control) => admitted.control = Some(control),
                    Verdict::Audited(control) => admitted.audited.push((name.clone(), control)),
                }
            }
            Repository::Group(group) => {
                for (index, member) in group.members().iter().enumerate() {
                    match self.origins.serve(&member.through, project) {
                        Verdict::Allowed => {}
                        Verdict::Blocked(control) => {
                            if admitted.blocked.is_empty() {
                                admitted.blocked = vec![false; group.members().len()];
                            }
                            admitted.blocked[index] = true;
                            admitted.control.get_or_insert(control);
                        }
                        Verdict::Audited(control) => {
                            admitted.audited.push((member.name.clone(), control))
                        }
                    }
                }
            }
        }
        admitted
    }

    /// The page of `project` in `repository`, with the members the origin controls block left
    /// out before they are asked. A page they leave with no member is a refusal naming the
    /// control.
    pub(super) async fn admitted_page(
        &self,
        name: &RepoName,
        repository: &Repository,
        project: &ProjectName,
        what: impl FnOnce() -> String,
    ) -> Result<Admission, ServeError> {
        if let Repository::Group(group) = repository {
            group.sync_hosted(project).await;
        }
        let Admitted {
            blocked,
            control,
            audited,
        } = self.admitted(name, repository, project);
        let page = match (repository, control) {
            // A remote blocked for the package is not asked.
            (Repository::Source(_), Some(control)) => {
                return Err(self.origin_denied(name, project, what(), control))
            }
            (Repository::Source(source), None) => {
                let view = source.project_page(project).await?;
                return Ok(Admission { view, audited });
            }
            (Repository::Group(group), control) => (group.page(project, &blocked).await, control),
        };
        match page {
            (Ok(view), _) => Ok(Admission { view, audited }),
            // No member left has the project, and the controls left some out: they refuse.
            (Err(error), Some(control)) if error.status() == http::StatusCode::NOT_FOUND => {
                Err(self.origin_denied(name, project, what(), control))
            }
            (Err(error), _) => Err(error.into()),
        }
    }

    /// The refusal of `what` by `control`, counted and logged: every origin denial goes
    /// through here.
    pub(super) fn origin_denied(
        &self,
        repository: &RepoName,
        project: &ProjectName,
        what: String,
        control: Control,
    ) -> ServeError {
        self.count_origin_denial(repository, project, &control);
        ServeError::Denied {
            what,
            rules: control.to_string(),
            cache: None,
        }
    }

    /// Counts one origin denial. The one place origin denials are counted (the counter
    /// `wheelgate_denials_total{kind="origin"}` hangs here).
    fn count_origin_denial(&self, repository: &RepoName, project: &ProjectName, control: &Control) {
        self.metrics().record_denial(Denial {
            repository,
            package: project,
            version: None,
            kind: DenialKind::Origin,
            name: control.name(),
            mode: Mode::Enforce,
        });
        tracing::info!(
            repository = %repository,
            package = %project,
            control = %control,
            "refused by an origin control"
        );
    }

    /// For a file that is not on the page of `project`: the control that left out a member
    /// that might have offered it.
    pub(super) fn hidden_by(
        &self,
        name: &RepoName,
        repository: &Repository,
        project: &ProjectName,
    ) -> Option<Control> {
        self.admitted(name, repository, project).control
    }

    /// Records the first ingestion of `page`'s project through each remote repository whose
    /// files it lists (`name` itself when it is a remote, else the members the files come from).
    pub(super) fn note_ingestion(&self, name: &RepoName, page: &ProjectPage) {
        let mut noted: Vec<&RepoName> = Vec::new();
        for entry in &page.files {
            let remote = entry.origin.as_ref().map_or(name, |o| &o.repository);
            if noted.contains(&remote) || !self.origins.is_remote(remote) {
                continue;
            }
            noted.push(remote);
            match self.store.record_ingestion(
                remote.as_str(),
                page.name.as_str(),
                SystemTime::now(),
            ) {
                Ok(None) => {}
                // A record made here just now goes to the bucket too, for the other replicas;
                // in the background: the page waits for nothing.
                Ok(Some(record)) => {
                    if let Some(shared) = self.store.shared().cloned() {
                        let (remote, project) = (remote.to_string(), page.name.to_string());
                        tokio::spawn(async move {
                            if let Err(error) =
                                shared.share_origin(&remote, &project, &record).await
                            {
                                tracing::warn!(
                                    repository = %remote,
                                    package = %project,
                                    %error,
                                    "cannot share the package's first ingestion with the other \
                                     replicas now; it is shared when the bucket answers again"
                                );
                            }
                        });
                    }
                }
                Err(error) => tracing::warn!(
                    repository = %remote,
                    package = %page.name,
                    %error,
                    "cannot record the package's first ingestion; publishing it is not blocked by it"
                ),
            }
        }
    }

    /// With replicas sharing a bucket, takes in the records other replicas made of `project` in
    /// the remotes beside `hosted`, before the controls decide on its publishing here: a name
    /// one replica ingested from an upstream is not published through another. The bucket
    /// unreachable refuses the upload (503), as its claim in the bucket would.
    async fn take_in_shared_origins(
        &self,
        hosted: &RepoName,
        project: &ProjectName,
    ) -> Result<(), ServeError> {
        let Some(shared) = self.store.shared() else {
            return Ok(());
        };
        if self
            .store
            .origin_allowances(hosted.as_str(), project.as_str())
            .is_some()
        {
            // Published here before: this repository's own record decides.
            return Ok(());
        }
        for remote in self.origins.remotes_beside(hosted) {
            if self
                .store
                .origin_allowances(remote.as_str(), project.as_str())
                .is_some()
            {
                continue;
            }
            let found = shared
                .origin(remote.as_str(), project.as_str())
                .await
                .map_err(|error| HostedError::SharedUnavailable {
                    repo: hosted.clone(),
                    reason: error.to_string(),
                })?;
            if let Some(record) = found {
                self.store
                    .record_origin(remote.as_str(), project.as_str(), record)
                    .map_err(|source| HostedError::Store {
                        repo: hosted.clone(),
                        source,
                    })?;
            }
        }
        Ok(())
    }

    /// Whether `version` of `project` may be published to the hosted repository `hosted`: not
    /// when a control blocks publishing (403), nor when an upstream allowed through a group
    /// with `hosted` already offers the version (409).
    pub(super) async fn may_publish(
        &self,
        hosted: &RepoName,
        project: &ProjectName,
        version: &str,
        filename: &str,
    ) -> Result<(), ServeError> {
        self.take_in_shared_origins(hosted, project).await?;
        match self.origins.publish(hosted, project) {
            Verdict::Allowed => {}
            Verdict::Blocked(control) => {
                return Err(self.origin_denied(
                    hosted,
                    project,
                    format!("publishing {filename} to repository {hosted}"),
                    control,
                ))
            }
            Verdict::Audited(control) => {
                let by = control.to_string();
                self.count_would_deny(WouldDenyOf {
                    kind: DenialKind::Origin,
                    repository: hosted,
                    package: project,
                    version: Some(version),
                    what: filename,
                    names: control.name(),
                    by: &by,
                });
            }
        }
        let wanted = Version::from_str(version).ok();
        for offering in self.origins.offering_upstreams(hosted, project) {
            let Ok((_, Repository::Source(source))) = self.find(Some(&offering.remote)) else {
                continue;
            };
            let page = match source.project_page(project).await {
                Ok(page) => page,
                Err(error) if error.status() == http::StatusCode::NOT_FOUND => continue,
                Err(error) => {
                    tracing::warn!(
                        repository = %offering.remote,
                        package = %project,
                        %error,
                        "cannot tell whether the upstream offers the version being published"
                    );
                    continue;
                }
            };
            let offered = page.cached.value.files.iter().any(|entry| {
                entry.filename.version().is_some_and(|theirs| {
                    theirs == version
                        || matches!((&wanted, Version::from_str(theirs)), (Some(ours), Ok(theirs)) if *ours == theirs)
                })
            });
            if offered {
                return Err(ServeError::OfferedUpstream {
                    repo: hosted.clone(),
                    project: project.clone(),
                    version: version.to_owned(),
                    upstream: offering.remote,
                    group: offering.group,
                });
            }
        }
        Ok(())
    }
}
