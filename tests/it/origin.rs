//! Package-level origin controls (SPEC §6, issue 14): where a package may come from, with no
//! package group configured.
//!
//! The dependency-confusion scenario end to end with twine, pip and uv: the hosted `internal`
//! publishes `wgfx-acme-utils 1.0`, the fixture upstream offers `wgfx-acme-utils 99.0`; through
//! the group `all = [internal, pypi]` every spelling of the name installs 1.0, 99.0 is on no page,
//! its file URL is a 403 naming the package-level control, and the upstream is never asked for
//! it (nor, once the record is made, for the project's page). The reverse: a name first ingested
//! from the upstream cannot be published (403 naming the control). `[[package_origin]]` reserves
//! a name before its first upload, and allows an upstream so that publishing a version it offers
//! is a 409.
//! `wheelgate origin explain` prints the records, their sources and where a version comes from.

use std::path::PathBuf;

use crate::harness::clients::dists;
use crate::harness::fixtures::catalog;
use crate::harness::http;
use crate::harness::uploads::{plain_wheel, Dist, UploadForm};
use crate::harness::wheelgate;
use crate::harness::wheelgate::GroupConfig;
use crate::harness::{Account, TestBed};
use crate::publish::{
    assert_client_succeeded, assert_installed, assert_refusal, assert_uploaded, install_with,
    publishing_bed, twine_upload_as, INTERNAL,
};

pub(crate) const ALL: &str = "all";
pub(crate) const PYPI: &str = "pypi";
/// The private name the upstream also offers (fixtures/projects.toml).
pub(crate) const ACME: &str = "wgfx-acme-utils";
pub(crate) const UPSTREAM_FILE: &str = "wgfx_acme_utils-99.0-py3-none-any.whl";
pub(crate) const DENIED_HEADER: &str = "x-wheelgate-denied";
const CONTROL: &str = "package-level origin control of wgfx-acme-utils";

/// A publishing bed whose default repository is the group `all = [internal, pypi]`, with
/// `extra_toml` appended (`[[package_origin]]` tables).
pub(crate) fn origin_bed(extra_toml: &str) -> (TestBed, Account) {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.groups = vec![GroupConfig::new(ALL, &[INTERNAL, PYPI])];
        config.default_repository = ALL.to_owned();
        config.extra_toml = extra_toml.to_owned();
    });
    (bed, publisher)
}

/// `[[package_origin]]` for `wgfx-acme-utils` in `internal` with `setting` (`upstream = "BLOCK"`).
pub(crate) fn reserve(setting: &str) -> String {
    format!("\n[[package_origin]]\nrepository = \"{INTERNAL}\"\npackage = \"{ACME}\"\n{setting}\n")
}

/// Publishes `wgfx-acme-utils 1.0` to `internal` with twine.
pub(crate) fn publish_acme_1_0(bed: &TestBed, publisher: &Account) {
    let dist = plain_wheel(ACME, "1.0");
    let files: Vec<PathBuf> = vec![dist.write_to(&bed.dir.path().join("dist"))];
    let run = twine_upload_as(bed, publisher, &files);
    assert_client_succeeded(bed, &run, "twine upload of wgfx-acme-utils 1.0");
}

/// The filenames of the JSON page `/<repo>/simple/<project>/`, which must be a 200, with the
/// page's URL for resolving links.
pub(crate) fn page_files(bed: &TestBed, repo: &str, project: &str) -> Vec<(String, url::Url)> {
    let path = format!("/{repo}/simple/{project}/");
    let url = bed.url(&path);
    let response = http::get(&url, &[("accept", "application/vnd.pypi.simple.v1+json")]);
    let body = response.text();
    assert_eq!(
        response.status,
        ::http::StatusCode::OK,
        "{path} must be a 200; body:\n{body}\nwheelgate's output:\n{}",
        bed.wheelgate.output()
    );
    response.json()["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no files in {body}"))
        .iter()
        .map(|f| {
            let href = f["url"].as_str().unwrap_or_default();
            (
                f["filename"].as_str().unwrap_or_default().to_owned(),
                crate::harness::resolve(&url, href),
            )
        })
        .collect()
}

/// The paths the upstream was asked for that contain `part`.
pub(crate) fn upstream_requests(bed: &TestBed, part: &str) -> Vec<String> {
    bed.upstream
        .requests()
        .into_iter()
        .map(|r| r.path)
        .filter(|path| path.contains(part))
        .collect()
}

