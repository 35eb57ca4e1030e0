//! Package groups applied to requests (SPEC §6, §6.1, issue 14): `[[package_group]]` decides
//! where a package's versions may come from, for pages, files, `.metadata` and uploads.
//!
//! - Dependency confusion stopped by a group (`/pypi//wgfx-acme~`, external upstream BLOCK) while
//!   the package level allows the upstream (`[[package_origin]]`), so that the group is what
//!   decides: pip and uv install the published 1.0 for every spelling, the upstream's 99.0 is on
//!   no page, its file (through the group and through the remote) is a 403 naming the group, and
//!   the upstream is never asked for anything of the name.
//! - `ALLOW_SPECIFIC_REPOSITORIES` allows exactly its list: of two remotes on the same upstream,
//!   and of two groups. `internal_upstream` also governs a hosted member's files through a group.
//! - INHERIT three levels deep, and `origin explain` printing the effective settings and the
//!   group each was inherited from.
//! - Audit: the confusion scenario with the group in `mode = "audit"` installs 99.0, logs and
//!   counts the would-deny naming the group; switched to enforce by a reload, 1.0 installs.
//! - A group that blocks publishing refuses twine's upload with a 403 naming it.

use ::http::StatusCode;

use crate::harness::clients::dists;
use crate::harness::fixtures::catalog;
use crate::harness::http;
use crate::harness::uploads::{plain_wheel, UploadForm};
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::wheelgate::{toml_string, GroupConfig};
use crate::harness::{wait_until, TestBed, TokenLayout};
use crate::metrics::Scrape;
use crate::origin::{
    assert_denied_by, assert_twine_refused, origin_bed, origin_explain, page_files,
    publish_acme_1_0, reserve, upstream_file_path, upstream_requests, ACME, ALL, PYPI,
    UPSTREAM_FILE,
};
use crate::publish::{assert_installed, assert_uploaded, install_with, INTERNAL};
use crate::rules::{access_lines, AUDIT_HEADER, RELOAD_LIMIT};

/// The group the private names belong to.
const ACME_GROUP: &str = "/pypi//wgfx-acme~";
/// The published file, the only one the group may serve while the group enforces.
const PUBLISHED_FILE: &str = "wgfx_acme_utils-1.0-py3-none-any.whl";
/// The spellings of the private name a client may use.
const SPELLINGS: [&str; 4] = [
    "wgfx-acme-utils",
    "Wgfx_Acme_Utils",
    "wgfx.acme.utils",
    "WGFX-ACME-UTILS",
];

/// A `[[package_group]]` table with `pattern` and the raw `key = value` lines `settings`.
fn package_group(pattern: &str, settings: &[&str]) -> String {
    format!(
        "\n[[package_group]]\npattern = {}\n{}\n",
        toml_string(pattern),
        settings.join("\n")
    )
}

/// How refusals name a group: `package group <pattern>`.
fn group_named(pattern: &str) -> String {
    format!("package group {pattern}")
}

/// The confusion scenario's configuration: the private names' group (publish ALLOW, external
/// upstream BLOCK, internal upstream ALLOW, with `mode`), and the package level allowing the
/// upstream for wgfx-acme-utils in `internal`, so that the first upload does not block it there.
fn confusion_toml(mode: &str) -> String {
    let group = package_group(
        ACME_GROUP,
        &[
            "publish = \"ALLOW\"",
            "external_upstream = \"BLOCK\"",
            "internal_upstream = \"ALLOW\"",
            &format!("mode = {}", toml_string(mode)),
        ],
    );
    format!("{group}{}", reserve("upstream = \"ALLOW\""))
}

/// The file names the JSON page of `project` in `repo` lists, sorted.
fn listed(bed: &TestBed, repo: &str, project: &str) -> Vec<String> {
    let mut names: Vec<String> = page_files(bed, repo, project)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    names
}

/// What a group's refusal of a file from the remote `remote` says after the group's name.
fn external(remote: &str) -> String {
    format!("its EXTERNAL_UPSTREAM restriction does not allow versions from the upstream of repository {remote}")
}

/// What a group's refusal of a file passing through the group repository `group` says.
fn internal(group: &str) -> String {
    format!("its INTERNAL_UPSTREAM restriction does not allow versions taken from its members by repository {group}")
}

