//! TLS termination for the front (SPEC §8): a rustls acceptor built from PEM files.
//!
//! The ring provider is passed explicitly, as for the upstream client, so that no process-wide
//! default provider is ever needed (two providers enabled at once panic at run time). ALPN offers
//! HTTP/2 first, then HTTP/1.1; the connection builder then speaks whichever the client chose.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Why the TLS files cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("[server.tls] cert_file {path}: {reason}; give a PEM file with the certificate chain, leaf first")]
    Certificates { path: PathBuf, reason: String },
    #[error("[server.tls] key_file {path}: {reason}; give a PEM file with the private key (PKCS#8, PKCS#1 or SEC1)")]
    Key { path: PathBuf, reason: String },
    #[error("[server.tls]: the certificate and key cannot be used together: {0}")]
    Config(#[from] rustls::Error),
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let error = |reason: String| TlsError::Certificates {
        path: path.to_owned(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(error("no PEM certificate in the file".to_owned()));
    }
    Ok(certificates)
}

/// Builds the acceptor; done once at start-up (TLS settings take effect only at restart).
pub fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, TlsError> {
    let chain = certificates(&config.cert_file)?;
    let key = PrivateKeyDer::from_pem_file(&config.key_file).map_err(|e| TlsError::Key {
        path: config.key_file.clone(),
        reason: e.to_string(),
    })?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(chain, key)?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(&key, "not a key").unwrap();
        let error = acceptor(&TlsConfig {
            cert_file: cert.clone(),
            key_file: key,
        })
        .err()
        .unwrap();
        assert!(error.to_string().contains("tls.crt"), "{error}");
    }
}