/// Panics if the upstream was asked anything whose path contains `part`.
fn assert_upstream_never_asked(bed: &TestBed, part: &str, what: &str) {
    let asked = upstream_requests(bed, part);
    assert!(
        asked.is_empty(),
        "{what}: the upstream must never be asked for {part}, it was: {asked:?}"
    );
}

/// A 403 naming the package-level control of `wgfx-acme-utils`, in the body, the reason phrase
/// and `X-Wheelgate-Denied`, with each of `words`.
fn assert_origin_denied(response: &http::RawResponse, what: &str, words: &[&str]) {
    assert_denied_by(response, what, CONTROL, words);
}

/// A 403 naming `control`, in the body, the reason phrase and `X-Wheelgate-Denied`, with each of
/// `words` in the body. Returns the body's line.
pub(crate) fn assert_denied_by(
    response: &http::RawResponse,
    what: &str,
    control: &str,
    words: &[&str],
) -> String {
    let mut named = vec![control];
    named.extend_from_slice(words);
    let line = assert_refusal(response, 403, what, &named);
    let header = response.header(DENIED_HEADER).unwrap_or_default();
    assert!(
        header.contains(control),
        "{what}: {DENIED_HEADER} must name {control:?}, got {header:?}"
    );
    line
}

/// The path of the upstream's `wgfx-acme-utils 99.0` wheel in `repo`, built from the URL shape
/// of the first file the JSON page of `group` lists (`/<group>/files/<project>/<sha256>/<file>`):
/// the path a client that guessed it would ask for.
pub(crate) fn upstream_file_path(bed: &TestBed, group: &str, repo: &str) -> String {
    let files = page_files(bed, group, ACME);
    let (visible_name, visible) = files
        .first()
        .unwrap_or_else(|| panic!("the page of {ACME} in {group} lists no file"));
    let upstream = catalog().expect_project(ACME).expect_file(UPSTREAM_FILE);
    let visible_sha = visible.path().rsplit('/').nth(1).unwrap_or_default();
    let path = visible
        .path()
        .replace(visible_name.as_str(), UPSTREAM_FILE)
        .replace(visible_sha, &upstream.sha256)
        .replacen(&format!("/{group}/"), &format!("/{repo}/"), 1);
    assert!(
        path.starts_with(&format!("/{repo}/files/{ACME}/")),
        "{path}"
    );
    path
}

/// twine uploads `dist` to `internal` as `publisher` and is refused with a 403 whose reason, as
/// twine shows it, names `control`.
pub(crate) fn assert_twine_refused(bed: &TestBed, publisher: &Account, dist: &Dist, control: &str) {
    let files = vec![dist.write_to(&bed.dir.path().join("dist"))];
    let run = twine_upload_as(bed, publisher, &files);
    assert!(
        !run.success() && run.output().contains("403"),
        "twine upload of {} must be refused with a 403:\n{}",
        dist.filename,
        run.output()
    );
    assert!(
        run.output().contains(control),
        "twine must show the control that refused, {control:?}:\n{}",
        run.output()
    );
}

/// The standard output of `wheelgate origin explain --config <bed's> <args>`, which must succeed.
pub(crate) fn origin_explain(bed: &TestBed, args: &[&str]) -> String {
    let config = bed.config_path();
    let config = config.to_string_lossy().into_owned();
    let mut all = vec!["origin", "explain", "--config", config.as_str()];
    all.extend_from_slice(args);
    let run = wheelgate::run(&all, bed.dir.path());
    assert!(run.success(), "wheelgate {all:?} failed:\n{}", run.output());
    run.stdout
}