/// A 403 naming the package group `pattern` (body, reason phrase and `X-Wheelgate-Denied`),
/// whose line goes on with `restriction` (see `external`), in single-spaced words.
fn assert_refused_by_group(
    response: &http::RawResponse,
    what: &str,
    pattern: &str,
    restriction: &str,
) {
    let named = group_named(pattern);
    let line = assert_denied_by(
        response,
        what,
        &named,
        &[&format!("{named}: {restriction}")],
    );
    assert!(
        !line.contains("  "),
        "{what}: the reason must be single-spaced words, got {line:?}"
    );
}

/// `GET <path>` must be a 403 naming the package group `pattern` and `restriction`.
fn assert_group_denies(bed: &TestBed, path: &str, pattern: &str, restriction: &str) {
    let response = bed.raw_get_as(path, None);
    assert_refused_by_group(&response, &format!("GET {path}"), pattern, restriction);
}

/// The path wheelgate links the upstream's `filename` of `project` at in the remote `repo`:
/// `/<repo>/files/<project>/<sha256>/<filename>`.
fn remote_file_path(repo: &str, project: &str, filename: &str) -> String {
    let file = catalog().expect_project(project).expect_file(filename);
    format!("/{repo}/files/{project}/{}/{filename}", file.sha256)
}

/// `client` installs `requirement` from `index_url` and must get exactly `project` `version`.
fn assert_installs(
    bed: &TestBed,
    client: &str,
    index_url: &str,
    requirement: &str,
    (project, version): (&str, &str),
) {
    let target = bed.target_dir(&format!(
        "{client}-{}-{}",
        requirement.to_ascii_lowercase(),
        rand::random::<u32>()
    ));
    let run = install_with(client, index_url, &target, &[requirement]);
    assert_installed(
        bed,
        &run,
        &target,
        &dists(&[(project, version)]),
        &format!("{client} install {requirement} from {index_url}"),
    );
}

/// `client` must fail to install `requirement` from `index_url`.
fn assert_install_fails(bed: &TestBed, client: &str, index_url: &str, requirement: &str) {
    let target = bed.target_dir(&format!("{client}-refused-{}", rand::random::<u32>()));
    let run = install_with(client, index_url, &target, &[requirement]);
    assert!(
        !run.success(),
        "{client} must not install {requirement} from {index_url}:\n{}",
        run.output()
    );
}

#[test]
fn a_package_group_keeps_the_upstreams_version_of_a_private_name_out_for_every_spelling() {
    let (bed, publisher) = origin_bed(&confusion_toml("enforce"));
    publish_acme_1_0(&bed, &publisher);

    // pip and uv, every spelling, through the group at its own path and at /simple/.
    for (index, spelling) in SPELLINGS.iter().enumerate() {
        let index_url = if index % 2 == 0 {
            bed.url("/all/simple/")
        } else {
            bed.url("/simple/")
        };
        for client in ["pip", "uv"] {
            assert_installs(&bed, client, &index_url, spelling, (ACME, "1.0"));
        }
    }

    // 99.0 is on no page: the group's JSON and HTML pages list only the published file, and the
    // remote's own page is refused by the group.
    assert_eq!(listed(&bed, ALL, ACME), [PUBLISHED_FILE]);
    let html = http::get(
        &bed.url("/simple/wgfx-acme-utils/"),
        &[("accept", "text/html")],
    );
    assert_eq!(html.status, StatusCode::OK);
    assert!(
        html.text().contains(PUBLISHED_FILE) && !html.text().contains("99.0"),
        "the group's HTML page must list 1.0 and not 99.0:\n{}",
        html.text()
    );
    assert_group_denies(
        &bed,
        "/pypi/simple/wgfx-acme-utils/",
        ACME_GROUP,
        &external(PYPI),
    );

    // The 99.0 file URL, built from the visible file's URL shape, through the group and through
    // the remote: a 403 naming the group, for the file and its .metadata.
    for repo in [ALL, PYPI] {
        let path = upstream_file_path(&bed, ALL, repo);
        for suffix in ["", ".metadata"] {
            assert_group_denies(
                &bed,
                &format!("{path}{suffix}"),
                ACME_GROUP,
                &external(PYPI),
            );
        }
    }

    // The upstream never saw a request for the file, nor for the project's page: the group
    // leaves the remote out before asking it.
    bed.assert_upstream_never_asked("wgfx_acme_utils-99.0", "the blocked file");
    bed.assert_upstream_never_asked(ACME, "the page of a name the group keeps from upstream");
}

