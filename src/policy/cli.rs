//! The text of `wheelgate rules list`, `rules describe` and `rules test` (SPEC §5).
//!
//! The output follows the vendor's `gcloud artifacts rules` commands (seed 003), so that people
//! who know those read it at once: `list` prints one `RULE:`/`PACKAGE:`/`ACTION:`/`OPERATION:`/
//! `CONDITION:` block per rule, `describe` the resource in gcloud's YAML layout. Both add the rule's `mode` (`enforce` or
//! `audit`), which the vendor's rules do not have. The functions are
//! pure and return strings, so the binary only prints them and tests can check them whole.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::{Decision, Evaluation, FileFacts, Policy};
use crate::config::{RepoName, RuleConfig, RuleName};
use crate::simple::{DistFilename, FilenameError, NameError, ProjectName, StatusMarker};

/// Why a `rules` command cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    #[error("repository \"{repository}\" has no rule named \"{rule}\"; {}", defined_rules(.defined))]
    UnknownRule {
        repository: RepoName,
        rule: RuleName,
        defined: Vec<String>,
    },
    #[error("{0}")]
    Package(NameError),
    #[error("{0}")]
    Filename(FilenameError),
    #[error("the file {filename} is {found}, not {expected}; give a FILENAME of the package and version being tested, or leave it out")]
    FilenameMismatch {
        filename: String,
        found: String,
        expected: String,
    },
    #[error("version \"{version}\" cannot be written in a wheel filename; give the FILENAME to test as well")]
    UnspellableVersion { version: String },
}

fn defined_rules(defined: &[String]) -> String {
    if defined.is_empty() {
        "it has no rules".to_owned()
    } else {
        format!("its rules are {}", defined.join(", "))
    }
}

/// `wheelgate rules list [--repo R]`: the rules in file order, one gcloud-style block each,
/// blocks separated by a blank line. Without a repository, every block starts with the
/// repository it belongs to. An absent package or condition is an empty value, as gcloud shows it.
pub fn list(policy: &Policy, repository: Option<&RepoName>) -> String {
    let mut out = String::new();
    for rule in policy.rules(repository) {
        if !out.is_empty() {
            out.push('\n');
        }
        if repository.is_none() {
            field(&mut out, "REPOSITORY", rule.repository.as_str());
        }
        field(&mut out, "RULE", rule.name.as_str());
        field(
            &mut out,
            "PACKAGE",
            rule.package.as_ref().map_or("", ProjectName::as_str),
        );
        field(&mut out, "ACTION", rule.action.as_str());
        field(&mut out, "OPERATION", rule.operation.as_str());
        let condition = rule.condition.as_deref().map(one_line).unwrap_or_default();
        field(&mut out, "CONDITION", &condition);
        field(&mut out, "MODE", rule.mode.as_str());
    }
    if out.is_empty() {
        match repository {
            Some(repository) => {
                let _ = writeln!(
                    out,
                    "Listed 0 items: repository \"{repository}\" has no download rules."
                );
            }
            None => out.push_str("Listed 0 items: no download rules are configured.\n"),
        }
    }
    out
}

fn field(out: &mut String, name: &str, value: &str) {
    let _ = if value.is_empty() {
        writeln!(out, "{name}:")
    } else {
        writeln!(out, "{name}: {value}")
    };
}

/// A condition written over several TOML lines, on one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `wheelgate rules describe NAME --repo R`: the rule in gcloud's `describe` layout (YAML, keys in
/// alphabetical order, the name as a resource path).
pub fn describe(
    policy: &Policy,
    name: &RuleName,
    repository: &RepoName,
) -> Result<String, CliError> {
    let rule = find(policy, name, repository)?;
    let mut out = String::new();
    let _ = writeln!(out, "action: {}", rule.action);
    if let Some(condition) = &rule.condition {
        let _ = writeln!(
            out,
            "condition:\n  expression: {}",
            yaml_scalar(condition.trim())
        );
    }
    let _ = writeln!(out, "mode: {}", rule.mode);
    let _ = writeln!(
        out,
        "name: {}",
        yaml_scalar(&format!(
            "repositories/{}/rules/{}",
            rule.repository, rule.name
        ))
    );
    let _ = writeln!(out, "operation: {}", rule.operation);
    if let Some(package) = &rule.package {
        let _ = writeln!(out, "packageId: {package}");
    }
    Ok(out)
}

fn find<'p>(
    policy: &'p Policy,
    name: &RuleName,
    repository: &RepoName,
) -> Result<&'p RuleConfig, CliError> {
    policy
        .rules(Some(repository))
        .find(|rule| rule.name == *name)
        .ok_or_else(|| CliError::UnknownRule {
            repository: repository.clone(),
            rule: name.clone(),
            defined: policy
                .rules(Some(repository))
                .map(|rule| rule.name.to_string())
                .collect(),
        })
}

