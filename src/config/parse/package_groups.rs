//! `[[package_group]]`: origin controls by package name (SPEC §6, §6.1). Each entry's pattern is
//! parsed once, its restrictions read with their lists, and every list checked against the
//! repositories it may name (publish lists name hosted repositories, external upstream lists
//! remote ones, internal upstream lists groups); a pattern may be used once. Every error names
//! the entry by its pattern (or number, before the pattern is known) and the line.

use toml::Spanned;

use super::{Key, Parser};
use crate::config::raw::{NameList, RawPackageGroup};
use crate::config::{ConfigError, Problem, RepoName, RepositoryConfig, RepositoryKind};
use crate::origin::{PackageGroupConfig, PackageGroups, Pattern, Restriction, Setting};

impl Parser<'_> {
    /// The `[[package_group]]` tables, built into the structure requests are decided with.
    pub(super) fn package_groups(
        &self,
        raws: &[Spanned<RawPackageGroup>],
        repositories: &[RepositoryConfig],
    ) -> Result<PackageGroups, ConfigError> {
        let mut groups: Vec<PackageGroupConfig> = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let group = self.package_group(index + 1, raw, repositories)?;
            if let Some(first) = groups.iter().find(|other| other.pattern == group.pattern) {
                let section = section_of(&group.pattern);
                return Err(self.invalid(
                    group.line,
                    Key {
                        section: &section,
                        name: "pattern",
                    },
                    Problem::DuplicatePattern {
                        pattern: group.pattern.to_string(),
                        first_line: first.line.unwrap_or_default(),
                        second_line: group.line.unwrap_or_default(),
                    },
                ));
            }
            groups.push(group);
        }
        Ok(PackageGroups::build(groups))
    }

    fn package_group(
        &self,
        number: usize,
        raw: &Spanned<RawPackageGroup>,
        repositories: &[RepositoryConfig],
    ) -> Result<PackageGroupConfig, ConfigError> {
        let line = self.line_of(raw.span().start);
        let fields = raw.get_ref();
        let unnamed = format!("[[package_group]] #{number}");
        let pattern_key = Key {
            section: &unnamed,
            name: "pattern",
        };
        let pattern_field = fields.pattern.as_ref().ok_or_else(|| {
            self.invalid(
                Some(line),
                pattern_key,
                Problem::MissingKey {
                    hint: "say which packages the group covers: \"/*\", \"/pypi/*\", \"/pypi//NAME$\" or \"/pypi//PREFIX~\"",
                },
            )
        })?;
        let pattern = Pattern::parse(self.text(pattern_field, pattern_key)?.trim())
            .map_err(|error| self.at(pattern_field, pattern_key, Problem::Pattern(error)))?;
        let section = section_of(&pattern);
        let key = |name| Key {
            section: &section,
            name,
        };
        let optional_text = |field: &Option<Spanned<_>>, name| {
            field
                .as_ref()
                .map(|field| self.text(field, key(name)))
                .transpose()
        };
        let description = optional_text(&fields.description, "description")?;
        let contact = optional_text(&fields.contact, "contact")?;
        let mode = self.mode(fields.mode.as_ref(), key("mode"))?;
        let root = pattern == Pattern::Root;
        let [publish, external_upstream, internal_upstream] = [
            (
                Restriction::Publish,
                &fields.publish,
                &fields.publish_repositories,
            ),
            (
                Restriction::ExternalUpstream,
                &fields.external_upstream,
                &fields.external_upstream_repositories,
            ),
            (
                Restriction::InternalUpstream,
                &fields.internal_upstream,
                &fields.internal_upstream_repositories,
            ),
        ]
        .map(|(restriction, setting, list)| {
            self.restriction(
                &section,
                line,
                root,
                restriction,
                setting.as_ref(),
                list,
                repositories,
            )
        });
        Ok(PackageGroupConfig {
            pattern,
            description,
            contact,
            publish: publish?,
            external_upstream: external_upstream?,
            internal_upstream: internal_upstream?,
            mode,
            line: Some(line),
        })
    }

    /// One restriction and its list. Omitted means INHERIT, except on the root, where it
    /// means ALLOW.
    #[allow(clippy::too_many_arguments)]
    fn restriction(
        &self,
        section: &str,
        line: usize,
        root: bool,
        restriction: Restriction,
        field: Option<&Spanned<crate::config::raw::Scalar>>,
        list: &NameList,
        repositories: &[RepositoryConfig],
    ) -> Result<Setting, ConfigError> {
        let key = Key {
            section,
            name: restriction.key(),
        };
        let list_key = Key {
            section,
            name: restriction.list_key(),
        };
        let specific = match field {
            None if root => Setting::Allow,
            None => Setting::Inherit,
            Some(field) => {
                let text = self.text(field, key)?;
                match text.trim() {
                    "ALLOW" => Setting::Allow,
                    "BLOCK" => Setting::Block,
                    "INHERIT" if root => {
                        return Err(self.at(field, key, Problem::RootInherit));
                    }
                    "INHERIT" => Setting::Inherit,
                    "ALLOW_SPECIFIC_REPOSITORIES" => Setting::AllowSpecificRepositories(Vec::new()),
                    _ => {
                        return Err(self.at(
                            field,
                            key,
                            Problem::UnknownSetting {
                                found: text.clone(),
                            },
                        ))
                    }
                }
            }
        };
        let Setting::AllowSpecificRepositories(_) = specific else {
            if let Some(list) = list {
                return Err(self.invalid(
                    Some(self.line_of(list.span().start)),
                    list_key,
                    Problem::ListWithoutSpecificRepositories {
                        list_key: restriction.list_key(),
                        key: restriction.key(),
                        setting: specific.as_str(),
                    },
                ));
            }
            return Ok(specific);
        };
        let empty = || Problem::EmptyRepositoryList {
            key: restriction.key(),
            list_key: restriction.list_key(),
            kind: restriction.list_type(),
        };
        let Some(list) = list else {
            let at = field.map_or(line, |field| self.line_of(field.span().start));
            return Err(self.invalid(Some(at), key, empty()));
        };
        if list.get_ref().is_empty() {
            return Err(self.invalid(Some(self.line_of(list.span().start)), list_key, empty()));
        }
        let candidates = || {
            repositories
                .iter()
                .filter(|repo| repo.kind.type_name() == restriction.list_type())
                .map(|repo| repo.name.to_string())
                .collect()
        };
        let mut names: Vec<RepoName> = Vec::with_capacity(list.get_ref().len());
        for entry in list.get_ref() {
            let text = self.text(entry, list_key)?;
            let name = RepoName::parse(text.trim())
                .map_err(|error| self.at(entry, list_key, Problem::RepoName(error)))?;
            let Some(repo) = repositories.iter().find(|repo| repo.name == name) else {
                return Err(self.at(
                    entry,
                    list_key,
                    Problem::UnknownListRepository {
                        name: name.to_string(),
                        list_key: restriction.list_key(),
                        kind: restriction.list_type(),
                        candidates: candidates(),
                    },
                ));
            };
            if repo.kind.type_name() != restriction.list_type() {
                return Err(self.at(
                    entry,
                    list_key,
                    Problem::WrongRepositoryKind {
                        name: name.to_string(),
                        found: repo.kind.type_name(),
                        list_key: restriction.list_key(),
                        kind: restriction.list_type(),
                        why: why_kind(&repo.kind, restriction),
                        candidates: candidates(),
                    },
                ));
            }
            if names.contains(&name) {
                return Err(self.at(
                    entry,
                    list_key,
                    Problem::DuplicateListEntry {
                        name: name.to_string(),
                    },
                ));
            }
            names.push(name);
        }
        Ok(Setting::AllowSpecificRepositories(names))
    }
}

