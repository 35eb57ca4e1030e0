//! Hosted repositories (SPEC §1, §2, §8): packages published to wheelgate itself through the
//! legacy upload API (`POST /<repo>/` and `POST /<repo>/legacy/`), with twine, `uv publish` and a
//! hand-written multipart request, then installed from `/<repo>/simple/` by pip and uv.
//!
//! An upload is a 200 only once the file is stored, and the project page lists it at once, with
//! every attribute a client uses (digest, requires-python, core metadata, size, upload time).
//! Every refusal is checked for its status, its one-line reason (body and reason phrase) and for
//! what it left behind: nothing. Credentials missing or wrong (401), a user without the publish
//! role or limited to another repository (403), digests that do not match the content, a filename
//! that disagrees with the form or with the wheel's METADATA, a zip bomb (400), a body over
//! `max_upload_size` (413, while it streams), a body that stops coming for `upload_idle_timeout`
//! (408; one that keeps coming slowly is a 200), and a different file under a filename already
//! taken (409; the same bytes again are a harmless 200, so a re-run publish job passes). A kill -9
//! with an upload half-sent leaves nothing, and one right after the 200 loses nothing. uv's
//! `--check-url` makes a second `uv publish` skip what is already there without uploading again.
//!
//! The files are this project's own (`harness/uploads.rs`); the fixture upstream never serves a
//! `wgpub-` project, so whatever a hosted page lists came from an upload.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use ::http::StatusCode;

use crate::harness::clients::{self, dists, ClientRun};
use crate::harness::fixtures::FileKind;
use crate::harness::http::{self, RawResponse};
use crate::harness::uploads::{self, Dist, UploadForm};
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wheelgate::RemoteConfig;
use crate::harness::{resolve, wait_until, Account, TestBed};
use crate::simple_api::anchors;

/// The hosted repository every bed here defines (`TestBed::start_hosted`).
pub(crate) const INTERNAL: &str = "internal";
/// What a 401 must carry.
pub(crate) const CHALLENGE: &str = "Basic realm=\"wheelgate\"";
/// How long asynchronous cleanup (a discarded temporary file) may take to show on disk.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);
/// How long wheelgate may take to refuse a body that went over `max_upload_size`.
const OVER_LIMIT_ANSWER: Duration = Duration::from_secs(10);
/// How far the JSON page's `upload-time` may stray from the moment of the upload.
const CLOCK_SLACK: Duration = Duration::from_secs(5);

/// A bed with the hosted repository `internal`, the user `ci-publisher` (read, publish) and the
/// user `reader` (read only), adjusted by `adjust`.
pub(crate) fn publishing_bed(
    adjust: impl FnOnce(&mut RemoteConfig),
) -> (TestBed, Account, Account) {
    let publisher = Account::new("ci-publisher");
    let reader = Account::new("reader");
    let bed = TestBed::start_hosted(|config| {
        config.users = vec![publisher.user(&["read", "publish"]), reader.user(&["read"])];
        adjust(config)
    });
    (bed, publisher, reader)
}

/// The reason phrase wheelgate sends for `reason`: visible ASCII (anything else becomes `?`), at
/// most 200 characters.
fn as_reason_phrase(reason: &str) -> String {
    reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect()
}

/// A refusal: `status`, a plain-text body of one non-empty line that names each of `words`
/// (case-insensitively), and that line again as the HTTP reason phrase. Returns the line.
pub(crate) fn assert_refusal(
    response: &RawResponse,
    status: u16,
    what: &str,
    words: &[&str],
) -> String {
    assert_eq!(
        response.status,
        status,
        "{what}: expected {status}, got {} {:?}; body:\n{}",
        response.status,
        response.reason_phrase,
        response.text()
    );
    let body = response.text();
    let line = body.trim_end_matches(['\r', '\n']);
    assert!(
        !line.trim().is_empty() && !line.contains('\n'),
        "{what}: the reason must be one non-empty line, got {body:?}"
    );
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "{what}: the reason must be plain text, got {content_type:?}"
    );
    assert_eq!(
        response.reason_phrase,
        as_reason_phrase(line),
        "{what}: the HTTP reason phrase must be the reason (pip and twine show little else)"
    );
    for word in words {
        assert!(
            line.to_ascii_lowercase()
                .contains(&word.to_ascii_lowercase()),
            "{what}: the reason must name {word:?}, got {line:?}"
        );
    }
    line.to_owned()
}

/// A 401 with the Basic challenge of realm `wheelgate` and a one-line reason.
pub(crate) fn assert_unauthorized(response: &RawResponse, what: &str) {
    assert_refusal(response, 401, what, &[]);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with(CHALLENGE),
        "{what}: a 401 must carry `WWW-Authenticate: {CHALLENGE}`, got {challenge:?}"
    );
}

/// A successful upload: a 200 (the file is stored by then).
pub(crate) fn assert_uploaded(bed: &TestBed, response: &RawResponse, what: &str) {
    assert_eq!(
        response.status,
        200,
        "{what}: the upload must succeed, got {} {:?}; body:\n{}\nwheelgate's output:\n{}",
        response.status,
        response.reason_phrase,
        response.text(),
        bed.wheelgate.output()
    );
}

