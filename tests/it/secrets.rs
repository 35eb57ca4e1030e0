//! Secrets never leak (issue 16, SPEC §3 and §8): a test gathers everything wheelgate lets anyone
//! see (its log at debug level, every response's status line, headers and body, the metrics, the
//! status page, the output of `check`, `origin explain`, `rules list` and `cache stats|verify`,
//! and the bytes of its store) after traffic that exercises the error paths too, and finds neither
//! the upstream token nor a client's password in it, plain or in its Basic base64 form.
//!
//! The traffic: reads and an install with a user's password in the index URL, a wrong password,
//! no credentials, an upload and a refused one; an upstream that answers 401 to the token, one
//! that echoes the request head (the token's `Authorization` header included) in its 500 and 503
//! bodies, a redirect whose Location carries the token in its userinfo and its query (same origin,
//! followed) and one to a dead origin with the token in its query; and configurations that put the
//! token in the upstream URL, which `check` must refuse without echoing it.
//!
//! A scan that finds nothing proves nothing unless it could have: the scanner is checked on text
//! that holds each form, and the upstream's log shows that the traffic did carry the token.

use ::http::StatusCode;

use crate::harness::clients::{self, dists};
use crate::harness::faulty::{token_authorization, Fault, Faulty, FaultyBed};
use crate::harness::fixtures::catalog;
use crate::harness::http::{self, basic_auth};
use crate::harness::uploads::{self, UploadForm};
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::harness::wheelgate;
use crate::harness::{files_under, standalone_config, Account};

/// The secrets to look for, each form with a label that names it without showing it.
struct Secrets {
    forms: Vec<(String, String)>,
}

impl Secrets {
    fn new() -> Secrets {
        Secrets { forms: Vec::new() }
    }

    /// The upstream token, plain and as the `__token__` Basic credentials.
    fn token(&mut self, token: &str) {
        self.forms
            .push(("the upstream token".into(), token.to_owned()));
        let basic = token_authorization(token);
        let encoded = basic.trim_start_matches("Basic ").to_owned();
        self.forms
            .push(("the upstream token's Basic credentials".into(), encoded));
    }

    /// A client's password, plain and as its Basic credentials.
    fn account(&mut self, account: &Account, label: &str) {
        self.forms
            .push((format!("{label}'s password"), account.password.clone()));
        let basic = basic_auth(&account.name, &account.password);
        self.forms.push((
            format!("{label}'s Basic credentials"),
            basic.trim_start_matches("Basic ").to_owned(),
        ));
    }

    /// The label of the first secret found in `haystack`.
    fn find(&self, haystack: &str) -> Option<&str> {
        self.forms
            .iter()
            .find(|(_, value)| haystack.contains(value.as_str()))
            .map(|(label, _)| label.as_str())
    }
}

/// Everything captured, with where it came from.
#[derive(Default)]
struct Captured {
    places: Vec<(String, String)>,
}

impl Captured {
    fn add(&mut self, place: impl Into<String>, text: impl Into<String>) {
        self.places.push((place.into(), text.into()));
    }

    fn response(&mut self, what: &str, response: &http::HttpResponse) {
        self.add(
            format!("the answer to {what}"),
            format!(
                "{}\n{}\n{}",
                response.status,
                response.headers_text(),
                response.text()
            ),
        );
    }

    fn raw(&mut self, what: &str, response: &http::RawResponse) {
        let headers: String = response
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        self.add(
            format!("the answer to {what}"),
            format!(
                "{} {}\n{headers}\n{}",
                response.status,
                response.reason_phrase,
                response.text()
            ),
        );
    }

    fn run(&mut self, what: &str, run: &clients::ClientRun, exit: i32) {
        assert_eq!(
            run.exit_code,
            Some(exit),
            "`{what}` must exit {exit} (else it shows nothing worth scanning):\n{}",
            run.output()
        );
        self.add(format!("the output of `{what}`"), run.output());
    }
}

