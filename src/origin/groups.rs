//! The package groups of one configuration as a structure that answers "which group does this
//! package belong to, and what does it allow" without looking at the other groups (SPEC §6.1).
//!
//! Built once at load: exact patterns go in one hash map, prefix patterns in another, and each
//! group's effective restrictions (INHERIT followed up to the first ancestor that says something)
//! are resolved then. A decision is a hash lookup of the name, then of its own `-`-separated
//! prefixes from the longest (a name has a handful of segments), then a read of the precomputed
//! restriction: its cost does not grow with the number of groups, and the allowed path
//! allocates nothing.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::group::{PackageGroupConfig, Restriction, Setting};
use super::pattern::Pattern;
use crate::config::{Mode, RepoName};
use crate::simple::name::ProjectName;

/// What a group's restriction comes to once INHERIT is followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effective {
    Allow,
    Block,
    /// Only these repositories.
    AllowSpecificRepositories(Arc<[RepoName]>),
}

impl Effective {
    /// The configuration spelling of the setting's kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Effective::Allow => "ALLOW",
            Effective::Block => "BLOCK",
            Effective::AllowSpecificRepositories(_) => "ALLOW_SPECIFIC_REPOSITORIES",
        }
    }
}

impl fmt::Display for Effective {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effective::AllowSpecificRepositories(list) => {
                let names: Vec<&str> = list.iter().map(RepoName::as_str).collect();
                write!(f, "{} [{}]", self.as_str(), names.join(", "))
            }
            other => f.write_str(other.as_str()),
        }
    }
}

/// The answer of [`PackageGroups::check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupVerdict {
    Allowed,
    /// The package's group does not allow the origin. In [`Mode::Audit`] the caller serves it
    /// anyway and records a would-deny.
    Blocked {
        /// The pattern of the package's group, as written (`/pypi//acme~`).
        group: Arc<str>,
        restriction: Restriction,
        /// The mode of the group the restriction's setting comes from.
        mode: Mode,
        /// Where the setting comes from and whom to ask, made at load: what a refusal adds so
        /// that the reader knows what to change.
        advice: Arc<str>,
    },
}

/// One restriction of a package's group, for `origin explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestrictionExplanation {
    pub restriction: Restriction,
    pub effective: Effective,
    /// The mode of the group the setting comes from.
    pub mode: Mode,
    /// The pattern of the group that set it: the package's own group, or the ancestor an
    /// INHERIT led to.
    pub from: Arc<str>,
    /// Whether it was inherited (`from` is an ancestor).
    pub inherited: bool,
}

/// The group of a package and what each restriction comes to, for `origin explain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupExplanation {
    /// The package's group, its pattern as written.
    pub group: Arc<str>,
    pub description: Option<String>,
    pub contact: Option<String>,
    /// The group's own mode.
    pub mode: Mode,
    /// From the group to the root: the patterns INHERIT looks through.
    pub ancestors: Vec<Arc<str>>,
    /// Publish, external upstream, internal upstream, in that order.
    pub restrictions: [RestrictionExplanation; 3],
}

/// A restriction as resolved for one group.
#[derive(Debug, Clone)]
struct Resolved {
    effective: Effective,
    mode: Mode,
    /// The index of the group it comes from.
    source: usize,
}

#[derive(Debug)]
struct Group {
    config: PackageGroupConfig,
    shown: Arc<str>,
    parent: Option<usize>,
    restrictions: [Resolved; 3],
    /// By restriction: the advice a refusal carries (see [`GroupVerdict::Blocked`]).
    advice: [Arc<str>; 3],
}

struct Inner {
    /// Root first, then in order of specificity (parents before children).
    groups: Vec<Group>,
    exact: HashMap<Box<str>, usize, RandomState>,
    prefixes: HashMap<Box<str>, usize, RandomState>,
    python: Option<usize>,
    /// By restriction: whether every group allows every repository, so that a check needs no
    /// lookup (a configuration without package groups, or one that restricts only some ways).
    open: [bool; 3],
}

/// Every package group of a configuration, matched and resolved (SPEC §6, §6.1). Immutable;
/// cloning shares it.
#[derive(Clone)]
pub struct PackageGroups {
    inner: Arc<Inner>,
}

/// The index of the root group.
const ROOT: usize = 0;