/// Uploads `dist` to `repo` as `account`, which must succeed (see `assert_uploaded`); then the
/// page of `repo`, read anonymously, lists it (see `assert_listed`).
pub(crate) fn assert_upload_listed(
    bed: &TestBed,
    repo: &str,
    dist: &Dist,
    account: &Account,
    what: &str,
) {
    let response = bed.upload(repo, &UploadForm::of(dist), Some(account));
    assert_uploaded(bed, &response, what);
    assert_listed(
        bed,
        repo,
        None,
        &[dist],
        &format!("read anonymously after {what}"),
    );
}

/// `/<repo>/files/<project>/<sha256>/<filename>`, where a hosted page links a file.
pub(crate) fn hosted_file_path(repo: &str, dist: &Dist) -> String {
    format!(
        "/{repo}/files/{}/{}/{}",
        dist.normalized, dist.sha256, dist.filename
    )
}

fn auth_headers<'a>(
    authorization: &'a Option<String>,
    accept: &'a str,
) -> Vec<(&'static str, &'a str)> {
    let mut headers = vec![("accept", accept)];
    if let Some(value) = authorization {
        headers.push(("authorization", value.as_str()));
    }
    headers
}

/// The JSON page (PEP 691) at `url`, which must be a 200.
fn json_page(url: &str) -> serde_json::Value {
    let response = http::get(url, &[("accept", JSON_MEDIA_TYPE)]);
    response.expect_ok(url);
    response.json()
}

/// The text of the HTML page at `url`, which must be a 200.
fn html_page(url: &str) -> String {
    let response = http::get(url, &[("accept", "text/html")]);
    response.expect_ok(url);
    response.text()
}

