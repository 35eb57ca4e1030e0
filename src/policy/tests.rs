use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::config::{self, Config};

const REPOSITORIES: &str = "[server]\ndefault_repository = \"pypi\"\n\n[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n\n[[repository]]\nname = \"mirror\"\ntype = \"remote\"\nurl = \"https://mirror.example.invalid/simple/\"\n";

/// `(repository, name, action, package, condition)` of one `[[rule]]`.
type Rule<'a> = (&'a str, &'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// A configuration with the two repositories and one `[[rule]]` per entry, each entry written as
/// `(repository, name, action, package, condition)`.
fn config_with(rules: &[Rule<'_>]) -> Config {
    let mut source = REPOSITORIES.to_owned();
    for (repository, name, action, package, condition) in rules {
        source.push_str(&format!(
            "\n[[rule]]\nrepository = \"{repository}\"\nname = \"{name}\"\naction = \"{action}\"\n"
        ));
        if let Some(package) = package {
            source.push_str(&format!("package = \"{package}\"\n"));
        }
        if let Some(condition) = condition {
            // A TOML literal string keeps CEL's quotes as they are.
            source.push_str(&format!("condition = \"\"\"{condition}\"\"\"\n"));
        }
    }
    match config::parse(&source, "proxy.toml", &|_| None) {
        Ok(config) => config,
        Err(error) => panic!("test configuration is invalid: {error}\n{source}"),
    }
}

fn policy_with(rules: &[Rule<'_>]) -> Policy {
    match Policy::compile(&config_with(rules).rules) {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    }
}

fn compile_error(rules: &[Rule<'_>]) -> PolicyError {
    match Policy::compile(&config_with(rules).rules) {
        Ok(policy) => panic!("expected a compile error, got {policy:?}"),
        Err(error) => error,
    }
}

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn project(name: &str) -> ProjectName {
    ProjectName::parse(name).unwrap()
}

/// 2024-06-01T12:00:00Z.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_717_243_200)
}

struct File {
    project: ProjectName,
    version: Option<String>,
    filename: String,
    kind: DistKind,
    upload_time: Option<String>,
    yanked: bool,
    provenance: bool,
    status: StatusMarker,
}

impl File {
    fn wheel(name: &str, version: &str) -> File {
        let project = project(name);
        File {
            filename: format!(
                "{}-{version}-py3-none-any.whl",
                project.as_str().replace('-', "_")
            ),
            project,
            version: Some(version.to_owned()),
            kind: DistKind::Wheel,
            upload_time: None,
            yanked: false,
            provenance: false,
            status: StatusMarker::Active,
        }
    }

    fn uploaded(mut self, time: &str) -> File {
        self.upload_time = Some(time.to_owned());
        self
    }

    fn facts(&self) -> FileFacts<'_> {
        FileFacts {
            project: &self.project,
            version: self.version.as_deref(),
            filename: &self.filename,
            kind: self.kind,
            upload_time: self.upload_time.as_deref(),
            yanked: self.yanked,
            provenance: self.provenance,
            status: &self.status,
        }
    }
}

fn decide(policy: &Policy, repository: &str, file: &File) -> Decision {
    policy.decide(&repo(repository), &file.facts(), now())
}

fn denied_by(repository: &str, rule: &str) -> Decision {
    Decision::Deny {
        by: RuleRef {
            repository: repo(repository),
            rule: RuleName::parse(rule).unwrap(),
        },
    }
}

fn allowed_by(repository: &str, rule: &str) -> Decision {
    Decision::Allow {
        by: Some(RuleRef {
            repository: repo(repository),
            rule: RuleName::parse(rule).unwrap(),
        }),
        would_deny: None,
    }
}

const ALLOWED: Decision = Decision::Allow {
    by: None,
    would_deny: None,
};

fn rule_ref(repository: &str, rule: &str) -> RuleRef {
    RuleRef {
        repository: repo(repository),
        rule: RuleName::parse(rule).unwrap(),
    }
}

/// The rules of `rules`, with the ones named in `audited` in `mode = "audit"`.
fn policy_auditing(rules: &[Rule<'_>], audited: &[&str]) -> Policy {
    let mut config = config_with(rules);
    for rule in &mut config.rules {
        if audited.contains(&rule.name.as_str()) {
            rule.mode = crate::config::Mode::Audit;
        }
    }
    Policy::compile(&config.rules).unwrap()
}

#[test]
fn an_audited_deny_allows_and_says_it_would_deny() {
    let rules: &[Rule<'_>] = &[(
        "pypi",
        "no-2",
        "DENY",
        Some("wgfx-alpha"),
        Some("pkg.version.id == '2.0'"),
    )];
    let policy = policy_auditing(rules, &["no-2"]);
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-alpha", "2.0")),
        Decision::Allow {
            by: None,
            would_deny: Some(rule_ref("pypi", "no-2")),
        }
    );
    // A file the condition does not match is no would-deny.
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-alpha", "1.0")),
        ALLOWED
    );
    // Enforced, the same rule denies.
    assert_eq!(
        decide(
            &policy_with(rules),
            "pypi",
            &File::wheel("wgfx-alpha", "2.0")
        ),
        denied_by("pypi", "no-2")
    );
}

