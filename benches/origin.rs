//! The cost of one package-group decision (issue 14 budgets it under 1 µs with 1,000 groups):
//! [`PackageGroups::check`] for a package whose group is an exact name, a prefix three levels
//! deep (INHERIT resolved at load), the catch-all `/pypi/*`, and a blocked origin.
//!
//! A plain timing loop rather than a benchmark framework, so that it needs no extra dependency
//! and runs in a few seconds: `cargo bench --bench origin`.

use std::hint::black_box;
use std::time::Instant;

use wheelgate::config::{self, RepoName};
use wheelgate::origin::{GroupVerdict, PackageGroups, Restriction};
use wheelgate::simple::ProjectName;

const GROUPS: usize = 1_000;
const ITERATIONS: u32 = 2_000_000;

/// `/pypi/*` blocking external upstreams, then 1,000 groups: per team a prefix `team-N~` with
/// a nested `team-N-lib~` (INHERIT), and exact names, each allowing one remote.
fn configuration() -> String {
    let mut source = String::from(
        "[[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"https://example.invalid/simple/\"\n\n\
         [[repository]]\nname = \"mirror\"\ntype = \"remote\"\nurl = \"https://mirror.example.invalid/simple/\"\n\n\
         [[repository]]\nname = \"internal\"\ntype = \"hosted\"\n\n\
         [server]\ndefault_repository = \"pypi\"\n\n\
         [[package_group]]\npattern = \"/pypi/*\"\nexternal_upstream = \"ALLOW_SPECIFIC_REPOSITORIES\"\n\
         external_upstream_repositories = [\"pypi\"]\n",
    );
    let mut count = 1;
    let mut team = 0;
    while count < GROUPS {
        source.push_str(&format!(
            "\n[[package_group]]\npattern = \"/pypi//team-{team}~\"\nexternal_upstream = \"BLOCK\"\n\
             publish = \"ALLOW_SPECIFIC_REPOSITORIES\"\npublish_repositories = [\"internal\"]\n\
             \n[[package_group]]\npattern = \"/pypi//team-{team}-lib~\"\n\
             \n[[package_group]]\npattern = \"/pypi//tool-{team}$\"\nexternal_upstream = \"ALLOW_SPECIFIC_REPOSITORIES\"\n\
             external_upstream_repositories = [\"mirror\"]\n"
        ));
        count += 3;
        team += 1;
    }
    source
}

/// Mean nanoseconds per decision over `ITERATIONS`, after a warm-up, and the verdict.
fn measure(
    groups: &PackageGroups,
    package: &ProjectName,
    restriction: Restriction,
    repository: &RepoName,
) -> (f64, bool) {
    let mut allowed = false;
    let mut run = |times: u32| {
        for _ in 0..times {
            allowed = black_box(groups.check(
                black_box(package),
                black_box(restriction),
                black_box(repository),
            )) == GroupVerdict::Allowed;
        }
    };
    run(ITERATIONS / 10);
    let start = Instant::now();
    run(ITERATIONS);
    let elapsed = start.elapsed();
    (elapsed.as_nanos() as f64 / f64::from(ITERATIONS), allowed)
}

fn main() {
    let source = configuration();
    let load_start = Instant::now();
    let config =
        config::parse(&source, "bench.toml", &|_| None).unwrap_or_else(|error| panic!("{error}"));
    let load = load_start.elapsed();
    let groups = &config.package_groups;
    let project = |name: &str| ProjectName::parse(name).unwrap_or_else(|error| panic!("{error}"));
    let repo = |name: &str| RepoName::parse(name).unwrap_or_else(|error| panic!("{error}"));
    let (pypi, mirror, internal) = (repo("pypi"), repo("mirror"), repo("internal"));
    let cases = [
        (
            "(a) exact group, allowed",
            project("tool-150"),
            Restriction::ExternalUpstream,
            &mirror,
        ),
        (
            "(b) prefix 3 segments deep, INHERIT",
            project("team-150-lib-core-extra"),
            Restriction::Publish,
            &internal,
        ),
        (
            "(c) no group of its own (/pypi/*)",
            project("requests-toolbelt"),
            Restriction::ExternalUpstream,
            &pypi,
        ),
        (
            "(d) blocked (Arc clone of the pattern)",
            project("Team_150.Lib"),
            Restriction::ExternalUpstream,
            &pypi,
        ),
    ];
    println!(
        "{} package groups, parsed and resolved with the rest of the file in {:.1} ms; {ITERATIONS} decisions per case",
        groups.len(),
        load.as_secs_f64() * 1e3,
    );
    println!("{:<42} {:>12} {:>9}", "case", "ns/decision", "verdict");
    for (name, package, restriction, repository) in &cases {
        let (nanos, allowed) = measure(groups, package, *restriction, repository);
        let verdict = if allowed { "ALLOWED" } else { "BLOCKED" };
        println!("{name:<42} {nanos:>12.1} {verdict:>9}");
    }
}