/// The hosted project's JSON page as filename -> sha256, or None when it is a 404 (the project
/// was never uploaded). Anything else panics.
pub(crate) fn hosted_files(
    bed: &TestBed,
    repo: &str,
    project: &str,
    account: Option<&Account>,
) -> Option<BTreeMap<String, String>> {
    let url = bed.url(&format!("/{repo}/simple/{project}/"));
    let authorization = account.map(Account::authorization);
    let response = http::get(&url, &auth_headers(&authorization, JSON_MEDIA_TYPE));
    if response.status == StatusCode::NOT_FOUND {
        return None;
    }
    response.expect_ok(&url);
    let page = response.json();
    Some(
        page["files"]
            .as_array()
            .unwrap_or_else(|| panic!("{url}: no files array in {page}"))
            .iter()
            .map(|f| {
                (
                    f["filename"].as_str().unwrap_or_default().to_owned(),
                    f["hashes"]["sha256"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect(),
    )
}

/// The hosted page of `dists`' project lists exactly `dists`, with their digests, and every file
/// link serves its bytes.
pub(crate) fn assert_listed(
    bed: &TestBed,
    repo: &str,
    account: Option<&Account>,
    dists: &[&Dist],
    what: &str,
) {
    let project = &dists.first().expect("at least one file").normalized;
    let expected: BTreeMap<String, String> = dists
        .iter()
        .map(|d| (d.filename.clone(), d.sha256.clone()))
        .collect();
    let listed = hosted_files(bed, repo, project, account).unwrap_or_else(|| {
        panic!(
            "{what}: /{repo}/simple/{project}/ is a 404, yet it must list {:?}\nwheelgate's output:\n{}",
            expected.keys(),
            bed.wheelgate.output()
        )
    });
    assert_eq!(
        listed, expected,
        "{what}: /{repo}/simple/{project}/ lists the wrong files"
    );
    let authorization = account.map(Account::authorization);
    for dist in dists {
        let url = bed.url(&hosted_file_path(repo, dist));
        let response = http::get(&url, &auth_headers(&authorization, "*/*"));
        assert!(
            response.expect_ok(&url) == dist.bytes.as_slice(),
            "{what}: {url} must serve the uploaded bytes"
        );
    }
}

/// Nothing of `dists` is in `repo`: their project page is a 404 and so are their file URLs.
pub(crate) fn assert_not_stored(
    bed: &TestBed,
    repo: &str,
    account: Option<&Account>,
    dists: &[&Dist],
    what: &str,
) {
    let authorization = account.map(Account::authorization);
    for dist in dists {
        if let Some(files) = hosted_files(bed, repo, &dist.normalized, account) {
            panic!(
                "{what}: /{repo}/simple/{}/ must be a 404, it lists {files:?}",
                dist.normalized
            );
        }
        let url = bed.url(&hosted_file_path(repo, dist));
        let response = http::get(&url, &auth_headers(&authorization, "*/*"));
        assert_eq!(
            response.status,
            StatusCode::NOT_FOUND,
            "{what}: {url} must not be served"
        );
    }
}

/// The number of access-log lines for uploads to `/<repo>/`. The log is written in batches;
/// stop wheelgate first to see every line.
pub(crate) fn upload_lines(output: &str, repo: &str) -> usize {
    let wanted = format!("method=POST path=/{repo}/ ");
    output
        .lines()
        .filter(|l| l.contains(" wheelgate::access: request ") && l.contains(&wanted))
        .count()
}

/// `client` (`pip` or `uv`) installs `requirements` from `index_url` into `target`.
pub(crate) fn install_with(
    client: &str,
    index_url: &str,
    target: &Path,
    requirements: &[&str],
) -> ClientRun {
    match client {
        "pip" => clients::pip_install(index_url, target, requirements),
        _ => clients::uv_install(index_url, target, requirements),
    }
}

/// pip and uv each install `wgpub-app` from `index_url` into fresh targets and get `version`.
pub(crate) fn pip_and_uv_install_app(bed: &TestBed, index_url: &str, version: &str, what: &str) {
    for client in ["pip", "uv"] {
        let target = bed.target_dir(&format!("{what}-{client}"));
        let run = install_with(client, index_url, &target, &["wgpub-app"]);
        assert_installed(
            bed,
            &run,
            &target,
            &dists(&[("wgpub-app", version)]),
            client,
        );
    }
}

/// A client `run` (`what`) exited 0; else panics with its output and wheelgate's.
pub(crate) fn assert_client_succeeded(bed: &TestBed, run: &ClientRun, what: &str) {
    assert!(
        run.success(),
        "{what} failed with {:?}\n{}\nwheelgate's output:\n{}",
        run.exit_code,
        run.output(),
        bed.wheelgate.output()
    );
}

/// An install `run` (`what`) succeeded and put exactly `expected` into `target`.
pub(crate) fn assert_installed(
    bed: &TestBed,
    run: &ClientRun,
    target: &Path,
    expected: &BTreeSet<(String, String)>,
    what: &str,
) {
    assert_client_succeeded(bed, run, &format!("{what}: `{}`", run.command));
    assert_eq!(
        &clients::installed(target),
        expected,
        "{what} installed the wrong set; output:\n{}",
        run.output()
    );
}

/// `twine upload` of `files` to `/internal/` as `account`.
pub(crate) fn twine_upload_as(bed: &TestBed, account: &Account, files: &[PathBuf]) -> ClientRun {
    clients::twine_upload(
        &bed.url("/internal/"),
        &account.name,
        &account.password,
        files,
    )
}

/// `uv publish` of `files` to `/internal/` as `account`, with `check_url` if any.
fn uv_publish_as(
    bed: &TestBed,
    check_url: Option<&str>,
    account: &Account,
    files: &[PathBuf],
) -> ClientRun {
    clients::uv_publish(
        &bed.url("/internal/"),
        check_url,
        &account.name,
        &account.password,
        files,
    )
}

/// Nothing is left of an upload of `dist` that did not complete (`what`): `tmp/` empties, no blob
/// holds its bytes, and `internal` neither lists nor serves it.
fn assert_nothing_left(bed: &TestBed, dist: &Dist, what: &str) {
    bed.assert_tmp_empties(CLEANUP_WAIT, &format!("{what} must leave nothing in tmp/"));
    assert!(
        !bed.blob_path(&dist.sha256).exists(),
        "{what} was committed as a blob"
    );
    assert_not_stored(bed, INTERNAL, None, &[dist], what);
}

/// `<file>.metadata` of the wheel `dist` in `repo` is its METADATA, byte for byte.
fn assert_metadata_served(bed: &TestBed, repo: &str, dist: &Dist, what: &str) {
    let metadata_url = format!("{}.metadata", bed.url(&hosted_file_path(repo, dist)));
    let metadata = http::get(&metadata_url, &[]);
    assert_eq!(
        Some(metadata.expect_ok(&metadata_url)),
        dist.metadata.as_deref(),
        "{metadata_url} must be the wheel's METADATA, byte for byte ({what})"
    );
}

/// A client's output with every run of whitespace made one space (twine wraps its messages).
fn one_line(output: &str) -> String {
    output.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn write_dists(bed: &TestBed, name: &str, files: &[&Dist]) -> Vec<PathBuf> {
    let dir = bed.dir.path().join("dist").join(name);
    files.iter().map(|d| d.write_to(&dir)).collect()
}

#[test]
fn twine_uploads_a_wheel_and_an_sdist_that_pip_and_uv_then_install_from_the_hosted_repository() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let (wheel, sdist) = (uploads::app_wheel(), uploads::app_sdist());
    let files = write_dists(&bed, "app", &[wheel, sdist]);
    let run = twine_upload_as(&bed, &publisher, &files);
    assert_client_succeeded(&bed, &run, "`twine upload`");
    assert_listed(&bed, INTERNAL, None, &[wheel, sdist], "after twine upload");
    pip_and_uv_install_app(&bed, &bed.url("/internal/simple/"), "1.0.0", "twine");
    bed.assert_upstream_never_asked("wgpub", "a hosted repository fetches nothing");
}

#[test]
fn uv_publish_uploads_and_a_second_run_skips_the_files_its_check_url_lists() {
    let (mut bed, publisher, _) = publishing_bed(|_| {});
    let (wheel, sdist, tool) = (
        uploads::app_wheel(),
        uploads::app_sdist(),
        uploads::tool_wheel(),
    );
    let files = write_dists(&bed, "app", &[wheel, sdist, tool]);
    let check_url = bed.url("/internal/simple/");
    let publish = || uv_publish_as(&bed, Some(&check_url), &publisher, &files);
    let first = publish();
    assert_client_succeeded(&bed, &first, "the first `uv publish`");
    assert_listed(&bed, INTERNAL, None, &[wheel, sdist], "after uv publish");
    assert_listed(&bed, INTERNAL, None, &[tool], "after uv publish");
    // uv sends `requires_python` empty when METADATA has no Requires-Python: that is none.
    let url = bed.url("/internal/simple/wgpub-tool/");
    let entry = json_page(&url)["files"][0].clone();
    assert!(
        entry["requires-python"].is_null(),
        "{url}: wgpub-tool requires no Python version, yet the page says {}",
        entry["requires-python"]
    );
    let html = html_page(&url);
    let links = anchors(&html);
    assert!(
        links
            .get(&tool.filename)
            .is_some_and(|a| !a.contains_key("data-requires-python")),
        "{url}: no data-requires-python for a file that requires none:\n{html}"
    );

    let second = publish();
    assert!(
        second.success(),
        "`uv publish` run again with --check-url must succeed (a re-run publish job is harmless); exit {:?}\n{}",
        second.exit_code,
        second.output()
    );
    for dist in [wheel, sdist, tool] {
        let skipped = second
            .stderr
            .lines()
            .any(|line| line.contains(&dist.filename) && line.contains("already exists, skipping"));
        assert!(
            skipped,
            "the second `uv publish` must skip {} because the check URL lists it; its output:\n{}",
            dist.filename,
            second.output()
        );
    }
    assert_listed(
        &bed,
        INTERNAL,
        None,
        &[wheel, sdist],
        "after the second uv publish",
    );
    assert_listed(&bed, INTERNAL, None, &[tool], "after the second uv publish");
    pip_and_uv_install_app(&bed, &bed.url("/internal/simple/"), "1.0.0", "uv-publish");

    bed.wheelgate.stop();
    let uploads = upload_lines(&bed.wheelgate.output(), INTERNAL);
    assert_eq!(
        uploads,
        3,
        "one upload per file by the first run and none by the second; the access log shows {uploads} POST /internal/"
    );
}

#[test]
fn an_upload_is_listed_at_once_with_every_attribute_in_json_and_html() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let (wheel, sdist) = (uploads::app_wheel(), uploads::app_sdist());
    assert_not_stored(&bed, INTERNAL, None, &[wheel], "before the upload");

    // Both endpoints of the legacy API: `/<repo>/` and `/<repo>/legacy/`.
    let before = SystemTime::now();
    for (dist, path) in [(wheel, "/internal/"), (sdist, "/internal/legacy/")] {
        let response = bed.post_form(path, &UploadForm::of(dist), Some(&publisher));
        assert_uploaded(&bed, &response, &format!("{} to {path}", dist.filename));
    }
    let after = SystemTime::now();

    // JSON (PEP 691, PEP 700, PEP 714).
    let url = bed.url("/internal/simple/wgpub-app/");
    let page = json_page(&url);
    assert!(
        page["meta"]["api-version"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "{url}: meta.api-version, got {page}"
    );
    assert_eq!(
        page["versions"],
        serde_json::json!(["1.0.0"]),
        "{url}: versions"
    );
    let files = page["files"]
        .as_array()
        .unwrap_or_else(|| panic!("{url}: no files array in {page}"));
    assert_eq!(files.len(), 2, "{url}: the wheel and the sdist, got {page}");
    for dist in [wheel, sdist] {
        let entry = files
            .iter()
            .find(|f| f["filename"] == dist.filename.as_str())
            .unwrap_or_else(|| panic!("{url} does not list {}: {page}", dist.filename));
        let href = entry["url"].as_str().unwrap_or_default();
        let link = resolve(&url, href);
        assert_eq!(
            (link.host_str(), link.port(), link.path()),
            (
                Some("127.0.0.1"),
                Some(bed.wheelgate.addr().port()),
                hosted_file_path(INTERNAL, dist).as_str()
            ),
            "{}: the link {href:?}",
            dist.filename
        );
        assert_eq!(
            entry["hashes"]["sha256"].as_str(),
            Some(dist.sha256.as_str()),
            "{}: hashes",
            dist.filename
        );
        assert_eq!(
            entry["requires-python"].as_str(),
            Some(">=3.8"),
            "{}: requires-python",
            dist.filename
        );
        assert_eq!(
            entry["size"].as_u64(),
            Some(dist.bytes.len() as u64),
            "{}: size",
            dist.filename
        );
        assert!(
            entry["yanked"].is_null() || entry["yanked"] == false,
            "{}: not yanked, got {}",
            dist.filename,
            entry["yanked"]
        );
        match dist.kind {
            FileKind::Wheel => assert_eq!(
                entry["core-metadata"]["sha256"].as_str(),
                dist.metadata_sha256.as_deref(),
                "{}: core-metadata must give the METADATA's sha256, got {entry}",
                dist.filename
            ),
            FileKind::Sdist => assert!(
                entry["core-metadata"].is_null() || entry["core-metadata"] == false,
                "{}: an sdist has no core metadata file, got {}",
                dist.filename,
                entry["core-metadata"]
            ),
        }
        let upload_time = entry["upload-time"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no upload-time (PEP 700) in {entry}", dist.filename));
        let parsed = chrono::DateTime::parse_from_rfc3339(upload_time).unwrap_or_else(|e| {
            panic!(
                "{}: upload-time {upload_time:?} is not RFC 3339: {e}",
                dist.filename
            )
        });
        let at = SystemTime::from(parsed);
        assert!(
            at + CLOCK_SLACK >= before && at <= after + CLOCK_SLACK,
            "{}: upload-time {upload_time} is not the time of the upload",
            dist.filename
        );
        let served = http::get(link.as_str(), &[]);
        assert!(
            served.expect_ok(link.as_str()) == dist.bytes.as_slice(),
            "{}: the file must be served byte-identical",
            dist.filename
        );
    }
    assert_metadata_served(&bed, INTERNAL, wheel, "after the upload");

    // HTML (PEP 503, PEP 658, PEP 714), with the same links.
    let html = html_page(&url);
    let links = anchors(&html);
    assert_eq!(links.len(), 2, "{url}: one link per file, got {links:?}");
    for dist in [wheel, sdist] {
        let attributes = links
            .get(&dist.filename)
            .unwrap_or_else(|| panic!("{url}: no link for {}:\n{html}", dist.filename));
        let decoded = |key: &str| {
            attributes
                .get(key)
                .map(|v| html_escape::decode_html_entities(v).into_owned())
        };
        let href = decoded("href").unwrap_or_default();
        let (link, fragment) = href.split_once('#').unwrap_or((href.as_str(), ""));
        assert_eq!(
            resolve(&url, link).path(),
            hosted_file_path(INTERNAL, dist),
            "{}: HTML link",
            dist.filename
        );
        assert_eq!(
            fragment,
            format!("sha256={}", dist.sha256),
            "{}: the #sha256 fragment",
            dist.filename
        );
        assert_eq!(
            decoded("data-requires-python").as_deref(),
            Some(">=3.8"),
            "{}: data-requires-python",
            dist.filename
        );
        let raw = attributes
            .get("data-requires-python")
            .cloned()
            .unwrap_or_default();
        assert!(
            !raw.contains('>'),
            "{}: data-requires-python must be entity-escaped, got {raw:?}",
            dist.filename
        );
        let expected_metadata = dist
            .metadata_sha256
            .as_ref()
            .map(|sha| format!("sha256={sha}"));
        for key in ["data-core-metadata", "data-dist-info-metadata"] {
            assert_eq!(decoded(key), expected_metadata, "{}: {key}", dist.filename);
        }
    }

    // The repository's index lists the project; a project never uploaded is a 404.
    let index_url = bed.url("/internal/simple/");
    let index = json_page(&index_url);
    let projects: Vec<&str> = index["projects"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(projects, ["wgpub-app"], "{index_url} (JSON): {index}");
    let names: Vec<String> = anchors(&html_page(&index_url)).into_keys().collect();
    assert_eq!(names, ["wgpub-app"], "{index_url} (HTML)");
    let never = bed.url("/internal/simple/wgpub-never-uploaded/");
    assert_eq!(
        http::get(&never, &[]).status,
        StatusCode::NOT_FOUND,
        "{never}: a project never uploaded"
    );
    bed.assert_upstream_never_asked("wgpub", "a hosted repository fetches nothing");
}

#[test]
fn uploads_without_valid_credentials_are_401_and_store_nothing() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let wheel = uploads::app_wheel();
    let form = UploadForm::of(wheel);
    let stranger = Account::new("nobody");
    for (account, what) in [
        (None, "no credentials"),
        (
            Some(publisher.with_wrong_password()),
            "the publisher with a wrong password",
        ),
        (Some(stranger), "a user that does not exist"),
    ] {
        let response = bed.upload(INTERNAL, &form, account.as_ref());
        assert_unauthorized(&response, what);
    }
    assert_not_stored(&bed, INTERNAL, None, &[wheel], "after the 401s");
    // The same upload with the right password goes through: the 401s were about credentials.
    assert_upload_listed(&bed, INTERNAL, wheel, &publisher, "the publisher's upload");
}

#[test]
fn a_user_without_the_publish_role_is_403_naming_the_role_and_the_repository() {
    let (bed, _, reader) = publishing_bed(|_| {});
    let wheel = uploads::app_wheel();
    let response = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&reader));
    assert_refusal(
        &response,
        403,
        "an upload by a user with the read role only",
        &["publish", INTERNAL],
    );
    assert_not_stored(&bed, INTERNAL, None, &[wheel], "after the 403");
}

#[test]
fn a_publisher_limited_to_another_repository_is_403_here_and_uploads_there() {
    let staging_publisher = Account::new("staging-publisher");
    let bed = TestBed::start_hosted(|config| {
        config.hosted.push("staging".to_owned());
        config.users = vec![staging_publisher
            .user(&["read", "publish"])
            .limited_to(&["staging"])];
    });
    let tool = uploads::tool_wheel();
    let form = UploadForm::of(tool);
    let refused = bed.upload(INTERNAL, &form, Some(&staging_publisher));
    assert_refusal(
        &refused,
        403,
        "an upload to internal by a user limited to staging",
        &[INTERNAL],
    );
    assert_not_stored(&bed, INTERNAL, None, &[tool], "after the 403");

    assert_upload_listed(
        &bed,
        "staging",
        tool,
        &staging_publisher,
        "the upload to staging by its publisher",
    );
    assert_not_stored(
        &bed,
        INTERNAL,
        None,
        &[tool],
        "internal after an upload to staging (hosted repositories are separate)",
    );
}

#[test]
fn uploads_whose_digests_do_not_match_the_content_are_400_and_store_nothing() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let wheel = uploads::app_wheel();
    let other = uploads::app_wheel_rebuilt();
    let cases = [
        (
            UploadForm::of(wheel).set("sha256_digest", &other.sha256),
            "a sha256_digest of other bytes",
            "sha256",
        ),
        (
            UploadForm::of(wheel).with_content(&other.bytes),
            "content that is not what sha256_digest describes",
            "sha256",
        ),
        (
            UploadForm::of(wheel).set("md5_digest", &"0".repeat(32)),
            "a right sha256_digest and a wrong md5_digest",
            "md5",
        ),
        (
            UploadForm::of(wheel).set("blake2_256_digest", &"0".repeat(64)),
            "a right sha256_digest and a wrong blake2_256_digest",
            "blake2",
        ),
    ];
    for (form, what, digest) in &cases {
        let response = bed.upload(INTERNAL, form, Some(&publisher));
        assert_refusal(&response, 400, what, &[digest]);
    }
    assert_not_stored(
        &bed,
        INTERNAL,
        None,
        &[wheel, other],
        "after the digest mismatches",
    );
    bed.assert_tmp_empties(CLEANUP_WAIT, "refused uploads must leave nothing in tmp/");
    assert_upload_listed(
        &bed,
        INTERNAL,
        wheel,
        &publisher,
        "the upload of the same file with its true digest",
    );
}

#[test]
fn uploads_whose_filename_disagrees_with_the_name_or_version_field_are_400() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let (wheel, tool) = (uploads::app_wheel(), uploads::tool_wheel());
    for (form, what) in [
        (
            UploadForm::of(wheel).set("name", "wgpub-tool"),
            "wgpub_app-1.0.0-py3-none-any.whl sent as name wgpub-tool",
        ),
        (
            UploadForm::of(wheel).set("version", "1.0.1"),
            "wgpub_app-1.0.0-py3-none-any.whl sent as version 1.0.1",
        ),
    ] {
        let response = bed.upload(INTERNAL, &form, Some(&publisher));
        assert_refusal(&response, 400, what, &[]);
    }
    assert_not_stored(&bed, INTERNAL, None, &[wheel, tool], "after the mismatches");

    // Spellings that normalise to the filename's are the same project and version.
    for (dist, name, version) in [
        (wheel, "WGPub_App", "1.0.0"),
        (tool, "WGPUB.tool", "01.0.0"),
    ] {
        let form = UploadForm::of(dist)
            .set("name", name)
            .set("version", version);
        let response = bed.upload(INTERNAL, &form, Some(&publisher));
        assert_uploaded(
            &bed,
            &response,
            &format!(
                "{} sent as name {name:?}, version {version:?} (PEP 503 / PEP 440 equal)",
                dist.filename
            ),
        );
        assert_listed(
            &bed,
            INTERNAL,
            None,
            &[dist],
            &format!("after uploading {}", dist.filename),
        );
    }
}

#[test]
fn a_wheel_whose_metadata_disagrees_with_its_filename_is_400() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    for (dist, what) in [
        (
            uploads::version_skew_wheel(),
            "a 1.0.0 wheel whose METADATA says Version: 2.0.0",
        ),
        (
            uploads::name_skew_wheel(),
            "a wgpub-alias wheel whose METADATA says Name: wgpub-other",
        ),
    ] {
        let response = bed.upload(INTERNAL, &UploadForm::of(dist), Some(&publisher));
        assert_refusal(&response, 400, what, &["metadata"]);
        assert_not_stored(&bed, INTERNAL, None, &[dist], what);
    }
}