/// How a group is named in messages: `[[package_group]] "/pypi//acme~"`.
fn section_of(pattern: &Pattern) -> String {
    format!("[[package_group]] \"{pattern}\"")
}

/// Why a list of `restriction` cannot name a repository of `kind`.
fn why_kind(kind: &RepositoryKind, restriction: Restriction) -> &'static str {
    match restriction {
        Restriction::Publish => "versions are published to hosted repositories only",
        Restriction::ExternalUpstream => match kind {
            RepositoryKind::Group(_) => {
                "a group takes versions from its members: list the group in internal_upstream_repositories"
            }
            _ => "versions come from outside through remote repositories only",
        },
        Restriction::InternalUpstream => {
            "only a group takes versions from its members (its own repositories)"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::config::Mode;
    use crate::origin::{GroupVerdict, Pattern, Restriction, Setting};
    use crate::simple::ProjectName;

    /// A remote `pypi`, a hosted `internal`, a group `all` of both, then the given groups.
    fn with_groups(groups: &[&str]) -> String {
        let mut source = format!(
            "{MINIMAL}\n[[repository]]\nname = \"internal\"\ntype = \"hosted\"\n\n\
             [[repository]]\nname = \"all\"\ntype = \"group\"\nmembers = [\"internal\", \"pypi\"]\n\n\
             [server]\ndefault_repository = \"all\"\n"
        );
        for group in groups {
            source.push_str("\n[[package_group]]\n");
            source.push_str(group);
        }
        source
    }

    /// The line of the first `[[package_group]]` header in `with_groups`.
    const FIRST: usize = 18;

    fn assert_group_error(groups: &[&str], line: usize, names: &str, what: &str) {
        let error = error_of(&with_groups(groups));
        let message = error.to_string();
        assert_eq!(error.line(), Some(line), "{message}");
        assert!(message.contains(names), "expected {names:?} in {message}");
        assert!(message.contains(what), "expected {what:?} in {message}");
    }

    #[test]
    fn groups_are_parsed_with_their_defaults() {
        let config = parse_text(&with_groups(&[
            "pattern = \"/pypi//acme~\"\ndescription = \"Internal packages\"\ncontact = \"platform@example.invalid\"\n\
             publish = \"ALLOW_SPECIFIC_REPOSITORIES\"\npublish_repositories = [\"internal\"]\n\
             external_upstream = \"BLOCK\"\nmode = \"audit\"\n",
            "pattern = \"/*\"\ninternal_upstream = \"ALLOW_SPECIFIC_REPOSITORIES\"\ninternal_upstream_repositories = [\"all\"]\n",
        ]))
        .unwrap();
        let groups = &config.package_groups;
        assert_eq!(groups.len(), 2);
        let configs: Vec<_> = groups.configs().collect();
        let root = configs[0];
        assert_eq!(root.pattern, Pattern::Root);
        assert_eq!(
            root.publish,
            Setting::Allow,
            "the root's omitted keys are ALLOW"
        );
        assert_eq!(root.line, Some(FIRST + 9));
        let acme = configs[1];
        assert_eq!(acme.description.as_deref(), Some("Internal packages"));
        assert_eq!(acme.contact.as_deref(), Some("platform@example.invalid"));
        assert_eq!(acme.mode, Mode::Audit);
        assert_eq!(acme.internal_upstream, Setting::Inherit);
        assert_eq!(acme.line, Some(FIRST));
        let package = ProjectName::parse("acme-utils").unwrap();
        let repo = |name: &str| crate::config::RepoName::parse(name).unwrap();
        assert_eq!(
            groups.check(&package, Restriction::Publish, &repo("internal")),
            GroupVerdict::Allowed
        );
        assert!(matches!(
            groups.check(&package, Restriction::ExternalUpstream, &repo("pypi")),
            GroupVerdict::Blocked {
                mode: Mode::Audit,
                ..
            }
        ));
        assert!(matches!(
            groups.check(&package, Restriction::InternalUpstream, &repo("other")),
            GroupVerdict::Blocked {
                mode: Mode::Enforce,
                ..
            }
        ));
        let described = config.describe();
        assert!(
            described.contains("/pypi//acme~ (line 18, mode audit): publish ALLOW_SPECIFIC_REPOSITORIES [internal], external_upstream BLOCK, internal_upstream INHERIT"),
            "{described}"
        );
        // Without any group, the root alone.
        assert_eq!(parse_text(MINIMAL).unwrap().package_groups.len(), 1);
    }

    #[test]
    fn patterns_must_be_valid_normalised_and_unique() {
        assert_group_error(
            &["pattern = \"/pypi//Acme_Utils$\"\n"],
            FIRST + 1,
            "[[package_group]] #1 pattern",
            "write \"/pypi//acme-utils$\"",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme-~\"\n"],
            FIRST + 1,
            "[[package_group]] #1 pattern",
            "write \"/pypi//acme~\"",
        );
        assert_group_error(
            &["description = \"x\"\n"],
            FIRST,
            "[[package_group]] #1 pattern",
            "missing",
        );
        assert_group_error(
            &[
                "pattern = \"/pypi//acme~\"\n",
                "pattern = \"/pypi//acme~\"\nexternal_upstream = \"BLOCK\"\n",
            ],
            FIRST + 3,
            "[[package_group]] \"/pypi//acme~\" pattern",
            "used by two package groups, at line 18 and at line 21",
        );
    }

    #[test]
    fn settings_and_modes_are_checked() {
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"DENY\"\n"],
            FIRST + 2,
            "[[package_group]] \"/pypi//acme~\" publish",
            "\"DENY\" is not an origin setting",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\nmode = \"dry-run\"\n"],
            FIRST + 2,
            "[[package_group]] \"/pypi//acme~\" mode",
            "\"dry-run\" is not a mode",
        );
        assert_group_error(
            &["pattern = \"/*\"\npublish = \"INHERIT\"\n"],
            FIRST + 2,
            "[[package_group]] \"/*\" publish",
            "has no parent to inherit from",
        );
    }

    #[test]
    fn repository_lists_are_checked() {
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"BLOCK\"\npublish_repositories = [\"internal\"]\n"],
            FIRST + 3,
            "[[package_group]] \"/pypi//acme~\" publish_repositories",
            "only read when publish = \"ALLOW_SPECIFIC_REPOSITORIES\", but publish is BLOCK",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\nexternal_upstream_repositories = [\"pypi\"]\n"],
            FIRST + 2,
            "external_upstream_repositories",
            "but external_upstream is INHERIT",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"ALLOW_SPECIFIC_REPOSITORIES\"\npublish_repositories = []\n"],
            FIRST + 3,
            "[[package_group]] \"/pypi//acme~\" publish_repositories",
            "needs `publish_repositories` naming at least one hosted repository",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"ALLOW_SPECIFIC_REPOSITORIES\"\n"],
            FIRST + 2,
            "[[package_group]] \"/pypi//acme~\" publish",
            "naming at least one hosted repository",
        );
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"ALLOW_SPECIFIC_REPOSITORIES\"\npublish_repositories = [\"intern\"]\n"],
            FIRST + 3,
            "[[package_group]] \"/pypi//acme~\" publish_repositories",
            "no repository is named \"intern\"; `publish_repositories` names hosted repositories, the hosted repositories are internal",
        );
        for (restriction, name, found, kind) in [
            ("publish", "pypi", "remote", "hosted"),
            ("external_upstream", "all", "group", "remote"),
            ("internal_upstream", "internal", "hosted", "group"),
        ] {
            assert_group_error(
                &[&format!("pattern = \"/pypi//acme~\"\n{restriction} = \"ALLOW_SPECIFIC_REPOSITORIES\"\n{restriction}_repositories = [\"{name}\"]\n")],
                FIRST + 3,
                &format!("[[package_group]] \"/pypi//acme~\" {restriction}_repositories"),
                &format!("\"{name}\" is a {found} repository, but `{restriction}_repositories` names {kind} repositories"),
            );
        }
        assert_group_error(
            &["pattern = \"/pypi//acme~\"\npublish = \"ALLOW_SPECIFIC_REPOSITORIES\"\npublish_repositories = [\"internal\", \"internal\"]\n"],
            FIRST + 3,
            "publish_repositories",
            "\"internal\" is listed twice",
        );
    }
}