impl PackageGroups {
    /// Builds the structure from validated groups (patterns unique, lists checked); the root
    /// `/*` is added, allowing everything, when `configs` has none. An INHERIT on the root (the
    /// configuration refuses it) counts as ALLOW.
    pub fn build(configs: Vec<PackageGroupConfig>) -> PackageGroups {
        let mut configs = configs;
        if !configs.iter().any(|c| c.pattern == Pattern::Root) {
            configs.push(PackageGroupConfig::implicit_root());
        }
        // Root, /pypi/*, prefixes shortest first, then exact names: every group's parent comes
        // before it. Equal patterns end up side by side; the configuration refuses them, and
        // here the first one written is kept.
        configs.sort_by(|a, b| {
            rank(&a.pattern)
                .cmp(&rank(&b.pattern))
                .then_with(|| a.pattern.cmp(&b.pattern))
        });
        configs.dedup_by(|later, first| later.pattern == first.pattern);
        let mut inner = Inner {
            groups: Vec::with_capacity(configs.len()),
            exact: HashMap::with_capacity_and_hasher(configs.len(), RandomState::default()),
            prefixes: HashMap::with_capacity_and_hasher(configs.len(), RandomState::default()),
            python: None,
            open: [true; 3],
        };
        for config in configs {
            let index = inner.groups.len();
            let parent = match &config.pattern {
                Pattern::Root => None,
                Pattern::Python => Some(ROOT),
                Pattern::Prefix(name) => Some(inner.parent_of_prefix(name.as_str())),
                Pattern::Exact(name) => Some(inner.group_of(name.as_str())),
            };
            let restrictions = Restriction::ALL.map(|restriction| {
                let own = match config.setting(restriction) {
                    Setting::Allow => Some(Effective::Allow),
                    Setting::Block => Some(Effective::Block),
                    Setting::AllowSpecificRepositories(list) => {
                        Some(Effective::AllowSpecificRepositories(list.clone().into()))
                    }
                    Setting::Inherit => None,
                };
                match (own, parent) {
                    (Some(effective), _) => Resolved {
                        effective,
                        mode: config.mode,
                        source: index,
                    },
                    (None, Some(parent)) => {
                        inner.groups[parent].restrictions[restriction.index()].clone()
                    }
                    (None, None) => Resolved {
                        effective: Effective::Allow,
                        mode: config.mode,
                        source: index,
                    },
                }
            });
            match &config.pattern {
                Pattern::Root => {}
                Pattern::Python => inner.python = Some(index),
                Pattern::Prefix(name) => {
                    inner.prefixes.insert(name.as_str().into(), index);
                }
                Pattern::Exact(name) => {
                    inner.exact.insert(name.as_str().into(), index);
                }
            }
            inner.groups.push(Group {
                shown: config.pattern.to_string().into(),
                config,
                parent,
                restrictions,
                advice: Default::default(),
            });
        }
        let advice: Vec<[Arc<str>; 3]> = inner
            .groups
            .iter()
            .map(|group| Restriction::ALL.map(|r| inner.advice(group, r)))
            .collect();
        for (group, advice) in inner.groups.iter_mut().zip(advice) {
            group.advice = advice;
        }
        for restriction in Restriction::ALL {
            inner.open[restriction.index()] = inner.groups.iter().all(|group| {
                matches!(
                    group.restrictions[restriction.index()].effective,
                    Effective::Allow
                )
            });
        }
        PackageGroups {
            inner: Arc::new(inner),
        }
    }

    /// Whether `repository` may take a version of `package` through `restriction`.
    pub fn check(
        &self,
        package: &ProjectName,
        restriction: Restriction,
        repository: &RepoName,
    ) -> GroupVerdict {
        if self.inner.open[restriction.index()] {
            return GroupVerdict::Allowed;
        }
        let index = self.inner.group_of(package.as_str());
        let group = &self.inner.groups[index];
        let resolved = &group.restrictions[restriction.index()];
        let allowed = match &resolved.effective {
            Effective::Allow => true,
            Effective::Block => false,
            Effective::AllowSpecificRepositories(list) => list.contains(repository),
        };
        if allowed {
            GroupVerdict::Allowed
        } else {
            GroupVerdict::Blocked {
                group: group.shown.clone(),
                restriction,
                mode: resolved.mode,
                advice: group.advice[restriction.index()].clone(),
            }
        }
    }

