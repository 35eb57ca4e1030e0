//! A TLS front for the fixture upstream: it terminates TLS on 127.0.0.1 with a given certificate
//! and relays the bytes to a plain-HTTP address, so that the fixture index can be reached over
//! `https://` as an upstream behind a corporate CA (or a TLS-inspecting proxy) would be.
//!
//! It offers no ALPN, so clients speak HTTP/1.1 through it, which is what the fixture upstream
//! serves. Every handshake that fails is recorded with the reason rustls gave, so that a test can
//! see that a client refused the certificate (and did not fail for some other reason).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::certs::CertKey;

/// A running TLS front. Dropping it stops the listener.
pub struct TlsFront {
    addr: SocketAddr,
    failed_handshakes: Arc<Mutex<Vec<String>>>,
    _shutdown: tokio::sync::watch::Sender<bool>,
    _runtime: tokio::runtime::Runtime,
}

impl TlsFront {
    /// Listens on 127.0.0.1 (a free port) with `identity` and relays every connection to
    /// `target`.
    pub fn start(identity: &CertKey, target: SocketAddr) -> TlsFront {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&identity.cert)
            .and_then(|certs| certs.collect())
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", identity.cert.display()));
        let key = PrivateKeyDer::from_pem_file(&identity.key)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", identity.key.display()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(chain, key))
        .unwrap_or_else(|e| panic!("the TLS front's certificate is not usable: {e}"));
        let acceptor = TlsAcceptor::from(Arc::new(config));

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tls-front")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the TLS front's runtime: {e}"));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap_or_else(|e| panic!("cannot bind the TLS front on 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("the TLS front has no local address: {e}"));
        let failed_handshakes = Arc::new(Mutex::new(Vec::new()));
        let (shutdown, mut stop) = tokio::sync::watch::channel(false);
        let failures = Arc::clone(&failed_handshakes);
        runtime.spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(_) => continue,
                    },
                    _ = stop.changed() => return,
                };
                let acceptor = acceptor.clone();
                let failures = Arc::clone(&failures);
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(error) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(error.to_string());
                            return;
                        }
                    };
                    if let Ok(mut plain) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                    }
                });
            }
        });
        TlsFront {
            addr,
            failed_handshakes,
            _shutdown: shutdown,
            _runtime: runtime,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Why each failed handshake failed, in order (what the client's alert said).
    pub fn failed_handshakes(&self) -> Vec<String> {
        self.failed_handshakes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