#[test]
fn a_zip_bomb_is_400_without_being_inflated() {
    // Inflating the bomb would take its 100 MiB; refusing it takes buffers. Measured as growth
    // over the process's size before the upload, which depends on the build and the machine
    // (the system's trust store, for one).
    const GROWTH_LIMIT_KIB: u64 = 48 * 1024;
    let (bed, publisher, _) = publishing_bed(|_| {});
    let bomb = uploads::zip_bomb();
    let before_kib = bed.wheelgate.rss_kib();
    let response = bed.upload(INTERNAL, &UploadForm::of(bomb), Some(&publisher));
    assert_refusal(
        &response,
        400,
        &format!(
            "{} ({} bytes, METADATA inflating to {} MiB)",
            bomb.filename,
            bomb.bytes.len(),
            uploads::BOMB_INFLATED >> 20
        ),
        &[],
    );
    let peak_kib = bed.wheelgate.peak_rss_kib();
    assert!(
        peak_kib < before_kib + GROWTH_LIMIT_KIB,
        "refusing a zip bomb must not inflate it: wheelgate's peak RSS (VmHWM) is {peak_kib} KiB, \
         {before_kib} KiB before the upload"
    );
    assert_not_stored(&bed, INTERNAL, None, &[bomb], "after the zip bomb");
    let wheel = uploads::app_wheel();
    let response = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &response, "a sound wheel after the bomb");
}

