//! A group's `members` (SPEC §1): the repositories it serves as one index, in the order their
//! files take precedence. Each member is a repository defined anywhere in the file (possibly
//! after the group), listed once, never the group itself, and groups never contain each other in
//! a cycle, which would make every page of theirs an endless walk. The list is read with its
//! repository; what needs every repository is checked once all are read.

use std::collections::{HashMap, HashSet};

use toml::Spanned;

use super::repositories::repository_section;
use super::{Key, Parser};
use crate::config::raw::RawRepository;
use crate::config::{
    ConfigError, GroupConfig, Problem, RepoName, RepositoryConfig, RepositoryKind,
};

const MEMBERS_EXAMPLE: &str =
    "list the repositories it serves, first wins, e.g. members = [\"internal\", \"pypi\"]";

impl Parser<'_> {
    /// The members of the group `name` as written: present, not empty, each a repository name,
    /// listed once, not the group itself. Whether they are defined is [`Parser::check_groups`]'s.
    pub(super) fn group(
        &self,
        name: &RepoName,
        section: &str,
        header: usize,
        fields: &RawRepository,
    ) -> Result<GroupConfig, ConfigError> {
        let key = Key {
            section,
            name: "members",
        };
        let Some(list) = &fields.members else {
            return Err(self.invalid(
                Some(self.line_of(header)),
                key,
                Problem::MissingKey {
                    hint: MEMBERS_EXAMPLE,
                },
            ));
        };
        if list.get_ref().is_empty() {
            return Err(self.invalid(
                Some(self.line_of(list.span().start)),
                key,
                Problem::Empty {
                    hint: "; a group serves its members' files: list at least one repository, e.g. members = [\"internal\", \"pypi\"]",
                },
            ));
        }
        let mut members: Vec<RepoName> = Vec::with_capacity(list.get_ref().len());
        for field in list.get_ref() {
            let text = self.text(field, key)?;
            let member = RepoName::parse(text.trim())
                .map_err(|error| self.at(field, key, Problem::RepoName(error)))?;
            if &member == name {
                return Err(self.at(
                    field,
                    key,
                    Problem::SelfMember {
                        name: member.to_string(),
                    },
                ));
            }
            if members.contains(&member) {
                return Err(self.at(
                    field,
                    key,
                    Problem::DuplicateMember {
                        name: member.to_string(),
                    },
                ));
            }
            members.push(member);
        }
        Ok(GroupConfig { members })
    }

    /// The checks of groups that need every repository: each member is defined, and no group
    /// reaches itself through its members. `raws` and `repositories` are the same tables, in
    /// file order; an error points at the member's entry in `members`.
    pub(super) fn check_groups(
        &self,
        raws: &[Spanned<RawRepository>],
        repositories: &[RepositoryConfig],
    ) -> Result<(), ConfigError> {
        let groups: Vec<(&RepositoryConfig, &GroupConfig, &RawRepository)> = repositories
            .iter()
            .zip(raws)
            .filter_map(|(repo, raw)| match &repo.kind {
                RepositoryKind::Group(group) => Some((repo, group, raw.get_ref())),
                RepositoryKind::Remote(_) | RepositoryKind::Hosted => None,
            })
            .collect();
        for &(repo, group, raw) in &groups {
            let unknown = group
                .members
                .iter()
                .position(|member| !repositories.iter().any(|defined| &defined.name == member));
            if let Some(index) = unknown {
                let defined = repositories
                    .iter()
                    .filter(|defined| defined.name != repo.name)
                    .map(|defined| defined.name.to_string())
                    .collect();
                return Err(self.member_error(
                    repo,
                    raw,
                    index,
                    Problem::UnknownMember {
                        name: group.members[index].to_string(),
                        defined,
                    },
                ));
            }
        }
        let members_of: HashMap<&RepoName, &[RepoName]> = groups
            .iter()
            .map(|(repo, group, _)| (&repo.name, group.members.as_slice()))
            .collect();
        for &(repo, group, raw) in &groups {
            if let Some(cycle) = cycle_through(&members_of, &repo.name) {
                // The cycle's first step is one of this group's members.
                let index = group
                    .members
                    .iter()
                    .position(|member| Some(&member) == cycle.get(1))
                    .unwrap_or(0);
                return Err(self.member_error(
                    repo,
                    raw,
                    index,
                    Problem::GroupCycle {
                        cycle: cycle.iter().map(|name| name.to_string()).collect(),
                    },
                ));
            }
        }
        Ok(())
    }

    /// An error about the `index`th entry of a group's `members`, at its line.
    fn member_error(
        &self,
        repo: &RepositoryConfig,
        raw: &RawRepository,
        index: usize,
        problem: Problem,
    ) -> ConfigError {
        let line = raw
            .members
            .as_ref()
            .and_then(|list| list.get_ref().get(index))
            .map_or(repo.line, |field| self.line_of(field.span().start));
        let section = repository_section(&repo.name);
        self.invalid(
            Some(line),
            Key {
                section: &section,
                name: "members",
            },
            problem,
        )
    }
}

