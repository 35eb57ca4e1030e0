//! `wheelgate origin explain --repo R PACKAGE [VERSION]`: why repository R serves a package from
//! where it does. It prints the package-level controls of every repository that bears on R (the
//! setting in force and where it came from: the first upload, the first ingestion or a
//! `[[package_origin]]`), and for a version, which member R would serve it from, or why none.
//!
//! It reads the store, which a running server locks: the command rides on the cache commands'
//! channel (`crate::cache`: the admin socket, or the store opened directly when no server runs),
//! so both paths run this same function. What a member offers is what the store holds (hosted
//! uploads, the stored pages of remote repositories): nothing is fetched.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;

use pep440_rs::Version;
use serde::{Deserialize, Serialize};

use super::package::{
    PackageControl, PackageOrigins, Restriction, Setting, SettingSource, Verdict,
};
use super::record::OriginEvent;
use super::GroupExplanation;
use crate::cache::CacheError;
use crate::config::Mode;
use crate::config::{Config, RepoName};
use crate::simple::name::ProjectName;
use crate::simple::page::{parse_project_html, parse_project_json};
use crate::store::{PageKey, Store};

/// What `origin explain` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginReport {
    pub text: String,
}

impl std::fmt::Display for OriginReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Whether a repository holds a version, as far as the store knows.
enum Offer {
    Has,
    HasNot,
    /// A remote whose page is not stored: it would be asked.
    Unknown,
}

/// The explanation for `package` (any spelling) in `repository`, and `version` if given.
pub fn explain(
    store: &Store,
    config: &Config,
    repository: &str,
    package: &str,
    version: Option<&str>,
) -> Result<OriginReport, CacheError> {
    let unknown = || CacheError::UnknownRepository {
        name: repository.to_owned(),
        known: config
            .repositories
            .iter()
            .map(|r| r.name.to_string())
            .collect::<Vec<_>>()
            .join(", "),
    };
    let repo = RepoName::parse(repository).map_err(|_| unknown())?;
    if config.repository(&repo).is_none() {
        return Err(unknown());
    }
    let project = ProjectName::parse(package).map_err(|source| CacheError::Project {
        raw: package.to_owned(),
        source,
    })?;
    let origins = PackageOrigins::new(
        config,
        Arc::new(store.clone()),
        Arc::new(config.package_groups.clone()),
    );
    let mut text = String::new();
    let _ = writeln!(text, "package {project} in repository {repo}");
    let _ = writeln!(text, "package-level origin controls:");
    for name in origins.relevant(&repo) {
        let control = origins.control(&name, &project);
        let _ = writeln!(text, "  {}", describe(&control));
    }
    describe_group(&mut text, &config.package_groups.explain(&project));
    if let Some(version) = version {
        let _ = writeln!(text, "version {version}:");
        let mut served_from = None;
        let mut reasons = Vec::new();
        for (source, through) in origins.sources(&repo) {
            let verdict = origins.serve(&through, &project);
            let line = match &verdict {
                Verdict::Blocked(control) => format!("{source}: blocked by {control}"),
                Verdict::Allowed | Verdict::Audited(_) => {
                    match offers(store, &origins, &source, &project, version)? {
                        Offer::Has => {
                            served_from.get_or_insert(source.clone());
                            format!("{source}: has {version}")
                        }
                        Offer::HasNot => format!("{source}: does not have {version}"),
                        Offer::Unknown => {
                            served_from.get_or_insert(source.clone());
                            format!(
                                "{source}: allowed; its page of {project} is not in the store, so \
                             its upstream would be asked"
                            )
                        }
                    }
                }
            };
            let line = match verdict {
                Verdict::Audited(control) => {
                    format!("{line} (audit mode: {control}, so it is served anyway)")
                }
                _ => line,
            };
            let _ = writeln!(text, "  {line}");
            reasons.push(line);
        }
        let _ = match served_from {
            Some(source) => writeln!(text, "{version}: served by {repo} from {source}"),
            None => writeln!(
                text,
                "{version}: not served by {repo}: {}",
                reasons.join("; ")
            ),
        };
    }
    Ok(OriginReport { text })
}

