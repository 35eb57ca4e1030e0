//! Group repositories (SPEC §1, §2, §5, issue 13): several repositories served as one index.
//!
//! A group is written into `proxy.toml` as an operator writes it (`type = "group"`, `members`)
//! and checked from the outside, with pip, uv and plain HTTP against the real binary: pip and uv
//! install a hosted package whose dependency only the remote member has, through the group at
//! `/<group>/simple/` and as the default repository at `/simple/`; `uv publish` to the hosted
//! member skips, on a second run, what the group's page already lists; the first member wins a
//! filename two members hold (on the page and on download); a group of groups serves the files
//! of both levels and the union of their projects; a project no member has is a 404; rules of the
//! member and of the group both apply (and a denied file is never fetched); a member whose
//! upstream is down is named in `X-Wheelgate-Unavailable` while the others answer (and its outage
//! is not passed off as a missing project), and a group whose every member failed is a 502;
//! `wheelgate check` refuses unknown members and cycles; an upload to a group is a 405; the
//! status page shows the group's kind.
//!
//! Hosted files are this project's own `wgpub-` uploads (`harness/uploads.rs`), remote files the
//! fixture upstream's `wgfx-` projects, so a file on a group's page shows which member it came
//! from.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::PathBuf;

use ::http::StatusCode;

use crate::harness::clients::{self, dists, ClientRun};
use crate::harness::fixtures::catalog;
use crate::harness::http::{self, HttpResponse};
use crate::harness::uploads::{self, Dist, UploadForm};
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wheelgate::{self, bare_remote_toml, rule_toml_in, GroupConfig};
use crate::harness::{resolve, standalone_config, Account, TestBed};
use crate::publish::{
    assert_client_succeeded, assert_installed, assert_uploaded, install_with, publishing_bed,
    upload_lines, INTERNAL,
};
use crate::rules::assert_denied_in;
use crate::simple_api::anchors;

const ACCEPT_JSON: (&str, &str) = ("accept", JSON_MEDIA_TYPE);
const ACCEPT_HTML: (&str, &str) = ("accept", "text/html");
/// The group of the hosted `internal` and the remote `pypi`, in that order (SPEC's example).
const ALL: &str = "all";
/// The remote repository of every bed, in front of the fixture upstream.
const PYPI: &str = "pypi";
/// A second hosted repository.
const STAGING: &str = "staging";
/// The header naming the members that could not answer.
const UNAVAILABLE_HEADER: &str = "x-wheelgate-unavailable";

/// One file entry of a JSON project page.
#[derive(Debug, Clone)]
struct Listed {
    filename: String,
    sha256: String,
    /// The link, resolved against the page's URL.
    url: url::Url,
}

/// `GET <path>` on wheelgate asking for JSON.
fn get_json(bed: &TestBed, path: &str) -> HttpResponse {
    http::get(&bed.url(path), &[ACCEPT_JSON])
}

/// The entries of the JSON page `/<repo>/simple/<project>/`, which must be a 200.
fn listed(bed: &TestBed, repo: &str, project: &str) -> Vec<Listed> {
    let path = format!("/{repo}/simple/{project}/");
    let response = get_json(bed, &path);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{path} must be a 200 (its members have {project}); body:\n{}\nwheelgate's output:\n{}",
        response.text(),
        bed.wheelgate.output()
    );
    entries_of(&response, &bed.url(&path))
}

fn entries_of(response: &HttpResponse, page_url: &str) -> Vec<Listed> {
    let page = response.json();
    page["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{page_url}: no files array in {page}"))
        .iter()
        .map(|f| Listed {
            filename: f["filename"].as_str().unwrap_or_default().to_owned(),
            sha256: f["hashes"]["sha256"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            url: resolve(page_url, f["url"].as_str().unwrap_or_default()),
        })
        .collect()
}