/// A YAML scalar: plain when YAML would read it back unchanged, else quoted.
fn yaml_scalar(text: &str) -> String {
    let needs_quotes = text.is_empty()
        || text.contains(": ")
        || text.contains(" #")
        || text.ends_with(':')
        || text.starts_with(|c: char| "!&*-?{}[],#|>@`\"'%:= ".contains(c))
        || text.ends_with(' ')
        || ["true", "false", "null", "yes", "no", "~"]
            .contains(&text.to_ascii_lowercase().as_str())
        || text.parse::<f64>().is_ok();
    if text.chars().any(char::is_control) {
        // A JSON string is a valid double-quoted YAML scalar, escapes included.
        serde_json::Value::String(text.to_owned()).to_string()
    } else if needs_quotes {
        format!("'{}'", text.replace('\'', "''"))
    } else {
        text.to_owned()
    }
}

/// The outcome of `wheelgate rules test`: the decision (for the exit code) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTest {
    pub decision: Decision,
    pub text: String,
}

/// `wheelgate rules test --repo R PACKAGE VERSION [FILENAME]`: the decision for one file and the
/// rule that made it, e.g.
/// `DENY  wgfx-alpha 2.0 (wgfx_alpha-2.0-py3-none-any.whl): rule "no-2" in repository "pypi"`.
///
/// Without FILENAME the file is the wheel `<name>-<version>-py3-none-any.whl`. The file is taken
/// as not yanked, with no upload time (a rule reading `pkg.version.upload_time` then fails closed,
/// and the text says so) and no provenance, its project as `active`, and `now` as the current
/// time.
pub fn test(
    policy: &Policy,
    repository: &RepoName,
    package: &str,
    version: &str,
    filename: Option<&str>,
    now: SystemTime,
) -> Result<RuleTest, CliError> {
    let project = ProjectName::parse(package).map_err(CliError::Package)?;
    let file = match filename {
        Some(filename) => {
            let file = DistFilename::parse(filename).map_err(CliError::Filename)?;
            check_spelling(&file, &project, version)?;
            file
        }
        None => {
            let synthesised = format!(
                "{}-{version}-py3-none-any.whl",
                project.as_str().replace('-', "_")
            );
            match DistFilename::parse(&synthesised) {
                Ok(file) if file.version() == Some(version) => file,
                _ => {
                    return Err(CliError::UnspellableVersion {
                        version: version.to_owned(),
                    })
                }
            }
        }
    };
    let active = StatusMarker::Active;
    let facts = FileFacts {
        project: &project,
        version: file.version().or(Some(version)),
        filename: file.as_str(),
        kind: file.kind(),
        upload_time: None,
        yanked: false,
        provenance: false,
        status: &active,
    };
    let Evaluation { decision, failures } = policy.evaluate(repository, &facts, now);
    let mut text = String::new();
    let verdict = if decision.is_allowed() {
        "ALLOW"
    } else {
        "DENY "
    };
    let _ = write!(text, "{verdict} {project} {version} ({}): ", file.as_str());
    match decision.rule() {
        Some(rule) => {
            let _ = writeln!(text, "{rule}");
        }
        None => text.push_str("no rule matched\n"),
    }
    if let Some(rule) = decision.would_deny() {
        let _ = writeln!(
            text,
            "  audit: {rule} (mode = \"audit\") would deny it; it is served, and the request is logged and counted as a would-deny"
        );
    }
    for failure in &failures {
        let effect = match failure.action {
            crate::config::Action::Deny => "counted as matching (a DENY rule fails closed)",
            crate::config::Action::Allow => "counted as not matching (an ALLOW rule fails closed)",
        };
        let _ = writeln!(
            text,
            "  note: the condition of {} could not be evaluated ({}), so it {effect}",
            failure.rule, failure.message
        );
    }
    Ok(RuleTest { decision, text })
}

/// A FILENAME given to `rules test` must be a file of the package and version being tested, or
/// the answer would be about another file than the one asked about.
fn check_spelling(
    file: &DistFilename,
    project: &ProjectName,
    version: &str,
) -> Result<(), CliError> {
    let mismatch = |found: String, expected: String| CliError::FilenameMismatch {
        filename: file.as_str().to_owned(),
        found,
        expected,
    };
    if let Some(found) = file.project() {
        if found != project {
            return Err(mismatch(
                format!("of project {found}"),
                format!("of {project}"),
            ));
        }
    }
    if let Some(found) = file.version() {
        if found != version {
            return Err(mismatch(
                format!("version {found}"),
                format!("version {version}"),
            ));
        }
    }
    Ok(())
}
