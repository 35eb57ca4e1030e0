//! wheelgate's own users (SPEC §8): `[[user]]` entries with an argon2id password hash made by
//! `wheelgate hash-password` or a token file, the roles `read` and `publish`, the optional
//! `repositories` limit, and `[access] anonymous_read`.
//!
//! With anonymous read off, every simple-API route (pages and files, of every repository) is a 401
//! with a Basic challenge without credentials or with wrong ones, a 403 naming the role for a user
//! without `read`, and nothing reaches the upstream for a refused request; the health and
//! readiness probes stay open. pip and uv log in with the credentials of their index URL. The
//! password hash is slow on purpose and successful verifications are cached, so an install that
//! fetches many files runs it a handful of times (counted on the status page), while a cached
//! success never lets another password in. No password, token or hash ever shows up in the log.

use ::http::StatusCode;

use crate::harness::clients::{self, dists};
use crate::harness::fixtures::catalog;
use crate::harness::http::{self, basic_auth};
use crate::harness::uploads::{self, UploadForm};
use crate::harness::upstream::Mode;
use crate::harness::wheelgate::{self, hash_password, run_hash_password, UserConfig};
use crate::harness::{assert_no_secret, new_token, write_file, Account, TestBed, TokenLayout};
use crate::install::expected_app_install;
use crate::publish::{
    assert_client_succeeded, assert_installed, assert_listed, assert_refusal, assert_unauthorized,
    assert_upload_listed, assert_uploaded, hosted_file_path, install_with, pip_and_uv_install_app,
    publishing_bed, twine_upload_as, INTERNAL,
};

/// The line of the status page that counts password hash verifications.
const VERIFICATIONS_LINE: &str = "slow password verifications: ";

/// The count on the status page `/`, fetched as `account`.
fn slow_verifications(bed: &TestBed, account: &Account) -> u64 {
    let url = bed.url("/");
    let authorization = account.authorization();
    let page = http::get(&url, &[("authorization", authorization.as_str())]);
    page.expect_ok(&url);
    let text = page.text();
    let count = text.split(VERIFICATIONS_LINE).nth(1).and_then(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    });
    count.unwrap_or_else(|| {
        panic!("the status page must show `{VERIFICATIONS_LINE}<N>`; it reads:\n{text}")
    })
}

/// The Basic credentials of `account` as they travel, base64 included: either one in a log is a
/// leak.
fn credential_forms(account: &Account) -> Vec<String> {
    vec![
        account.password.clone(),
        basic_auth(&account.name, &account.password)
            .trim_start_matches("Basic ")
            .to_owned(),
    ]
}

/// A PHC hash and its salt and digest parts, the last two `$`-separated fields.
fn hash_forms(hash: &str) -> Vec<String> {
    let mut forms = vec![hash.to_owned()];
    forms.extend(
        hash.rsplit('$')
            .take(2)
            .filter(|part| part.len() >= 16)
            .map(str::to_owned),
    );
    forms
}

/// `client` installs `wgfx-app` through `/pypi/simple/` with `account`'s credentials in its index
/// URL, and gets the app and its dependencies.
fn install_fixture_app_as(bed: &TestBed, client: &str, account: &Account) {
    let target = bed.target_dir(&format!("{client}-app"));
    let index_url = bed.url_as(account, "/pypi/simple/");
    let run = install_with(client, &index_url, &target, &["wgfx-app"]);
    assert_installed(
        bed,
        &run,
        &target,
        &expected_app_install(),
        &format!(
            "{client} with the {}'s credentials in its index URL (/pypi/simple/)",
            account.name
        ),
    );
}

#[test]
fn hash_password_prints_one_salted_argon2id_line() {
    let password = new_token();
    let runs = [run_hash_password(&password), run_hash_password(&password)];
    let mut hashes = Vec::new();
    for run in &runs {
        run.assert_success();
        let hash = wheelgate::parse_password_hash(&run.stdout).unwrap_or_else(|| {
            panic!(
                "`wheelgate hash-password` must print one line `$argon2id$v=19$...`, printed:\n{}",
                run.stdout
            )
        });
        assert_no_secret(
            &run.output(),
            std::slice::from_ref(&password),
            "the output of `wheelgate hash-password`",
        );
        hashes.push(hash);
    }
    assert_ne!(
        hashes[0], hashes[1],
        "two hashes of one password must differ by their salt"
    );
}