fn filenames(entries: &[Listed]) -> BTreeSet<String> {
    entries.iter().map(|e| e.filename.clone()).collect()
}

/// The one entry of `filename` in `entries` (`page` names the page); panics when there is none
/// or more than one (a merged page lists each filename once).
fn entry<'a>(entries: &'a [Listed], filename: &str, page: &str) -> &'a Listed {
    let found: Vec<&Listed> = entries.iter().filter(|e| e.filename == filename).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!(
            "{page} must list {filename} exactly once, it lists it {} times: {entries:?}",
            found.len()
        ),
    }
}

/// The entry of `filename` links `/<repo>/files/<project>/<key>/<filename>` on wheelgate and that
/// URL serves `bytes`.
fn assert_served_through(
    bed: &TestBed,
    entries: &[Listed],
    repo: &str,
    project: &str,
    filename: &str,
    bytes: &[u8],
) {
    let page = format!("/{repo}/simple/{project}/");
    let listed = entry(entries, filename, &page);
    let path = listed.url.path();
    assert!(
        path.starts_with(&format!("/{repo}/files/{project}/"))
            && path.ends_with(&format!("/{filename}"))
            && listed.url.port() == Some(bed.wheelgate.addr().port()),
        "{page} must link {filename} at /{repo}/files/{project}/<key>/{filename} on wheelgate, got {}",
        listed.url
    );
    let response = http::get(listed.url.as_str(), &[]);
    assert!(
        response.expect_ok(listed.url.as_str()) == bytes,
        "{} (through {repo}) must serve the bytes of {filename} that the page lists",
        listed.url
    );
}

/// The project names of the JSON index `/<repo>/simple/`, which must be a 200.
fn index_projects(response: &HttpResponse, path: &str) -> BTreeSet<String> {
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{path} must be a 200; body:\n{}",
        response.text()
    );
    let index = response.json();
    index["projects"]
        .as_array()
        .unwrap_or_else(|| panic!("{path}: no projects array in {index}"))
        .iter()
        .filter_map(|p| p["name"].as_str())
        .map(str::to_owned)
        .collect()
}

/// Uploads each of `dists` to `repo` as `account`; each must succeed.
fn upload_all(bed: &TestBed, repo: &str, account: &Account, dists: &[&Dist]) {
    for dist in dists {
        let response = bed.upload(repo, &UploadForm::of(dist), Some(account));
        assert_uploaded(
            bed,
            &response,
            &format!("the upload of {} to {repo}", dist.filename),
        );
    }
}

/// `uv publish` of `files` to `/internal/` as `account`, checking `check_url` first.
fn uv_publish_checked(
    bed: &TestBed,
    check_url: &str,
    account: &Account,
    files: &[PathBuf],
) -> ClientRun {
    clients::uv_publish(
        &bed.url("/internal/"),
        Some(check_url),
        &account.name,
        &account.password,
        files,
    )
}

// --- 1, 2. Installing and publishing through a group ------------------------------------------