/// Sends the head of an upload of `dist` to `/internal/` as `publisher`, its body framed by
/// `framing` (a `Length` is made the body's true length), and returns the request, the body still
/// to send, and the framing.
fn begin_upload(
    bed: &TestBed,
    publisher: &Account,
    dist: &Dist,
    framing: http::Framing,
) -> (http::PartialRequest, Vec<u8>, http::Framing) {
    let multipart = UploadForm::of(dist).multipart();
    let body = multipart.body();
    let content_type = multipart.content_type();
    let authorization = publisher.authorization();
    let framing = match framing {
        http::Framing::Length(_) => http::Framing::Length(body.len() as u64),
        chunked => chunked,
    };
    let request = http::begin_framed(
        bed.wheelgate.addr(),
        "POST",
        b"/internal/",
        &[
            ("content-type", content_type.as_str()),
            ("authorization", authorization.as_str()),
        ],
        Some(framing),
    )
    .unwrap_or_else(|e| panic!("POST /internal/: {e}"));
    (request, body, framing)
}

/// Sends the head of an upload of `big_wheel` framed by `framing`, then 1.5 MiB of its body, and
/// returns the answer that must come while the rest is still unsent.
fn send_over_the_limit(bed: &TestBed, publisher: &Account, framing: http::Framing) -> RawResponse {
    const SENT: usize = 3 * 1024 * 1024 / 2;
    let (mut request, body, framing) = begin_upload(bed, publisher, uploads::big_wheel(), framing);
    // In 64 KiB pieces, as a client streams; wheelgate may cut the connection once over the limit.
    for piece in body.get(..SENT).unwrap_or_default().chunks(64 * 1024) {
        if request.send(piece).is_err() {
            break;
        }
    }
    let sent = request.sent;
    match request.answer_within(OVER_LIMIT_ANSWER) {
        Some(Ok(answer)) => answer,
        Some(Err(e)) => panic!(
            "{framing:?}: the connection ended without an answer after {sent} of {} body bytes: {e}",
            body.len()
        ),
        None => panic!(
            "{framing:?}: no answer within {OVER_LIMIT_ANSWER:?} after {sent} of {} body bytes, over a max_upload_size of 1MiB: \
             the limit must be enforced while the body streams, not once it is complete",
            body.len()
        ),
    }
}

