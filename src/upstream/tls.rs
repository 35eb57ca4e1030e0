//! Which upstream servers we trust: the rustls client configuration, its root certificates, and
//! what to tell the operator when an upstream's certificate is refused.
//!
//! The roots are the bundled Mozilla roots (webpki-roots), always; the operating system's store
//! too unless `native_roots = false`; and `ca_file`, when set. The system store is found as
//! OpenSSL finds it, and as pip, curl and uv do, `SSL_CERT_FILE` (a PEM file) and `SSL_CERT_DIR`
//! (directories of PEM files, `:`-separated) replace its default locations when set. So a
//! corporate CA that IT installed on the machine, or one named by the variables every other
//! Python tool reads, works without configuration, and a container without a CA bundle still
//! reaches public hosts. The roots are loaded when the client is built, so that an unreadable
//! `ca_file` or an `SSL_CERT_FILE` that holds no certificate is reported at start-up rather than
//! at the first fetch.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::CertificateError;

use super::{UpstreamError, UpstreamSettings};

/// The variable naming a PEM file of roots that replaces the system store's default locations.
const SSL_CERT_FILE: &str = "SSL_CERT_FILE";
/// The variable naming directories (`:`-separated) of PEM files that replace them.
const SSL_CERT_DIR: &str = "SSL_CERT_DIR";

/// A variable of the process environment; an empty one counts as unset.
fn env_var(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|value| !value.is_empty())
}

/// Where the operating system's roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum SystemRoots {
    /// `native_roots = false`: only the bundled roots (and `ca_file`).
    Off,
    /// The platform's default locations, found as OpenSSL finds them.
    Platform,
    /// `SSL_CERT_FILE` and/or `SSL_CERT_DIR`, which replace the platform's locations.
    Environment {
        file: Option<PathBuf>,
        dirs: Vec<PathBuf>,
    },
}

impl SystemRoots {
    /// What `native_roots` and the process environment ask for.
    pub(super) fn from_env(native_roots: bool) -> SystemRoots {
        SystemRoots::from_values(native_roots, env_var(SSL_CERT_FILE), env_var(SSL_CERT_DIR))
    }

    fn from_values(
        native_roots: bool,
        file: Option<std::ffi::OsString>,
        dirs: Option<std::ffi::OsString>,
    ) -> SystemRoots {
        if !native_roots {
            return SystemRoots::Off;
        }
        let dirs: Vec<PathBuf> = dirs
            .map(|dirs| {
                std::env::split_paths(&dirs)
                    .filter(|dir| !dir.as_os_str().is_empty())
                    .collect()
            })
            .unwrap_or_default();
        match (file, dirs.is_empty()) {
            (None, true) => SystemRoots::Platform,
            (file, _) => SystemRoots::Environment {
                file: file.map(PathBuf::from),
                dirs,
            },
        }
    }

    /// `SSL_CERT_FILE=<path>, SSL_CERT_DIR=<dirs>`, for messages.
    fn variables(file: Option<&Path>, dirs: &[PathBuf]) -> String {
        let mut shown = Vec::new();
        if let Some(file) = file {
            shown.push(format!("{SSL_CERT_FILE}={}", file.display()));
        }
        if !dirs.is_empty() {
            let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            shown.push(format!("{SSL_CERT_DIR}={}", dirs.join(":")));
        }
        shown.join(", ")
    }
}

/// What the client trusts, kept for the message of a refused certificate.
#[derive(Debug, Clone)]
pub(super) struct Trust {
    pub(super) system: SystemRoots,
    pub(super) ca_file: Option<PathBuf>,
}

impl fmt::Display for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.system {
            SystemRoots::Off => f.write_str("only its built-in roots (native_roots = false)")?,
            SystemRoots::Platform => {
                f.write_str("its built-in roots and the operating system's store")?
            }
            SystemRoots::Environment { file, dirs } => write!(
                f,
                "its built-in roots and {}",
                SystemRoots::variables(file.as_deref(), dirs)
            )?,
        }
        if let Some(path) = &self.ca_file {
            write!(f, ", plus ca_file {}", path.display())?;
        }
        Ok(())
    }
}

/// The TLS configuration: the ring provider passed explicitly (a process-wide default provider
/// may be absent or be another one), and the roots described in the module documentation.
pub(super) fn tls_config(
    settings: &UpstreamSettings,
) -> Result<(rustls::ClientConfig, Trust), UpstreamError> {
    let repository = &settings.repository;
    let trust = Trust {
        system: SystemRoots::from_env(settings.native_roots),
        ca_file: settings.ca_file.clone(),
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = add_system_roots(&mut roots, repository, &trust.system)?;
    if trust.system == SystemRoots::Off
        && (env_var(SSL_CERT_FILE).is_some() || env_var(SSL_CERT_DIR).is_some())
    {
        tracing::warn!(
            repository = %repository,
            "SSL_CERT_FILE or SSL_CERT_DIR is set but native_roots = false: they are not read; \
             remove native_roots = false to trust them"
        );
    }
    if let Some(path) = &trust.ca_file {
        add_ca_file(&mut roots, repository, path)?;
    }
    tracing::debug!(
        repository = %repository,
        system_roots = system,
        total_roots = roots.len(),
        "upstream TLS trusts {trust}"
    );
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| UpstreamError::Tls {
        repository: repository.clone(),
        reason: e.to_string(),
    })?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok((config, trust))
}

