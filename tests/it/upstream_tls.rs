//! Which upstream certificates wheelgate trusts (SPEC §9): the operating system's store (whose
//! locations `SSL_CERT_FILE` and `SSL_CERT_DIR` replace, as for pip, curl and uv) plus the
//! built-in roots by default; the built-in roots only with `native_roots = false`; `ca_file` in
//! addition either way. The upstream is the fixture index behind a TLS front whose certificate a
//! CA made by the test issued, as a corporate CA or a TLS-inspecting proxy would: no trust store
//! holds that CA, so what the machine's own store contains cannot change an outcome.

use std::time::Duration;

use ::http::StatusCode;

use crate::harness::certs::TestCa;
use crate::harness::clients::{self, run_bounded};
use crate::harness::tls_front::TlsFront;
use crate::harness::upstream::{Mode, Upstream};
use crate::harness::wheelgate::{run_with_env, RemoteConfig, Wheelgate};
use crate::harness::{
    create_dir, http, new_token, wait_until, write_file, SecretFile, TokenLayout,
};

/// The fixture index over `https://` with a certificate of the test's own CA.
struct PrivateCaUpstream {
    upstream: Upstream,
    front: TlsFront,
    ca: TestCa,
    secret: SecretFile,
    dir: tempfile::TempDir,
}

impl PrivateCaUpstream {
    fn start() -> PrivateCaUpstream {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let certs = dir.path().join("certs");
        create_dir(&certs);
        let ca = TestCa::create(&certs);
        let token = new_token();
        let upstream = Upstream::start(Mode::Json, &token);
        let front = TlsFront::start(&ca.server, upstream.main_addr());
        let secret = SecretFile::create(dir.path(), TokenLayout::File, &token);
        PrivateCaUpstream {
            upstream,
            front,
            ca,
            secret,
            dir,
        }
    }

    /// The configuration of a wheelgate with its own store (`run` names it) whose remote
    /// repository has `remote_toml` in its table.
    fn config(&self, run: &str, remote_toml: &str) -> std::path::PathBuf {
        let mut config = RemoteConfig::new(
            self.dir.path().join(run).join("store"),
            format!("{}/simple/", self.front.base_url()),
            self.secret.path(),
            Vec::new(),
        );
        config.remote_toml = remote_toml.to_owned();
        let path = self.dir.path().join(format!("{run}.toml"));
        write_file(&path, &config.to_toml());
        path
    }

    /// `wheelgate serve` with that configuration and `env` as its whole environment (but PATH).
    fn wheelgate(&self, run: &str, remote_toml: &str, env: &[(&str, &str)]) -> Wheelgate {
        Wheelgate::start_with_env(&self.config(run, remote_toml), self.dir.path(), "info", env)
    }

    /// Fetches a project page through `wheelgate`, which fetches it from the upstream.
    fn page(&self, wheelgate: &Wheelgate) -> http::HttpResponse {
        http::get(&wheelgate.url("/simple/wgfx-delta/"), &[])
    }

    fn assert_page_came_through(&self, wheelgate: &Wheelgate, what: &str) {
        let page = self.page(wheelgate);
        assert_eq!(
            page.status,
            StatusCode::OK,
            "{what}: {}\nwheelgate's log:\n{}",
            page.text(),
            wheelgate.output()
        );
        assert!(
            page.text().contains("wgfx_delta-1.5.0"),
            "{what}: the page lists no file: {}",
            page.text()
        );
    }

    fn ca_cert(&self) -> String {
        self.ca.ca_cert.display().to_string()
    }
}

/// A 502 for the page whose body and log line say the certificate was refused and which
/// settings fix it (`parts`).
fn assert_refused(wheelgate: &Wheelgate, page: &http::HttpResponse, parts: &[&str]) {
    assert_eq!(
        page.status,
        StatusCode::BAD_GATEWAY,
        "{}\nwheelgate's log:\n{}",
        page.text(),
        wheelgate.output()
    );
    for part in parts {
        assert!(
            page.text().contains(part),
            "the 502 lacks {part:?}: {}",
            page.text()
        );
    }
    // Log lines are written in batches: the warning may follow the response by a moment.
    let logged = wait_until(Duration::from_secs(5), || {
        let log = wheelgate.output();
        log.lines()
            .any(|line| line.contains("WARN") && parts.iter().all(|part| line.contains(part)))
    });
    assert!(
        logged,
        "no warning in the log names {parts:?}:\n{}",
        wheelgate.output()
    );
}