    /// For `origin explain`: the group, and each restriction's effective mode, list, and the
    /// pattern it came from.
    pub fn explain(&self, package: &ProjectName) -> GroupExplanation {
        let index = self.inner.group_of(package.as_str());
        let group = &self.inner.groups[index];
        let restrictions = Restriction::ALL.map(|restriction| {
            let resolved = &group.restrictions[restriction.index()];
            RestrictionExplanation {
                restriction,
                effective: resolved.effective.clone(),
                mode: resolved.mode,
                from: self.inner.groups[resolved.source].shown.clone(),
                inherited: resolved.source != index,
            }
        });
        GroupExplanation {
            group: group.shown.clone(),
            description: group.config.description.clone(),
            contact: group.config.contact.clone(),
            mode: group.config.mode,
            ancestors: self
                .ancestors(index)
                .map(|i| self.inner.groups[i].shown.clone())
                .collect(),
            restrictions,
        }
    }

    /// How many groups there are, the root included.
    pub fn len(&self) -> usize {
        self.inner.groups.len()
    }

    /// Always false: the root group always exists.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The groups as configured, root first, then by specificity (parents before children);
    /// the root is there even when the file does not configure it.
    pub fn configs(&self) -> impl Iterator<Item = &PackageGroupConfig> {
        self.inner.groups.iter().map(|group| &group.config)
    }

    /// The groups as a tree, depth first from the root, children in pattern order: each
    /// group's configuration, its depth, and its effective restrictions (with where they come
    /// from), for `origin list`.
    pub fn tree(&self) -> Vec<TreeNode<'_>> {
        let mut nodes = Vec::with_capacity(self.len());
        self.walk(ROOT, 0, &mut nodes);
        nodes
    }

    fn walk<'a>(&'a self, index: usize, depth: usize, nodes: &mut Vec<TreeNode<'a>>) {
        let group = &self.inner.groups[index];
        nodes.push(TreeNode {
            depth,
            config: &group.config,
            pattern: &group.shown,
            restrictions: Restriction::ALL.map(|restriction| {
                let resolved = &group.restrictions[restriction.index()];
                (
                    restriction,
                    &resolved.effective,
                    resolved.mode,
                    (resolved.source != index).then(|| &*self.inner.groups[resolved.source].shown),
                )
            }),
        });
        let mut children: Vec<usize> = (0..self.inner.groups.len())
            .filter(|&child| self.inner.groups[child].parent == Some(index))
            .collect();
        children.sort_by(|&a, &b| {
            let (a, b) = (&self.inner.groups[a].config, &self.inner.groups[b].config);
            a.pattern
                .name()
                .cmp(&b.pattern.name())
                .then(rank(&a.pattern).cmp(&rank(&b.pattern)))
        });
        for child in children {
            self.walk(child, depth + 1, nodes);
        }
    }

    /// The parents of the group at `index`, nearest first, up to the root.
    fn ancestors(&self, index: usize) -> impl Iterator<Item = usize> + '_ {
        std::iter::successors(self.inner.groups[index].parent, |&i| {
            self.inner.groups[i].parent
        })
    }
}

/// One group in [`PackageGroups::tree`].
pub struct TreeNode<'a> {
    /// 0 for the root.
    pub depth: usize,
    pub config: &'a PackageGroupConfig,
    pub pattern: &'a str,
    /// Each restriction, its effective setting, its mode, and the pattern it is inherited from
    /// (`None` when the group sets it itself).
    pub restrictions: [(Restriction, &'a Effective, Mode, Option<&'a str>); 3],
}

impl Inner {
    /// What a refusal by `group`'s `restriction` tells the reader: the setting, the group and
    /// line it comes from, and the contact.
    fn advice(&self, group: &Group, restriction: Restriction) -> Arc<str> {
        let resolved = &group.restrictions[restriction.index()];
        let source = &self.groups[resolved.source];
        let place = match source.config.line {
            Some(line) => format!("at line {line} of the configuration"),
            None => "built in".to_owned(),
        };
        let mut advice = format!(
            "the setting is {}, from package group {} {place} (change it there to allow this)",
            resolved.effective, source.shown
        );
        if let Some(contact) = group
            .config
            .contact
            .as_ref()
            .or(source.config.contact.as_ref())
        {
            advice.push_str(&format!("; contact {contact}"));
        }
        advice.into()
    }

    /// The group `name` belongs to: its exact group, else its longest prefix group, else
    /// `/pypi/*`, else the root.
    fn group_of(&self, name: &str) -> usize {
        if let Some(&index) = self.exact.get(name) {
            return index;
        }
        if self.prefixes.is_empty() {
            return self.python.unwrap_or(ROOT);
        }
        self.longest_prefix(Some(name))
    }