#[test]
fn without_anonymous_read_every_simple_route_needs_a_user_with_the_read_role() {
    let publisher = Account::new("ci-publisher");
    let reader = Account::new("reader");
    let uploader = Account::new("uploader");
    let internal_reader = Account::new("internal-reader");
    let bed = TestBed::start_hosted(|config| {
        config.anonymous_read = Some(false);
        config.users = vec![
            publisher.user(&["read", "publish"]),
            reader.user(&["read"]),
            uploader.user(&["publish"]),
            internal_reader.user(&["read"]).limited_to(&[INTERNAL]),
        ];
    });
    let hosted = uploads::app_wheel();
    let response = bed.upload(INTERNAL, &UploadForm::of(hosted), Some(&publisher));
    assert_uploaded(&bed, &response, "the publisher's upload");

    let wheel = catalog().expect_project("wgfx-app").wheel("1.1.0");
    let remote_file = format!("/pypi/files/wgfx-app/{}/{}", wheel.sha256, wheel.filename);
    let hosted_file = hosted_file_path(INTERNAL, hosted);
    // Pages before the files they link, so that the reader's file requests are the usual ones.
    let routes = [
        "/simple/".to_owned(),
        "/simple/wgfx-app/".to_owned(),
        "/pypi/simple/".to_owned(),
        "/pypi/simple/wgfx-app/".to_owned(),
        remote_file.clone(),
        format!("{remote_file}.metadata"),
        "/internal/simple/".to_owned(),
        "/internal/simple/wgpub-app/".to_owned(),
        hosted_file.clone(),
        format!("{hosted_file}.metadata"),
    ];
    let stranger = Account::new("nobody");
    let upstream_before = bed.upstream.requests().len();
    for route in &routes {
        assert_unauthorized(
            &bed.raw_get_as(route, None),
            &format!("GET {route} without credentials"),
        );
        assert_unauthorized(
            &bed.raw_get_as(route, Some(&reader.with_wrong_password())),
            &format!("GET {route} as the reader with a wrong password"),
        );
        assert_unauthorized(
            &bed.raw_get_as(route, Some(&stranger)),
            &format!("GET {route} as a user that does not exist"),
        );
        assert_refusal(
            &bed.raw_get_as(route, Some(&uploader)),
            403,
            &format!("GET {route} as a user with the publish role only"),
            &["read"],
        );
    }
    let reached: Vec<_> = bed
        .upstream
        .requests()
        .into_iter()
        .skip(upstream_before)
        .collect();
    assert!(
        reached.is_empty(),
        "refused requests must not reach the upstream, yet it saw {reached:?}"
    );

    for route in &routes {
        let response = bed.raw_get_as(route, Some(&reader));
        assert_eq!(
            response.status,
            200,
            "GET {route} as the reader: {} {:?}\n{}",
            response.status,
            response.reason_phrase,
            response.text()
        );
    }
    let served = bed.raw_get_as(&hosted_file, Some(&reader));
    assert!(
        served.body == hosted.bytes,
        "{hosted_file}: the uploaded bytes"
    );

    let limited = bed.raw_get_as("/internal/simple/wgpub-app/", Some(&internal_reader));
    assert_eq!(
        limited.status, 200,
        "a reader limited to internal reads internal"
    );
    assert_refusal(
        &bed.raw_get_as("/pypi/simple/wgfx-app/", Some(&internal_reader)),
        403,
        "GET /pypi/simple/wgfx-app/ as a reader limited to internal",
        &["pypi"],
    );

    for probe in ["/-/health", "/-/ready"] {
        let response = bed.raw_get_as(probe, None);
        assert_eq!(
            response.status, 200,
            "{probe} stays open without credentials"
        );
    }
}

#[test]
fn with_anonymous_read_pages_are_open_and_publishing_still_needs_a_user() {
    let (bed, publisher, reader) = publishing_bed(|config| config.anonymous_read = Some(true));
    for route in ["/pypi/simple/wgfx-app/", "/internal/simple/"] {
        for (account, who) in [(None, "anonymously"), (Some(&reader), "as the reader")] {
            let response = bed.raw_get_as(route, account);
            assert_eq!(
                response.status,
                200,
                "GET {route} {who}: {}",
                response.text()
            );
        }
    }
    let wheel = uploads::app_wheel();
    assert_unauthorized(
        &bed.upload(INTERNAL, &UploadForm::of(wheel), None),
        "an anonymous upload while anonymous read is allowed",
    );
    assert_upload_listed(&bed, INTERNAL, wheel, &publisher, "the publisher's upload");
}

