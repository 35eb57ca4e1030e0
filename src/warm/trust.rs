//! Which wheelgate servers `wheelgate warm` trusts over https.
//!
//! The built-in Mozilla roots and the system's (`SSL_CERT_FILE` and `SSL_CERT_DIR` honoured)
//! vouch for a server as they would for any client. When warm goes to the running server its
//! configuration describes, it also accepts that server's own certificate, read from
//! `[server.tls] cert_file`, exactly as it is: a self-signed certificate (which webpki would
//! refuse as an end entity, and which names no host warm connects to) is then trusted because it
//! is the very certificate the configuration says the server presents. The handshake's
//! signature is still checked, so only the holder of its key is accepted.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Why warm cannot set up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot read the server's certificates from {} ([server.tls] cert_file): {reason}", path.display())]
    Certificates { path: PathBuf, reason: String },
}

/// The client configuration: for `https`, the usual roots plus the certificates of `pinned`
/// (a PEM file); for plain http, nothing is ever verified and no roots are loaded.
pub fn tls_config(https: bool, pinned: Option<&Path>) -> Result<rustls::ClientConfig, TrustError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    if !https {
        return Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| TrustError::Tls(e.to_string()))?;
    let pinned = match pinned {
        Some(path) => read_certificates(path)?,
        None => Vec::new(),
    };
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedOrWebPki { pinned, webpki }))
        .with_no_client_auth())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TrustError> {
    let failed = |reason: String| TrustError::Certificates {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| failed(format!("invalid PEM: {e}")))?;
    if certificates.is_empty() {
        return Err(failed("no certificate found".to_owned()));
    }
    Ok(certificates)
}

/// Accepts a pinned certificate as it is, and anything else the roots vouch for.
#[derive(Debug)]
struct PinnedOrWebPki {
    pinned: Vec<CertificateDer<'static>>,
    webpki: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrWebPki {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}