#[test]
fn uv_publish_checks_the_group_and_pip_and_uv_install_a_hosted_package_with_remote_dependencies_through_it(
) {
    // The group is also the default repository, served at /simple/ (as the shipped proxy.toml has it).
    let (mut bed, publisher, _) = publishing_bed(|config| {
        config.groups = vec![GroupConfig::new(ALL, &[INTERNAL, PYPI])];
        config.default_repository = ALL.to_owned();
    });
    // wgpub-app 1.1.0 requires wgfx-delta>=1.0, which only the remote member has.
    let app = uploads::app_next_wheel();
    let files = vec![app.write_to(&bed.dir.path().join("dist"))];
    let check_url = bed.url("/all/simple/");

    let first = uv_publish_checked(&bed, &check_url, &publisher, &files);
    assert_client_succeeded(
        &bed,
        &first,
        "the first `uv publish` to /internal/ checking /all/simple/",
    );
    let entries = listed(&bed, ALL, "wgpub-app");
    assert_eq!(
        filenames(&entries),
        BTreeSet::from([app.filename.clone()]),
        "/all/simple/wgpub-app/ must list the file just published to its member internal"
    );
    assert_eq!(
        entry(&entries, &app.filename, "/all/simple/wgpub-app/").sha256,
        app.sha256,
        "/all/simple/wgpub-app/ must give the published file's sha256"
    );
    assert_served_through(&bed, &entries, ALL, "wgpub-app", &app.filename, &app.bytes);

    let second = uv_publish_checked(&bed, &check_url, &publisher, &files);
    assert!(
        second.success(),
        "`uv publish` run again with --check-url /all/simple/ must succeed; exit {:?}\n{}",
        second.exit_code,
        second.output()
    );
    assert!(
        second
            .stderr
            .lines()
            .any(|l| l.contains(&app.filename) && l.contains("already exists, skipping")),
        "the second `uv publish` must skip {} because the group's page lists it; its output:\n{}",
        app.filename,
        second.output()
    );

    // Publishing goes to the hosted member: an upload to the group itself is a 405.
    let tool = uploads::tool_wheel();
    let refused = bed.upload(ALL, &UploadForm::of(tool), Some(&publisher));
    assert_eq!(
        refused.status,
        405,
        "an upload to the group /all/ must be refused with 405 (publish to a hosted member); got {} {:?}: {}",
        refused.status,
        refused.reason_phrase,
        refused.text()
    );
    for repo in [INTERNAL, ALL] {
        let path = format!("/{repo}/simple/wgpub-tool/");
        let response = get_json(&bed, &path);
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{path} must be a 404 after the refused upload to the group; body:\n{}",
            response.text()
        );
    }

    // pip and uv resolve the hosted package and its remote dependency through the group, at
    // /simple/ (the default repository) and at /all/simple/.
    for (client, path) in [
        ("pip", "/simple/"),
        ("uv", "/all/simple/"),
        ("pip", "/all/simple/"),
        ("uv", "/simple/"),
    ] {
        let index_url = bed.url(path);
        let target = bed.target_dir(&format!("{client}{}", path.replace('/', "-")));
        let run = install_with(client, &index_url, &target, &["wgpub-app"]);
        assert_installed(
            &bed,
            &run,
            &target,
            &dists(&[("wgpub-app", "1.1.0"), ("wgfx-delta", "2.0.0")]),
            &format!("{client} installing wgpub-app through {index_url}"),
        );
    }
    bed.wheelgate.stop();
    let output = bed.wheelgate.output();
    assert_eq!(
        upload_lines(&output, INTERNAL),
        1,
        "one upload to /internal/ by the first `uv publish` and none by the second"
    );
}

// --- 3. Member order --------------------------------------------------------------------------