/// The package's group and what each of its restrictions comes to, with the group each was
/// inherited from.
fn describe_group(text: &mut String, group: &GroupExplanation) {
    let _ = write!(text, "package group: {}", group.group);
    if group.mode == Mode::Audit {
        let _ = write!(
            text,
            " (mode audit: its blocks are only logged and counted)"
        );
    }
    let _ = writeln!(text);
    for detail in [&group.description, &group.contact].into_iter().flatten() {
        let _ = writeln!(text, "  {detail}");
    }
    for restriction in &group.restrictions {
        let from = if restriction.inherited {
            format!("inherited from {}", restriction.from)
        } else {
            format!("set by {}", restriction.from)
        };
        let _ = writeln!(
            text,
            "  {}: {} (mode {}, {from})",
            restriction.restriction, restriction.effective, restriction.mode
        );
    }
}

/// One repository's line: both settings and where they came from.
fn describe(control: &PackageControl) -> String {
    let setting = |restriction: Restriction| {
        let Setting { allowance, source } = control.setting(restriction);
        let key = match restriction {
            Restriction::Publish => "publish",
            Restriction::Upstream => "upstream",
        };
        let from = match source {
            SettingSource::Default => "default".to_owned(),
            SettingSource::Configured { line } => format!("[[package_origin]] at line {line}"),
            SettingSource::Recorded(record) => {
                let date = chrono::DateTime::<chrono::Utc>::from(record.time())
                    .format("%Y-%m-%d %H:%M:%S UTC");
                match (record.event, &record.version) {
                    (OriginEvent::FirstUpload, Some(version)) => {
                        format!("first upload of {version} on {date}")
                    }
                    (OriginEvent::FirstUpload, None) => format!("first upload on {date}"),
                    (OriginEvent::FirstIngestion, _) => format!("first ingestion on {date}"),
                }
            }
        };
        format!("{key} {} ({from})", allowance.as_str())
    };
    format!(
        "{}: {}, {}",
        control.repository,
        setting(Restriction::Publish),
        setting(Restriction::Upstream)
    )
}

/// Whether `source` (a remote or hosted repository) holds `version` of `project`.
fn offers(
    store: &Store,
    origins: &PackageOrigins,
    source: &RepoName,
    project: &ProjectName,
    version: &str,
) -> Result<Offer, CacheError> {
    let wanted = Version::from_str(version).ok();
    let same = |theirs: &str| {
        theirs == version
            || matches!((&wanted, Version::from_str(theirs)), (Some(ours), Ok(theirs)) if *ours == theirs)
    };
    if !origins.is_remote(source) {
        let uploads = store.uploads(source.as_str(), project.as_str())?;
        return Ok(if uploads.iter().any(|u| same(&u.version)) {
            Offer::Has
        } else {
            Offer::HasNot
        });
    }
    let key = PageKey {
        repository: source.to_string(),
        project: Some(project.to_string()),
    };
    let Some(stored) = store.page(&key)? else {
        return Ok(Offer::Unknown);
    };
    let Ok(url) = url::Url::parse(&stored.final_url) else {
        return Ok(Offer::Unknown);
    };
    let json = stored
        .content_type
        .as_deref()
        .is_some_and(|t| t.contains("json"));
    let page = if json {
        parse_project_json(&stored.body, &url, project)
    } else {
        parse_project_html(&stored.body, &url, project)
    };
    Ok(match page {
        Ok(page)
            if page
                .files
                .iter()
                .any(|f| f.filename.version().is_some_and(same)) =>
        {
            Offer::Has
        }
        Ok(_) => Offer::HasNot,
        Err(_) => Offer::Unknown,
    })
}
