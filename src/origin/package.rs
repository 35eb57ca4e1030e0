//! Package-level origin controls (SPEC §6): the one decision of where a package's versions may
//! come from, for one repository and package, that pages, file downloads, `.metadata`,
//! provenance and uploads all ask.
//!
//! What is recorded (in the store, `crate::store`), per repository and package:
//! - the first version **published** to a hosted repository H records (H, package) = publish
//!   ALLOW, upstream BLOCK: from then on no file of that package whose origin is a remote
//!   repository is served through any group that contains H (directly or in a nested group);
//! - the first time a page of a remote repository M that lists files of the package is **served**
//!   to a client (through M itself, or through a group, with M's files still on the page after
//!   the origin decision) records (M, package) = publish BLOCK, upstream ALLOW: that is what
//!   "ingested" means here. A hosted repository that shares a group with M and has not published
//!   the name yet then refuses to publish it.
//!
//! `[[package_origin]]` overrides a record key by key (`publish`, `upstream`), and may name a
//! package nothing was recorded for (a reservation). What each setting governs:
//! - `upstream` of a hosted H: files from remotes, through every group that contains H;
//! - `upstream` of a group G: files from remotes, through G (and the groups that contain G as a
//!   member in the chain a file travels);
//! - `upstream` of a remote M: M's own files, directly and through every group;
//! - `publish` of a hosted H: uploads to H. Unless the configuration says so for H, H's own record
//!   decides once it has one; before its first upload, the records of the remotes sharing a
//!   group with H do (first ingested elsewhere: BLOCK).
//!
//! A direct request to a remote repository is judged only by that remote's own control: a remote
//! is an upstream index by itself, and nothing on its own page shadows a private name. Files of
//! hosted repositories are never hidden: origin controls decide how new versions enter.
//!
//! A BLOCK at the package level or at the group level wins: [`PackageOrigins`] asks the group
//! level (`[[package_group]]`, [`PackageGroups`]) through one slot, [`GroupLevel`], once the
//! package level allows. What the group level is asked, for a file travelling from the
//! repository that holds it through the groups that serve it: `external_upstream` for the
//! remote a file comes from, and `internal_upstream` for each group it passes through (whether
//! it comes from a remote or a hosted member); for an upload, `publish` for the hosted
//! repository. A group in `mode = "audit"` does not refuse: its block is a [`Verdict::Audited`],
//! served, counted and logged as a would-deny.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::config::{Config, Mode, PackageOriginConfig, RepoName, RepositoryKind};
use crate::origin::record::{Allowance, OriginEvent, OriginRecord};
use crate::origin::{GroupVerdict, PackageGroups, Restriction as Way};
use crate::simple::name::ProjectName;
use crate::store::Store;

/// Where the stored records come from: the store, or a map in tests.
pub trait Records: Send + Sync {
    fn record(&self, repository: &RepoName, package: &ProjectName) -> Option<OriginRecord>;

    /// One setting of the record, without copying the record: what every request asks.
    fn allowance(
        &self,
        repository: &RepoName,
        package: &ProjectName,
        restriction: Restriction,
    ) -> Option<Allowance> {
        self.record(repository, package)
            .map(|record| restriction.of_record(&record))
    }
}

impl Records for Store {
    fn record(&self, repository: &RepoName, package: &ProjectName) -> Option<OriginRecord> {
        self.origin_record(repository.as_str(), package.as_str())
    }

    fn allowance(
        &self,
        repository: &RepoName,
        package: &ProjectName,
        restriction: Restriction,
    ) -> Option<Allowance> {
        self.origin_allowances(repository.as_str(), package.as_str())
            .map(|(publish, upstream)| match restriction {
                Restriction::Publish => publish,
                Restriction::Upstream => upstream,
            })
    }
}

/// What the repository layer asks about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    /// A version entering a hosted repository by upload.
    Publish,
    /// A version entering through an upstream (a remote repository).
    Upstream,
}

