//! Download rules (SPEC §5): which files of which packages a repository may serve.
//!
//! [`Policy`] is built once per configuration load from the `[[rule]]` tables: each CEL condition
//! is parsed and checked then (a misspelt field is a configuration error, not a quiet denial at
//! run time), against one shared CEL environment. [`Policy::decide`] then answers for one file in
//! one repository, with the precedence of §5.1: the package's rule if it matches, else the
//! repository-wide rule if it matches, else allow. A rule in `mode = "audit"` takes no part in
//! that decision: when, enforced, it would have denied, the decision says so (`would_deny`) and
//! the caller serves the file, logs and counts it. A condition that cannot be evaluated fails
//! closed: it counts as matching a DENY rule and as not matching an ALLOW rule, so a broken rule
//! never lets through what it was written to stop.
//!
//! Deciding is on the path of every page and file request, so it evaluates only the (at most two)
//! rules that apply and builds the per-file CEL variables without allocating; `cel` compiles each
//! condition once, here.

mod cel;
pub mod cli;
pub mod enforce;
mod version;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use ::cel::{Context, Program};

use crate::config::{Action, Mode, RepoName, RuleConfig, RuleName};
use crate::simple::{DistKind, ProjectName, StatusMarker};

pub use self::cel::{ConditionError, EnvironmentError, Position};
pub use self::version::{Specifiers, Version, VersionError};

/// What the rules know about one file, as a page or a file request gives it.
#[derive(Debug, Clone, Copy)]
pub struct FileFacts<'a> {
    /// `pkg.id`.
    pub project: &'a ProjectName,
    /// `pkg.version.id`: as the filename spells it; `None` for files of kind other.
    pub version: Option<&'a str>,
    /// `pkg.file.name`.
    pub filename: &'a str,
    /// `pkg.file.kind`: `wheel`, `sdist` or `other`.
    pub kind: DistKind,
    /// `pkg.version.upload_time`: RFC 3339 as the upstream gave it (PEP 700); `None` when unknown.
    pub upload_time: Option<&'a str>,
    /// `pkg.version.yanked`.
    pub yanked: bool,
    /// `pkg.file.provenance`: the index offers a PEP 740 provenance (attestations) for the file.
    pub provenance: bool,
    /// `pkg.project.status`: the PEP 792 status of the file's project (`active` when its page
    /// says nothing).
    pub status: &'a StatusMarker,
}

/// The rule that decided, for messages, headers and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleRef {
    pub repository: RepoName,
    pub rule: RuleName,
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule \"{}\" in repository \"{}\"",
            self.rule, self.repository
        )
    }
}

/// The outcome of the rules for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// `by` is the enforced ALLOW rule that matched, or `None` when no enforced rule matched.
    /// `would_deny` is an audited DENY rule that would have decided had it been enforced: the
    /// file is served, and the caller logs and counts a would-deny.
    Allow {
        by: Option<RuleRef>,
        would_deny: Option<RuleRef>,
    },
    Deny {
        by: RuleRef,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The rule that decided, if one did.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allow { by, .. } => by.as_ref(),
            Decision::Deny { by } => Some(by),
        }
    }

    /// The audited rule that would have denied an allowed file.
    pub fn would_deny(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allow { would_deny, .. } => would_deny.as_ref(),
            Decision::Deny { .. } => None,
        }
    }
}

/// Why a set of rules cannot be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    /// Boxed to keep `Result<Policy, PolicyError>` small.
    #[error(transparent)]
    Condition(Box<RuleConditionError>),
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
}

/// A rule whose condition does not compile or names something unknown.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("rule \"{rule}\" in repository \"{repository}\" (line {line}): condition `{condition}`: {error}; fix the condition and check the file again with `wheelgate check`")]
pub struct RuleConditionError {
    pub repository: RepoName,
    pub rule: RuleName,
    pub line: usize,
    /// The condition, on one line and cut short for the message.
    pub condition: String,
    pub error: ConditionError,
}

impl PolicyError {
    /// The configuration line of the rule at fault, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Condition(error) => Some(error.line),
            PolicyError::Environment(_) => None,
        }
    }
}

struct CompiledRule {
    config: RuleConfig,
    reference: RuleRef,
    /// `None`: the rule matches every file it covers.
    condition: Option<Program>,
    /// Set once the first evaluation failure of this rule has been logged.
    warned: AtomicBool,
}