/// Adds the operating system's roots; returns how many were added. A platform store that is
/// missing or empty (a minimal container) is no error: the bundled roots remain. Locations the
/// operator named in `SSL_CERT_FILE` / `SSL_CERT_DIR` that give no certificate at all are one.
fn add_system_roots(
    roots: &mut rustls::RootCertStore,
    repository: &str,
    system: &SystemRoots,
) -> Result<usize, UpstreamError> {
    let loaded = match system {
        SystemRoots::Off => return Ok(0),
        SystemRoots::Platform => rustls_native_certs::load_native_certs(),
        SystemRoots::Environment { file, dirs } => {
            let mut all = rustls_native_certs::load_certs_from_paths(file.as_deref(), None);
            for dir in dirs {
                let more = rustls_native_certs::load_certs_from_paths(None, Some(dir));
                all.certs.extend(more.certs);
                all.errors.extend(more.errors);
            }
            all
        }
    };
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if let SystemRoots::Environment { file, dirs } = system {
        if added == 0 {
            let mut reasons = errors.clone();
            if ignored > 0 {
                reasons.push(format!("{ignored} certificates were not usable as roots"));
            }
            if reasons.is_empty() {
                reasons.push("no PEM \"BEGIN CERTIFICATE\" block found".to_owned());
            }
            return Err(UpstreamError::SystemRootsEnvironment {
                repository: repository.to_owned(),
                variables: SystemRoots::variables(file.as_deref(), dirs),
                reason: reasons.join("; "),
            });
        }
    }
    for error in &errors {
        tracing::warn!(
            repository = %repository,
            error = %error,
            "could not load some system root certificates"
        );
    }
    if ignored > 0 {
        tracing::debug!(
            repository = %repository,
            ignored,
            "some system root certificates are not usable and were skipped"
        );
    }
    Ok(added)
}