impl Restriction {
    fn of_record(self, record: &OriginRecord) -> Allowance {
        match self {
            Restriction::Publish => record.publish,
            Restriction::Upstream => record.upstream,
        }
    }

    fn of_entry(self, entry: &PackageOriginConfig) -> Option<Allowance> {
        match self {
            Restriction::Publish => entry.publish,
            Restriction::Upstream => entry.upstream,
        }
    }
}

/// Where a setting in force comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingSource {
    /// Nothing recorded or configured: the default, ALLOW.
    Default,
    /// A record the store made on the first upload or ingestion.
    Recorded(OriginRecord),
    /// A `[[package_origin]]` entry, at this line of the configuration.
    Configured { line: usize },
}

/// One setting in force, with its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub allowance: Allowance,
    pub source: SettingSource,
}

/// The package-level control of one repository and package: both settings in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageControl {
    pub repository: RepoName,
    pub package: ProjectName,
    pub publish: Setting,
    pub upstream: Setting,
}

impl PackageControl {
    pub fn setting(&self, restriction: Restriction) -> &Setting {
        match restriction {
            Restriction::Publish => &self.publish,
            Restriction::Upstream => &self.upstream,
        }
    }
}

/// The control that refused, as a refusal names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A package-level control: its repository and package, and which setting refused.
    Package {
        control: Box<PackageControl>,
        restriction: Restriction,
    },
    /// A package group: its pattern, the restriction that does not allow `repository`.
    Group {
        group: Arc<str>,
        restriction: Way,
        repository: RepoName,
        /// Where the setting comes from and whom to ask ([`GroupVerdict::Blocked`]).
        advice: Arc<str>,
    },
}

impl Control {
    /// The control's name for the denials metric: the package group's pattern, or
    /// `package-level` (the package is in the log and on the status page).
    pub fn name(&self) -> &str {
        match self {
            Control::Group { group, .. } => group,
            Control::Package { .. } => "package-level",
        }
    }
}

impl fmt::Display for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Control::Group {
                group,
                restriction,
                repository,
                advice,
            } => {
                let what = match restriction {
                    Way::Publish => "publishing to",
                    Way::ExternalUpstream => "versions from the upstream of",
                    Way::InternalUpstream => "versions taken from its members by",
                };
                write!(
                    f,
                    "package group {group}: its {restriction} restriction does not allow {what} repository {repository}; {advice}"
                )
            }
            Control::Package {
                control,
                restriction,
            } => {
                let setting = control.setting(*restriction);
                write!(
                    f,
                    "package-level origin control of {} in repository {}: ",
                    control.package, control.repository
                )?;
                match &setting.source {
                    SettingSource::Recorded(record) => {
                        let how = match record.event {
                            OriginEvent::FirstUpload => "first published to",
                            OriginEvent::FirstIngestion => "first ingested from upstream through",
                        };
                        let date = chrono::DateTime::<chrono::Utc>::from(record.time())
                            .format("%Y-%m-%d %H:%M:%S UTC");
                        write!(f, "{how} {} on {date}", control.repository)?;
                        if let Some(version) = &record.version {
                            write!(f, " (version {version})")?;
                        }
                    }
                    SettingSource::Configured { line } => {
                        write!(f, "[[package_origin]] at line {line}")?
                    }
                    SettingSource::Default => f.write_str("default")?,
                }
                let what = match restriction {
                    Restriction::Publish => "publishing is blocked",
                    Restriction::Upstream => "upstream versions are blocked",
                };
                write!(f, "; {what}")?;
                if !matches!(setting.source, SettingSource::Configured { .. }) {
                    write!(
                        f,
                        "; override with a [[package_origin]] for repository {} and package {}",
                        control.repository, control.package
                    )?;
                }
                Ok(())
            }
        }
    }
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Blocked(Control),
    /// Allowed, but a package group in `mode = "audit"` would have blocked it: served, and
    /// counted and logged as a would-deny.
    Audited(Control),
}

impl Verdict {
    /// Whether the request goes ahead (allowed or only audited).
    pub fn allows(&self) -> bool {
        !matches!(self, Verdict::Blocked(_))
    }
}