/// The rules of one repository, as indexes into [`Policy::rules`].
#[derive(Default)]
struct RepositoryRules {
    wide: Option<usize>,
    packages: HashMap<ProjectName, usize>,
}

/// The download rules of one configuration, compiled.
pub struct Policy {
    /// The CEL environment; every evaluation runs in a fresh inner scope of it.
    base: Context<'static, 'static>,
    /// In file order.
    rules: Vec<CompiledRule>,
    repositories: HashMap<RepoName, RepositoryRules>,
    uses_now: bool,
    eval_errors: AtomicU64,
}

/// A condition that could not be evaluated for one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EvalFailure {
    pub rule: RuleRef,
    pub action: Action,
    pub message: String,
}

/// A decision with the evaluation failures behind it (at most one per rule that applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Evaluation {
    pub decision: Decision,
    pub failures: Vec<EvalFailure>,
}

impl Policy {
    /// Compiles every rule's condition once; a CEL syntax error or an unknown field/function (e.g.
    /// `pkg.nme`, `pkg.version.idd`, `foo(1)`) is an error naming the repository, the rule, the
    /// config line and the position (line:column) in the expression.
    ///
    /// The rules are expected to have passed the configuration's checks (one rule per package and
    /// one repository-wide rule per repository); should two still share a scope, the first in file
    /// order applies.
    pub fn compile(rules: &[RuleConfig]) -> Result<Policy, PolicyError> {
        let env = self::cel::environment()?;
        let mut compiled = Vec::with_capacity(rules.len());
        let mut repositories: HashMap<RepoName, RepositoryRules> = HashMap::new();
        let mut uses_now = false;
        for rule in rules {
            let condition = match &rule.condition {
                None => None,
                Some(source) => {
                    let (program, usage) = self::cel::compile(&env, source).map_err(|error| {
                        PolicyError::Condition(Box::new(RuleConditionError {
                            repository: rule.repository.clone(),
                            rule: rule.name.clone(),
                            line: rule.line,
                            condition: one_line(source),
                            error,
                        }))
                    })?;
                    uses_now |= usage.reads_now;
                    Some(program)
                }
            };
            let index = compiled.len();
            let scopes = repositories.entry(rule.repository.clone()).or_default();
            match &rule.package {
                None => {
                    scopes.wide.get_or_insert(index);
                }
                Some(package) => {
                    scopes.packages.entry(package.clone()).or_insert(index);
                }
            }
            compiled.push(CompiledRule {
                config: rule.clone(),
                reference: RuleRef {
                    repository: rule.repository.clone(),
                    rule: rule.name.clone(),
                },
                condition,
                warned: AtomicBool::new(false),
            });
        }
        Ok(Policy {
            base: self::cel::base_context(Arc::clone(&env)),
            rules: compiled,
            repositories,
            uses_now,
            eval_errors: AtomicU64::new(0),
        })
    }

    /// True when no rule is configured, so callers can skip deciding altogether.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// True when any condition reads `now` (renderings of pages may then not be reused
    /// indefinitely).
    pub fn uses_now(&self) -> bool {
        self.uses_now
    }

    /// The decision for one file in one repository (SPEC §5.1 precedence: the package's rule if it
    /// matches, else the repository-wide rule if it matches, else allow). Conditions that cannot be
    /// evaluated fail closed (§5): they count as matching for DENY and as not matching for ALLOW;
    /// the first failure of each rule is logged and every one is counted ([`Policy::eval_errors`]).
    pub fn decide(&self, repository: &RepoName, file: &FileFacts<'_>, now: SystemTime) -> Decision {
        self.evaluate(repository, file, now).decision
    }

