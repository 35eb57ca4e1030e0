//! Test certificates, made with the machine's `openssl`: a self-signed server certificate, and a
//! private certificate authority with a server certificate it issued, as a corporate CA or a
//! TLS-inspecting proxy would present. Each test makes its own, valid for two days, so no test
//! depends on a certificate that anyone else holds (nor on this machine's trust store).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A PEM certificate and its PEM private key.
#[derive(Debug, Clone)]
pub struct CertKey {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate authority of our own and one server certificate it issued for 127.0.0.1.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate (PEM), what a client must trust.
    pub ca_cert: PathBuf,
    /// The server's certificate, issued by the CA, and its key.
    pub server: CertKey,
}

fn openssl(args: &[&str], paths: &[&Path], what: &str) {
    let output = Command::new("openssl")
        .args(args)
        .args(paths)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl to make {what}: {e}"));
    assert!(
        output.status.success(),
        "openssl failed making {what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The options of `openssl req` that make a fresh P-256 key without a passphrase.
const NEW_EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A new key and a self-signed certificate for `subject` with the `-addext` `extensions`.
fn new_self_signed(pair: &CertKey, subject: &str, extensions: &[&str], what: &str) {
    let mut args = vec!["req", "-x509"];
    args.extend(NEW_EC_KEY);
    args.extend(["-days", "2", "-subj", subject]);
    for extension in extensions {
        args.extend(["-addext", extension]);
    }
    args.push("-keyout");
    openssl(&args, &[&pair.key, Path::new("-out"), &pair.cert], what);
}

/// A self-signed certificate for 127.0.0.1 in `dir` (`tls.crt`, `tls.key`).
pub fn self_signed(dir: &Path) -> CertKey {
    let pair = CertKey {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    new_self_signed(
        &pair,
        "/CN=wheelgate-test",
        &["subjectAltName=IP:127.0.0.1"],
        "a self-signed test certificate",
    );
    pair
}

impl TestCa {
    /// A CA (`ca.crt`) and a server certificate for 127.0.0.1 it issued (`server.crt`,
    /// `server.key`), in `dir`.
    pub fn create(dir: &Path) -> TestCa {
        let ca = CertKey {
            cert: dir.join("ca.crt"),
            key: dir.join("ca.key"),
        };
        new_self_signed(
            &ca,
            "/CN=wheelgate test CA",
            &[
                "basicConstraints=critical,CA:TRUE",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            "a test CA",
        );

        let server = CertKey {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
        };
        let request = dir.join("server.csr");
        let mut args = vec!["req", "-new"];
        args.extend(NEW_EC_KEY);
        args.extend(["-subj", "/CN=127.0.0.1", "-keyout"]);
        openssl(
            &args,
            &[&server.key, Path::new("-out"), &request],
            "a test server key",
        );
        let extensions = dir.join("server.ext");
        std::fs::write(
            &extensions,
            "basicConstraints = CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1\n",
        )
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", extensions.display()));
        let serial = format!("0x{:016x}", rand::random::<u64>() >> 1);
        openssl(
            &["x509", "-req", "-days", "2", "-set_serial", &serial, "-in"],
            &[
                &request,
                Path::new("-CA"),
                &ca.cert,
                Path::new("-CAkey"),
                &ca.key,
                Path::new("-extfile"),
                &extensions,
                Path::new("-out"),
                &server.cert,
            ],
            "a test server certificate",
        );
        TestCa {
            ca_cert: ca.cert,
            server,
        }
    }

    /// The name OpenSSL looks the CA up by in a hashed certificate directory
    /// (`<subject hash>.0`), as `openssl rehash` and `update-ca-certificates` lay it out.
    pub fn hashed_name(&self) -> String {
        let output = Command::new("openssl")
            .args(["x509", "-noout", "-subject_hash", "-in"])
            .arg(&self.ca_cert)
            .output()
            .unwrap_or_else(|e| panic!("cannot run openssl x509 -subject_hash: {e}"));
        assert!(output.status.success(), "openssl x509 -subject_hash failed");
        format!("{}.0", String::from_utf8_lossy(&output.stdout).trim())
    }
}