#[test]
fn the_first_member_wins_a_filename_two_members_hold_on_the_page_and_on_download() {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.hosted.push(STAGING.to_owned());
        config.groups = vec![
            GroupConfig::new("internal-first", &[INTERNAL, STAGING]),
            GroupConfig::new("staging-first", &[STAGING, INTERNAL]),
        ];
    });
    // One filename, other bytes in each member; the sdist only in staging.
    let (wheel, rebuilt, sdist) = (
        uploads::app_wheel(),
        uploads::app_wheel_rebuilt(),
        uploads::app_sdist(),
    );
    assert_eq!(wheel.filename, rebuilt.filename);
    assert_ne!(wheel.sha256, rebuilt.sha256);
    upload_all(&bed, INTERNAL, &publisher, &[wheel]);
    upload_all(&bed, STAGING, &publisher, &[rebuilt, sdist]);

    for (group, winner) in [("internal-first", wheel), ("staging-first", rebuilt)] {
        let page = format!("/{group}/simple/wgpub-app/");
        let entries = listed(&bed, group, "wgpub-app");
        assert_eq!(
            filenames(&entries),
            BTreeSet::from([wheel.filename.clone(), sdist.filename.clone()]),
            "{page} must merge its members' files: the wheel both hold and staging's sdist"
        );
        assert_eq!(
            entry(&entries, &wheel.filename, &page).sha256,
            winner.sha256,
            "{page} must give the sha256 of the first member's {}",
            wheel.filename
        );
        assert_served_through(
            &bed,
            &entries,
            group,
            "wgpub-app",
            &wheel.filename,
            &winner.bytes,
        );
        assert_served_through(
            &bed,
            &entries,
            group,
            "wgpub-app",
            &sdist.filename,
            &sdist.bytes,
        );

        // The HTML page says the same: one link for the wheel, with the first member's digest.
        let url = bed.url(&page);
        let response = http::get(&url, &[ACCEPT_HTML]);
        let html = String::from_utf8_lossy(response.expect_ok(&url)).into_owned();
        let links = anchors(&html);
        assert_eq!(
            links.keys().cloned().collect::<BTreeSet<_>>(),
            BTreeSet::from([wheel.filename.clone(), sdist.filename.clone()]),
            "{page} (HTML) must link the wheel once and the sdist:\n{html}"
        );
        let href = links
            .get(&wheel.filename)
            .and_then(|a| a.get("href"))
            .cloned()
            .unwrap_or_default();
        assert!(
            href.ends_with(&format!("#sha256={}", winner.sha256)),
            "{page} (HTML) must link {} with the first member's #sha256, got {href:?}",
            wheel.filename
        );
    }
}

// --- 4, 8. Groups of groups, 404, the status page -----------------------------------------------

#[test]
fn a_group_of_groups_serves_both_levels_lists_the_union_and_a_project_in_no_member_is_404() {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.hosted.push(STAGING.to_owned());
        config.groups = vec![
            GroupConfig::new(ALL, &[INTERNAL, PYPI]),
            GroupConfig::new("everything", &[ALL, STAGING]),
        ];
    });
    let (wheel, sdist, tool) = (
        uploads::app_wheel(),
        uploads::app_sdist(),
        uploads::tool_wheel(),
    );
    upload_all(&bed, INTERNAL, &publisher, &[wheel]);
    upload_all(&bed, STAGING, &publisher, &[sdist, tool]);

    // wgpub-app: the wheel from internal (through the inner group), the sdist from staging.
    let entries = listed(&bed, "everything", "wgpub-app");
    assert_eq!(
        filenames(&entries),
        BTreeSet::from([wheel.filename.clone(), sdist.filename.clone()]),
        "/everything/simple/wgpub-app/ must list internal's wheel (through all) and staging's sdist"
    );
    for dist in [wheel, sdist] {
        assert_served_through(
            &bed,
            &entries,
            "everything",
            "wgpub-app",
            &dist.filename,
            &dist.bytes,
        );
    }
    // The inner group has only internal's wheel.
    assert_eq!(
        filenames(&listed(&bed, ALL, "wgpub-app")),
        BTreeSet::from([wheel.filename.clone()]),
        "/all/simple/wgpub-app/ must list only internal's wheel (staging is not a member of all)"
    );

    // A remote project, two levels down.
    let alpha = catalog().expect_project("wgfx-alpha");
    let entries = listed(&bed, "everything", "wgfx-alpha");
    let expected: BTreeSet<String> = alpha.files.iter().map(|f| f.filename.clone()).collect();
    assert_eq!(
        filenames(&entries),
        expected,
        "/everything/simple/wgfx-alpha/ must list the remote's wgfx-alpha files (everything > all > pypi)"
    );
    let alpha_wheel = alpha.wheel("1.0.0");
    assert_served_through(
        &bed,
        &entries,
        "everything",
        "wgfx-alpha",
        &alpha_wheel.filename,
        &alpha_wheel.bytes,
    );

    // Projects only the outer level has, and projects no member has.
    assert_eq!(
        filenames(&listed(&bed, "everything", "wgpub-tool")),
        BTreeSet::from([tool.filename.clone()]),
        "/everything/simple/wgpub-tool/ must list staging's wgpub-tool"
    );
    for path in [
        "/all/simple/wgpub-tool/",
        "/all/simple/wgpub-never-uploaded/",
        "/everything/simple/wgpub-never-uploaded/",
    ] {
        let response = get_json(&bed, path);
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{path} must be a 404: no member has the project; body:\n{}",
            response.text()
        );
    }

    // The index is the union of the members' projects.
    for (path, expected) in [
        (
            "/all/simple/",
            vec!["wgpub-app", "wgfx-alpha", "wgfx-delta"],
        ),
        (
            "/everything/simple/",
            vec!["wgpub-app", "wgpub-tool", "wgfx-alpha", "wgfx-delta"],
        ),
    ] {
        let projects = index_projects(&get_json(&bed, path), path);
        for name in expected {
            assert!(
                projects.contains(name),
                "{path} must list {name} (the union of its members' projects), got {projects:?}"
            );
        }
        if path == "/all/simple/" {
            assert!(
                !projects.contains("wgpub-tool"),
                "{path} must not list staging's wgpub-tool, got {projects:?}"
            );
        }
    }

    // The status page shows both groups with their kind.
    let home = http::get(&bed.url("/"), &[]);
    let text = String::from_utf8_lossy(home.expect_ok("/")).into_owned();
    for (name, kind) in [
        (ALL, "group"),
        ("everything", "group"),
        (INTERNAL, "hosted"),
        (PYPI, "remote"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("\"{name}/simple/\"")))
            .unwrap_or_else(|| {
                panic!("the status page / must list the repository {name}:\n{text}")
            });
        assert!(
            line.contains(kind),
            "the status page / must show {name} as a {kind}, got the line {line:?}"
        );
    }
}

