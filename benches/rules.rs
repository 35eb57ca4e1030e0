//! The cost of one download-rule decision (issue 5 budgets it): 100 package rules and a
//! repository-wide rule in one repository, as on a page of a busy project every file is decided.
//!
//! A plain timing loop rather than a benchmark framework, so that it needs no extra dependency
//! and runs in a few seconds: `cargo bench --bench rules`.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wheelgate::config;
use wheelgate::policy::{FileFacts, Policy};
use wheelgate::simple::{DistKind, ProjectName, StatusMarker};

const PACKAGES: usize = 100;
const ITERATIONS: u32 = 200_000;

fn configuration() -> String {
    let mut source = String::from(
        "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n\n\
         [[rule]]\nrepository = \"pypi\"\nname = \"no-yanked-sdists\"\naction = \"DENY\"\n\
         condition = \"pkg.version.yanked && pkg.file.kind == 'sdist'\"\n",
    );
    for index in 0..PACKAGES {
        let condition = if index % 2 == 0 {
            "version(pkg.version.id) < version('3.0')"
        } else {
            "now - pkg.version.upload_time < duration('72h')"
        };
        source.push_str(&format!(
            "\n[[rule]]\nrepository = \"pypi\"\nname = \"rule-{index}\"\naction = \"DENY\"\npackage = \"pkg-{index}\"\ncondition = \"{condition}\"\n"
        ));
    }
    source
}

/// Mean nanoseconds per decision over `ITERATIONS`, after a warm-up.
fn measure(policy: &Policy, file: &FileFacts<'_>, now: SystemTime) -> (f64, bool) {
    let repository = config::RepoName::parse("pypi").unwrap_or_else(|error| panic!("{error}"));
    let mut allowed = false;
    for _ in 0..ITERATIONS / 10 {
        allowed =
            black_box(policy.decide(black_box(&repository), black_box(file), now)).is_allowed();
    }
    let start = Instant::now();
    for _ in 0..ITERATIONS {
        allowed =
            black_box(policy.decide(black_box(&repository), black_box(file), now)).is_allowed();
    }
    let elapsed: Duration = start.elapsed();
    (elapsed.as_nanos() as f64 / f64::from(ITERATIONS), allowed)
}

fn main() {
    let config = config::parse(&configuration(), "bench.toml", &|_| None)
        .unwrap_or_else(|error| panic!("{error}"));
    let compile_start = Instant::now();
    let policy = Policy::compile(&config.rules).unwrap_or_else(|error| panic!("{error}"));
    let compile = compile_start.elapsed();
    let now = UNIX_EPOCH + Duration::from_secs(1_717_243_200);
    let project = |name: &str| ProjectName::parse(name).unwrap_or_else(|error| panic!("{error}"));

    let versioned = project("pkg-42");
    let unruled = project("no-rule-here");
    let cooled = project("pkg-43");
    let active = StatusMarker::Active;
    let cases = [
        (
            "(a) package rule with version()",
            FileFacts {
                project: &versioned,
                version: Some("2.5"),
                filename: "pkg_42-2.5-py3-none-any.whl",
                kind: DistKind::Wheel,
                upload_time: Some("2024-01-01T00:00:00Z"),
                yanked: false,
                provenance: false,
                status: &active,
            },
        ),
        (
            "(b) no package rule (repository-wide only)",
            FileFacts {
                project: &unruled,
                version: Some("1.0"),
                filename: "no_rule_here-1.0.tar.gz",
                kind: DistKind::Sdist,
                upload_time: Some("2024-01-01T00:00:00Z"),
                yanked: false,
                provenance: false,
                status: &active,
            },
        ),
        (
            "(c) upload-time cooldown",
            FileFacts {
                project: &cooled,
                version: Some("1.0"),
                filename: "pkg_43-1.0-py3-none-any.whl",
                kind: DistKind::Wheel,
                upload_time: Some("2024-05-01T00:00:00.123456Z"),
                yanked: false,
                provenance: false,
                status: &active,
            },
        ),
    ];

    println!(
        "{} rules in one repository, compiled in {:.1} ms ({:.1} µs per rule); {ITERATIONS} decisions per case",
        config.rules.len(),
        compile.as_secs_f64() * 1e3,
        compile.as_secs_f64() * 1e6 / config.rules.len() as f64,
    );
    println!("{:<44} {:>12} {:>9}", "case", "ns/decision", "decision");
    for (name, file) in &cases {
        let (nanos, allowed) = measure(&policy, file, now);
        let decision = if allowed { "ALLOW" } else { "DENY" };
        println!("{name:<44} {nanos:>12.0} {decision:>9}");
    }
    println!("evaluation errors: {}", policy.eval_errors());
}