#[test]
fn allow_specific_repositories_allows_exactly_the_listed_remotes_and_groups() {
    // Two remotes on the same upstream; `both = [pypi2, pypi]`, `only-pypi = [pypi]`.
    let bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.extra_repositories = config.remote_table("pypi2");
        config.groups = vec![
            GroupConfig::new("both", &["pypi2", PYPI]),
            GroupConfig::new("only-pypi", &[PYPI]),
        ];
        config.extra_toml = package_group(
            "/pypi//wgfx-acme-utils$",
            &[
                "external_upstream = \"ALLOW_SPECIFIC_REPOSITORIES\"",
                "external_upstream_repositories = [\"pypi\"]",
                "internal_upstream = \"ALLOW_SPECIFIC_REPOSITORIES\"",
                "internal_upstream_repositories = [\"both\"]",
            ],
        );
    });
    let group = "/pypi//wgfx-acme-utils$";
    let upstream_file = catalog().expect_project(ACME).expect_file(UPSTREAM_FILE);

    // Through the listed remote: served.
    assert_eq!(listed(&bed, PYPI, ACME), [UPSTREAM_FILE]);
    let path = remote_file_path(PYPI, ACME, UPSTREAM_FILE);
    let url = bed.url(&path);
    assert_eq!(
        http::get(&url, &[]).expect_ok(&url),
        upstream_file.bytes.as_slice(),
        "the listed remote serves the upstream's file"
    );
    assert_installs(
        &bed,
        "pip",
        &bed.url("/pypi/simple/"),
        "Wgfx_Acme_Utils",
        (ACME, "99.0"),
    );
    let fetched = upstream_requests(&bed, UPSTREAM_FILE).len();

    // Through the other remote on the same upstream: refused, page and file.
    assert_group_denies(
        &bed,
        "/pypi2/simple/wgfx-acme-utils/",
        group,
        &external("pypi2"),
    );
    assert_group_denies(
        &bed,
        &remote_file_path("pypi2", ACME, UPSTREAM_FILE),
        group,
        &external("pypi2"),
    );
    assert_install_fails(&bed, "uv", &bed.url("/pypi2/simple/"), ACME);

    // Through the listed group: only its member pypi serves the file (pypi2 is left out).
    let both: Vec<(String, url::Url)> = page_files(&bed, "both", ACME);
    assert_eq!(both.len(), 1, "one file, from pypi: {both:?}");
    assert_eq!(both[0].0, UPSTREAM_FILE);
    assert_installs(
        &bed,
        "uv",
        &bed.url("/both/simple/"),
        "wgfx.acme.utils",
        (ACME, "99.0"),
    );
    // Through a group not in the internal list, though its member is an allowed remote: refused.
    assert_group_denies(
        &bed,
        "/only-pypi/simple/wgfx-acme-utils/",
        group,
        &internal("only-pypi"),
    );
    let through_other = path.replacen("/pypi/", "/only-pypi/", 1);
    assert_group_denies(&bed, &through_other, group, &internal("only-pypi"));

    // Whatever was refused never reached the upstream: only the allowed ways fetched the file.
    assert_eq!(
        upstream_requests(&bed, UPSTREAM_FILE).len(),
        fetched,
        "a refused way must not fetch the file upstream"
    );
    // A name outside the group is untouched by it: every way serves it.
    for repo in ["pypi2", "only-pypi"] {
        assert!(
            !listed(&bed, repo, "wgfx-epsilon").is_empty(),
            "{repo} must serve wgfx-epsilon"
        );
    }
}