#[test]
fn ssl_cert_file_trusts_a_private_ca_and_without_it_the_502_names_the_settings() {
    let bed = PrivateCaUpstream::start();

    // A new user's first try: the shipped defaults, nothing set.
    let untrusting = bed.wheelgate("untrusting", "", &[]);
    let page = bed.page(&untrusting);
    assert_refused(
        &untrusting,
        &page,
        &[
            "UnknownIssuer",
            "ca_file",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "native_roots",
        ],
    );
    // wheelgate refused the certificate in the handshake; nothing reached the index. The front
    // records the refusal on its own task, which may read wheelgate's alert after the 502.
    let refused = wait_until(Duration::from_secs(5), || {
        bed.front
            .failed_handshakes()
            .iter()
            .any(|reason| reason.contains("UnknownCA"))
    });
    assert!(
        refused,
        "the front saw no handshake refused for its CA: {:?}",
        bed.front.failed_handshakes()
    );
    assert!(
        bed.upstream.requests().is_empty(),
        "{:?}",
        bed.upstream.requests()
    );
    drop(untrusting);

    // The same configuration, with SSL_CERT_FILE naming the CA: pip installs through it.
    let trusting = bed.wheelgate("ssl-cert-file", "", &[("SSL_CERT_FILE", &bed.ca_cert())]);
    let target = bed.dir.path().join("target");
    create_dir(&target);
    let (mut pip, _home) =
        clients::pip_install_command(&trusting.index_url(), &target, &["wgfx-delta==1.5.0"], &[]);
    let run = run_bounded(&mut pip, Duration::from_secs(120));
    assert!(
        run.success(),
        "pip through a trusted upstream:\n{}\nwheelgate's log:\n{}",
        run.output(),
        trusting.output()
    );
    assert!(
        clients::installed(&target).contains(&("wgfx-delta".to_owned(), "1.5.0".to_owned())),
        "{:?}",
        clients::installed(&target)
    );
    assert!(
        !bed.upstream.requests_for("/simple/wgfx-delta/").is_empty(),
        "the index was never asked for the page"
    );
}

#[test]
fn ssl_cert_dir_trusts_a_private_ca_under_a_hashed_or_a_plain_name() {
    let bed = PrivateCaUpstream::start();
    let hashed = bed.dir.path().join("hashed");
    create_dir(&hashed);
    // As `openssl rehash` lays a directory out: a symlink named by the subject hash.
    std::os::unix::fs::symlink(&bed.ca.ca_cert, hashed.join(bed.ca.hashed_name()))
        .unwrap_or_else(|e| panic!("cannot link the CA into {}: {e}", hashed.display()));
    let plain = bed.dir.path().join("plain");
    create_dir(&plain);
    std::fs::copy(&bed.ca.ca_cert, plain.join("corp-ca.pem"))
        .unwrap_or_else(|e| panic!("cannot copy the CA into {}: {e}", plain.display()));

    for (run, dir) in [("hashed", &hashed), ("plain", &plain)] {
        let dir = dir.display().to_string();
        let wheelgate = bed.wheelgate(run, "", &[("SSL_CERT_DIR", &dir)]);
        bed.assert_page_came_through(&wheelgate, &format!("SSL_CERT_DIR={dir} ({run})"));
    }
}

#[test]
fn native_roots_false_ignores_the_environment_and_ca_file_adds_the_ca() {
    let bed = PrivateCaUpstream::start();
    let ca = bed.ca_cert();

    let builtin_only = bed.wheelgate(
        "builtin-only",
        "native_roots = false\n",
        &[("SSL_CERT_FILE", &ca)],
    );
    assert!(
        wait_until(Duration::from_secs(5), || builtin_only.output().contains(
            "SSL_CERT_FILE or SSL_CERT_DIR is set but native_roots = false"
        )),
        "the start-up log does not say SSL_CERT_FILE is ignored:\n{}",
        builtin_only.output()
    );
    let page = bed.page(&builtin_only);
    assert_refused(
        &builtin_only,
        &page,
        &["only its built-in roots (native_roots = false)", "ca_file"],
    );
    drop(builtin_only);

    let with_ca_file = bed.wheelgate(
        "ca-file",
        &format!("native_roots = false\nca_file = {ca:?}\n"),
        &[],
    );
    bed.assert_page_came_through(&with_ca_file, "native_roots = false with ca_file");
}

#[test]
fn ssl_cert_file_without_a_certificate_is_refused_at_start_up() {
    let bed = PrivateCaUpstream::start();
    let config = bed.config("check", "");
    let missing = bed.dir.path().join("no-such-ca.pem");
    let config = config.display().to_string();
    let missing_text = missing.display().to_string();
    let run = run_with_env(
        &["check", "--config", &config],
        bed.dir.path(),
        &[("SSL_CERT_FILE", &missing_text)],
        Duration::from_secs(30),
    );
    let stderr = run.stderr;
    assert_eq!(run.exit_code, Some(2), "{stderr}");
    for part in [
        "repository pypi",
        &format!("SSL_CERT_FILE={}", missing.display()),
        "no usable root certificate",
    ] {
        assert!(stderr.contains(part), "{part:?} not in: {stderr}");
    }
}