#[test]
fn an_upload_over_max_upload_size_is_413_while_the_body_is_still_coming() {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.max_upload_size = Some("1MiB".to_owned());
    });
    let big = uploads::big_wheel();
    for framing in [http::Framing::Length(0), http::Framing::Chunked] {
        let answer = send_over_the_limit(&bed, &publisher, framing);
        assert_refusal(
            &answer,
            413,
            &format!(
                "a {} byte upload ({framing:?}) over max_upload_size = 1MiB",
                big.bytes.len()
            ),
            &[],
        );
    }
    assert_nothing_left(&bed, big, "an upload refused for its size (the 413s)");
    // A file under the limit still goes through.
    let wheel = uploads::app_wheel();
    let response = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &response, "a small wheel under max_upload_size");
}

#[test]
fn an_upload_whose_body_stops_coming_is_408_after_upload_idle_timeout_and_leaves_nothing() {
    let (bed, publisher, _) = publishing_bed(|config| {
        config.server_toml = "upload_idle_timeout = \"1s\"\n".to_owned();
    });
    let wheel = uploads::app_wheel();
    for framing in [http::Framing::Length(0), http::Framing::Chunked] {
        let (mut request, body, framing) = begin_upload(&bed, &publisher, wheel, framing);
        request
            .send(&body[..body.len() / 2])
            .unwrap_or_else(|e| panic!("{framing:?}: the first half of the body: {e}"));
        let stalled = Instant::now();
        let answer = match request.answer_within(Duration::from_secs(30)) {
            Some(Ok(answer)) => answer,
            Some(Err(e)) => panic!("{framing:?}: the connection ended without an answer: {e}"),
            None => panic!(
                "{framing:?}: no answer within 30 s to an upload stalled halfway, with \
                 upload_idle_timeout = 1s"
            ),
        };
        assert!(
            stalled.elapsed() >= Duration::from_millis(900),
            "{framing:?}: answered {:?} after the body stalled, before upload_idle_timeout",
            stalled.elapsed()
        );
        assert_refusal(
            &answer,
            408,
            &format!("an upload stalled halfway ({framing:?})"),
            &["upload_idle_timeout"],
        );
    }
    assert_nothing_left(
        &bed,
        wheel,
        "an upload abandoned for its stalled body (the 408s)",
    );

    // A body that keeps coming, however slowly, is not idle: four pieces 600 ms apart.
    let (mut request, body, _) = begin_upload(&bed, &publisher, wheel, http::Framing::Length(0));
    for piece in body.chunks(body.len().div_ceil(4)) {
        std::thread::sleep(Duration::from_millis(600));
        request
            .send(piece)
            .unwrap_or_else(|e| panic!("a slow upload, after {} bytes: {e}", request.sent));
    }
    let answer = request
        .finish()
        .unwrap_or_else(|e| panic!("a slow upload: {e}"));
    assert_uploaded(&bed, &answer, "an upload sent in pieces 600 ms apart");
}

