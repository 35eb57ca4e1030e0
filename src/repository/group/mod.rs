//! A group repository: its members served as one index (SPEC §1). This is what pip and uv are
//! pointed at: one index that holds a team's own packages and the public ones.
//!
//! A group holds no files. It asks the repositories that do (its members, and its member groups'
//! members, flattened in order when the configuration loads) and merges their pages: member
//! order decides which file a filename means, and each file on the merged page records the
//! member it comes from, so that the rules of every repository it passes through judge it and a
//! download opens it there. A member that fails leaves the page to the others, which says so;
//! only when every member fails is the page a failure.
//!
//! A merged page is kept with the member pages it was made from and reused while every member
//! answers with the very same page, so a warm group page costs a lookup per member and one
//! rendering per revision, as a remote page does.

mod merge;

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::StatusCode;
use moka::sync::Cache;

use super::cached::{CacheStatus, Cached, PageView};
use super::file::{FileInfo, Located, ServedFile};
use super::hosted::Hosted;
use super::remote::Remote;
use super::{Description, Kind, ServeError};
use crate::config::RepoName;
use crate::simple::name::ProjectName;
use crate::simple::page::{FileEntry, ProjectIndex, ProjectPage};
use crate::simple::part::FilePart;

pub use merge::{merge_indexes, merge_pages};

/// A repository that holds files itself: what a group's members come down to.
#[derive(Clone)]
pub enum Source {
    Remote(Arc<Remote>),
    Hosted(Arc<Hosted>),
}

impl Kind for Source {
    async fn index(&self) -> Result<PageView<ProjectIndex>, ServeError> {
        match self {
            Source::Remote(remote) => remote.index().await,
            Source::Hosted(hosted) => hosted.index().await,
        }
    }

    async fn project_page(
        &self,
        project: &ProjectName,
    ) -> Result<PageView<ProjectPage>, ServeError> {
        match self {
            Source::Remote(remote) => remote.project_page(project).await,
            Source::Hosted(hosted) => hosted.project_page(project).await,
        }
    }

    fn file_info(&self, located: &Located, part: FilePart) -> Result<FileInfo, ServeError> {
        match self {
            Source::Remote(remote) => remote.file_info(located, part),
            Source::Hosted(hosted) => hosted.file_info(located, part),
        }
    }

    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError> {
        match self {
            Source::Remote(remote) => remote.open(located, part).await,
            Source::Hosted(hosted) => hosted.open(located, part).await,
        }
    }

    fn describe(&self) -> Description {
        match self {
            Source::Remote(remote) => remote.describe(),
            Source::Hosted(hosted) => hosted.describe(),
        }
    }
}

impl Source {
    /// A project's page, or `None` when the repository does not have the project.
    async fn page_if_any(
        &self,
        project: &ProjectName,
    ) -> Result<Option<PageView<ProjectPage>>, ServeError> {
        Ok(match self {
            Source::Remote(remote) => remote.page_if_any(project).await?,
            Source::Hosted(hosted) => hosted.page_if_any(project).await?,
        })
    }

    /// The list of projects, or `None` when the repository has none to give.
    async fn index_if_any(&self) -> Result<Option<PageView<ProjectIndex>>, ServeError> {
        match self.index().await {
            Ok(view) => Ok(Some(view)),
            Err(error) if error.status() == StatusCode::NOT_FOUND => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// A repository a group's files come from, with the way there.
pub struct Member {
    pub name: RepoName,
    pub source: Source,
    /// The repositories a file from this member passes through, whose rules all apply: the
    /// group, the groups between, and the member.
    pub through: Box<[RepoName]>,
}

/// Why a group could not answer.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "no member of group {repo} ({}) has project {project}; check the name, or publish it to \
         a hosted member",
        .members.join(", ")
    )]
    ProjectNotFound {
        repo: RepoName,
        project: ProjectName,
        members: Vec<String>,
    },
    #[error(
        "every member of group {repo} that could have {what} failed: {}; retry when the failed \
         members' upstreams answer again",
        .reasons.join("; ")
    )]
    Unavailable {
        repo: RepoName,
        what: String,
        reasons: Vec<String>,
    },
    #[error(
        "group {repo} has no member {member}, which its page named for {filename}; reload the page"
    )]
    UnknownOrigin {
        repo: RepoName,
        member: String,
        filename: String,
    },
}