// --- 5. `wheelgate check` -----------------------------------------------------------------------

/// `wheelgate check` of a configuration with `groups` beside `pypi` (a closed port) and
/// `internal`.
fn check(groups: &[GroupConfig]) -> ClientRun {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let config = standalone_config(dir.path(), |config| {
        config.hosted = vec![INTERNAL.to_owned()];
        config.groups = groups.to_vec();
    });
    let config = config.to_string_lossy().into_owned();
    wheelgate::run(&["check", "--config", &config], dir.path())
}

#[test]
fn wheelgate_check_refuses_unknown_members_and_cycles_naming_them() {
    // A sound group passes, so the refusals below are about the members.
    let sound = check(&[
        GroupConfig::new(ALL, &[INTERNAL, PYPI]),
        GroupConfig::new("everything", &[ALL]),
    ]);
    assert_eq!(
        sound.exit_code,
        Some(0),
        "`wheelgate check` must accept a group of internal and pypi and a group holding it:\n{}",
        sound.output()
    );

    let cases: [(&str, Vec<GroupConfig>, &[&str]); 3] = [
        (
            "an unknown member",
            vec![GroupConfig::new(ALL, &[INTERNAL, "ghost-repo"])],
            &["ghost-repo"],
        ),
        (
            "a cycle of two groups",
            vec![
                GroupConfig::new("ring-one", &[INTERNAL, "ring-two"]),
                GroupConfig::new("ring-two", &[PYPI, "ring-one"]),
            ],
            &["ring-one", "ring-two"],
        ),
        (
            "a group that is its own member",
            vec![GroupConfig::new("self-loop", &[INTERNAL, "self-loop"])],
            &["self-loop"],
        ),
    ];
    for (what, groups, names) in cases {
        let run = check(&groups);
        assert_eq!(
            run.exit_code,
            Some(2),
            "`wheelgate check` with {what} must exit 2:\n{}",
            run.output()
        );
        let output = run.output();
        for name in names {
            assert!(
                output.contains(name),
                "`wheelgate check` with {what} must name {name:?}:\n{output}"
            );
        }
    }
}