#[test]
fn an_audited_rule_falls_through_to_what_applies_without_it() {
    let file = File::wheel("wgfx-alpha", "2.0");
    // Over an enforced repository-wide DENY: denied by it.
    let policy = policy_auditing(
        &[
            ("pypi", "audited", "DENY", Some("wgfx-alpha"), None),
            ("pypi", "wide", "DENY", None, None),
        ],
        &["audited"],
    );
    assert_eq!(decide(&policy, "pypi", &file), denied_by("pypi", "wide"));
    // Over an enforced repository-wide ALLOW: allowed by it, with the would-deny.
    let policy = policy_auditing(
        &[
            ("pypi", "audited", "DENY", Some("wgfx-alpha"), None),
            ("pypi", "wide", "ALLOW", None, None),
        ],
        &["audited"],
    );
    assert_eq!(
        decide(&policy, "pypi", &file),
        Decision::Allow {
            by: Some(rule_ref("pypi", "wide")),
            would_deny: Some(rule_ref("pypi", "audited")),
        }
    );
    // An audited ALLOW does not lift an enforced DENY.
    let policy = policy_auditing(
        &[
            ("pypi", "audited", "ALLOW", Some("wgfx-alpha"), None),
            ("pypi", "wide", "DENY", None, None),
        ],
        &["audited"],
    );
    assert_eq!(decide(&policy, "pypi", &file), denied_by("pypi", "wide"));
    // An audited repository-wide DENY after an enforced package ALLOW would not have decided.
    let policy = policy_auditing(
        &[
            ("pypi", "allowed", "ALLOW", Some("wgfx-alpha"), None),
            ("pypi", "wide", "DENY", None, None),
        ],
        &["wide"],
    );
    assert_eq!(
        decide(&policy, "pypi", &file),
        allowed_by("pypi", "allowed")
    );
    // Nor after an audited package ALLOW (which, enforced, would have decided first).
    let policy = policy_auditing(
        &[
            ("pypi", "allowed", "ALLOW", Some("wgfx-alpha"), None),
            ("pypi", "wide", "DENY", None, None),
        ],
        &["allowed", "wide"],
    );
    assert_eq!(decide(&policy, "pypi", &file), ALLOWED);
}

#[test]
fn through_several_repositories_an_enforced_deny_still_wins() {
    let policy = policy_auditing(
        &[
            ("pypi", "audited", "DENY", None, None),
            ("mirror", "enforced", "DENY", Some("wgfx-alpha"), None),
        ],
        &["audited"],
    );
    let file = File::wheel("wgfx-alpha", "2.0");
    let through = [repo("pypi"), repo("mirror")];
    assert_eq!(
        policy.decide_through(&through, &file.facts(), now()),
        denied_by("mirror", "enforced")
    );
    let other = File::wheel("wgfx-beta", "1.0");
    assert_eq!(
        policy.decide_through(&through, &other.facts(), now()),
        Decision::Allow {
            by: None,
            would_deny: Some(rule_ref("pypi", "audited")),
        }
    );
}

#[test]
fn policy_is_shareable_between_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Policy>();
}

#[test]
fn no_rules_allow_everything() {
    let policy = policy_with(&[]);
    assert!(policy.is_empty());
    assert!(!policy.uses_now());
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("django", "1.0")),
        ALLOWED
    );
}

#[test]
fn deny_one_version_of_one_package() {
    let policy = policy_with(&[(
        "pypi",
        "no-2",
        "DENY",
        Some("wgfx-alpha"),
        Some("pkg.version.id == '2.0'"),
    )]);
    assert!(!policy.is_empty());
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-alpha", "2.0")),
        denied_by("pypi", "no-2")
    );
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-alpha", "1.0")),
        ALLOWED
    );
    // Other packages and other repositories are not covered.
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-beta", "2.0")),
        ALLOWED
    );
    assert_eq!(
        decide(&policy, "mirror", &File::wheel("wgfx-alpha", "2.0")),
        ALLOWED
    );
    // Any spelling of the project is the same normalised name.
    let spelled = File::wheel("WGFX_Alpha", "2.0");
    assert_eq!(decide(&policy, "pypi", &spelled), denied_by("pypi", "no-2"));
    assert_eq!(policy.eval_errors(), 0);
}