/// Adds every certificate of `ca_file`, which must hold at least one.
fn add_ca_file(
    roots: &mut rustls::RootCertStore,
    repository: &str,
    path: &Path,
) -> Result<(), UpstreamError> {
    let contents_error = |reason: String| UpstreamError::CaFileContents {
        repository: repository.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
        repository: repository.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let mut count = 0usize;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| contents_error(format!("invalid PEM: {e}")))?;
        roots.add(cert).map_err(|e| {
            contents_error(format!(
                "certificate {} is not a usable root: {e}",
                count + 1
            ))
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(contents_error("no certificate found".to_owned()));
    }
    Ok(())
}

/// What to do about a certificate the upstream presented and rustls refused, given what the
/// client trusts: which setting to change for an unknown issuer (the TLS-inspecting proxy case),
/// or what else to check when the certificate is for another host or out of its dates.
pub(super) fn certificate_advice(error: &CertificateError, trust: &Trust) -> String {
    match error {
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the certificate does not name the host wheelgate connected to: check the \
             repository's url (the host must be one the certificate is issued for)"
                .to_owned()
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => {
            "the certificate is outside its validity dates: the upstream must renew it, or this \
             machine's clock is wrong"
                .to_owned()
        }
        _ => {
            let how = match trust.system {
                SystemRoots::Off => {
                    "set ca_file = \"/path/to/ca.pem\" in the repository's table of proxy.toml, \
                     or remove native_roots = false so that the operating system's store and \
                     SSL_CERT_FILE / SSL_CERT_DIR are read"
                }
                _ => {
                    "set ca_file = \"/path/to/ca.pem\" in the repository's table of proxy.toml, \
                     or SSL_CERT_FILE (a PEM file) or SSL_CERT_DIR (a directory of PEM files) \
                     in wheelgate's environment, or install the CA into the operating system's \
                     store (read while native_roots = true, the default)"
                }
            };
            format!(
                "wheelgate trusts {trust}; if a TLS-inspecting proxy or a private CA issued the \
                 certificate, trust that CA: {how}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use url::Url;

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::Upstream;

    /// A self-signed root, only ever parsed (no handshake uses it).
    const TEST_ROOT_PEM: &str = concat!(
        "-----BEGIN CERTIFICATE-----\n",
        "MIIBkzCCATmgAwIBAgIUbrJfLlwCRaeWML9FCfRVfrbxs54wCgYIKoZIzj0EAwIw\n",
        "HjEcMBoGA1UEAwwTd2hlZWxnYXRlIHRlc3Qgcm9vdDAgFw0yNjExMjUwNzA0NDBa\n",
        "GA8yMTI2MTEwMTA3MDQ0MFowHjEcMBoGA1UEAwwTd2hlZWxnYXRlIHRlc3Qgcm9v\n",
        "dDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABNd2jh+5dPo/QJJtsqa3KF6r9xmC\n",
        "+nGoPA0/DdONG48B1N/zM269DZ7FsoPlMm4EKtEknxYJDy9O01mATCB2QNmjUzBR\n",
        "MB0GA1UdDgQWBBTtq1I7Vsywi4Ug7DbXG5yAhrIWSzAfBgNVHSMEGDAWgBTtq1I7\n",
        "Vsywi4Ug7DbXG5yAhrIWSzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gA\n",
        "MEUCIQDnCO+4n83/YRavbx2adep009Fk9LGrfYceBASgxwkdHgIgN7oCbY/NxtrO\n",
        "4kqPcMrKJAt5YNnDGVPcn4ZxTv2XazU=\n",
        "-----END CERTIFICATE-----\n",
    );

    #[test]
    fn ca_file_is_read_and_checked() {
        let root = Url::parse("https://example.invalid/simple/").unwrap();
        let dir = tempfile::tempdir().unwrap();

        let mut s = settings(&root);
        let missing = dir.path().join("corp-ca.pem");
        s.ca_file = Some(missing.clone());
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(matches!(err, UpstreamError::CaFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&missing.display().to_string()),
            "{err}"
        );

        std::fs::write(&missing, "not a certificate\n").unwrap();
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::CaFileContents { .. }),
            "{err:?}"
        );

        std::fs::write(&missing, TEST_ROOT_PEM).unwrap();
        let up = Upstream::with_proxy(s, direct()).unwrap();
        assert_eq!(up.root(), &root);
    }

    #[test]
    fn the_environment_replaces_the_platform_store_only_with_native_roots() {
        let file = || Some("/etc/corp/ca.pem".into());
        assert_eq!(
            SystemRoots::from_values(false, file(), Some("/a".into())),
            SystemRoots::Off
        );
        assert_eq!(
            SystemRoots::from_values(true, None, None),
            SystemRoots::Platform
        );
        assert_eq!(
            SystemRoots::from_values(true, None, Some(":".into())),
            SystemRoots::Platform,
            "a list of empty directories names none"
        );
        assert_eq!(
            SystemRoots::from_values(true, file(), Some("/a::/b".into())),
            SystemRoots::Environment {
                file: Some("/etc/corp/ca.pem".into()),
                dirs: vec!["/a".into(), "/b".into()],
            }
        );
    }

    #[test]
    fn named_locations_must_hold_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, TEST_ROOT_PEM).unwrap();
        let hashed = dir.path().join("hashed");
        std::fs::create_dir(&hashed).unwrap();
        std::os::unix::fs::symlink(&pem, hashed.join("1a2b3c4d.0")).unwrap();
        let empty = dir.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut roots = rustls::RootCertStore::empty();

        let from_file = SystemRoots::Environment {
            file: Some(pem.clone()),
            dirs: Vec::new(),
        };
        assert_eq!(add_system_roots(&mut roots, "pypi", &from_file).unwrap(), 1);
        let from_dirs = SystemRoots::Environment {
            file: None,
            dirs: vec![empty.clone(), hashed],
        };
        assert_eq!(add_system_roots(&mut roots, "pypi", &from_dirs).unwrap(), 1);

        let nothing = SystemRoots::Environment {
            file: Some(dir.path().join("absent.pem")),
            dirs: vec![empty],
        };
        let err = add_system_roots(&mut roots, "pypi", &nothing).unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(err, UpstreamError::SystemRootsEnvironment { .. }),
            "{err:?}"
        );
        for part in ["pypi", "SSL_CERT_FILE=", "absent.pem", "SSL_CERT_DIR="] {
            assert!(message.contains(part), "{part}: {message}");
        }
        assert_eq!(
            add_system_roots(&mut roots, "pypi", &SystemRoots::Off).unwrap(),
            0
        );
    }

    #[test]
    fn an_unknown_issuer_names_the_settings_that_fix_it() {
        let default = Trust {
            system: SystemRoots::Platform,
            ca_file: None,
        };
        let advice = certificate_advice(&CertificateError::UnknownIssuer, &default);
        for part in [
            "ca_file",
            "SSL_CERT_FILE",
            "SSL_CERT_DIR",
            "native_roots = true",
        ] {
            assert!(advice.contains(part), "{part}: {advice}");
        }
        let off = Trust {
            system: SystemRoots::Off,
            ca_file: Some("/etc/corp.pem".into()),
        };
        let advice = certificate_advice(&CertificateError::UnknownIssuer, &off);
        for part in [
            "only its built-in roots (native_roots = false), plus ca_file /etc/corp.pem",
            "remove native_roots = false",
        ] {
            assert!(advice.contains(part), "{part}: {advice}");
        }
        let name = certificate_advice(&CertificateError::NotValidForName, &default);
        assert!(name.contains("url") && !name.contains("ca_file"), "{name}");
        let dates = certificate_advice(&CertificateError::Expired, &default);
        assert!(dates.contains("clock"), "{dates}");
    }
}