#[test]
fn a_first_upload_keeps_the_upstreams_version_of_the_name_out_of_the_group_for_every_spelling() {
    let (bed, publisher) = origin_bed("");
    publish_acme_1_0(&bed, &publisher);
    // The first upload compared its version with what the upstream offers (a 409 otherwise):
    // the last time the upstream's page of the name is needed.
    let page_requests = upstream_requests(&bed, "/wgfx-acme-utils/").len();

    // pip and uv, every spelling, through the group at its own path and at /simple/.
    let spellings = [
        "wgfx-acme-utils",
        "Wgfx_Acme_Utils",
        "wgfx.acme.utils",
        "WGFX-ACME-UTILS",
    ];
    for (index, spelling) in spellings.iter().enumerate() {
        for client in ["pip", "uv"] {
            let index_url = if index % 2 == 0 {
                bed.url("/all/simple/")
            } else {
                bed.url("/simple/")
            };
            let target = bed.target_dir(&format!("acme-{index}-{client}"));
            let run = install_with(client, &index_url, &target, &[spelling]);
            assert_installed(
                &bed,
                &run,
                &target,
                &dists(&[(ACME, "1.0")]),
                &format!("{client} install {spelling} through {index_url}"),
            );
        }
    }

    // 99.0 is on no page of the group.
    for repo in [ALL, "simple"] {
        let files = if repo == "simple" {
            let url = bed.url("/simple/wgfx-acme-utils/");
            let response = http::get(&url, &[("accept", "text/html")]);
            assert!(
                !response.text().contains("99.0"),
                "/simple/ (the group) must not list 99.0: {}",
                response.text()
            );
            continue;
        } else {
            page_files(&bed, repo, ACME)
        };
        let names: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            ["wgfx_acme_utils-1.0-py3-none-any.whl"],
            "the group's page must list only the published file"
        );
    }

    // The 99.0 file URL through the group, built from the visible file's URL shape, is a 403.
    let hidden_path = upstream_file_path(&bed, ALL, ALL);
    for part in ["", ".metadata"] {
        let path = format!("{hidden_path}{part}");
        let response = bed.raw_get_as(&path, None);
        assert_origin_denied(
            &response,
            &format!("GET {path}"),
            &["first published", "upstream versions are blocked", INTERNAL],
        );
    }

    // The upstream never saw a request for the 99.0 file, nor for the project's page once the
    // record was made.
    assert_upstream_never_asked(&bed, "wgfx_acme_utils-99.0", "the blocked file");
    assert_eq!(
        upstream_requests(&bed, "/wgfx-acme-utils/").len(),
        page_requests,
        "the group must not ask the blocked member for its page"
    );
}

#[test]
fn a_name_first_ingested_from_the_upstream_cannot_be_published() {
    let (bed, publisher) = origin_bed("");
    // Installed through the group first: its page is served with the upstream's files.
    let target = bed.target_dir("epsilon");
    let run = install_with("pip", &bed.url("/all/simple/"), &target, &["wgfx-epsilon"]);
    assert_installed(
        &bed,
        &run,
        &target,
        &dists(&[("wgfx-epsilon", "0.3.0")]),
        "pip",
    );

    let dist = plain_wheel("wgfx-epsilon", "5.0");
    assert_twine_refused(
        &bed,
        &publisher,
        &dist,
        "package-level origin control of wgfx-epsilon",
    );

    let response = bed.upload(INTERNAL, &UploadForm::of(&dist), Some(&publisher));
    assert_refusal(
        &response,
        403,
        "the upload of wgfx-epsilon 5.0",
        &[
            "package-level origin control of wgfx-epsilon",
            "first ingested from upstream",
            PYPI,
            "publishing is blocked",
            "[[package_origin]]",
        ],
    );
    // Nothing was stored: the group still serves the upstream's version only.
    let names: Vec<String> = page_files(&bed, ALL, "wgfx-epsilon")
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        !names.iter().any(|n| n.contains("5.0")),
        "a refused upload must not be listed: {names:?}"
    );
}

#[test]
fn a_package_origin_entry_reserves_a_name_before_its_first_upload() {
    let (bed, publisher) = origin_bed(&reserve("upstream = \"BLOCK\""));
    // Nothing published yet: the group has nothing it may serve, and says why.
    let response = bed.raw_get_as("/all/simple/wgfx-acme-utils/", None);
    assert_origin_denied(
        &response,
        "the reserved name's page through the group",
        &[
            "[[package_origin]] at line",
            "upstream versions are blocked",
        ],
    );
    let target = bed.target_dir("reserved-pip");
    let run = install_with("pip", &bed.url("/all/simple/"), &target, &[ACME]);
    assert!(
        !run.success(),
        "pip must not install the upstream's version of a reserved name:\n{}",
        run.output()
    );
    assert_upstream_never_asked(&bed, "wgfx-acme-utils", "a reserved name");

    // Once published, the internal version is what installs.
    publish_acme_1_0(&bed, &publisher);
    for client in ["pip", "uv"] {
        let target = bed.target_dir(&format!("reserved-after-{client}"));
        let run = install_with(
            client,
            &bed.url("/all/simple/"),
            &target,
            &["Wgfx_Acme_Utils"],
        );
        assert_installed(&bed, &run, &target, &dists(&[(ACME, "1.0")]), client);
    }
    assert_upstream_never_asked(&bed, "wgfx-acme-utils", "a reserved name");
}

