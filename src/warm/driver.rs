//! One warm run against one wheelgate: read each project's page, pick the wanted files, download
//! them a few at a time, tally.
//!
//! Everything goes through wheelgate's HTTP surface, exactly as pip and uv would reach it, so the
//! pages and files cached are the ones they will ask for, under the same rules: a file the rules
//! deny is refused here too and counted as denied. Pages first (one per project, however many
//! requirements name it), then the files; a file named twice is fetched once.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures_util::StreamExt as _;
use url::Url;

use super::client::{CacheState, FetchError, WarmClient};
use super::input::{Requirement, Wanted, WarmList};
use super::progress::{Outcome, Progress, Summary};
use super::select::{select, FileJob};
use crate::simple::name::ProjectName;
use crate::simple::page::{parse_project_json, ProjectPage};

/// A project's page, parsed, with the URL it was read from; or why there is none.
type PageResult = Result<(ProjectPage, Url), FetchError>;

/// Warms every entry of `list` from the repository whose simple index is `index` (ending in `/`),
/// `jobs` requests at a time.
pub async fn run(
    client: &WarmClient,
    index: &Url,
    list: &WarmList,
    jobs: usize,
    progress: Arc<Progress>,
) -> Summary {
    for skipped in &list.skipped {
        progress.skipped(&skipped.what, skipped.reason);
    }
    let mut by_project: BTreeMap<&ProjectName, Vec<&Requirement>> = BTreeMap::new();
    for requirement in &list.requirements {
        by_project
            .entry(&requirement.project)
            .or_default()
            .push(requirement);
    }
    progress.stage("pages", by_project.len());
    let pages: Vec<(Vec<&Requirement>, PageResult)> = futures_util::stream::iter(by_project)
        .map(|(project, requirements)| {
            let progress = progress.clone();
            async move {
                let page = page(client, index, project).await;
                progress.step(project.as_str());
                (requirements, page)
            }
        })
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;

    // Outcomes known without a download (a page that failed, a file the page cannot give)
    // are reported in the files stage, so that its count covers every file tallied.
    let mut files = Vec::new();
    let mut known = Vec::new();
    let mut seen = HashSet::new();
    for (requirements, page) in pages {
        for requirement in requirements {
            match &page {
                Ok((page, page_url)) => {
                    let selection = select(requirement, page, page_url);
                    known.extend(
                        selection
                            .problems
                            .into_iter()
                            .map(|problem| (problem.what, Outcome::Failed(problem.reason))),
                    );
                    files.extend(
                        selection
                            .jobs
                            .into_iter()
                            .filter(|job| seen.insert(job.url.clone())),
                    );
                }
                Err(error) => known.extend(unlisted(requirement, error)),
            }
        }
    }

    progress.stage("files", known.len() + files.len());
    for (what, outcome) in &known {
        progress.done(what, outcome);
    }
    futures_util::stream::iter(files)
        .for_each_concurrent(jobs.max(1), |job| {
            let progress = progress.clone();
            async move {
                let outcome = warm_file(client, &job).await;
                progress.done(&job.filename, &outcome);
            }
        })
        .await;
    progress.finish()
}

/// A project's page.
async fn page(client: &WarmClient, index: &Url, project: &ProjectName) -> PageResult {
    let url = index.join(&format!("{project}/")).map_err(|e| {
        FetchError::Unusable(format!("cannot build the page URL of {project}: {e}"))
    })?;
    let body = client.page(&url).await?;
    let page = parse_project_json(&body, &url, project)
        .map_err(|e| FetchError::Unusable(format!("not a usable PEP 691 JSON page: {e}")))?;
    Ok((page, url))
}

/// The outcomes of a requirement whose page could not be had: each locked file (or the pinned
/// requirement as one) is denied when the rules refused the whole page, failed otherwise.
fn unlisted(requirement: &Requirement, error: &FetchError) -> Vec<(String, Outcome)> {
    let outcome = match error {
        FetchError::Denied(reason) => Outcome::Denied(reason.clone()),
        other => Outcome::Failed(format!("its page: {other}")),
    };
    match &requirement.wanted {
        Wanted::Files(files) => files
            .iter()
            .map(|file| (file.filename.as_str().to_owned(), outcome.clone()))
            .collect(),
        Wanted::Version { version, .. } => {
            vec![(format!("{}{version}", requirement.project), outcome)]
        }
    }
}

/// Downloads a file and its metadata, checking both digests.
async fn warm_file(client: &WarmClient, job: &FileJob) -> Outcome {
    let file = match client.download(&job.url).await {
        Ok(file) => file,
        Err(FetchError::Denied(reason)) => return Outcome::Denied(reason),
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    if !job.expected.is_empty() && !job.expected.contains(&file.sha256) {
        return Outcome::Failed(format!(
            "wheelgate served bytes with sha256 {}, not the {} expected",
            file.sha256,
            job.expected
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let mut fetched = file.state == CacheState::Fetched;
    let mut bytes = file.size;
    if let Some(metadata) = &job.metadata {
        match client.download(&metadata.url).await {
            Ok(got) if metadata.sha256.is_some_and(|want| want != got.sha256) => {
                return Outcome::Failed(format!(
                    "its .metadata has sha256 {}, not the {} its page declares",
                    got.sha256,
                    metadata.sha256.map(|d| d.to_string()).unwrap_or_default()
                ))
            }
            Ok(got) => {
                fetched |= got.state == CacheState::Fetched;
                bytes += got.size;
            }
            Err(FetchError::Denied(reason)) => return Outcome::Denied(reason),
            Err(error) => return Outcome::Failed(format!("its .metadata: {error}")),
        }
    }
    if fetched {
        Outcome::Fetched { bytes }
    } else {
        Outcome::Cached { bytes }
    }
}