// --- 6. Rules ------------------------------------------------------------------------------------

/// The group holding `all`, so that `all` is a group in between.
const OUTER: &str = "outer";

#[test]
fn deny_rules_of_the_remote_member_and_of_the_group_hide_files_and_refuse_them_through_the_group() {
    // wgfx-kappa has 1.0, 1.9 and 2.0: the member denies 2.0, the group 1.9 (and allows the rest,
    // 2.0 included); the group also denies wgfx-epsilon whole. `outer` holds `all`, so both
    // repositories' rules apply through it as well.
    let rules = [
        rule_toml_in(
            PYPI,
            "no-kappa-2",
            "DENY",
            Some("wgfx-kappa"),
            Some("pkg.version.id == '2.0'"),
        ),
        rule_toml_in(
            ALL,
            "no-kappa-19",
            "DENY",
            Some("wgfx-kappa"),
            Some("pkg.version.id == '1.9'"),
        ),
        rule_toml_in(ALL, "no-epsilon", "DENY", Some("wgfx-epsilon"), None),
        // An explicit ALLOW at the group does not lift the member's DENY.
        rule_toml_in(ALL, "group-allows-the-rest", "ALLOW", None, None),
    ]
    .concat();
    let bed = TestBed::start_hosted(|config| {
        config.groups = vec![
            GroupConfig::new(ALL, &[INTERNAL, PYPI]),
            GroupConfig::new(OUTER, &[ALL]),
        ];
        config.extra_toml = rules;
    });
    let kappa = catalog().expect_project("wgfx-kappa");
    let of = |versions: &[&str]| -> BTreeSet<String> {
        kappa
            .files
            .iter()
            .filter(|f| versions.contains(&f.version.as_str()))
            .map(|f| f.filename.clone())
            .collect()
    };

    assert_eq!(
        filenames(&listed(&bed, PYPI, "wgfx-kappa")),
        of(&["1.0", "1.9"]),
        "/pypi/simple/wgfx-kappa/ must leave out only 2.0: the group's rule does not apply to the member itself"
    );
    let denied = [("2.0", "no-kappa-2", PYPI), ("1.9", "no-kappa-19", ALL)];
    for group in [ALL, OUTER] {
        let entries = listed(&bed, group, "wgfx-kappa");
        assert_eq!(
            filenames(&entries),
            of(&["1.0"]),
            "/{group}/simple/wgfx-kappa/ must leave out 2.0 (denied by the member pypi) and 1.9 (denied by the group all)"
        );
        for (version, rule, repo) in denied {
            for file in kappa.files.iter().filter(|f| f.version == version) {
                for suffix in ["", ".metadata"] {
                    if !suffix.is_empty() && file.metadata.is_none() {
                        continue;
                    }
                    let path = format!(
                        "/{group}/files/wgfx-kappa/{}/{}{suffix}",
                        file.sha256, file.filename
                    );
                    assert_denied_in(
                        &http::get(&bed.url(&path), &[]),
                        &format!("GET {path} (version {version})"),
                        rule,
                        repo,
                        true,
                    );
                }
            }
        }
        // The allowed file is served through the group: the 403s above were the rules' doing.
        let allowed = kappa.wheel("1.0");
        assert_served_through(
            &bed,
            &entries,
            group,
            "wgfx-kappa",
            &allowed.filename,
            &allowed.bytes,
        );

        // A page the group's rule leaves empty is a 403 naming it; the member still serves it.
        let path = format!("/{group}/simple/wgfx-epsilon/");
        assert_denied_in(
            &get_json(&bed, &path),
            &format!("GET {path} (every file denied by the group all)"),
            "no-epsilon",
            ALL,
            true,
        );
    }
    assert!(
        !listed(&bed, PYPI, "wgfx-epsilon").is_empty(),
        "/pypi/simple/wgfx-epsilon/ must list its files: only the group denies them"
    );

    for version in ["2.0", "1.9"] {
        for file in kappa.files.iter().filter(|f| f.version == version) {
            let asked: Vec<_> = bed
                .upstream
                .requests()
                .into_iter()
                .filter(|r| r.path.contains(&file.filename))
                .collect();
            assert!(
                asked.is_empty(),
                "the upstream must never be asked for the denied {}, yet it saw {asked:?}",
                file.filename
            );
        }
    }

    // 1.9 is served through the member itself, whose rules allow it.
    let member_entries = listed(&bed, PYPI, "wgfx-kappa");
    let nineteen = kappa.wheel("1.9");
    assert_served_through(
        &bed,
        &member_entries,
        PYPI,
        "wgfx-kappa",
        &nineteen.filename,
        &nineteen.bytes,
    );
}