#[test]
fn pip_and_uv_log_in_with_the_index_urls_credentials_and_the_slow_hash_runs_a_handful_of_times() {
    let (bed, publisher, reader) = publishing_bed(|config| config.anonymous_read = Some(false));

    install_fixture_app_as(&bed, "pip", &reader);
    let after_pip = slow_verifications(&bed, &reader);
    assert!(
        (1..=3).contains(&after_pip),
        "pip fetched {} distributions and their pages as the reader: the password hash must have been verified \
         at least once and, with successes cached, at most 3 times; the status page says {after_pip}",
        expected_app_install().len()
    );

    let wheel = uploads::app_wheel();
    let response = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&publisher));
    assert_uploaded(&bed, &response, "the publisher's upload");
    let hosted_index = bed.url_as(&reader, "/internal/simple/");
    pip_and_uv_install_app(&bed, &hosted_index, "1.0.0", "hosted");
    install_fixture_app_as(&bed, "uv", &reader);
    let at_end = slow_verifications(&bed, &reader);
    assert!(
        at_end <= after_pip + 2,
        "after pip's install the reader's password was verified and cached; the publisher's upload may add one \
         or two verifications, yet the count went from {after_pip} to {at_end}"
    );

    let wrong = bed.url_as(&reader.with_wrong_password(), "/internal/simple/");
    for client in ["pip", "uv"] {
        let target = bed.target_dir(&format!("{client}-wrong-password"));
        let run = install_with(client, &wrong, &target, &["wgpub-app"]);
        assert!(
            !run.success(),
            "{client} with a wrong password in its index URL must fail:\n{}",
            run.output()
        );
        assert_eq!(
            clients::installed(&target),
            dists(&[]),
            "{client} with a wrong password"
        );
    }
}

#[test]
fn a_cached_verification_lets_no_other_password_in() {
    let (bed, publisher, reader) = publishing_bed(|config| config.anonymous_read = Some(false));
    let route = "/internal/simple/";
    let first = bed.raw_get_as(route, Some(&reader));
    assert_eq!(
        first.status,
        200,
        "GET {route} as the reader: {}",
        first.text()
    );
    let swapped = [
        (
            reader.with_wrong_password(),
            "the reader with a wrong password",
        ),
        (
            Account {
                name: reader.name.clone(),
                password: publisher.password.clone(),
            },
            "the reader with the publisher's password",
        ),
        (
            Account {
                name: publisher.name.clone(),
                password: reader.password.clone(),
            },
            "the publisher with the reader's password",
        ),
    ];
    for (account, what) in &swapped {
        for attempt in 1..=2 {
            assert_unauthorized(
                &bed.raw_get_as(route, Some(account)),
                &format!("GET {route} as {what} (attempt {attempt}, after the reader's success)"),
            );
        }
        assert_unauthorized(
            &bed.upload(
                INTERNAL,
                &UploadForm::of(uploads::app_wheel()),
                Some(account),
            ),
            &format!("an upload as {what}"),
        );
    }
    let again = bed.raw_get_as(route, Some(&reader));
    assert_eq!(again.status, 200, "the reader's own password still works");
}

#[test]
fn token_file_users_log_in_as_their_name_or_as_token() {
    let token = new_token();
    let secrets = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a directory: {e}"));
    let token_path = secrets.path().join("ci-bot.token");
    // Written as operators and secret stores do, with surrounding whitespace: it is trimmed.
    write_file(&token_path, &format!("  {token}\n"));
    let bed = TestBed::start_hosted(|config| {
        config.anonymous_read = Some(false);
        config.users = vec![UserConfig::with_token_file(
            "ci-bot",
            &token_path,
            &["read", "publish"],
        )];
    });
    let as_token = Account {
        name: "__token__".to_owned(),
        password: token.clone(),
    };
    let as_name = Account {
        name: "ci-bot".to_owned(),
        password: token.clone(),
    };
    let (wheel, sdist, tool) = (
        uploads::app_wheel(),
        uploads::app_sdist(),
        uploads::tool_wheel(),
    );

    for (account, what) in [
        (
            Account {
                name: "__token__".to_owned(),
                password: new_token(),
            },
            "__token__ with another token",
        ),
        (
            Account {
                name: "ci-bot".to_owned(),
                password: format!("{token}x"),
            },
            "ci-bot with a longer token",
        ),
        (
            Account {
                name: "someone".to_owned(),
                password: token.clone(),
            },
            "another name with the token",
        ),
    ] {
        assert_unauthorized(
            &bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&account)),
            what,
        );
    }

    let response = bed.upload(INTERNAL, &UploadForm::of(wheel), Some(&as_token));
    assert_uploaded(&bed, &response, "an upload as __token__");
    let response = bed.upload(INTERNAL, &UploadForm::of(tool), Some(&as_name));
    assert_uploaded(&bed, &response, "an upload as ci-bot with its token");
    let files = vec![sdist.write_to(&bed.dir.path().join("dist"))];
    let run = twine_upload_as(&bed, &as_token, &files);
    assert_client_succeeded(&bed, &run, "twine as __token__");
    assert_listed(
        &bed,
        INTERNAL,
        Some(&as_token),
        &[wheel, sdist],
        "read as __token__",
    );
    assert_listed(&bed, INTERNAL, Some(&as_name), &[tool], "read as ci-bot");
}

