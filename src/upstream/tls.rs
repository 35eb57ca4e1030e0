//! Which upstream servers we trust: the rustls client configuration and its root certificates.
//!
//! The roots are Mozilla's (bundled) or the operating system's, plus a corporate CA from
//! `ca_file`. They are loaded when the client is built, so that an unreadable `ca_file` or an empty
//! system store is reported at start-up rather than at the first fetch.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;

use super::{UpstreamError, UpstreamSettings};

/// The TLS configuration: the ring provider passed explicitly (a process-wide default provider
/// may be absent or be another one), Mozilla's roots or the system's, plus `ca_file`.
pub(super) fn tls_config(
    settings: &UpstreamSettings,
) -> Result<rustls::ClientConfig, UpstreamError> {
    let repository = &settings.repository;
    let mut roots = rustls::RootCertStore::empty();
    if settings.native_roots {
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(
                repository = %repository,
                error = %error,
                "could not load some system root certificates"
            );
        }
        let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
        if added == 0 {
            let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
            return Err(UpstreamError::NativeRoots {
                repository: repository.clone(),
                reason: format!(
                    "{ignored} unusable certificates; {}",
                    if errors.is_empty() {
                        "no errors reported".to_owned()
                    } else {
                        errors.join("; ")
                    }
                ),
            });
        }
    } else {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = &settings.ca_file {
        let contents_error = |reason: String| UpstreamError::CaFileContents {
            repository: repository.clone(),
            path: path.clone(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|source| UpstreamError::CaFile {
            repository: repository.clone(),
            path: path.clone(),
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
    }
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
    Ok(config)
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
}