impl GroupError {
    pub fn status(&self) -> StatusCode {
        match self {
            GroupError::ProjectNotFound { .. } | GroupError::UnknownOrigin { .. } => {
                StatusCode::NOT_FOUND
            }
            GroupError::Unavailable { .. } => StatusCode::BAD_GATEWAY,
        }
    }

    /// True when every member that could answer failed: their upstreams, after the retries
    /// each makes.
    pub fn from_upstream(&self) -> bool {
        matches!(self, GroupError::Unavailable { .. })
    }
}

/// What one member answered, as a merged page remembers it: a merge is reused only while every
/// member answers the same.
enum Answer<T> {
    Page(Arc<Cached<T>>),
    Absent,
    Failed,
    /// Not asked: the origin controls block the member for this project.
    Blocked,
}

// Not derived: the derive would ask `T: Clone`, and only the `Arc` is cloned.
impl<T> Clone for Answer<T> {
    fn clone(&self) -> Answer<T> {
        match self {
            Answer::Page(cached) => Answer::Page(cached.clone()),
            Answer::Absent => Answer::Absent,
            Answer::Failed => Answer::Failed,
            Answer::Blocked => Answer::Blocked,
        }
    }
}

impl<T> PartialEq for Answer<T> {
    fn eq(&self, other: &Answer<T>) -> bool {
        match (self, other) {
            (Answer::Page(a), Answer::Page(b)) => Arc::ptr_eq(a, b),
            (Answer::Absent, Answer::Absent)
            | (Answer::Failed, Answer::Failed)
            | (Answer::Blocked, Answer::Blocked) => true,
            _ => false,
        }
    }
}

/// A merged page with the answers it was made from.
struct Merged<T> {
    answers: Vec<Answer<T>>,
    cached: Arc<Cached<T>>,
    unavailable: Option<Arc<[RepoName]>>,
}

/// What the members answered for one request.
struct Answers<T> {
    /// Every member answered as when the previous merge was made: `answers` is left empty.
    same: bool,
    answers: Vec<Answer<T>>,
    status: CacheStatus,
    failures: Vec<(RepoName, ServeError)>,
}

/// One group repository.
pub struct Group {
    name: RepoName,
    members: Vec<Member>,
    pages: Cache<ProjectName, Arc<Merged<ProjectPage>>, foldhash::fast::RandomState>,
    index: Mutex<Option<Arc<Merged<ProjectIndex>>>>,
}

impl Group {
    /// `members` flattened, in order; `memory` bounds the merged pages kept.
    pub fn new(name: RepoName, members: Vec<Member>, memory: u64) -> Group {
        Group {
            name,
            members,
            pages: Cache::builder()
                .max_capacity(memory)
                .weigher(|_, merged: &Arc<Merged<ProjectPage>>| merged.cached.weight)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            index: Mutex::new(None),
        }
    }

    /// The member a file on this group's page comes from.
    pub fn member_of(&self, entry: &FileEntry) -> Result<&Member, GroupError> {
        let origin = entry.origin.as_ref();
        origin
            .and_then(|origin| self.members.iter().find(|m| m.name == origin.repository))
            .ok_or_else(|| GroupError::UnknownOrigin {
                repo: self.name.clone(),
                member: origin.map_or_else(|| "-".to_owned(), |o| o.repository.to_string()),
                filename: entry.filename.as_str().to_owned(),
            })
    }

    /// The members, flattened, in order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Takes in what other replicas published of `project` to the hosted members (see
    /// `hosted::sync`), so that the origin records are current before they decide which members
    /// to ask.
    pub(crate) async fn sync_hosted(&self, project: &ProjectName) {
        for member in &self.members {
            if let Source::Hosted(hosted) = &member.source {
                hosted.sync(project).await;
            }
        }
    }