/// The group level as the decision asks it: [`PackageGroups`], or a stand-in in tests.
pub trait GroupLevel: Send + Sync {
    /// Whether `repository` may take a version of `package` the `way` it comes.
    fn check(&self, package: &ProjectName, way: Way, repository: &RepoName) -> GroupVerdict;
}

impl GroupLevel for PackageGroups {
    fn check(&self, package: &ProjectName, way: Way, repository: &RepoName) -> GroupVerdict {
        PackageGroups::check(self, package, way, repository)
    }
}

/// The maps read on every request hash with foldhash (short names, written by the operator).
type Fast = foldhash::fast::RandomState;

/// What the decision needs to know of a repository.
#[derive(Debug)]
struct Node {
    kind: NodeKind,
    /// A group: its hosted members (flattened). A hosted repository: itself.
    hosted: Vec<RepoName>,
    /// A group: every source it serves, with the way there (`Config::sources_of`).
    sources: Vec<(RepoName, Vec<RepoName>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeKind {
    Remote,
    Hosted,
    Group,
}

/// The package-level origin controls of one configuration over the store's records.
pub struct PackageOrigins {
    records: Arc<dyn Records>,
    groups: Arc<dyn GroupLevel>,
    /// `[[package_origin]]` by repository, then package: looked up without building a key.
    overrides: HashMap<RepoName, HashMap<ProjectName, PackageOriginConfig, Fast>, Fast>,
    nodes: Vec<(RepoName, Node)>,
}

/// A remote repository whose page an upload must be compared with (409 when it offers the
/// version), with a group through which its upstream is allowed for the package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferingUpstream {
    pub remote: RepoName,
    pub group: RepoName,
}

impl PackageOrigins {
    pub fn new(config: &Config, records: Arc<dyn Records>, groups: Arc<dyn GroupLevel>) -> Self {
        let nodes = config
            .repositories
            .iter()
            .map(|repo| {
                let kind = match repo.kind {
                    RepositoryKind::Remote(_) => NodeKind::Remote,
                    RepositoryKind::Hosted => NodeKind::Hosted,
                    RepositoryKind::Group(_) => NodeKind::Group,
                };
                let sources: Vec<(RepoName, Vec<RepoName>)> = match kind {
                    NodeKind::Group => config
                        .sources_of(&repo.name)
                        .into_iter()
                        .map(|(source, through)| (source.name.clone(), through))
                        .collect(),
                    _ => Vec::new(),
                };
                let hosted = match kind {
                    NodeKind::Hosted => vec![repo.name.clone()],
                    NodeKind::Group => sources
                        .iter()
                        .filter(|(name, _)| {
                            config
                                .repository(name)
                                .is_some_and(|r| matches!(r.kind, RepositoryKind::Hosted))
                        })
                        .map(|(name, _)| name.clone())
                        .collect(),
                    NodeKind::Remote => Vec::new(),
                };
                (
                    repo.name.clone(),
                    Node {
                        kind,
                        hosted,
                        sources,
                    },
                )
            })
            .collect();
        let mut overrides: HashMap<
            RepoName,
            HashMap<ProjectName, PackageOriginConfig, Fast>,
            Fast,
        > = HashMap::default();
        for entry in &config.package_origins {
            overrides
                .entry(entry.repository.clone())
                .or_default()
                .insert(entry.package.clone(), entry.clone());
        }
        PackageOrigins {
            records,
            groups,
            overrides,
            nodes,
        }
    }