fn raw_get(bed: &FaultyBed, path: &str, account: Option<&Account>) -> http::RawResponse {
    let authorization = account.map(Account::authorization);
    let headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    http::raw_request(bed.wheelgate.addr(), "GET", path.as_bytes(), &headers, &[])
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn upload(bed: &FaultyBed, form: &UploadForm, account: &Account) -> http::RawResponse {
    let multipart = form.multipart();
    let content_type = multipart.content_type();
    let authorization = account.authorization();
    http::raw_request(
        bed.wheelgate.addr(),
        "POST",
        b"/internal/",
        &[
            ("content-type", content_type.as_str()),
            ("authorization", authorization.as_str()),
        ],
        &multipart.body(),
    )
    .unwrap_or_else(|e| panic!("POST /internal/: {e}"))
}

#[test]
fn the_scanner_finds_every_form_of_every_secret() {
    let mut secrets = Secrets::new();
    secrets.token("wgfx-secret-scanner-token");
    let account = Account::new("reader");
    secrets.account(&account, "the reader");
    assert_eq!(secrets.find("nothing secret here"), None);
    let basic_token = token_authorization("wgfx-secret-scanner-token");
    assert_eq!(
        secrets.find(&format!("authorization: {basic_token}\n")),
        Some("the upstream token's Basic credentials")
    );
    assert_eq!(
        secrets.find("url=http://__token__:wgfx-secret-scanner-token@x/"),
        Some("the upstream token")
    );
    assert_eq!(
        secrets.find(&format!("…{}…", account.password)),
        Some("the reader's password")
    );
    assert_eq!(
        secrets.find(&account.authorization()),
        Some("the reader's Basic credentials")
    );
}

#[test]
fn no_token_or_password_shows_up_in_anything_wheelgate_lets_anyone_see() {
    let reader = Account::new("reader");
    let publisher = Account::new("publisher");
    let wrong_reader = reader.with_wrong_password();
    let wrong_publisher = publisher.with_wrong_password();
    let mut bed = FaultyBed::start(
        &["wgfx-delta", "wgfx-epsilon", "wgfx-zeta", "wgfx-beta"],
        "debug",
        |config| {
            config.index_ttl = "1s".to_owned();
            config.hosted = vec!["internal".to_owned()];
            config.anonymous_read = Some(false);
            config.users = vec![reader.user(&["read"]), publisher.user(&["read", "publish"])];
        },
    );
    let token = bed.token.clone();
    let mut secrets = Secrets::new();
    secrets.token(&token);
    secrets.account(&reader, "the reader");
    secrets.account(&publisher, "the publisher");
    secrets.account(&wrong_reader, "a wrong reader password");
    secrets.account(&wrong_publisher, "a wrong publisher password");
    let mut captured = Captured::default();
    let reader_auth = reader.authorization();
    let as_reader = [("authorization", reader_auth.as_str())];
    let as_reader_json = [as_reader[0], ("accept", JSON_MEDIA_TYPE)];

    // Reads and an install, as the reader.
    let delta = catalog().expect_project("wgfx-delta");
    let page_url = bed.url("/simple/wgfx-delta/");
    let page = http::get(&page_url, &as_reader_json);
    page.expect_ok("the page as the reader");
    captured.response("the page", &page);
    let newest = delta.wheel("2.0.0");
    let file_url = crate::harness::link_in(&page, &page_url, &newest.filename);
    let file = http::get(&file_url, &as_reader);
    assert_eq!(file.expect_ok(&file_url), newest.bytes.as_slice());
    captured.response("a file", &file);
    let html = http::get(&page_url, &as_reader);
    captured.response("the HTML page", &html);
    let index_url = format!(
        "http://{}:{}@{}/simple/",
        reader.name,
        reader.password,
        bed.wheelgate.addr()
    );
    let target = bed.dir.path().join("pip-target");
    let run = clients::pip_install(&index_url, &target, &["wgfx-delta"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        dists(&[("wgfx-delta", "2.0.0")])
    );

    // Refused clients.
    for (what, account) in [
        ("a wrong password", Some(&wrong_reader)),
        ("no credentials", None),
    ] {
        let refused = raw_get(&bed, "/simple/wgfx-delta/", account);
        assert_eq!(refused.status, 401, "{what}");
        captured.raw(what, &refused);
    }
    let uploaded = upload(&bed, &UploadForm::of(uploads::tool_wheel()), &publisher);
    assert_eq!(uploaded.status, 200, "the upload: {}", uploaded.text());
    captured.raw("an upload", &uploaded);
    let refused = upload(
        &bed,
        &UploadForm::of(uploads::app_wheel()),
        &wrong_publisher,
    );
    assert_eq!(refused.status, 401, "an upload with a wrong password");
    captured.raw("an upload with a wrong password", &refused);
    let refused = upload(&bed, &UploadForm::of(uploads::app_wheel()), &reader);
    assert_eq!(refused.status, 403, "an upload without the publish role");
    captured.raw("an upload without the publish role", &refused);

    // The upstream refuses the token.
    let epsilon = Faulty::page_path("wgfx-epsilon");
    bed.faulty.script(&epsilon, [Fault::Status(401)]);
    let refused = raw_get(&bed, "/simple/wgfx-epsilon/", Some(&reader));
    assert_eq!(refused.status, 502, "the upstream refused the token");
    captured.raw("a page whose upstream refused the token", &refused);

    // The upstream echoes the request head, Authorization included, in its errors.
    let older = delta.wheel("1.5.0");
    let older_path = Faulty::file_path("wgfx-delta", &older.filename);
    let older_url = crate::harness::link_in(&page, &page_url, &older.filename);
    bed.faulty.script(&older_path, [Fault::EchoRequest(500)]);
    let echoed = http::get(&older_url, &as_reader);
    assert_eq!(echoed.status, StatusCode::BAD_GATEWAY, "{}", echoed.text());
    captured.response("a file whose upstream echoed the request in a 500", &echoed);
    let zeta = Faulty::page_path("wgfx-zeta");
    bed.faulty
        .script(&zeta, [Fault::EchoRequest(503), Fault::EchoRequest(503)]);
    let echoed = raw_get(&bed, "/simple/wgfx-zeta/", Some(&reader));
    assert_eq!(echoed.status, 502, "{}", echoed.text());
    captured.raw("a page whose upstream echoed the request in 503s", &echoed);

    // Redirects carrying the token: one followed on the same origin, one to a dead origin.
    let first = delta.wheel("1.0.0");
    let first_path = Faulty::file_path("wgfx-delta", &first.filename);
    let first_url = crate::harness::link_in(&page, &page_url, &first.filename);
    bed.faulty.script(
        &first_path,
        [Fault::Redirect {
            status: 302,
            location: format!(
                "http://__token__:{token}@{}{first_path}?token={token}",
                bed.faulty.addr()
            ),
        }],
    );
    let redirected = http::get(&first_url, &as_reader);
    assert_eq!(
        redirected.expect_ok("a file redirected with the token in the Location"),
        first.bytes.as_slice()
    );
    captured.response(
        "a file redirected with the token in its Location",
        &redirected,
    );
    let beta = Faulty::page_path("wgfx-beta");
    bed.faulty.script(
        &beta,
        [Fault::Redirect {
            status: 302,
            location: format!("http://127.0.0.1:9/simple/wgfx-beta/?token={token}"),
        }],
    );
    let dead = raw_get(&bed, "/simple/wgfx-beta/", Some(&reader));
    assert_eq!(
        dead.status,
        502,
        "a redirect to a dead origin: {}",
        dead.text()
    );
    captured.raw("a page redirected to a dead origin", &dead);

    // What operators look at.
    for (what, path) in [("the status page", "/"), ("the metrics", "/-/metrics")] {
        let response = http::get(&bed.url(path), &as_reader);
        response.expect_ok(what);
        captured.response(what, &response);
    }
    captured.run("wheelgate check", &bed.command(&["check"]), 0);
    captured.run(
        "wheelgate origin explain",
        &bed.command(&["origin", "explain", "--repo", "pypi", "wgfx-delta"]),
        0,
    );
    captured.run("wheelgate rules list", &bed.command(&["rules", "list"]), 0);
    captured.run(
        "wheelgate cache stats",
        &bed.command(&["cache", "stats"]),
        0,
    );
    captured.run(
        "wheelgate cache verify",
        &bed.command(&["cache", "verify"]),
        0,
    );

    // Configurations that put the token in the upstream URL: refused, without echoing it.
    for (n, url) in [
        format!("http://__token__:{token}@127.0.0.1:9/simple/"),
        format!("http://{token}@127.0.0.1:9/simple/"),
        format!("http://127.0.0.1:9/simple/?token={token}"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = bed.dir.path().join(format!("url-config-{n}"));
        crate::harness::create_dir(&dir);
        let config = standalone_config(&dir, |config| config.upstream_url = url);
        let check = wheelgate::run(&["check", "--config", &config.to_string_lossy()], &dir);
        captured.run(
            &format!("wheelgate check of a URL with the token ({n})"),
            &check,
            2,
        );
    }

    // The log, complete once the server has stopped.
    bed.wheelgate.stop();
    let log = bed.wheelgate.output();
    assert!(
        log.contains(" DEBUG ") && log.contains("following upstream redirect"),
        "the log must be at debug level and show the redirects:\n{log}"
    );
    captured.add("wheelgate's log at debug level", log);
    for path in files_under(&bed.store()) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        captured.add(
            format!("the store file {}", path.display()),
            String::from_utf8_lossy(&bytes).into_owned(),
        );
    }

    // The traffic did carry the token, and the echoes held it.
    let carried = token_authorization(&token);
    let requests = bed.faulty.requests();
    for (what, path, fault) in [
        ("the refused page", &epsilon, Fault::Status(401)),
        ("the echoed file", &older_path, Fault::EchoRequest(500)),
        ("the echoed page", &zeta, Fault::EchoRequest(503)),
    ] {
        assert!(
            requests
                .iter()
                .any(|r| r.path.split('?').next() == Some(path.as_str())
                    && r.fault == fault
                    && r.authorization.as_deref() == Some(carried.as_str())),
            "{what}: the upstream must have been sent the token: {requests:?}"
        );
    }
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() != Some(reader_auth.as_str())),
        "a client's credentials were forwarded upstream"
    );

    for (place, text) in &captured.places {
        if let Some(found) = secrets.find(text) {
            panic!("{found} leaked into {place}");
        }
    }
}