    fn member_names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.to_string()).collect()
    }

    /// Asks every member, in order, with `ask`, but those `blocked` marks (by position; an
    /// empty slice blocks none). While the answers are those `previous` was made from, nothing
    /// is collected: a warm request allocates nothing here.
    async fn ask<'s, T, F>(
        &'s self,
        previous: Option<&Merged<T>>,
        blocked: &[bool],
        ask: impl Fn(&'s Source) -> F,
    ) -> Answers<T>
    where
        F: std::future::Future<Output = Result<Option<PageView<T>>, ServeError>>,
    {
        let mut asked = Answers {
            same: previous.is_some(),
            answers: Vec::new(),
            status: CacheStatus::Hit,
            failures: Vec::new(),
        };
        for (index, member) in self.members.iter().enumerate() {
            let answer = if blocked.get(index) == Some(&true) {
                Answer::Blocked
            } else {
                match ask(&member.source).await {
                    Ok(Some(view)) => {
                        asked.status = worse(asked.status, view.status);
                        Answer::Page(view.cached)
                    }
                    Ok(None) => Answer::Absent,
                    Err(error) if error.status() == StatusCode::NOT_FOUND => Answer::Absent,
                    Err(error) => {
                        asked.failures.push((member.name.clone(), error));
                        Answer::Failed
                    }
                }
            };
            if let (true, Some(previous)) = (asked.same, previous) {
                if previous.answers.get(index) == Some(&answer) {
                    continue;
                }
                asked.same = false;
                asked.answers.reserve(self.members.len());
                asked
                    .answers
                    .extend(previous.answers[..index].iter().cloned());
            }
            asked.answers.push(answer);
        }
        asked
    }

    /// The page of `project`: the pages of the members not `blocked` (by position, see
    /// [`Group::members`]; the origin controls decide) merged. Members blocked are not asked.
    pub(crate) async fn page(
        &self,
        project: &ProjectName,
        blocked: &[bool],
    ) -> Result<PageView<ProjectPage>, GroupError> {
        let previous = self.pages.get(project);
        let asked = self
            .ask(previous.as_deref(), blocked, |source| {
                source.page_if_any(project)
            })
            .await;
        if let (true, Some(merged)) = (asked.same, &previous) {
            return Ok(self.view(merged, asked.status));
        }
        let pages: Vec<(&RepoName, &ProjectPage)> = self
            .members
            .iter()
            .zip(&asked.answers)
            .filter_map(|(member, answer)| match answer {
                Answer::Page(cached) => Some((&member.name, &*cached.value)),
                _ => None,
            })
            .collect();
        let what = format!("project {project}");
        if pages.is_empty() {
            // A member that failed may have it: that is an outage, not an answer.
            if !asked.failures.is_empty() {
                return Err(self.failed(&what, &asked.failures));
            }
            return Err(GroupError::ProjectNotFound {
                repo: self.name.clone(),
                project: project.clone(),
                members: self.member_names(),
            });
        }
        let unavailable = self.unavailable(&what, &asked.failures);
        let weight = member_weight(&asked.answers);
        // Merging big pages is heavy work, done off the async workers like their rendering.
        let page = if weight < super::heavy::HEAVY_WEIGHT {
            merge_pages(project, &pages)
        } else {
            super::heavy::in_place(|| merge_pages(project, &pages)).await
        };
        let merged = Arc::new(Merged {
            cached: Arc::new(Cached::new(
                Arc::new(page),
                SystemTime::now(),
                asked.status,
                weight,
            )),
            answers: asked.answers,
            unavailable,
        });
        self.pages.insert(project.clone(), merged.clone());
        Ok(self.view(&merged, asked.status))
    }

    /// The list of projects: every member's.
    async fn project_list(&self) -> Result<PageView<ProjectIndex>, GroupError> {
        let previous = crate::lock(&self.index).clone();
        let asked = self
            .ask(previous.as_deref(), &[], |source| source.index_if_any())
            .await;
        if let (true, Some(merged)) = (asked.same, &previous) {
            return Ok(self.view(merged, asked.status));
        }
        let indexes: Vec<&ProjectIndex> = asked
            .answers
            .iter()
            .filter_map(|answer| match answer {
                Answer::Page(cached) => Some(&*cached.value),
                _ => None,
            })
            .collect();
        let what = "the list of projects";
        if indexes.is_empty() && !asked.failures.is_empty() {
            return Err(self.failed(what, &asked.failures));
        }
        let unavailable = self.unavailable(what, &asked.failures);
        let index = merge_indexes(&indexes);
        let weight = index.projects.len() * 64 + 1024;
        let merged = Arc::new(Merged {
            cached: Arc::new(Cached::new(
                Arc::new(index),
                SystemTime::now(),
                asked.status,
                weight,
            )),
            answers: asked.answers,
            unavailable,
        });
        *crate::lock(&self.index) = Some(merged.clone());
        Ok(self.view(&merged, asked.status))
    }

    /// Every member that could have answered failed: a 502 naming each failure.
    fn failed(&self, what: &str, failures: &[(RepoName, ServeError)]) -> GroupError {
        GroupError::Unavailable {
            repo: self.name.clone(),
            what: what.to_owned(),
            reasons: failures
                .iter()
                .map(|(member, error)| format!("{member}: {error}"))
                .collect(),
        }
    }

    /// The members a page is served without, because they failed: logged, and named.
    fn unavailable(
        &self,
        what: &str,
        failures: &[(RepoName, ServeError)],
    ) -> Option<Arc<[RepoName]>> {
        if failures.is_empty() {
            return None;
        }
        for (member, error) in failures {
            tracing::warn!(
                repository = %self.name,
                member = %member,
                "{what} is served without member {member}, which failed: {error}"
            );
        }
        Some(failures.iter().map(|(name, _)| name.clone()).collect())
    }

    fn view<T>(&self, merged: &Merged<T>, status: CacheStatus) -> PageView<T> {
        PageView {
            cached: merged.cached.clone(),
            status,
            unavailable: merged.unavailable.clone(),
        }
    }
}