/// A way from the group `start` back to itself through the members of groups (`members_of`),
/// as the names along it, `start` first and last; `None` when there is none. Iterative, so that
/// a deep nesting of groups cannot exhaust the stack.
fn cycle_through<'a>(
    members_of: &HashMap<&'a RepoName, &'a [RepoName]>,
    start: &'a RepoName,
) -> Option<Vec<&'a RepoName>> {
    // The path from `start`, and for each step the index of the next member to try.
    let mut path: Vec<(&RepoName, usize)> = vec![(start, 0)];
    let mut visited: HashSet<&RepoName> = HashSet::from([start]);
    while let Some((node, next)) = path.last_mut() {
        let members = members_of.get(*node).copied().unwrap_or_default();
        let Some(member) = members.get(*next) else {
            path.pop();
            continue;
        };
        *next += 1;
        if member == start {
            let mut cycle: Vec<&RepoName> = path.iter().map(|(name, _)| *name).collect();
            cycle.push(start);
            return Some(cycle);
        }
        // Only groups lead further; a group already walked from here has no way back.
        if members_of.contains_key(member) && visited.insert(member) {
            path.push((member, 0));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use crate::config::{RepoName, RepositoryKind};

    /// `[server]` (lines 1-2), the group `all` (lines 3-6, `members` on line 6), then the hosted
    /// `internal` (lines 7-9) and the remote `pypi` (lines 10-13): both members are defined after
    /// their group.
    fn with_group(members: &str, rest: &str) -> String {
        format!(
            "[server]\ndefault_repository = \"all\"\n\
             [[repository]]\nname = \"all\"\ntype = \"group\"\nmembers = {members}\n\
             [[repository]]\nname = \"internal\"\ntype = \"hosted\"\n\
             {MINIMAL}{rest}"
        )
    }

    fn names(list: &[RepoName]) -> Vec<&str> {
        list.iter().map(RepoName::as_str).collect()
    }

    fn members_of(config: &crate::config::Config, index: usize) -> Vec<&str> {
        match &config.repositories[index].kind {
            RepositoryKind::Group(group) => names(&group.members),
            other => panic!("repository {index} is {}, not a group", other.type_name()),
        }
    }

    /// Asserts that `source` is refused at `line` with a message containing each of `parts`.
    fn assert_refused(source: &str, line: usize, parts: &[&str]) {
        let error = error_of(source);
        let message = error.to_string();
        assert_eq!(error.line(), Some(line), "{message}");
        for part in parts {
            assert!(message.contains(part), "{part:?} not in: {message}");
        }
    }

    #[test]
    fn a_group_takes_members_defined_after_it_and_may_be_the_default_and_a_users_repository() {
        let source = with_group(
            "[\"internal\", \"pypi\"]",
            "[[user]]\nname = \"reader\"\ntoken_file = \"/run/secrets/reader\"\nroles = [\"read\"]\nrepositories = [\"all\"]\n\
             [[rule]]\nrepository = \"all\"\nname = \"no-old-django\"\naction = \"DENY\"\npackage = \"django\"\n",
        );
        let config = parse_text(&source).unwrap();
        assert_eq!(members_of(&config, 0), ["internal", "pypi"]);
        assert_eq!(config.repositories[0].line, 3);
        assert_eq!(config.server.default_repository.as_str(), "all");
        assert_eq!(
            config.users[0].repositories.as_deref().map(names),
            Some(vec!["all"])
        );
        assert_eq!(config.rules[0].repository.as_str(), "all");
        let described = config.describe();
        assert!(
            described.contains(
                "  all (group, line 3), served at /all/simple/\n    members, first wins: internal, pypi\n  internal"
            ),
            "{described}"
        );
        assert!(
            described.contains("default repository: all (served at /simple/)"),
            "{described}"
        );
    }

    #[test]
    fn a_group_of_groups_is_valid_and_serves_its_members_files_in_order() {
        let source = with_group(
            "[\"internal\", \"mirrors\"]",
            "[[repository]]\nname = \"mirrors\"\ntype = \"group\"\nmembers = [\"pypi\", \"internal\", \"corp\"]\n\
             [[repository]]\nname = \"corp\"\ntype = \"remote\"\nurl = \"\"\n",
        );
        let config = parse_text(&source).unwrap();
        assert_eq!(members_of(&config, 0), ["internal", "mirrors"]);
        assert_eq!(members_of(&config, 3), ["pypi", "internal", "corp"]);
        let all = RepoName::parse("all").unwrap();
        let sources: Vec<(&str, Vec<String>)> = config
            .sources_of(&all)
            .into_iter()
            .map(|(repo, path)| {
                (
                    repo.name.as_str(),
                    path.iter().map(RepoName::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            sources,
            [
                ("internal", ["all", "internal"].map(String::from).to_vec()),
                (
                    "pypi",
                    ["all", "mirrors", "pypi"].map(String::from).to_vec()
                ),
                (
                    "corp",
                    ["all", "mirrors", "corp"].map(String::from).to_vec()
                ),
            ]
        );
        let described = config.describe();
        assert!(
            described.contains(
                "    members, first wins: internal, mirrors\n    serves the files of, first wins: internal, pypi, corp\n"
            ),
            "{described}"
        );
        // A group whose members hold files themselves needs no second line.
        assert!(
            described.contains("    members, first wins: pypi, internal, corp\n  corp"),
            "{described}"
        );
    }

    #[test]
    fn members_are_required_and_not_empty() {
        let without = "[server]\ndefault_repository = \"pypi\"\n\
                       [[repository]]\nname = \"all\"\ntype = \"group\"\n\
                       [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n";
        assert_refused(
            without,
            3,
            &["[[repository]] \"all\" members: missing; list the repositories it serves, first wins, e.g. members = [\"internal\", \"pypi\"]"],
        );
        assert_refused(
            &with_group("[]", ""),
            6,
            &["[[repository]] \"all\" members: must not be empty; a group serves its members' files"],
        );
    }

    #[test]
    fn an_undefined_member_is_named_with_the_defined_repositories() {
        assert_refused(
            &with_group("[\"internal\",\n  \"pypy\"]", ""),
            7,
            &[
                "/etc/wheelgate/proxy.toml line 7: [[repository]] \"all\" members: no repository is named \"pypy\"",
                "the other repositories are internal, pypi; define it, or remove it from members",
            ],
        );
        assert_refused(
            "[[repository]]\nname = \"all\"\ntype = \"group\"\nmembers = [\"pypi\"]\n",
            4,
            &["no repository is named \"pypi\"; no other repository is defined"],
        );
    }

    #[test]
    fn a_group_cannot_be_its_own_member() {
        assert_refused(
            &with_group("[\"internal\", \"all\"]", ""),
            6,
            &["[[repository]] \"all\" members: a group cannot be a member of itself; remove \"all\" from its members"],
        );
    }

    #[test]
    fn a_member_listed_twice_is_refused_at_the_second() {
        assert_refused(
            &with_group("[\n  \"pypi\",\n  \"internal\",\n  \"pypi\",\n]", ""),
            9,
            &["[[repository]] \"all\" members: \"pypi\" is listed twice; list each member once"],
        );
    }

    #[test]
    fn a_cycle_through_groups_is_named() {
        // `all` reaches the cycle `a -> b -> a` without being in it: the error is about `a`.
        let source = with_group(
            "[\"internal\", \"a\"]",
            "[[repository]]\nname = \"a\"\ntype = \"group\"\nmembers = [\"pypi\", \"b\"]\n\
             [[repository]]\nname = \"b\"\ntype = \"group\"\nmembers = [\"c\"]\n\
             [[repository]]\nname = \"c\"\ntype = \"group\"\nmembers = [\"internal\", \"a\"]\n",
        );
        assert_refused(
            &source,
            17,
            &["[[repository]] \"a\" members: groups contain each other in a cycle: a -> b -> c -> a; remove one of these members"],
        );
    }

    #[test]
    fn a_member_name_is_a_repository_name() {
        assert_refused(
            &with_group("[\"internal\", \"Py Pi\"]", ""),
            6,
            &["[[repository]] \"all\" members: repository name \"Py Pi\""],
        );
        assert_refused(
            &with_group("[\"internal\", 3]", ""),
            6,
            &["[[repository]] \"all\" members: expected a string (in quotes), found an integer"],
        );
        // Not a list: refused by the shape of the file, at the line.
        assert_refused(
            &with_group("\"pypi\"", ""),
            6,
            &["invalid type: string \"pypi\", expected a list in brackets"],
        );
    }

    #[test]
    fn a_group_has_no_upstream_keys() {
        assert_refused(
            &with_group("[\"internal\", \"pypi\"]\nindex_ttl = \"1m\"", ""),
            7,
            &["[[repository]] \"all\" index_ttl: `index_ttl` only applies to repositories of type `remote`; remove it from this group repository"],
        );
        let source = "[server]\ndefault_repository = \"pypi\"\n\
                      [[repository]]\nname = \"all\"\ntype = \"group\"\nmembers = [\"pypi\"]\n\
                      [repository.auth]\npassword_file = \"t\"\n\
                      [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n";
        assert_refused(
            source,
            3,
            &["[[repository]] \"all\" auth: `auth` only applies to repositories of type `remote`; remove it from this group repository"],
        );
    }
}
