use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::config::Mode;

/// Records in a map, as the store would hold them.
#[derive(Default)]
struct Map(Mutex<HashMap<(String, String), OriginRecord>>);

impl Records for Map {
    fn record(&self, repository: &RepoName, package: &ProjectName) -> Option<OriginRecord> {
        self.0
            .lock()
            .unwrap()
            .get(&(repository.to_string(), package.to_string()))
            .cloned()
    }
}

impl Map {
    fn set(&self, repository: &str, package: &str, record: OriginRecord) {
        self.0
            .lock()
            .unwrap()
            .insert((repository.to_owned(), package.to_owned()), record);
    }
}

const REPOS: &str = r#"
[server]
default_repository = "all"

[[repository]]
name = "pypi"
type = "remote"
url = "https://example.invalid/simple/"

[[repository]]
name = "internal"
type = "hosted"

[[repository]]
name = "other"
type = "hosted"

[[repository]]
name = "inner"
type = "group"
members = ["pypi"]

[[repository]]
name = "all"
type = "group"
members = ["internal", "inner"]

[[repository]]
name = "public"
type = "group"
members = ["other", "pypi"]
"#;

fn origins(extra: &str) -> (PackageOrigins, Arc<Map>) {
    let config = crate::config::parse(&format!("{REPOS}{extra}"), "proxy.toml", &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let map = Arc::new(Map::default());
    (
        PackageOrigins::new(&config, map.clone(), Arc::new(PackageGroups::default())),
        map,
    )
}

fn name(text: &str) -> RepoName {
    RepoName::parse(text).unwrap()
}

fn names(list: &[&str]) -> Vec<RepoName> {
    list.iter().map(|n| name(n)).collect()
}

fn package(text: &str) -> ProjectName {
    ProjectName::parse(text).unwrap()
}

fn at(seconds: u64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_secs(seconds)
}

fn blocked_by(verdict: Verdict) -> PackageControl {
    match verdict {
        Verdict::Blocked(Control::Package { control, .. }) => *control,
        other => panic!("expected a package-level block, got {other:?}"),
    }
}

#[test]
fn nothing_recorded_allows_everything() {
    let (origins, _) = origins("");
    let acme = package("acme-utils");
    assert_eq!(
        origins.serve(&names(&["all", "inner", "pypi"]), &acme),
        Verdict::Allowed
    );
    assert_eq!(origins.publish(&name("internal"), &acme), Verdict::Allowed);
}

#[test]
fn a_first_upload_blocks_upstreams_through_every_group_holding_the_repository() {
    let (origins, records) = origins("");
    records.set(
        "internal",
        "acme-utils",
        OriginRecord::first_upload("1.0", at(1_700_000_000)),
    );
    let acme = package("acme-utils");
    // Through `all`, which holds `internal`, by way of the nested group.
    let control = blocked_by(origins.serve(&names(&["all", "inner", "pypi"]), &acme));
    assert_eq!(control.repository.as_str(), "internal");
    // Through a group without `internal`, and directly, the upstream is what it is.
    assert_eq!(
        origins.serve(&names(&["inner", "pypi"]), &acme),
        Verdict::Allowed
    );
    assert_eq!(origins.serve(&names(&["pypi"]), &acme), Verdict::Allowed);
    assert_eq!(
        origins.serve(&names(&["public", "pypi"]), &acme),
        Verdict::Allowed
    );
    // Its own files are served, and it may publish again.
    assert_eq!(
        origins.serve(&names(&["all", "internal"]), &acme),
        Verdict::Allowed
    );
    assert_eq!(origins.publish(&name("internal"), &acme), Verdict::Allowed);
    // Another package is untouched.
    assert_eq!(
        origins.serve(&names(&["all", "inner", "pypi"]), &package("acme")),
        Verdict::Allowed
    );
}

#[test]
fn a_first_ingestion_blocks_publishing_where_the_remote_shares_a_group() {
    let (origins, records) = origins("");
    records.set(
        "pypi",
        "six",
        OriginRecord::first_ingestion(at(1_700_000_000)),
    );
    let six = package("six");
    let control = blocked_by(origins.publish(&name("internal"), &six));
    assert_eq!(control.repository.as_str(), "pypi");
    assert_eq!(control.publish.allowance, Allowance::Block);
    let refusal = Control::Package {
        control: Box::new(control),
        restriction: Restriction::Publish,
    }
    .to_string();
    assert!(
        refusal.contains("package-level origin control of six in repository pypi: first ingested from upstream through pypi on 2023-11-14 22:13:20 UTC; publishing is blocked; override with a [[package_origin]]"),
        "{refusal}"
    );
    // Upstream versions still flow.
    assert_eq!(
        origins.serve(&names(&["all", "inner", "pypi"]), &six),
        Verdict::Allowed
    );
    // A repository that published the name first keeps publishing it.
    records.set(
        "other",
        "six",
        OriginRecord::first_upload("1.0", at(1_600_000_000)),
    );
    assert_eq!(origins.publish(&name("other"), &six), Verdict::Allowed);
}

#[test]
fn the_configuration_overrides_records_and_reserves_names() {
    let (origins, records) = origins(
        r#"
[[package_origin]]
repository = "internal"
package = "acme-utils"
upstream = "ALLOW"

[[package_origin]]
repository = "internal"
package = "reserved"
upstream = "BLOCK"

[[package_origin]]
repository = "internal"
package = "six"
publish = "ALLOW"

[[package_origin]]
repository = "pypi"
package = "evil"
upstream = "BLOCK"
"#,
    );
    records.set(
        "internal",
        "acme-utils",
        OriginRecord::first_upload("1.0", at(1_700_000_000)),
    );
    records.set(
        "pypi",
        "six",
        OriginRecord::first_ingestion(at(1_700_000_000)),
    );
    let through = names(&["all", "inner", "pypi"]);
    // The record said upstream BLOCK; the configuration says ALLOW, and keeps publish ALLOW.
    assert_eq!(
        origins.serve(&through, &package("acme-utils")),
        Verdict::Allowed
    );
    let control = origins.control(&name("internal"), &package("acme-utils"));
    assert_eq!(
        control.upstream.source,
        SettingSource::Configured { line: 33 }
    );
    assert!(matches!(control.publish.source, SettingSource::Recorded(_)));
    // A name never seen is reserved.
    let control = blocked_by(origins.serve(&through, &package("reserved")));
    assert_eq!(
        control.upstream.source,
        SettingSource::Configured { line: 38 }
    );
    // Publishing a name first ingested is allowed by the hosted repository's own entry.
    assert_eq!(
        origins.publish(&name("internal"), &package("six")),
        Verdict::Allowed
    );
    // A remote's own BLOCK holds directly and through every group.
    for way in [
        names(&["pypi"]),
        names(&["public", "pypi"]),
        through.clone(),
    ] {
        blocked_by(origins.serve(&way, &package("evil")));
    }
}

#[test]
fn offering_upstreams_are_those_allowed_through_a_group_with_the_repository() {
    let (origins, records) = origins("");
    let acme = package("acme-utils");
    let offering = origins.offering_upstreams(&name("internal"), &acme);
    assert_eq!(
        offering,
        vec![OfferingUpstream {
            remote: name("pypi"),
            group: name("all"),
        }]
    );
    records.set(
        "internal",
        "acme-utils",
        OriginRecord::first_upload("1.0", at(1_700_000_000)),
    );
    assert!(origins
        .offering_upstreams(&name("internal"), &acme)
        .is_empty());
}

/// The group level's BLOCK wins over a package-level ALLOW.
#[test]
fn a_group_level_block_wins() {
    struct BlockAll;
    impl GroupLevel for BlockAll {
        fn check(&self, _: &ProjectName, way: Way, _: &RepoName) -> GroupVerdict {
            GroupVerdict::Blocked {
                group: "/pypi//acme~".into(),
                restriction: way,
                mode: Mode::Enforce,
                advice: "the setting is BLOCK".into(),
            }
        }
    }
    let config = crate::config::parse(REPOS, "proxy.toml", &|_| None).unwrap();
    let origins = PackageOrigins::new(&config, Arc::new(Map::default()), Arc::new(BlockAll));
    let verdict = origins.serve(&names(&["all", "inner", "pypi"]), &package("acme"));
    assert_eq!(
        verdict,
        Verdict::Blocked(Control::Group {
            group: "/pypi//acme~".into(),
            restriction: Way::ExternalUpstream,
            repository: name("pypi"),
            advice: "the setting is BLOCK".into(),
        })
    );
    assert!(matches!(
        origins.publish(&name("internal"), &package("acme")),
        Verdict::Blocked(Control::Group { .. })
    ));
}

/// What the decision costs a warm group page: `cargo test --release --lib
/// origin_decision_cost -- --ignored --nocapture` prints ns per member asked, over the store's
/// records (a first upload recorded, as in the dependency-confusion scenario).
#[test]
#[ignore]
fn origin_decision_cost() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::Store::open(crate::store::StoreOptions {
        path: dir.path().to_path_buf(),
        max_size: u64::MAX,
        memory: 1 << 20,
    })
    .unwrap();
    for i in 0..1000 {
        store
            .record_ingestion("pypi", &format!("pkg-{i}"), at(1_700_000_000))
            .unwrap();
    }
    let config = crate::config::parse(REPOS, "proxy.toml", &|_| None).unwrap();
    let origins = PackageOrigins::new(&config, Arc::new(store), Arc::new(PackageGroups::default()));
    let through = names(&["all", "inner", "pypi"]);
    let own = names(&["all", "internal"]);
    let acme = package("pkg-500");
    let rounds = 1_000_000u32;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(origins.serve(std::hint::black_box(&through), &acme));
        std::hint::black_box(origins.serve(std::hint::black_box(&own), &acme));
    }
    let per_member = started.elapsed() / (rounds * 2);
    println!("origin decision: {per_member:?} per member of a warm group page");
}
