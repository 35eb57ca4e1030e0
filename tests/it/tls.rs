//! TLS termination (SPEC §8): with `[server.tls]`, the front speaks HTTPS (HTTP/2 by ALPN) with the
//! configured certificate, and pip installs through it trusting that certificate.

use std::path::Path;
use std::process::Command;

use crate::harness::clients::{self, isolated, run_bounded};
use crate::harness::upstream::Mode;
use crate::harness::{TestBed, TokenLayout};

/// A self-signed certificate for 127.0.0.1, made with the machine's openssl.
pub(crate) fn self_signed(dir: &Path) -> (String, String) {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args([
            "-subj",
            "/CN=wheelgate-test",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl to make a test certificate: {e}"));
    assert!(
        status.status.success(),
        "openssl failed: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn the_front_terminates_tls_and_pip_installs_through_it() {
    let certs = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let (cert, key) = self_signed(certs.path());
    let tls = format!("\n[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
    let bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.extra_toml = tls
    });
    let base = format!("https://{}", bed.wheelgate.addr());

    // curl, trusting only our certificate, negotiates HTTP/2 by ALPN.
    let page = format!("{base}/simple/wgfx-alpha/");
    let (mut curl, _home) = isolated(Path::new("curl"));
    curl.args([
        "-sS",
        "--http2",
        "--cacert",
        &cert,
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
        &page,
    ]);
    let run = run_bounded(&mut curl, std::time::Duration::from_secs(30));
    assert!(run.success(), "curl over TLS failed: {}", run.output());
    assert_eq!(run.stdout.trim(), "200 2", "{page}: {}", run.output());

    // Without the certificate, the connection is refused by the client: it really is our TLS.
    let (mut untrusting, _home) = isolated(Path::new("curl"));
    untrusting.args(["-sS", "-o", "/dev/null", &page]);
    assert!(!run_bounded(&mut untrusting, std::time::Duration::from_secs(30)).success());

    let target = bed.target_dir("tls");
    let index = format!("{base}/simple/");
    let (mut pip, _home) =
        clients::pip_install_command(&index, &target, &["wgfx-alpha==1.0.0"], &["--cert", &cert]);
    let run = run_bounded(&mut pip, std::time::Duration::from_secs(120));
    assert!(run.success(), "pip over TLS failed:\n{}", run.output());
    assert!(
        clients::installed(&target)
            .iter()
            .any(|(name, version)| name == "wgfx-alpha" && version == "1.0.0"),
        "{:?}",
        clients::installed(&target)
    );
}