#[test]
fn the_same_filename_with_other_bytes_is_409_and_with_the_same_bytes_200() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let (wheel, rebuilt) = (uploads::app_wheel(), uploads::app_wheel_rebuilt());
    let first = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &first, "the first upload");
    let again = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &again, "the same bytes under the same filename again");
    let conflict = bed.upload(INTERNAL, &UploadForm::of(rebuilt), Some(&publisher));
    let reason = assert_refusal(
        &conflict,
        409,
        "other bytes under a filename already taken",
        &[],
    );
    assert!(
        reason.contains("File already exists"),
        "the 409's reason must say \"File already exists\" (clients look for it), got {reason:?}"
    );
    assert_listed(&bed, INTERNAL, None, &[wheel], "after the 409");

    // The clients see the same: twine passes with the same bytes and fails on the conflict.
    let same = write_dists(&bed, "same", &[wheel]);
    let run = twine_upload_as(&bed, &publisher, &same);
    assert!(
        run.success(),
        "twine uploading byte-identical content again must pass; exit {:?}\n{}",
        run.exit_code,
        run.output()
    );
    let other = write_dists(&bed, "rebuilt", &[rebuilt]);
    // twine prints `HTTPError: 409 Conflict from <url>` and the body below it, wrapped; uv prints
    // `Server returned status code 409 Conflict. Server says: <body>`.
    for (client, uploading) in [("twine", "uploading"), ("uv", "publishing")] {
        let run = match client {
            "twine" => twine_upload_as(&bed, &publisher, &other),
            _ => uv_publish_as(&bed, None, &publisher, &other),
        };
        assert!(
            !run.success(),
            "{client} {uploading} other bytes under a taken filename must fail:\n{}",
            run.output()
        );
        let shown = one_line(&run.output());
        assert!(
            shown.contains("409 Conflict") && shown.contains("File already exists"),
            "{client} must report the 409 and its reason; its output:\n{}",
            run.output()
        );
    }
    assert_listed(
        &bed,
        INTERNAL,
        None,
        &[wheel],
        "after the clients' attempts",
    );
}