// --- 7. A member that cannot answer ---------------------------------------------------------------

/// A URL on 127.0.0.1 where nothing listens: a remote whose upstream refuses every connection.
fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a port on 127.0.0.1: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the bound port has no address: {e}"));
    drop(listener);
    format!("http://{addr}/simple/")
}

/// A 502 whose plain-text reason names each of the `failed` members.
fn assert_bad_gateway(bed: &TestBed, path: &str, failed: &[&str], what: &str) {
    let response = get_json(bed, path);
    assert_eq!(
        response.status,
        StatusCode::BAD_GATEWAY,
        "{path} must be a 502: {what}; got body:\n{}\nwheelgate's output:\n{}",
        response.text(),
        bed.wheelgate.output()
    );
    let reason = response.text();
    for member in failed {
        assert!(
            reason.contains(member),
            "{path}: the 502's reason must name the member {member:?} that failed ({what}), got:\n{reason}"
        );
    }
}

#[test]
fn a_down_remote_member_is_named_in_x_wheelgate_unavailable_and_a_group_whose_every_member_failed_is_502(
) {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.extra_repositories = bare_remote_toml("mirror", &closed_port_url());
        config.groups = vec![
            GroupConfig::new(ALL, &[INTERNAL, PYPI]),
            GroupConfig::new("remote-only", &[PYPI]),
            GroupConfig::new("two-down", &[PYPI, "mirror"]),
            GroupConfig::new("three", &[PYPI, INTERNAL, "mirror"]),
        ];
        // wgpub-app's first upload would block its upstreams through every group holding
        // internal (tests/it/origin.rs), and a member that is not asked cannot fail: allow them.
        config.extra_toml = "[[package_origin]]\nrepository = \"internal\"\npackage = \"wgpub-app\"\nupstream = \"ALLOW\"\n".to_owned();
        // A failed load is remembered this long: the upstream is asked again once it is over.
        config.negative_ttl = Some("2s".to_owned());
    });
    let wheel = uploads::app_wheel();
    // Down before the first request: the remote has no stale copy of anything (not even the
    // answer it would have given the upload's check of what the upstream offers).
    bed.upstream.set_down(true);
    upload_all(&bed, INTERNAL, &publisher, &[wheel]);

    let path = "/all/simple/wgpub-app/";
    let response = get_json(&bed, path);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{path} must be served from internal while pypi's upstream is down; body:\n{}\nwheelgate's output:\n{}",
        response.text(),
        bed.wheelgate.output()
    );
    assert_eq!(
        response.header(UNAVAILABLE_HEADER),
        Some(PYPI),
        "{path}: {UNAVAILABLE_HEADER} must name the member that failed (pypi); headers:\n{}",
        response.headers_text()
    );
    let entries = entries_of(&response, &bed.url(path));
    assert_eq!(
        filenames(&entries),
        BTreeSet::from([wheel.filename.clone()]),
        "{path} must list internal's wheel while pypi is down"
    );
    assert_served_through(
        &bed,
        &entries,
        ALL,
        "wgpub-app",
        &wheel.filename,
        &wheel.bytes,
    );
    let html = http::get(&bed.url(path), &[ACCEPT_HTML]);
    assert_eq!(
        (html.status, html.header(UNAVAILABLE_HEADER)),
        (StatusCode::OK, Some(PYPI)),
        "{path} as HTML must be a 200 naming pypi in {UNAVAILABLE_HEADER} too; headers:\n{}",
        html.headers_text()
    );

    // Two of three members failing: both are named, comma-separated.
    let three = "/three/simple/wgpub-app/";
    let response = get_json(&bed, three);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{three} must be served from internal while pypi and mirror fail; body:\n{}",
        response.text()
    );
    let named: BTreeSet<&str> = response
        .header(UNAVAILABLE_HEADER)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .collect();
    assert_eq!(
        named,
        BTreeSet::from([PYPI, "mirror"]),
        "{three}: {UNAVAILABLE_HEADER} must name pypi and mirror, comma-separated; headers:\n{}",
        response.headers_text()
    );

    let index = get_json(&bed, "/all/simple/");
    assert!(
        index_projects(&index, "/all/simple/").contains("wgpub-app"),
        "/all/simple/ must list internal's wgpub-app while pypi is down: {}",
        index.text()
    );
    assert_eq!(
        index.header(UNAVAILABLE_HEADER),
        Some(PYPI),
        "/all/simple/: {UNAVAILABLE_HEADER} must name pypi while its upstream is down; headers:\n{}",
        index.headers_text()
    );

    assert_bad_gateway(
        &bed,
        "/remote-only/simple/wgfx-alpha/",
        &[PYPI],
        "the group's only member (pypi) is down and has nothing cached",
    );
    for project in ["wgfx-alpha", "wgpub-app"] {
        assert_bad_gateway(
            &bed,
            &format!("/two-down/simple/{project}/"),
            &[PYPI, "mirror"],
            "both members (pypi, mirror) failed",
        );
    }

    // Back up: every member answers (once the failures remembered for negative_ttl are
    // forgotten), and nothing is named.
    bed.upstream.set_down(false);
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let response = get_json(&bed, path);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{path} once pypi is back; body:\n{}",
        response.text()
    );
    assert_eq!(
        response.header(UNAVAILABLE_HEADER),
        None,
        "{path}: no {UNAVAILABLE_HEADER} once every member answers; headers:\n{}",
        response.headers_text()
    );
    let alpha = listed(&bed, "remote-only", "wgfx-alpha");
    assert!(
        !alpha.is_empty(),
        "/remote-only/simple/wgfx-alpha/ must list the remote's files once its upstream is back"
    );
}

#[test]
fn a_project_only_a_down_remote_member_could_have_is_not_reported_as_missing() {
    let bed = TestBed::start_hosted(|config| {
        config.groups = vec![GroupConfig::new(ALL, &[INTERNAL, PYPI])];
    });
    bed.upstream.set_down(true);
    // A project only the down member could have: internal answered that it has none, pypi could
    // not answer at all, so "no member has it" is not known. A plain 404 would tell pip and uv
    // the project does not exist and hide the outage; the answer must be a 502 or name pypi.
    let path = "/all/simple/wgfx-alpha/";
    let response = get_json(&bed, path);
    assert!(
        response.status == StatusCode::BAD_GATEWAY
            || (response.status != StatusCode::OK && response.header(UNAVAILABLE_HEADER) == Some(PYPI)),
        "{path} while pypi (the only member that could have wgfx-alpha) is down must be a 502, or at least name pypi in \
         {UNAVAILABLE_HEADER}; got {} with headers:\n{}body:\n{}",
        response.status,
        response.headers_text(),
        response.text()
    );
}
