//! `[[rule]]`: download rules (SPEC §5), each checked on its own and against the others of its
//! repository (unique names, one rule per scope).

use toml::Spanned;

use super::{Key, Parser};
use crate::config::raw::RawRule;
use crate::config::{
    Action, ConfigError, Operation, Problem, RepositoryConfig, RuleConfig, RuleName,
};
use crate::simple::ProjectName;

impl Parser<'_> {
    /// The `[[rule]]` tables, with the checks that span several rules: the repository exists, the
    /// name is unique in it, and each scope (the whole repository, or one package) has at most
    /// one rule, as in the vendor's API (SPEC §5).
    pub(super) fn rules(
        &self,
        raws: &[Spanned<RawRule>],
        repositories: &[RepositoryConfig],
    ) -> Result<Vec<RuleConfig>, ConfigError> {
        let mut rules: Vec<RuleConfig> = Vec::with_capacity(raws.len());
        for (index, raw) in raws.iter().enumerate() {
            let rule = self.rule(index + 1, raw, repositories)?;
            let section = format!("[[rule]] \"{}\"", rule.name);
            let same_repository = || {
                rules
                    .iter()
                    .filter(|other| other.repository == rule.repository)
            };
            if let Some(first) = same_repository().find(|other| other.name == rule.name) {
                return Err(self.invalid(
                    Some(rule.line),
                    Key {
                        section: &section,
                        name: "name",
                    },
                    Problem::DuplicateRuleName {
                        repository: rule.repository.to_string(),
                        name: rule.name.to_string(),
                        first_line: first.line,
                        second_line: rule.line,
                    },
                ));
            }
            if let Some(first) = same_repository().find(|other| other.package == rule.package) {
                let problem = match &rule.package {
                    None => Problem::SecondRepositoryWideRule {
                        repository: rule.repository.to_string(),
                        first: first.name.to_string(),
                        first_line: first.line,
                        second: rule.name.to_string(),
                        second_line: rule.line,
                    },
                    Some(package) => Problem::SecondPackageRule {
                        repository: rule.repository.to_string(),
                        package: package.to_string(),
                        first: first.name.to_string(),
                        first_line: first.line,
                        second: rule.name.to_string(),
                        second_line: rule.line,
                    },
                };
                return Err(self.invalid(
                    Some(rule.line),
                    Key {
                        section: &section,
                        name: "package",
                    },
                    problem,
                ));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    fn rule(
        &self,
        number: usize,
        raw: &Spanned<RawRule>,
        repositories: &[RepositoryConfig],
    ) -> Result<RuleConfig, ConfigError> {
        let line = self.line_of(raw.span().start);
        let fields = raw.get_ref();
        let unnamed = format!("[[rule]] #{number}");
        let missing = |section: &str, name, hint| self.missing_key(line, section, name, hint);

        let name_key = Key {
            section: &unnamed,
            name: "name",
        };
        let name_field = fields.name.as_ref().ok_or_else(|| {
            missing(
                &unnamed,
                "name",
                "give every rule a name, unique in its repository, e.g. name = \"no-old-django\"",
            )
        })?;
        let name = RuleName::parse(&self.text(name_field, name_key)?)
            .map_err(|error| self.at(name_field, name_key, Problem::RuleName(error)))?;
        let section = format!("[[rule]] \"{name}\"");
        let key = |name| Key {
            section: &section,
            name,
        };

        let repository_field = fields.repository.as_ref().ok_or_else(|| {
            missing(
                &section,
                "repository",
                "name the repository the rule belongs to, e.g. repository = \"pypi\"",
            )
        })?;
        let repository = self
            .defined_repository(
                repository_field,
                key("repository"),
                repositories,
                |name, defined| Problem::UnknownRuleRepository { name, defined },
            )?
            .name
            .clone();

        let action_field = fields.action.as_ref().ok_or_else(|| {
            missing(
                &section,
                "action",
                "say what the rule does to the downloads it matches: action = \"ALLOW\" or action = \"DENY\"",
            )
        })?;
        let action_text = self.text(action_field, key("action"))?;
        let action = Action::parse(&action_text).ok_or_else(|| {
            self.at(
                action_field,
                key("action"),
                Problem::UnknownAction {
                    found: action_text.clone(),
                },
            )
        })?;

        let operation = match &fields.operation {
            None => Operation::default(),
            Some(field) => {
                let text = self.text(field, key("operation"))?;
                Operation::parse(&text).ok_or_else(|| {
                    self.at(
                        field,
                        key("operation"),
                        Problem::UnknownOperation {
                            found: text.clone(),
                        },
                    )
                })?
            }
        };

        let package =
            match &fields.package {
                None => None,
                Some(field) => {
                    let text = self.text(field, key("package"))?;
                    Some(ProjectName::parse(text.trim()).map_err(|error| {
                        self.at(field, key("package"), Problem::ProjectName(error))
                    })?)
                }
            };

        let condition = match &fields.condition {
            None => None,
            Some(field) => {
                let text = self.text(field, key("condition"))?;
                if text.trim().is_empty() {
                    return Err(self.at(
                        field,
                        key("condition"),
                        Problem::Empty {
                            hint: "; leave `condition` out for a rule that matches every download it covers",
                        },
                    ));
                }
                Some(text)
            }
        };

        let mode = self.mode(fields.mode.as_ref(), key("mode"))?;

        Ok(RuleConfig {
            repository,
            name,
            action,
            operation,
            package,
            condition,
            mode,
            line,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    /// `MINIMAL` followed by one `[[rule]]` per entry, each starting with its header line.
    fn with_rules(rules: &[&str]) -> String {
        let mut source = MINIMAL.to_owned();
        for rule in rules {
            source.push_str("\n[[rule]]\n");
            source.push_str(rule);
        }
        source
    }

    #[test]
    fn rules_are_parsed_in_file_order_with_defaults() {
        let config = parse_text(&with_rules(&[
            "repository = \"pypi\"\nname = \"no-2\"\naction = \"DENY\"\npackage = \"WGFX_Alpha\"\ncondition = \"pkg.version.id == '2.0'\"\n",
            "repository = \"pypi\"\nname = \"only-listed\"\naction = \"DENY\"\noperation = \"DOWNLOAD\"\n",
            "repository = \"pypi\"\nname = \"allow-beta\"\naction = \"ALLOW\"\npackage = \"wgfx.beta\"\n",
        ]))
        .unwrap();
        let summary: Vec<_> = config
            .rules
            .iter()
            .map(|rule| {
                (
                    rule.name.as_str(),
                    rule.repository.as_str(),
                    rule.action,
                    rule.operation,
                    rule.package.as_ref().map(ProjectName::as_str),
                    rule.condition.as_deref(),
                    rule.line,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "no-2",
                    "pypi",
                    Action::Deny,
                    Operation::Download,
                    Some("wgfx-alpha"),
                    Some("pkg.version.id == '2.0'"),
                    6
                ),
                (
                    "only-listed",
                    "pypi",
                    Action::Deny,
                    Operation::Download,
                    None,
                    None,
                    13
                ),
                (
                    "allow-beta",
                    "pypi",
                    Action::Allow,
                    Operation::Download,
                    Some("wgfx-beta"),
                    None,
                    19
                ),
            ]
        );
        let described = config.describe();
        assert!(
            described.contains("no-2 in repository pypi (line 6): DENY DOWNLOAD, package wgfx-alpha, when pkg.version.id == '2.0'"),
            "{described}"
        );
        assert!(
            described.contains(
                "only-listed in repository pypi (line 13): DENY DOWNLOAD, repository-wide, always"
            ),
            "{described}"
        );
        assert!(parse_text(MINIMAL)
            .unwrap()
            .describe()
            .contains("download rules: none"));
    }

    /// Checks that a rule error points at `line`, names the rule (or its number) and the key,
    /// and says `what`.
    fn assert_rule_error(rules: &[&str], line: usize, names: &str, what: &str) {
        let error = error_of(&with_rules(rules));
        let message = error.to_string();
        assert_eq!(error.line(), Some(line), "{message}");
        assert!(message.contains(names), "expected {names:?} in {message}");
        assert!(message.contains(what), "expected {what:?} in {message}");
    }

    #[test]
    fn bad_rule_names_are_refused_with_the_rule_number_key_and_line() {
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"no old\"\naction = \"DENY\"\n"],
            8,
            "[[rule]] #1 name",
            "contains ' ' at character 3",
        );
        let long = "x".repeat(257);
        assert_rule_error(
            &[&format!(
                "repository = \"pypi\"\nname = \"{long}\"\naction = \"DENY\"\n"
            )],
            8,
            "[[rule]] #1 name",
            &format!(
                "rule name \"{}…\" is 257 characters long; rule names are at most 256",
                "x".repeat(40)
            ),
        );
        assert_rule_error(
            &["repository = \"pypi\"\naction = \"DENY\"\n"],
            6,
            "[[rule]] #1 name",
            "missing",
        );
    }

    #[test]
    fn rule_values_are_checked_with_the_rule_key_and_line() {
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"deny\"\n"],
            9,
            "[[rule]] \"r\" action",
            "\"deny\" is not an action; write \"ALLOW\" or \"DENY\"",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\n"],
            6,
            "[[rule]] \"r\" action",
            "missing",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\noperation = \"UPLOAD\"\n"],
            10,
            "[[rule]] \"r\" operation",
            "the only one is \"DOWNLOAD\"",
        );
        assert_rule_error(
            &["repository = \"pypy\"\nname = \"r\"\naction = \"DENY\"\n"],
            7,
            "[[rule]] \"r\" repository",
            "no repository is named \"pypy\"; a rule belongs to one of the defined repositories: pypi",
        );
        assert_rule_error(
            &["name = \"r\"\naction = \"DENY\"\n"],
            6,
            "[[rule]] \"r\" repository",
            "missing",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"-bad\"\n"],
            10,
            "[[rule]] \"r\" package",
            "`-bad` starts or ends with a separator",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\ncondition = \" \"\n"],
            10,
            "[[rule]] \"r\" condition",
            "must not be empty",
        );
        assert_rule_error(
            &["repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\nconditon = \"true\"\n"],
            10,
            "unknown key `conditon`",
            "[[rule]]",
        );
    }

    #[test]
    fn duplicate_rule_names_name_both_lines() {
        let rule = "repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"a\"\n";
        let other = "repository = \"pypi\"\nname = \"r\"\naction = \"DENY\"\npackage = \"b\"\n";
        assert_rule_error(
            &[rule, other],
            12,
            "[[rule]] \"r\" name",
            "repository \"pypi\" has two rules named \"r\", at line 6 and at line 12",
        );
    }

    #[test]
    fn one_rule_per_scope_and_the_error_names_both_rules() {
        assert_rule_error(
            &[
                "repository = \"pypi\"\nname = \"first\"\naction = \"DENY\"\n",
                "repository = \"pypi\"\nname = \"second\"\naction = \"ALLOW\"\n",
            ],
            11,
            "[[rule]] \"second\" package",
            "only one repository-wide rule (a rule without `package`), but rule \"first\" (line 6) and rule \"second\" (line 11) both are",
        );
        // Different spellings of one project are one package.
        assert_rule_error(
            &[
                "repository = \"pypi\"\nname = \"first\"\naction = \"DENY\"\npackage = \"Foo_Bar\"\n",
                "repository = \"pypi\"\nname = \"second\"\naction = \"ALLOW\"\npackage = \"foo.bar\"\n",
            ],
            12,
            "[[rule]] \"second\" package",
            "rule \"first\" (line 6) and rule \"second\" (line 12) both cover package \"foo-bar\"",
        );
    }
}