#[test]
fn precedence_table_of_spec_5_1() {
    // (package rule, repository-wide rule, version) -> decision. The package rule matches 2.0
    // only, the repository-wide rule matches 3.0 and above (or everything when unconditional).
    let package_allow = (
        "pypi",
        "pkg-allow",
        "ALLOW",
        Some("pkg-a"),
        Some("pkg.version.id == '2.0'"),
    );
    let package_deny = (
        "pypi",
        "pkg-deny",
        "DENY",
        Some("pkg-a"),
        Some("pkg.version.id == '2.0'"),
    );
    let wide_deny = (
        "pypi",
        "wide-deny",
        "DENY",
        None,
        Some("version(pkg.version.id) >= version('3.0')"),
    );
    let wide_allow = (
        "pypi",
        "wide-allow",
        "ALLOW",
        None,
        Some("version(pkg.version.id) >= version('3.0')"),
    );
    let wide_deny_all = ("pypi", "wide-deny-all", "DENY", None, None);

    let cases = [
        // The package rule matches: its action decides, whatever the repository rule says.
        (
            vec![package_allow, wide_deny_all],
            "2.0",
            allowed_by("pypi", "pkg-allow"),
        ),
        (
            vec![package_deny, wide_allow],
            "2.0",
            denied_by("pypi", "pkg-deny"),
        ),
        // The package rule does not match: the repository-wide rule decides if it matches.
        (
            vec![package_allow, wide_deny_all],
            "1.0",
            denied_by("pypi", "wide-deny-all"),
        ),
        (
            vec![package_deny, wide_deny],
            "3.1",
            denied_by("pypi", "wide-deny"),
        ),
        (
            vec![package_deny, wide_allow],
            "3.1",
            allowed_by("pypi", "wide-allow"),
        ),
        // Neither matches: allowed, by no rule.
        (vec![package_deny, wide_deny], "1.0", ALLOWED),
        (vec![package_allow, wide_deny], "1.0", ALLOWED),
        // Only one of the two exists.
        (vec![wide_deny], "3.0", denied_by("pypi", "wide-deny")),
        (vec![package_deny], "2.0", denied_by("pypi", "pkg-deny")),
        (vec![package_deny], "3.0", ALLOWED),
    ];
    for (rules, version, expected) in cases {
        let policy = policy_with(&rules);
        let names: Vec<_> = rules.iter().map(|rule| rule.1).collect();
        assert_eq!(
            decide(&policy, "pypi", &File::wheel("pkg-a", version)),
            expected,
            "rules {names:?}, version {version}"
        );
    }
}

#[test]
fn repository_wide_deny_and_package_allows_make_an_allowlist() {
    let policy = policy_with(&[
        ("pypi", "only-listed", "DENY", None, None),
        ("pypi", "allow-alpha", "ALLOW", Some("wgfx-alpha"), None),
        ("pypi", "allow-beta", "ALLOW", Some("wgfx.beta"), None),
    ]);
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-alpha", "2.0")),
        allowed_by("pypi", "allow-alpha")
    );
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("Wgfx_Beta", "1.0")),
        allowed_by("pypi", "allow-beta")
    );
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("wgfx-gamma", "1.0")),
        denied_by("pypi", "only-listed")
    );
}

#[test]
fn version_function_orders_as_pep_440_and_plain_strings_do_not() {
    let pep440 = policy_with(&[(
        "pypi",
        "old",
        "DENY",
        Some("a"),
        Some("version(pkg.version.id) < version('10.0')"),
    )]);
    let strings = policy_with(&[(
        "pypi",
        "old",
        "DENY",
        Some("a"),
        Some("pkg.version.id < '10.0'"),
    )]);
    let nine = File::wheel("a", "9.0");
    let ten_one = File::wheel("a", "10.1");
    // PEP 440: 9.0 is older than 10.0, so the DENY matches; 10.1 is not.
    assert_eq!(decide(&pep440, "pypi", &nine), denied_by("pypi", "old"));
    assert_eq!(decide(&pep440, "pypi", &ten_one), ALLOWED);
    // Lexicographic, as in the vendor's CEL: '9.0' sorts after '10.0', so it is not "less".
    assert_eq!(decide(&strings, "pypi", &nine), ALLOWED);
    assert_eq!(
        decide(&strings, "pypi", &File::wheel("a", "1.5")),
        denied_by("pypi", "old")
    );
    assert_eq!(pep440.eval_errors() + strings.eval_errors(), 0);
}

#[test]
fn version_values_compare_and_equal_each_other() {
    let policy = policy_with(&[(
        "pypi",
        "r",
        "DENY",
        Some("a"),
        Some("version(pkg.version.id) == version('1.0.0') && version('1.0rc1') < version('1.0')"),
    )]);
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("a", "1.0")),
        denied_by("pypi", "r")
    );
    assert_eq!(decide(&policy, "pypi", &File::wheel("a", "1.0.1")), ALLOWED);
}

#[test]
fn comparing_a_version_with_a_string_is_an_evaluation_error_that_fails_closed() {
    let deny = policy_with(&[(
        "pypi",
        "deny-old",
        "DENY",
        Some("a"),
        Some("version(pkg.version.id) < '3.0'"),
    )]);
    // A string comparison would say '9.0' < '3.0' is false and allow; failing closed denies.
    assert_eq!(
        decide(&deny, "pypi", &File::wheel("a", "9.0")),
        denied_by("pypi", "deny-old")
    );
    assert_eq!(deny.eval_errors(), 1);
    let allow = policy_with(&[(
        "pypi",
        "allow-new",
        "ALLOW",
        Some("a"),
        Some("'3.0' < version(pkg.version.id)"),
    )]);
    assert_eq!(decide(&allow, "pypi", &File::wheel("a", "9.0")), ALLOWED);
    assert_eq!(allow.eval_errors(), 1);
    let evaluation = deny.evaluate(&repo("pypi"), &File::wheel("a", "9.0").facts(), now());
    let [failure] = evaluation.failures.as_slice() else {
        panic!("expected one failure, got {evaluation:?}");
    };
    assert!(failure.message.contains("version"), "{}", failure.message);
    assert!(
        failure.message.contains("compare version() with version()"),
        "{}",
        failure.message
    );
    assert_eq!(deny.eval_errors(), 2, "every failure is counted");
}