    /// The decision for a file reached through several repositories, such as a group and the
    /// member it comes from (SPEC §5): every repository's rules must allow it, and the first
    /// enforced DENY decides. An ALLOW names the first rule that allowed explicitly, if any, and
    /// the first audited rule that would have denied, if any.
    pub fn decide_through<'r>(
        &self,
        repositories: impl IntoIterator<Item = &'r RepoName>,
        file: &FileFacts<'_>,
        now: SystemTime,
    ) -> Decision {
        let mut allowed_by = None;
        let mut audited = None;
        for repository in repositories {
            match self.decide(repository, file, now) {
                deny @ Decision::Deny { .. } => return deny,
                Decision::Allow { by, would_deny } => {
                    if allowed_by.is_none() {
                        allowed_by = by;
                    }
                    if audited.is_none() {
                        audited = would_deny;
                    }
                }
            }
        }
        Decision::Allow {
            by: allowed_by,
            would_deny: audited,
        }
    }

    /// The rules of `repository`, or of every repository, in file order (for `rules list`).
    pub fn rules<'a>(
        &'a self,
        repository: Option<&RepoName>,
    ) -> impl Iterator<Item = &'a RuleConfig> + 'a {
        // Owned, so that the rules borrowed from the policy outlive the caller's name.
        let repository = repository.cloned();
        self.rules
            .iter()
            .map(|rule| &rule.config)
            .filter(move |rule| {
                repository
                    .as_ref()
                    .is_none_or(|repository| rule.repository == *repository)
            })
    }

    /// How many evaluations failed (and so failed closed) since the policy was built.
    pub fn eval_errors(&self) -> u64 {
        self.eval_errors.load(Ordering::Relaxed)
    }

    /// [`Policy::decide`], keeping the evaluation failures for `wheelgate rules test`.
    pub(crate) fn evaluate(
        &self,
        repository: &RepoName,
        file: &FileFacts<'_>,
        now: SystemTime,
    ) -> Evaluation {
        let mut failures = Vec::new();
        let Some(scopes) = self.repositories.get(repository) else {
            return Evaluation {
                decision: Decision::Allow {
                    by: None,
                    would_deny: None,
                },
                failures,
            };
        };
        let scope = self::cel::Scope::new(file, now);
        let applicable = [scopes.packages.get(file.project), scopes.wide.as_ref()];
        // An audited rule never decides: the decision is the one the enforced rules make
        // without it. It is remembered when, enforced, it would have denied: it matched before
        // any other rule (SPEC §5.1 order) and is a DENY.
        let mut would_deny = None;
        let mut matched_before = false;
        for index in applicable.into_iter().flatten() {
            let Some(rule) = self.rules.get(*index) else {
                continue;
            };
            if !self.matches(rule, &scope, file, &mut failures) {
                continue;
            }
            let by = rule.reference.clone();
            if rule.config.mode == Mode::Audit {
                if !matched_before && rule.config.action == Action::Deny {
                    would_deny = Some(by);
                }
                matched_before = true;
                continue;
            }
            let decision = match rule.config.action {
                Action::Allow => Decision::Allow {
                    by: Some(by),
                    would_deny,
                },
                Action::Deny => Decision::Deny { by },
            };
            return Evaluation { decision, failures };
        }
        Evaluation {
            decision: Decision::Allow {
                by: None,
                would_deny,
            },
            failures,
        }
    }

    fn matches(
        &self,
        rule: &CompiledRule,
        scope: &self::cel::Scope<'_>,
        file: &FileFacts<'_>,
        failures: &mut Vec<EvalFailure>,
    ) -> bool {
        let Some(program) = &rule.condition else {
            return true;
        };
        match self::cel::evaluate(program, &self.base, scope) {
            Ok(matches) => matches,
            Err(message) => {
                self.eval_errors.fetch_add(1, Ordering::Relaxed);
                let fail_closed = rule.config.action == Action::Deny;
                if !rule.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        repository = %rule.config.repository,
                        rule = %rule.config.name,
                        line = rule.config.line,
                        project = %file.project,
                        file = file.filename,
                        error = %message,
                        "the condition of a download rule could not be evaluated; it fails closed ({}), and later failures of this rule are only counted",
                        if fail_closed { "this DENY rule counts as matching" } else { "this ALLOW rule counts as not matching" },
                    );
                }
                failures.push(EvalFailure {
                    rule: rule.reference.clone(),
                    action: rule.config.action,
                    message,
                });
                fail_closed
            }
        }
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field(
                "rules",
                &self
                    .rules
                    .iter()
                    .map(|rule| &rule.config)
                    .collect::<Vec<_>>(),
            )
            .field("uses_now", &self.uses_now)
            .field("eval_errors", &self.eval_errors())
            .finish_non_exhaustive()
    }
}

/// A condition on one line, cut short, for messages.
fn one_line(text: &str) -> String {
    const MAX_SHOWN: usize = 120;
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if joined.chars().count() > MAX_SHOWN {
        let mut cut: String = joined.chars().take(MAX_SHOWN).collect();
        cut.push('…');
        cut
    } else {
        joined
    }
}

#[cfg(test)]
mod tests;