#[test]
fn inherit_three_levels_deep_is_enforced_and_explained() {
    let groups = [
        package_group("/pypi/*", &["external_upstream = \"BLOCK\""]),
        package_group("/pypi//wgfx~", &["external_upstream = \"INHERIT\""]),
        package_group("/pypi//wgfx-acme~", &["external_upstream = \"INHERIT\""]),
        package_group(
            "/pypi//wgfx-acme-utils$",
            &["external_upstream = \"INHERIT\""],
        ),
        package_group("/pypi//wgfx-kappa$", &["external_upstream = \"ALLOW\""]),
    ]
    .concat();
    let (bed, _) = origin_bed(&groups);
    let exact = "/pypi//wgfx-acme-utils$";

    // The exact group inherits BLOCK through two INHERITs from /pypi/*: the remote and the
    // group refuse the page and the file, naming the package's own group.
    for repo in [PYPI, ALL] {
        assert_group_denies(
            &bed,
            &format!("/{repo}/simple/wgfx-acme-utils/"),
            exact,
            &external(PYPI),
        );
        assert_group_denies(
            &bed,
            &remote_file_path(repo, ACME, UPSTREAM_FILE),
            exact,
            &external(PYPI),
        );
    }
    assert_install_fails(&bed, "pip", &bed.url("/simple/"), ACME);
    // One level up, a sibling name inherits the same BLOCK, named by its own group.
    assert_group_denies(
        &bed,
        "/all/simple/wgfx-epsilon/",
        "/pypi//wgfx~",
        &external(PYPI),
    );
    // A group that says ALLOW under the same ancestors is served.
    assert_installs(
        &bed,
        "uv",
        &bed.url("/simple/"),
        "wgfx-kappa",
        ("wgfx-kappa", "2.0"),
    );
    bed.assert_upstream_never_asked(ACME, "a name whose group blocks the upstream");
    bed.assert_upstream_never_asked("wgfx-epsilon", "a name whose group blocks the upstream");

    // `origin explain` prints the package's group, each restriction's effective setting and
    // mode, and where it was inherited from.
    let explained = origin_explain(&bed, &["--repo", ALL, "WGFX.Acme_Utils"]);
    for expected in [
        "package group: /pypi//wgfx-acme-utils$\n",
        "EXTERNAL_UPSTREAM: BLOCK (mode enforce, inherited from /pypi/*)",
        "PUBLISH: ALLOW (mode enforce, inherited from /*)",
        "INTERNAL_UPSTREAM: ALLOW (mode enforce, inherited from /*)",
    ] {
        assert!(
            explained.contains(expected),
            "expected {expected:?} in:\n{explained}"
        );
    }
    let kappa = origin_explain(&bed, &["--repo", ALL, "wgfx-kappa"]);
    assert!(
        kappa.contains("package group: /pypi//wgfx-kappa$\n")
            && kappa.contains("EXTERNAL_UPSTREAM: ALLOW (mode enforce, set by /pypi//wgfx-kappa$)"),
        "wgfx-kappa's own ALLOW, not inherited:\n{kappa}"
    );
}

#[test]
fn an_audited_group_serves_the_upstreams_version_logs_and_counts_it_then_enforced_by_reload_blocks_it(
) {
    let (mut bed, publisher) = origin_bed(&confusion_toml("audit"));
    publish_acme_1_0(&bed, &publisher);
    let would_deny = |bed: &TestBed| {
        Scrape::of(bed).sum(
            "wheelgate_denials_total",
            &[
                "kind=\"origin\"",
                "mode=\"audit\"",
                &format!("name=\"{ACME_GROUP}\""),
            ],
        )
    };
    let before = would_deny(&bed);

    // Nothing is refused: the group lists both versions and pip installs the upstream's 99.0.
    assert_eq!(listed(&bed, ALL, ACME), [PUBLISHED_FILE, UPSTREAM_FILE]);
    assert_installs(&bed, "pip", &bed.url("/all/simple/"), ACME, (ACME, "99.0"));
    let logged = wait_until(RELOAD_LIMIT, || {
        access_lines(&bed).iter().any(|line| {
            line.contains(UPSTREAM_FILE)
                && line.contains(" status=200 ")
                && line
                    .split_once(" audit=")
                    .is_some_and(|(_, audit)| audit.contains(ACME_GROUP))
        })
    });
    assert!(
        logged,
        "the access line of the audited download must name the group after audit=:\n{}",
        access_lines(&bed).join("\n")
    );
    let path = upstream_file_path(&bed, ALL, ALL);
    let direct = http::get(&bed.url(&path), &[]);
    assert_eq!(direct.status, StatusCode::OK, "{}", direct.text());
    assert!(
        direct
            .header(AUDIT_HEADER)
            .is_some_and(|names| names.contains(ACME_GROUP)),
        "the audited file names the group; headers:\n{}",
        direct.headers_text()
    );
    let explained = origin_explain(&bed, &["--repo", ALL, ACME, "99.0"]);
    for expected in [
        "package group: /pypi//wgfx-acme~ (mode audit",
        "EXTERNAL_UPSTREAM: BLOCK (mode audit, set by /pypi//wgfx-acme~)",
        "pypi: has 99.0 (audit mode: package group /pypi//wgfx-acme~",
        "99.0: served by all from pypi",
    ] {
        assert!(
            explained.contains(expected),
            "expected {expected:?} in:\n{explained}"
        );
    }
    let counted = would_deny(&bed) - before;
    assert!(
        counted >= 1.0,
        "the would-deny must be counted under name=\"{ACME_GROUP}\" mode=\"audit\", moved by {counted}"
    );

    // Enforced by a live reload: the next page leaves 99.0 out and the next install gets 1.0.
    bed.edit_config(|config| config.extra_toml = confusion_toml("enforce"));
    bed.wheelgate.hangup();
    let applied = wait_until(RELOAD_LIMIT, || {
        let url = bed.url("/all/simple/wgfx-acme-utils/");
        let page = http::get(&url, &[("accept", JSON_MEDIA_TYPE)]);
        page.status == StatusCode::OK && !page.text().contains(UPSTREAM_FILE)
    });
    assert!(
        applied,
        "the enforced group must apply to the next page within {RELOAD_LIMIT:?}:\n{}",
        bed.wheelgate.output()
    );
    assert_installs(&bed, "pip", &bed.url("/all/simple/"), ACME, (ACME, "1.0"));
    assert_group_denies(&bed, &path, ACME_GROUP, &external(PYPI));
}