#[test]
fn invalid_versions_fail_closed() {
    let deny = policy_with(&[(
        "pypi",
        "d",
        "DENY",
        Some("a"),
        Some("version(pkg.version.id) < version('3.0')"),
    )]);
    let allow = policy_with(&[
        (
            "pypi",
            "al",
            "ALLOW",
            Some("a"),
            Some("pkg.version.id.satisfies('>=1')"),
        ),
        ("pypi", "wide", "DENY", None, None),
    ]);
    let odd = File::wheel("a", "not_a_version");
    assert_eq!(decide(&deny, "pypi", &odd), denied_by("pypi", "d"));
    // The ALLOW rule counts as not matching, so the repository-wide DENY decides.
    assert_eq!(decide(&allow, "pypi", &odd), denied_by("pypi", "wide"));
    assert_eq!((deny.eval_errors(), allow.eval_errors()), (1, 1));
}

#[test]
fn satisfies_checks_pep_440_specifier_sets() {
    let policy = policy_with(&[(
        "pypi",
        "one-x",
        "DENY",
        Some("a"),
        Some("pkg.version.id.satisfies('>=1.2,<2')"),
    )]);
    for (version, denied) in [
        ("1.2", true),
        ("1.9.post1", true),
        ("2.0", false),
        ("1.1", false),
        ("2.0rc1", false),
    ] {
        let decision = decide(&policy, "pypi", &File::wheel("a", version));
        assert_eq!(!decision.is_allowed(), denied, "{version}: {decision:?}");
    }
}

#[test]
fn cooldown_on_upload_time() {
    let policy = policy_with(&[(
        "pypi",
        "cooldown",
        "DENY",
        None,
        Some("now - pkg.version.upload_time < duration('72h')"),
    )]);
    assert!(policy.uses_now());
    let an_hour_ago = File::wheel("a", "2.0").uploaded("2024-06-01T11:00:00.123456Z");
    let last_year = File::wheel("a", "1.0").uploaded("2023-06-01T12:00:00Z");
    assert_eq!(
        decide(&policy, "pypi", &an_hour_ago),
        denied_by("pypi", "cooldown")
    );
    assert_eq!(decide(&policy, "pypi", &last_year), ALLOWED);
    // Offsets other than Z are honoured: 13:30+02:00 is 11:30Z, half an hour ago.
    let offset = File::wheel("a", "2.0").uploaded("2024-06-01T13:30:00+02:00");
    assert_eq!(
        decide(&policy, "pypi", &offset),
        denied_by("pypi", "cooldown")
    );
    assert_eq!(policy.eval_errors(), 0);
}

#[test]
fn missing_or_invalid_upload_time_fails_closed_for_deny_and_for_allow() {
    let deny = policy_with(&[(
        "pypi",
        "cooldown",
        "DENY",
        None,
        Some("now - pkg.version.upload_time < duration('72h')"),
    )]);
    let allow = policy_with(&[
        (
            "pypi",
            "settled",
            "ALLOW",
            Some("a"),
            Some("now - pkg.version.upload_time > duration('72h')"),
        ),
        ("pypi", "rest", "DENY", None, None),
    ]);
    let unknown = File::wheel("a", "1.0");
    assert_eq!(
        decide(&deny, "pypi", &unknown),
        denied_by("pypi", "cooldown")
    );
    assert_eq!(decide(&allow, "pypi", &unknown), denied_by("pypi", "rest"));
    let garbled = File::wheel("a", "1.0").uploaded("yesterday");
    assert_eq!(
        decide(&deny, "pypi", &garbled),
        denied_by("pypi", "cooldown")
    );
    let evaluation = deny.evaluate(&repo("pypi"), &garbled.facts(), now());
    assert!(
        evaluation.failures.iter().any(|failure| failure
            .message
            .contains("'yesterday' is not an RFC 3339 timestamp")),
        "{evaluation:?}"
    );
    assert_eq!((deny.eval_errors(), allow.eval_errors()), (3, 1));
}

#[test]
fn has_tells_whether_an_upload_time_is_known() {
    let policy = policy_with(&[(
        "pypi",
        "cooldown-when-known",
        "DENY",
        None,
        Some("has(pkg.version.upload_time) && now - pkg.version.upload_time < duration('72h')"),
    )]);
    assert_eq!(decide(&policy, "pypi", &File::wheel("a", "1.0")), ALLOWED);
    let recent = File::wheel("a", "1.0").uploaded("2024-06-01T11:00:00Z");
    assert_eq!(
        decide(&policy, "pypi", &recent),
        denied_by("pypi", "cooldown-when-known")
    );
    assert_eq!(policy.eval_errors(), 0);
}