#[test]
fn no_password_token_or_hash_is_ever_logged() {
    let publisher = Account::new("ci-publisher");
    let reader = Account::new("reader");
    let token = new_token();
    let secrets_dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a directory: {e}"));
    let token_path = secrets_dir.path().join("token");
    write_file(&token_path, &format!("{token}\n"));
    let mut bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "debug", |config| {
        config.hosted = vec![INTERNAL.to_owned()];
        config.anonymous_read = Some(false);
        config.users = vec![
            publisher.user(&["read", "publish"]),
            reader.user(&["read"]),
            UserConfig::with_token_file("ci-bot", &token_path, &["read", "publish"]),
        ];
    });
    let wrong_reader = reader.with_wrong_password();
    let wrong_publisher = publisher.with_wrong_password();
    let as_token = Account {
        name: "__token__".to_owned(),
        password: token.clone(),
    };
    let mut secrets = Vec::new();
    for account in [
        &publisher,
        &reader,
        &wrong_reader,
        &wrong_publisher,
        &as_token,
    ] {
        secrets.extend(credential_forms(account));
    }
    secrets.extend(credential_forms(&Account {
        name: "ci-bot".to_owned(),
        password: token.clone(),
    }));
    for account in [&publisher, &reader] {
        secrets.extend(hash_forms(&hash_password(&account.password)));
    }

    let files = vec![uploads::app_wheel().write_to(&bed.dir.path().join("dist"))];
    twine_upload_as(&bed, &publisher, &files).assert_success();
    let response = bed.upload(
        INTERNAL,
        &UploadForm::of(uploads::tool_wheel()),
        Some(&as_token),
    );
    assert_uploaded(&bed, &response, "an upload as __token__");
    let mut refusals = vec![
        bed.upload(
            INTERNAL,
            &UploadForm::of(uploads::app_sdist()),
            Some(&wrong_publisher),
        ),
        bed.raw_get_as("/internal/simple/", Some(&wrong_reader)),
        bed.raw_get_as("/pypi/simple/wgfx-app/", None),
    ];
    refusals.push(bed.upload(
        INTERNAL,
        &UploadForm::of(uploads::app_sdist()),
        Some(&reader),
    ));
    for refusal in &refusals {
        assert!(
            matches!(refusal.status, 401 | 403),
            "expected a refusal, got {} {:?}",
            refusal.status,
            refusal.reason_phrase
        );
        let shown = format!(
            "{} {}\n{:?}\n{}",
            refusal.status,
            refusal.reason_phrase,
            refusal.headers,
            refusal.text()
        );
        assert_no_secret(&shown, &secrets, "a refusal");
    }
    let index = bed.url_as(&reader, "/internal/simple/");
    let target = bed.target_dir("pip");
    let run = clients::pip_install(&index, &target, &["wgpub-app"]);
    assert_installed(
        &bed,
        &run,
        &target,
        &dists(&[("wgpub-app", "1.0.0")]),
        "pip",
    );
    let status = http::get(
        &bed.url("/"),
        &[("authorization", reader.authorization().as_str())],
    );
    assert_eq!(
        status.status,
        StatusCode::OK,
        "the status page as the reader"
    );
    assert_no_secret(&status.text(), &secrets, "the status page");

    let check = wheelgate::run(
        &["check", "--config", &bed.config_path().to_string_lossy()],
        bed.dir.path(),
    );
    assert_eq!(
        check.exit_code,
        Some(0),
        "`wheelgate check`:\n{}",
        check.output()
    );
    assert_no_secret(&check.output(), &secrets, "the output of `wheelgate check`");

    // The log is written in batches; a graceful stop writes what is left.
    bed.wheelgate.stop();
    let output = bed.wheelgate.output();
    assert!(
        output.contains("method=POST path=/internal/"),
        "the log must show the uploads (else this test looks at nothing):\n{output}"
    );
    assert_no_secret(&output, &secrets, "wheelgate's log (at debug level)");
}