    fn node(&self, name: &RepoName) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, node)| node)
    }

    fn is(&self, name: &RepoName, kind: NodeKind) -> bool {
        self.node(name).is_some_and(|node| node.kind == kind)
    }

    /// Both settings in force for `package` in `repository`, with their sources: the
    /// `[[package_origin]]` entry's keys, else the stored record's, else ALLOW.
    pub fn control(&self, repository: &RepoName, package: &ProjectName) -> PackageControl {
        let record = self.records.record(repository, package);
        let entry = self.entry(repository, package);
        let setting = |restriction: Restriction| {
            let configured = entry.and_then(|e| Some((restriction.of_entry(e)?, e.line)));
            match (configured, &record) {
                (Some((allowance, line)), _) => Setting {
                    allowance,
                    source: SettingSource::Configured { line },
                },
                (None, Some(record)) => Setting {
                    allowance: restriction.of_record(record),
                    source: SettingSource::Recorded(record.clone()),
                },
                (None, None) => Setting {
                    allowance: Allowance::Allow,
                    source: SettingSource::Default,
                },
            }
        };
        PackageControl {
            repository: repository.clone(),
            package: package.clone(),
            publish: setting(Restriction::Publish),
            upstream: setting(Restriction::Upstream),
        }
    }

    fn entry(&self, repository: &RepoName, package: &ProjectName) -> Option<&PackageOriginConfig> {
        self.overrides.get(repository)?.get(package)
    }

    /// The control of `package` in `repository` when its `restriction` setting is BLOCK. The
    /// setting is read without copying anything; the control is built only for a block.
    fn blocks(
        &self,
        repository: &RepoName,
        package: &ProjectName,
        restriction: Restriction,
    ) -> Option<Control> {
        let allowance = self
            .entry(repository, package)
            .and_then(|entry| restriction.of_entry(entry))
            .or_else(|| self.records.allowance(repository, package, restriction))
            .unwrap_or(Allowance::Allow);
        (allowance == Allowance::Block).then(|| Control::Package {
            control: Box::new(self.control(repository, package)),
            restriction,
        })
    }

    /// The files of `package` that a client gets by way of `through`: the served repository
    /// first, the repository that holds the files last (`Repository::through`).
    pub fn serve(&self, through: &[RepoName], package: &ProjectName) -> Verdict {
        let Some(source) = through.last() else {
            return Verdict::Allowed;
        };
        let groups = &through[..through.len() - 1];
        // Published files are never hidden by package-level controls; only files from an
        // upstream are. The group level judges every way a file travels.
        if !self.is(source, NodeKind::Remote) {
            return self.through_groups(package, groups, Verdict::Allowed);
        }
        // The remote's own control, then each group on the way, then the hosted repositories
        // of the outermost group (a nested group's hosted members are among them).
        let blocked = self
            .blocks(source, package, Restriction::Upstream)
            .or_else(|| {
                groups
                    .iter()
                    .find_map(|group| self.blocks(group, package, Restriction::Upstream))
            })
            .or_else(|| {
                let outer = self
                    .node(&through[0])
                    .filter(|n| n.kind == NodeKind::Group)?;
                outer
                    .hosted
                    .iter()
                    .find_map(|hosted| self.blocks(hosted, package, Restriction::Upstream))
            });
        match blocked {
            Some(control) => Verdict::Blocked(control),
            None => {
                let external = self.group_level(package, Way::ExternalUpstream, source);
                self.through_groups(package, groups, external)
            }
        }
    }

    /// `verdict` so far, then the group level's `internal_upstream` for each group a file
    /// passes through: the first block decides; else the first audit is kept.
    fn through_groups(
        &self,
        package: &ProjectName,
        groups: &[RepoName],
        verdict: Verdict,
    ) -> Verdict {
        let mut verdict = verdict;
        if let Verdict::Blocked(_) = verdict {
            return verdict;
        }
        for group in groups {
            match self.group_level(package, Way::InternalUpstream, group) {
                Verdict::Allowed => {}
                blocked @ Verdict::Blocked(_) => return blocked,
                audited @ Verdict::Audited(_) => {
                    if verdict == Verdict::Allowed {
                        verdict = audited;
                    }
                }
            }
        }
        verdict
    }

    /// Publishing `package` to the hosted repository `hosted`.
    pub fn publish(&self, hosted: &RepoName, package: &ProjectName) -> Verdict {
        let own = self.control(hosted, package);
        let blocked = match own.publish.source {
            // Configured, or published here before: this repository's own setting decides.
            SettingSource::Configured { .. } | SettingSource::Recorded(_) => {
                (own.publish.allowance == Allowance::Block).then(|| Control::Package {
                    control: Box::new(own),
                    restriction: Restriction::Publish,
                })
            }
            // Never published here: a name first ingested through a remote that shares a group
            // with this repository is not published over.
            SettingSource::Default => self
                .neighbours(hosted)
                .into_iter()
                .find_map(|(remote, _)| self.blocks(&remote, package, Restriction::Publish)),
        };
        match blocked {
            Some(control) => Verdict::Blocked(control),
            None => self.group_level(package, Way::Publish, hosted),
        }
    }

    /// The remote repositories that share a group with `hosted`: whose records of a package
    /// decide whether it may be published there when it never was (see [`Self::publish`]).
    pub fn remotes_beside(&self, hosted: &RepoName) -> Vec<RepoName> {
        let mut remotes: Vec<RepoName> = Vec::new();
        for (remote, _) in self.neighbours(hosted) {
            if !remotes.contains(&remote) {
                remotes.push(remote);
            }
        }
        remotes
    }

    /// The remote repositories whose upstream is allowed to offer `package` through a group
    /// that contains `hosted`: an upload of a version one of them offers is a conflict (409).
    pub fn offering_upstreams(
        &self,
        hosted: &RepoName,
        package: &ProjectName,
    ) -> Vec<OfferingUpstream> {
        let mut found: Vec<OfferingUpstream> = Vec::new();
        for (remote, (group, through)) in self.neighbours(hosted) {
            if found.iter().any(|f| f.remote == remote) {
                continue;
            }
            if self.serve(&through, package).allows() {
                found.push(OfferingUpstream { remote, group });
            }
        }
        found
    }

    /// The remote repositories that share a group with `hosted`, each with one such group and
    /// the way from it to the remote, in configuration order.
    fn neighbours(&self, hosted: &RepoName) -> Vec<(RepoName, (RepoName, Vec<RepoName>))> {
        let mut found = Vec::new();
        for (group, node) in &self.nodes {
            if node.kind != NodeKind::Group || !node.hosted.contains(hosted) {
                continue;
            }
            for (source, through) in &node.sources {
                if self.is(source, NodeKind::Remote) {
                    found.push((source.clone(), (group.clone(), through.clone())));
                }
            }
        }
        found
    }

    fn group_level(&self, package: &ProjectName, way: Way, repository: &RepoName) -> Verdict {
        match self.groups.check(package, way, repository) {
            GroupVerdict::Allowed => Verdict::Allowed,
            GroupVerdict::Blocked {
                group,
                restriction,
                mode,
                advice,
            } => {
                let control = Control::Group {
                    group,
                    restriction,
                    repository: repository.clone(),
                    advice,
                };
                match mode {
                    Mode::Enforce => Verdict::Blocked(control),
                    Mode::Audit => Verdict::Audited(control),
                }
            }
        }
    }

    /// The repositories whose package-level controls bear on `repository`, for `origin
    /// explain`: itself, and for a group every repository it serves and the groups between.
    pub fn relevant(&self, repository: &RepoName) -> Vec<RepoName> {
        let mut names = vec![repository.clone()];
        if let Some(node) = self.node(repository) {
            for (_, through) in &node.sources {
                for name in through {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
            }
        }
        names
    }

    /// The ways to the repositories that hold files that `repository` serves (one, itself, for
    /// a remote or hosted repository).
    pub fn sources(&self, repository: &RepoName) -> Vec<(RepoName, Vec<RepoName>)> {
        match self.node(repository) {
            Some(node) if node.kind == NodeKind::Group => node.sources.clone(),
            Some(_) => vec![(repository.clone(), vec![repository.clone()])],
            None => Vec::new(),
        }
    }

    /// Whether `repository` is a remote one.
    pub fn is_remote(&self, repository: &RepoName) -> bool {
        self.is(repository, NodeKind::Remote)
    }
}

#[cfg(test)]
mod tests;