#[test]
fn yanked_kind_and_name_are_visible() {
    let policy = policy_with(&[(
        "pypi",
        "no-yanked-sdists",
        "DENY",
        None,
        Some("pkg.version.yanked || (pkg.file.kind == 'sdist' && pkg.file.name.endsWith('.zip')) || pkg.id.startsWith('evil')"),
    )]);
    let mut yanked = File::wheel("a", "1.0");
    yanked.yanked = true;
    assert_eq!(
        decide(&policy, "pypi", &yanked),
        denied_by("pypi", "no-yanked-sdists")
    );
    let mut zip = File::wheel("a", "1.0");
    zip.kind = DistKind::Sdist;
    zip.filename = "a-1.0.zip".to_owned();
    assert_eq!(
        decide(&policy, "pypi", &zip),
        denied_by("pypi", "no-yanked-sdists")
    );
    let mut tarball = File::wheel("a", "1.0");
    tarball.kind = DistKind::Sdist;
    tarball.filename = "a-1.0.tar.gz".to_owned();
    assert_eq!(decide(&policy, "pypi", &tarball), ALLOWED);
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("evil-pkg", "1.0")),
        denied_by("pypi", "no-yanked-sdists")
    );
    assert_eq!(decide(&policy, "pypi", &File::wheel("a", "1.0")), ALLOWED);
}

#[test]
fn provenance_and_project_status_are_visible() {
    let policy = policy_with(&[
        (
            "pypi",
            "no-archived",
            "DENY",
            None,
            Some("pkg.project.status == 'archived'"),
        ),
        (
            "pypi",
            "attested-only",
            "DENY",
            Some("signed"),
            Some("!pkg.file.provenance"),
        ),
        (
            "mirror",
            "unusual-status",
            "DENY",
            None,
            Some("!(pkg.project.status in ['active', 'deprecated'])"),
        ),
    ]);
    let mut archived = File::wheel("a", "1.0");
    archived.status = StatusMarker::Archived;
    assert_eq!(
        decide(&policy, "pypi", &archived),
        denied_by("pypi", "no-archived")
    );
    assert_eq!(decide(&policy, "pypi", &File::wheel("a", "1.0")), ALLOWED);
    let mut deprecated = File::wheel("a", "1.0");
    deprecated.status = StatusMarker::Deprecated;
    assert_eq!(decide(&policy, "pypi", &deprecated), ALLOWED);
    assert_eq!(decide(&policy, "mirror", &deprecated), ALLOWED);

    // Requiring provenance for one package.
    let unsigned = File::wheel("signed", "1.0");
    assert_eq!(
        decide(&policy, "pypi", &unsigned),
        denied_by("pypi", "attested-only")
    );
    let mut attested = File::wheel("signed", "1.0");
    attested.provenance = true;
    assert_eq!(decide(&policy, "pypi", &attested), ALLOWED);

    // A marker of a later standard is still a status a rule can catch.
    let mut haunted = File::wheel("a", "1.0");
    haunted.status = StatusMarker::Other("haunted".into());
    assert_eq!(
        decide(&policy, "mirror", &haunted),
        denied_by("mirror", "unusual-status")
    );
    let mut quarantined = File::wheel("a", "1.0");
    quarantined.status = StatusMarker::Quarantined;
    assert_eq!(
        decide(&policy, "mirror", &quarantined),
        denied_by("mirror", "unusual-status")
    );
    assert_eq!(policy.eval_errors(), 0, "both fields are always known");
}

#[test]
fn files_of_kind_other_have_no_version() {
    let policy = policy_with(&[
        (
            "pypi",
            "only-wheels",
            "DENY",
            Some("a"),
            Some("pkg.file.kind == 'other'"),
        ),
        (
            "pypi",
            "old",
            "DENY",
            Some("b"),
            Some("pkg.version.id == '1.0'"),
        ),
    ]);
    let mut exe = File::wheel("a", "1.0");
    exe.kind = DistKind::Other;
    exe.version = None;
    exe.filename = "a-1.0.win32.exe".to_owned();
    assert_eq!(
        decide(&policy, "pypi", &exe),
        denied_by("pypi", "only-wheels")
    );
    assert_eq!(policy.eval_errors(), 0);
    // Reading the version of such a file fails closed.
    exe.project = project("b");
    assert_eq!(decide(&policy, "pypi", &exe), denied_by("pypi", "old"));
    assert_eq!(policy.eval_errors(), 1);
}

#[test]
fn a_condition_that_is_not_a_bool_fails_closed() {
    let policy = policy_with(&[("pypi", "r", "DENY", Some("a"), Some("pkg.version.id"))]);
    let evaluation = policy.evaluate(&repo("pypi"), &File::wheel("a", "1.0").facts(), now());
    assert_eq!(evaluation.decision, denied_by("pypi", "r"));
    assert!(
        evaluation
            .failures
            .iter()
            .any(|failure| failure.message.contains("not a bool")),
        "{evaluation:?}"
    );
}