    /// The parent of the prefix group `prefix~`: the longest prefix group covering it other
    /// than itself, else `/pypi/*`, else the root.
    fn parent_of_prefix(&self, prefix: &str) -> usize {
        self.longest_prefix(prefix.rfind('-').map(|end| &prefix[..end]))
    }

    /// The longest prefix group among `start` and its shorter `-`-separated prefixes.
    fn longest_prefix(&self, start: Option<&str>) -> usize {
        let mut candidate = start;
        while let Some(prefix) = candidate {
            if let Some(&index) = self.prefixes.get(prefix) {
                return index;
            }
            candidate = prefix.rfind('-').map(|end| &prefix[..end]);
        }
        self.python.unwrap_or(ROOT)
    }
}

/// Sorts groups so that each comes after every group that could be its parent.
fn rank(pattern: &Pattern) -> (u8, usize) {
    match pattern {
        Pattern::Root => (0, 0),
        Pattern::Python => (1, 0),
        Pattern::Prefix(name) => (2, name.as_str().len()),
        Pattern::Exact(_) => (3, 0),
    }
}

impl PartialEq for PackageGroups {
    fn eq(&self, other: &PackageGroups) -> bool {
        self.configs().eq(other.configs())
    }
}

impl Eq for PackageGroups {}

impl fmt::Debug for PackageGroups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.configs()).finish()
    }
}