/// The memory a merged page holds: about what its members' pages hold.
fn member_weight<T>(answers: &[Answer<T>]) -> usize {
    answers
        .iter()
        .map(|answer| match answer {
            Answer::Page(cached) => cached.weight as usize,
            _ => 0,
        })
        .sum::<usize>()
        .max(1024)
}

/// The status a response states when several pages went into it: the least fresh.
fn worse(a: CacheStatus, b: CacheStatus) -> CacheStatus {
    fn rank(status: CacheStatus) -> u8 {
        match status {
            CacheStatus::Hit => 0,
            CacheStatus::Revalidated => 1,
            CacheStatus::Miss => 2,
            CacheStatus::Stale => 3,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

impl Kind for Group {
    async fn index(&self) -> Result<PageView<ProjectIndex>, ServeError> {
        Ok(self.project_list().await?)
    }

    async fn project_page(
        &self,
        project: &ProjectName,
    ) -> Result<PageView<ProjectPage>, ServeError> {
        Ok(self.page(project, &[]).await?)
    }

    fn file_info(&self, located: &Located, part: FilePart) -> Result<FileInfo, ServeError> {
        self.member_of(located.entry())?
            .source
            .file_info(located, part)
    }

    async fn open(&self, located: &Located, part: FilePart) -> Result<ServedFile, ServeError> {
        // The entry is the member's own, with its origin added: the member opens it as its own.
        self.member_of(located.entry())?
            .source
            .open(located, part)
            .await
    }

    fn describe(&self) -> Description {
        Description {
            kind: "group",
            detail: format!("members, first wins: {}", self.member_names().join(", ")),
            online: true,
        }
    }
}