#[test]
fn comprehensions_and_standard_functions_are_accepted() {
    let policy = policy_with(&[(
        "pypi",
        "r",
        "DENY",
        None,
        Some("['bad-a', 'bad-b'].exists(name, pkg.id == name) || size(pkg.file.name) > 200 || pkg.file.name.matches('^x') || timestamp('2030-01-01T00:00:00Z') < now || type(pkg.id) != string"),
    )]);
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("bad-b", "1.0")),
        denied_by("pypi", "r")
    );
    assert_eq!(
        decide(&policy, "pypi", &File::wheel("good", "1.0")),
        ALLOWED
    );
    assert_eq!(policy.eval_errors(), 0);
}

#[test]
fn decide_through_a_group_needs_every_repository_to_allow() {
    let policy = policy_with(&[
        (
            "pypi",
            "member-deny",
            "DENY",
            Some("a"),
            Some("pkg.version.id == '2.0'"),
        ),
        ("mirror", "group-allow", "ALLOW", Some("a"), None),
    ]);
    let path = [repo("mirror"), repo("pypi")];
    assert_eq!(
        policy.decide_through(&path, &File::wheel("a", "2.0").facts(), now()),
        denied_by("pypi", "member-deny")
    );
    assert_eq!(
        policy.decide_through(&path, &File::wheel("a", "1.0").facts(), now()),
        allowed_by("mirror", "group-allow")
    );
}

#[test]
fn failures_are_logged_once_per_rule_but_always_counted() {
    let policy = policy_with(&[(
        "pypi",
        "d",
        "DENY",
        Some("a"),
        Some("version(pkg.version.id) < version('3.0')"),
    )]);
    let odd = File::wheel("a", "odd_version");
    for _ in 0..3 {
        assert!(!decide(&policy, "pypi", &odd).is_allowed());
    }
    assert_eq!(policy.eval_errors(), 3);
    let rule = &policy.rules[0];
    assert!(rule.warned.load(Ordering::Relaxed));
}

#[test]
fn rules_are_listed_in_file_order_per_repository() {
    let policy = policy_with(&[
        ("pypi", "b-rule", "DENY", Some("b"), None),
        ("mirror", "m-rule", "DENY", None, None),
        ("pypi", "a-rule", "ALLOW", Some("a"), None),
    ]);
    let names = |repository: Option<&RepoName>| -> Vec<String> {
        policy
            .rules(repository)
            .map(|rule| rule.name.to_string())
            .collect()
    };
    assert_eq!(names(None), ["b-rule", "m-rule", "a-rule"]);
    assert_eq!(names(Some(&repo("pypi"))), ["b-rule", "a-rule"]);
    assert_eq!(names(Some(&repo("mirror"))), ["m-rule"]);
}

/// Checks a compile error names the repository, rule, line and position, and says `what`.
fn assert_condition_error(condition: &str, position: &str, what: &str) {
    let error = compile_error(&[
        (
            "pypi",
            "fine",
            "DENY",
            Some("x"),
            Some("pkg.version.id == '1'"),
        ),
        ("pypi", "broken", "DENY", Some("y"), Some(condition)),
    ]);
    assert_eq!(error.line(), Some(21), "{error}");
    let message = error.to_string();
    for part in [
        "rule \"broken\" in repository \"pypi\" (line 21)",
        &format!("at {position}"),
        what,
    ] {
        assert!(message.contains(part), "expected {part:?} in {message}");
    }
}

#[test]
fn condition_errors_name_the_rule_the_line_and_the_position() {
    assert_condition_error("pkg.version.id == ", "1:19", "syntax error");
    assert_condition_error(
        "pkg.id == 'a' &&\n  pkg.version.id ==",
        "2:20",
        "syntax error",
    );
    assert_condition_error(
        "pkg.nme == 'x'",
        "1:4",
        "unknown field `nme` of `pkg` at 1:4; pkg has `id`, `version`, `file`, `project`",
    );
    assert_condition_error(
        "pkg.project.state == 'archived'",
        "1:12",
        "unknown field `state` of `pkg.project` at 1:12; pkg.project has `status`",
    );
    assert_condition_error(
        "pkg.file.provenance.url == ''",
        "1:20",
        "`pkg.file.provenance` at 1:20 has no fields (it is a bool)",
    );
    assert_condition_error(
        "pkg.project.status.reason == ''",
        "1:19",
        "`pkg.project.status` at 1:19 has no fields (it is a string)",
    );
    assert_condition_error(
        "pkg.version.idd == '1'",
        "1:12",
        "unknown field `idd` of `pkg.version`",
    );
    assert_condition_error(
        "has(pkg.version.uploaded)",
        "1:4",
        "unknown field `uploaded` of `pkg.version`",
    );
    assert_condition_error(
        "pkg.id.name == 'x'",
        "1:7",
        "`pkg.id` at 1:7 has no fields (it is a string)",
    );
    assert_condition_error("now.year > 1", "1:4", "`now` at 1:4 has no fields");
    assert_condition_error("foo(1)", "1:4", "unknown function `foo`");
    assert_condition_error("pkg.id.shout()", "1:13", "unknown function `shout`");
    assert_condition_error("packag.id == 'x'", "1:1", "unknown variable `packag`");
    assert_condition_error("[1].exists(x, y == x)", "1:15", "unknown variable `y`");
    assert_condition_error(
        "version(pkg.version.id) < version('three')",
        "1:34",
        "'three' is not a PEP 440 version",
    );
    assert_condition_error(
        "pkg.version.id.satisfies('>>1')",
        "1:25",
        "'>>1' is not a PEP 440 specifier set",
    );
    assert_condition_error(
        "pkg.version.version()",
        "1:20",
        "`version` at 1:20 takes one string",
    );
    assert_condition_error(
        "satisfies(pkg.version.id)",
        "1:10",
        "`satisfies` at 1:10 is called on a version string",
    );
}