impl Default for PackageGroups {
    /// The root group alone, allowing every origin.
    fn default() -> PackageGroups {
        PackageGroups::build(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(name: &str) -> RepoName {
        RepoName::parse(name).unwrap()
    }

    fn name(text: &str) -> ProjectName {
        ProjectName::parse(text).unwrap()
    }

    /// A group with every restriction INHERIT.
    fn group(pattern: &str) -> PackageGroupConfig {
        PackageGroupConfig {
            pattern: Pattern::parse(pattern).unwrap(),
            description: None,
            contact: None,
            publish: Setting::Inherit,
            external_upstream: Setting::Inherit,
            internal_upstream: Setting::Inherit,
            mode: Mode::Enforce,
            line: Some(1),
        }
    }

    fn external(pattern: &str, setting: Setting) -> PackageGroupConfig {
        PackageGroupConfig {
            external_upstream: setting,
            ..group(pattern)
        }
    }

    fn group_of(groups: &PackageGroups, package: &str) -> String {
        groups.explain(&name(package)).group.to_string()
    }

    #[test]
    fn the_most_specific_group_wins() {
        let groups = PackageGroups::build(vec![
            group("/pypi//acme-utils$"),
            group("/pypi//acme~"),
            group("/pypi//acme-utils~"),
            group("/pypi/*"),
            group("/pypi//acmetools$"),
        ]);
        for (package, expected) in [
            ("acme-utils", "/pypi//acme-utils$"),
            ("Acme_Utils", "/pypi//acme-utils$"),
            ("acme.utils", "/pypi//acme-utils$"),
            ("ACME-UTILS", "/pypi//acme-utils$"),
            ("acme-utils-core", "/pypi//acme-utils~"),
            ("acme", "/pypi//acme~"),
            ("acme-other", "/pypi//acme~"),
            ("acmetools", "/pypi//acmetools$"),
            ("acmetools-x", "/pypi/*"),
            ("requests", "/pypi/*"),
        ] {
            assert_eq!(group_of(&groups, package), expected, "{package}");
        }
        // Without /pypi/*, the root.
        let groups = PackageGroups::build(vec![group("/pypi//acme~")]);
        assert_eq!(group_of(&groups, "requests"), "/*");
        assert_eq!(group_of(&groups, "acme-x"), "/pypi//acme~");
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn inherit_follows_parents_three_levels_deep() {
        let groups = PackageGroups::build(vec![
            external("/pypi//acme-utils-core~", Setting::Inherit),
            external("/pypi//acme-utils~", Setting::Inherit),
            external(
                "/pypi//acme~",
                Setting::AllowSpecificRepositories(vec![repo("corp-mirror")]),
            ),
            external("/pypi/*", Setting::Block),
        ]);
        let explained = groups.explain(&name("acme-utils-core-x"));
        assert_eq!(&*explained.group, "/pypi//acme-utils-core~");
        let ancestors: Vec<&str> = explained.ancestors.iter().map(|a| &**a).collect();
        assert_eq!(
            ancestors,
            ["/pypi//acme-utils~", "/pypi//acme~", "/pypi/*", "/*"]
        );
        let external = &explained.restrictions[1];
        assert_eq!(external.restriction, Restriction::ExternalUpstream);
        assert_eq!(
            external.effective,
            Effective::AllowSpecificRepositories(vec![repo("corp-mirror")].into())
        );
        assert_eq!(&*external.from, "/pypi//acme~");
        assert!(external.inherited);
        // Publish is INHERIT all the way to the root's (implicit) ALLOW.
        assert_eq!(explained.restrictions[0].effective, Effective::Allow);
        assert_eq!(&*explained.restrictions[0].from, "/*");
        let package = name("acme-utils-core-x");
        assert_eq!(
            groups.check(
                &package,
                Restriction::ExternalUpstream,
                &repo("corp-mirror")
            ),
            GroupVerdict::Allowed
        );
        assert_eq!(
            groups.check(&package, Restriction::ExternalUpstream, &repo("pypi")),
            GroupVerdict::Blocked {
                group: "/pypi//acme-utils-core~".into(),
                restriction: Restriction::ExternalUpstream,
                mode: Mode::Enforce,
                advice: "the setting is ALLOW_SPECIFIC_REPOSITORIES [corp-mirror], from package \
                         group /pypi//acme~ at line 1 of the configuration (change it there to \
                         allow this)"
                    .into(),
            }
        );
        // A sibling outside acme~ gets /pypi/*'s BLOCK.
        assert!(matches!(
            groups.check(
                &name("other"),
                Restriction::ExternalUpstream,
                &repo("corp-mirror")
            ),
            GroupVerdict::Blocked { .. }
        ));
    }

    #[test]
    fn an_exact_group_inherits_from_the_prefix_of_its_own_name() {
        let groups = PackageGroups::build(vec![
            external("/pypi//acme$", Setting::Inherit),
            external("/pypi//acme~", Setting::Block),
        ]);
        let explained = groups.explain(&name("acme"));
        assert_eq!(&*explained.group, "/pypi//acme$");
        assert_eq!(&*explained.restrictions[1].from, "/pypi//acme~");
        assert_eq!(explained.restrictions[1].effective, Effective::Block);
    }

    #[test]
    fn allow_specific_repositories_allows_exactly_the_listed_ones() {
        let groups = PackageGroups::build(vec![PackageGroupConfig {
            publish: Setting::AllowSpecificRepositories(vec![repo("internal"), repo("staging")]),
            ..group("/pypi//acme~")
        }]);
        let acme = name("acme-tool");
        for (repository, allowed) in [("internal", true), ("staging", true), ("other", false)] {
            assert_eq!(
                groups.check(&acme, Restriction::Publish, &repo(repository))
                    == GroupVerdict::Allowed,
                allowed,
                "{repository}"
            );
        }
        // The other restrictions inherit the root's ALLOW.
        assert_eq!(
            groups.check(&acme, Restriction::ExternalUpstream, &repo("other")),
            GroupVerdict::Allowed
        );
    }

    #[test]
    fn the_root_can_be_configured_and_inherited_modes_keep_their_source() {
        let groups = PackageGroups::build(vec![
            PackageGroupConfig {
                external_upstream: Setting::Block,
                mode: Mode::Audit,
                ..PackageGroupConfig::implicit_root()
            },
            group("/pypi//acme~"),
        ]);
        assert_eq!(groups.len(), 2);
        assert_eq!(
            groups.check(&name("acme"), Restriction::ExternalUpstream, &repo("pypi")),
            GroupVerdict::Blocked {
                group: "/pypi//acme~".into(),
                restriction: Restriction::ExternalUpstream,
                mode: Mode::Audit,
                advice: "the setting is BLOCK, from package group /* built in (change it there \
                         to allow this)"
                    .into(),
            }
        );
    }

    #[test]
    fn the_tree_nests_children_under_their_parents() {
        let groups = PackageGroups::build(vec![
            group("/pypi//zeta$"),
            group("/pypi//acme-utils~"),
            group("/pypi//acme~"),
            group("/pypi/*"),
            group("/pypi//acme-utils$"),
        ]);
        let tree: Vec<(usize, &str)> = groups
            .tree()
            .iter()
            .map(|node| (node.depth, node.pattern))
            .collect();
        assert_eq!(
            tree,
            [
                (0, "/*"),
                (1, "/pypi/*"),
                (2, "/pypi//acme~"),
                (3, "/pypi//acme-utils~"),
                (4, "/pypi//acme-utils$"),
                (2, "/pypi//zeta$"),
            ]
        );
    }
}