#[test]
fn kill_9_while_an_upload_is_half_sent_leaves_nothing_after_a_restart() {
    let (mut bed, publisher, _) = publishing_bed(|config| {
        config.max_upload_size = Some("64MiB".to_owned());
    });
    let big = uploads::big_wheel();
    let (mut request, body, _) = begin_upload(&bed, &publisher, big, http::Framing::Length(0));
    let half = body.len() / 2;
    request
        .send(body.get(..half).unwrap_or_default())
        .unwrap_or_else(|e| panic!("sending the first half of the upload: {e}"));
    // Give wheelgate the time to take in the first half (into tmp/, if it stages there).
    let staged = wait_until(Duration::from_secs(3), || {
        !bed.store_files("tmp").is_empty()
    });
    std::thread::sleep(Duration::from_millis(300));
    if let Some(answer) = request.answer_within(Duration::ZERO) {
        panic!("wheelgate answered an upload with half its body: {answer:?}");
    }
    eprintln!(
        "half-sent upload: {half} of {} bytes; tmp/ before the kill: {:?} (staged: {staged})",
        body.len(),
        bed.store_files("tmp")
    );
    bed.wheelgate.kill();
    drop(request);

    bed.wheelgate.start_again();
    assert_nothing_left(&bed, big, "a half upload (after the restart)");

    assert_upload_listed(
        &bed,
        INTERNAL,
        big,
        &publisher,
        "the whole upload after the restart",
    );
}

#[test]
fn kill_9_right_after_the_200_loses_nothing() {
    let (mut bed, publisher, _) = publishing_bed(|config| {
        config.max_upload_size = Some("64MiB".to_owned());
    });
    // A small file (which the store may keep in its catalog) and a 4 MiB one (a blob file).
    let (wheel, big) = (uploads::app_wheel(), uploads::big_wheel());
    let small = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &small, &wheel.filename);
    let large = bed.upload(INTERNAL, &UploadForm::of(big), Some(&publisher));
    assert_uploaded(&bed, &large, &big.filename);
    bed.wheelgate.kill();

    bed.wheelgate.start_again();
    for dist in [wheel, big] {
        assert_listed(
            &bed,
            INTERNAL,
            None,
            &[dist],
            "after a kill -9 that followed the 200",
        );
        assert_metadata_served(&bed, INTERNAL, dist, "after the restart");
    }
    bed.assert_tmp_empties(CLEANUP_WAIT, "after the restart");
}