#[test]
fn shipped_example_rules_compile() {
    let shipped = include_str!("../../proxy.toml");
    // The examples are commented out; uncomment the TOML lines between the first `# [[rule]]`
    // and the next section.
    let mut in_rules = false;
    let is_toml = |text: &str| {
        text == "[[rule]]"
            || text.split_once(" = ").is_some_and(|(key, _)| {
                !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            })
    };
    let uncommented: Vec<String> = shipped
        .lines()
        .map(|line| {
            if line.starts_with("# [[rule]]") {
                in_rules = true;
            } else if !line.starts_with('#') || line.starts_with("# (") {
                in_rules = false;
            }
            match line.strip_prefix("# ") {
                Some(rest) if in_rules && is_toml(rest) => rest.to_owned(),
                _ => line.to_owned(),
            }
        })
        .collect();
    let source = uncommented.join("\n");
    let config = match config::parse(&source, "proxy.toml", &|_| None) {
        Ok(config) => config,
        Err(error) => panic!("{error}\n{source}"),
    };
    assert!(config.rules.len() >= 4, "{:?}", config.rules);
    let policy = match Policy::compile(&config.rules) {
        Ok(policy) => policy,
        Err(error) => panic!("{error}"),
    };
    assert!(!decide(&policy, "pypi", &File::wheel("django", "2.2")).is_allowed());
    assert!(decide(
        &policy,
        "pypi",
        &File::wheel("django", "4.2").uploaded("2020-01-01T00:00:00Z")
    )
    .is_allowed());
    let mut attested = File::wheel("cryptography", "42.0").uploaded("2020-01-01T00:00:00Z");
    assert!(!decide(&policy, "pypi", &attested).is_allowed());
    attested.provenance = true;
    assert!(decide(&policy, "pypi", &attested).is_allowed());
}

mod cli_text {
    use super::*;
    use crate::policy::cli::{self, CliError};

    fn sample() -> Policy {
        policy_with(&[
            (
                "pypi",
                "no-2",
                "DENY",
                Some("wgfx-alpha"),
                Some("pkg.version.id == '2.0'"),
            ),
            ("pypi", "only-listed", "DENY", None, None),
            (
                "mirror",
                "cooldown",
                "DENY",
                None,
                Some("now - pkg.version.upload_time <\n duration('72h')"),
            ),
        ])
    }

    #[test]
    fn list_prints_gcloud_blocks() {
        let policy = sample();
        assert_eq!(
            cli::list(&policy, Some(&repo("pypi"))),
            "RULE: no-2\nPACKAGE: wgfx-alpha\nACTION: DENY\nOPERATION: DOWNLOAD\nCONDITION: pkg.version.id == '2.0'\nMODE: enforce\n\
             \nRULE: only-listed\nPACKAGE:\nACTION: DENY\nOPERATION: DOWNLOAD\nCONDITION:\nMODE: enforce\n"
        );
        let all = cli::list(&policy, None);
        assert!(all.starts_with("REPOSITORY: pypi\nRULE: no-2\n"), "{all}");
        assert!(
            all.ends_with("REPOSITORY: mirror\nRULE: cooldown\nPACKAGE:\nACTION: DENY\nOPERATION: DOWNLOAD\nCONDITION: now - pkg.version.upload_time < duration('72h')\nMODE: enforce\n"),
            "{all}"
        );
        assert_eq!(
            cli::list(&policy_with(&[]), Some(&repo("pypi"))),
            "Listed 0 items: repository \"pypi\" has no download rules.\n"
        );
    }

    #[test]
    fn describe_prints_the_gcloud_resource() {
        let policy = sample();
        let name = RuleName::parse("no-2").unwrap();
        assert_eq!(
            cli::describe(&policy, &name, &repo("pypi")).unwrap(),
            "action: DENY\ncondition:\n  expression: pkg.version.id == '2.0'\nmode: enforce\nname: repositories/pypi/rules/no-2\noperation: DOWNLOAD\npackageId: wgfx-alpha\n"
        );
        let wide = RuleName::parse("only-listed").unwrap();
        assert_eq!(
            cli::describe(&policy, &wide, &repo("pypi")).unwrap(),
            "action: DENY\nmode: enforce\nname: repositories/pypi/rules/only-listed\noperation: DOWNLOAD\n"
        );
        let error = cli::describe(&policy, &name, &repo("mirror")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "repository \"mirror\" has no rule named \"no-2\"; its rules are cooldown"
        );
    }