#[test]
fn publishing_a_version_an_allowed_upstream_offers_is_a_409_naming_the_upstream() {
    let (bed, publisher) = origin_bed(&reserve("upstream = \"ALLOW\""));
    let shadow = plain_wheel(ACME, "99.0");
    let response = bed.upload(INTERNAL, &UploadForm::of(&shadow), Some(&publisher));
    assert_refusal(
        &response,
        409,
        "the upload of a version the upstream offers",
        &[
            "version 99.0 of wgfx-acme-utils",
            "upstream of repository pypi",
            ALL,
        ],
    );
    // Another version publishes, and the group serves both (the upstream is allowed).
    let own = plain_wheel(ACME, "1.0");
    let response = bed.upload(INTERNAL, &UploadForm::of(&own), Some(&publisher));
    assert_uploaded(&bed, &response, "the upload of wgfx-acme-utils 1.0");
    let mut names: Vec<String> = page_files(&bed, ALL, ACME)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "wgfx_acme_utils-1.0-py3-none-any.whl",
            "wgfx_acme_utils-99.0-py3-none-any.whl"
        ]
    );
}

#[test]
fn origin_explain_prints_the_records_their_sources_and_where_a_version_comes_from() {
    let (mut bed, publisher) = origin_bed(&format!(
        "\n[[package_origin]]\nrepository = \"{INTERNAL}\"\npackage = \"wgfx-reserved\"\nupstream = \"BLOCK\"\n"
    ));
    publish_acme_1_0(&bed, &publisher);
    let target = bed.target_dir("explain-epsilon");
    let run = install_with("pip", &bed.url("/all/simple/"), &target, &["wgfx-epsilon"]);
    assert_client_succeeded(&bed, &run, "pip install wgfx-epsilon");

    // With the server running (asked over the admin socket), then with the store opened directly.
    for running in [true, false] {
        if !running {
            bed.wheelgate.stop();
        }
        let explain = |args: &[&str]| {
            let stdout = origin_explain(&bed, args);
            let how = if running {
                "asked the running server"
            } else {
                "no server running: opened the store"
            };
            assert!(stdout.starts_with(how), "{stdout}");
            stdout
        };
        let acme = explain(&["--repo", ALL, "Wgfx_Acme_Utils", "99.0"]);
        for expected in [
            "internal: publish ALLOW (first upload of 1.0",
            "upstream BLOCK (first upload of 1.0",
            "internal: does not have 99.0",
            "pypi: blocked by package-level origin control of wgfx-acme-utils in repository internal",
            "99.0: not served by all:",
        ] {
            assert!(acme.contains(expected), "running={running}: expected {expected:?} in:\n{acme}");
        }
        let acme_1 = explain(&["--repo", ALL, ACME, "1.0"]);
        assert!(
            acme_1.contains("1.0: served by all from internal"),
            "running={running}:\n{acme_1}"
        );
        let epsilon = explain(&["--repo", ALL, "wgfx-epsilon", "0.3.0"]);
        for expected in [
            "pypi: publish BLOCK (first ingestion",
            "0.3.0: served by all from pypi",
        ] {
            assert!(
                epsilon.contains(expected),
                "running={running}: expected {expected:?} in:\n{epsilon}"
            );
        }
        let reserved = explain(&["--repo", INTERNAL, "wgfx-reserved"]);
        assert!(
            reserved.contains("upstream BLOCK ([[package_origin]] at line"),
            "running={running}:\n{reserved}"
        );
    }
}

#[test]
fn the_shipped_package_origin_example_is_valid_once_uncommented() {
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let text = std::fs::read_to_string(&shipped)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", shipped.display()));
    // The commented block from `# [[package_origin]]` to the next blank line, uncommented.
    let mut uncommented = String::new();
    let mut inside = false;
    for line in text.lines() {
        inside = inside || line == "# [[package_origin]]";
        if inside && line.trim().is_empty() {
            inside = false;
        }
        match (inside, line.strip_prefix("# ")) {
            (true, Some(rest)) => uncommented.push_str(rest),
            _ => uncommented.push_str(line),
        }
        uncommented.push('\n');
    }
    assert!(
        uncommented.contains("\n[[package_origin]]\nrepository = \"internal\""),
        "the shipped proxy.toml must carry a commented [[package_origin]] example"
    );
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a directory: {e}"));
    let config = dir.path().join("proxy.toml");
    crate::harness::write_file(&config, &uncommented);
    let run = wheelgate::run(
        &["check", "--config", &config.to_string_lossy()],
        dir.path(),
    );
    assert!(run.success(), "wheelgate check:\n{}", run.output());
    assert!(
        run.stdout
            .contains("package-level origin overrides:\n  acme-utils in repository internal (line"),
        "wheelgate check must list the override:\n{}",
        run.stdout
    );
}