#[test]
fn a_group_that_blocks_publishing_refuses_the_upload_naming_the_group() {
    let (bed, publisher) = origin_bed(&package_group(ACME_GROUP, &["publish = \"BLOCK\""]));
    let dist = plain_wheel(ACME, "1.0");
    assert_twine_refused(&bed, &publisher, &dist, &group_named(ACME_GROUP));

    let response = bed.upload(INTERNAL, &UploadForm::of(&dist), Some(&publisher));
    assert_refused_by_group(
        &response,
        "the upload of wgfx-acme-utils 1.0",
        ACME_GROUP,
        "its PUBLISH restriction does not allow publishing to repository internal",
    );
    let page = bed.raw_get_as("/internal/simple/wgfx-acme-utils/", None);
    assert_eq!(page.status, 404, "nothing was stored: {}", page.text());

    // A name the prefix does not cover (`acmetools` is not `acme` followed by `-`) publishes.
    let other = plain_wheel("wgfx-acmetools", "1.0");
    let response = bed.upload(INTERNAL, &UploadForm::of(&other), Some(&publisher));
    assert_uploaded(&bed, &response, "the upload of wgfx-acmetools 1.0");
}

#[test]
fn a_hosted_members_files_pass_through_a_group_only_if_its_internal_upstream_allows_the_group() {
    let tools = "wgfx-acmetools";
    let (bed, publisher) = origin_bed(&package_group(
        "/pypi//wgfx-acmetools$",
        &["internal_upstream = \"BLOCK\""],
    ));
    let dist = plain_wheel(tools, "1.0");
    let response = bed.upload(INTERNAL, &UploadForm::of(&dist), Some(&publisher));
    assert_uploaded(&bed, &response, "the upload of wgfx-acmetools 1.0");

    // The hosted repository itself serves its upload.
    let files = page_files(&bed, INTERNAL, tools);
    assert_eq!(files.len(), 1, "{files:?}");
    assert_installs(
        &bed,
        "pip",
        &bed.url("/internal/simple/"),
        tools,
        (tools, "1.0"),
    );
    // The group may not take it from its member: page and file are refused naming the group.
    let group = "/pypi//wgfx-acmetools$";
    assert_group_denies(&bed, "/all/simple/wgfx-acmetools/", group, &internal(ALL));
    let through_group = files[0].1.path().replacen("/internal/", "/all/", 1);
    assert!(through_group.starts_with("/all/files/"), "{through_group}");
    assert_group_denies(&bed, &through_group, group, &internal(ALL));
    assert_install_fails(&bed, "uv", &bed.url("/all/simple/"), tools);
}