    #[test]
    fn audited_rules_show_their_mode_and_what_they_would_do() {
        let policy = policy_auditing(
            &[(
                "pypi",
                "no-2",
                "DENY",
                Some("wgfx-alpha"),
                Some("pkg.version.id == '2.0'"),
            )],
            &["no-2"],
        );
        assert!(cli::list(&policy, None).ends_with("MODE: audit\n"));
        let name = RuleName::parse("no-2").unwrap();
        assert!(cli::describe(&policy, &name, &repo("pypi"))
            .unwrap()
            .contains("\nmode: audit\n"));
        let outcome = cli::test(&policy, &repo("pypi"), "wgfx-alpha", "2.0", None, now()).unwrap();
        assert!(outcome.decision.is_allowed());
        assert_eq!(
            outcome.text,
            "ALLOW wgfx-alpha 2.0 (wgfx_alpha-2.0-py3-none-any.whl): no rule matched\n  \
             audit: rule \"no-2\" in repository \"pypi\" (mode = \"audit\") would deny it; it is served, and the request is logged and counted as a would-deny\n"
        );
    }

    #[test]
    fn describe_quotes_conditions_yaml_would_misread() {
        let policy = policy_with(&[
            (
                "pypi",
                "colon",
                "DENY",
                Some("a"),
                Some("pkg.file.name.contains(': ')"),
            ),
            (
                "pypi",
                "quote",
                "DENY",
                Some("b"),
                Some("'1.0' == pkg.version.id"),
            ),
        ]);
        let colon =
            cli::describe(&policy, &RuleName::parse("colon").unwrap(), &repo("pypi")).unwrap();
        assert!(
            colon.contains("  expression: 'pkg.file.name.contains('': '')'\n"),
            "{colon}"
        );
        let quote =
            cli::describe(&policy, &RuleName::parse("quote").unwrap(), &repo("pypi")).unwrap();
        assert!(
            quote.contains("  expression: '''1.0'' == pkg.version.id'\n"),
            "{quote}"
        );
    }

    #[test]
    fn test_prints_the_decision_and_the_rule() {
        let policy = sample();
        let denied = cli::test(&policy, &repo("pypi"), "WGFX_alpha", "2.0", None, now()).unwrap();
        assert!(!denied.decision.is_allowed());
        assert_eq!(
            denied.text,
            "DENY  wgfx-alpha 2.0 (wgfx_alpha-2.0-py3-none-any.whl): rule \"no-2\" in repository \"pypi\"\n"
        );
        let unlisted = cli::test(
            &policy,
            &repo("pypi"),
            "other",
            "1.0",
            Some("other-1.0.tar.gz"),
            now(),
        )
        .unwrap();
        assert_eq!(
            unlisted.text,
            "DENY  other 1.0 (other-1.0.tar.gz): rule \"only-listed\" in repository \"pypi\"\n"
        );
        let allowed = cli::test(&policy, &repo("mirror"), "a", "1.0", None, now()).unwrap();
        assert!(
            !allowed.decision.is_allowed(),
            "no upload time: the cooldown fails closed"
        );
        assert!(allowed.text.contains("note: the condition of rule \"cooldown\" in repository \"mirror\" could not be evaluated"), "{}", allowed.text);
        assert!(
            allowed
                .text
                .contains("counted as matching (a DENY rule fails closed)"),
            "{}",
            allowed.text
        );
        let free = cli::test(&policy_with(&[]), &repo("pypi"), "a", "1.0", None, now()).unwrap();
        assert_eq!(
            free.text,
            "ALLOW a 1.0 (a-1.0-py3-none-any.whl): no rule matched\n"
        );
        assert!(free.decision.is_allowed());
    }

    #[test]
    fn test_refuses_inputs_it_cannot_answer_for() {
        let policy = sample();
        assert!(matches!(
            cli::test(&policy, &repo("pypi"), "bad name", "1.0", None, now()),
            Err(CliError::Package(_))
        ));
        let error = cli::test(
            &policy,
            &repo("pypi"),
            "a",
            "1.0",
            Some("b-1.0.tar.gz"),
            now(),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "the file b-1.0.tar.gz is of project b, not of a; give a FILENAME of the package and version being tested, or leave it out"
        );
        assert!(matches!(
            cli::test(
                &policy,
                &repo("pypi"),
                "a",
                "1.0",
                Some("a-2.0.tar.gz"),
                now()
            ),
            Err(CliError::FilenameMismatch { .. })
        ));
        assert!(matches!(
            cli::test(
                &policy,
                &repo("pypi"),
                "a",
                "1.0",
                Some("../a-1.0.tar.gz"),
                now()
            ),
            Err(CliError::Filename(_))
        ));
        assert!(matches!(
            cli::test(&policy, &repo("pypi"), "a", "1.0-2", None, now()),
            Err(CliError::UnspellableVersion { .. })
        ));
    }
}
