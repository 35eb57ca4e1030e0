//! Reaching the upstream through an HTTP proxy, or directly.
//!
//! Deployments behind a corporate proxy name it in `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY`, with
//! exceptions in `NO_PROXY`; hyper-util's matcher reads those and says, per destination, which
//! proxy to use. The connector that acts on its answer sits below TLS, so that every proxied
//! connection is a `CONNECT` tunnel: the proxy sees neither our requests nor our credentials.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;
use url::Host;

use super::destination::{CheckedResolver, Policy};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where upstream connections go.
// One value per repository, moved once into the client: boxing the matcher would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub enum ProxyMode {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower case), read once
    /// when the [`Upstream`](super::Upstream) is built.
    #[default]
    FromEnv,
    /// An explicit matcher, for tests and for callers that configure proxies themselves. An empty
    /// `Matcher::builder().build()` means "always connect directly".
    Explicit(Matcher),
}

/// The transport below TLS: a direct TCP connection, or a tunnel through an HTTP proxy when the
/// proxy matcher (environment or explicit) says so for the destination.
///
/// Every proxied connection is an HTTP `CONNECT` tunnel, for `http://` upstreams too (not the
/// absolute-form requests some clients send to HTTP proxies): one code path, the proxy never
/// sees request headers such as `Authorization`, and the TLS layer above runs end to end through
/// the tunnel for `https://` upstreams. Only `http://` proxy URLs are supported; credentials in
/// the proxy URL's userinfo become `Proxy-Authorization: Basic`.
///
/// Direct connections keep the destination policy (`destination`): `tcp` resolves names with
/// the policy applied, literal addresses are checked here, and hosts listed in `file_hosts` go
/// through `open`, as do connections to the proxy itself (the operator configured it).
#[derive(Clone)]
pub(super) struct ProxyConnector {
    pub(super) tcp: HttpConnector<CheckedResolver>,
    pub(super) open: HttpConnector,
    pub(super) matcher: Arc<Matcher>,
    pub(super) policy: Arc<Policy>,
}

/// Why a connection through the proxy layer failed. Proxy URLs are shown without userinfo (the
/// matcher strips it when it parses them).
#[derive(Debug, thiserror::Error)]
enum ProxyConnectError {
    #[error(
        "proxy {proxy} uses the {scheme}: scheme, which wheelgate does not support; use an http:// \
         proxy URL"
    )]
    UnsupportedProxy { proxy: String, scheme: String },
    #[error("destination {0} has no host")]
    NoHost(String),
    #[error("through proxy {proxy}: {source}")]
    Tunnel {
        proxy: String,
        // hyper-util does not export its tunnel error type.
        source: BoxError,
    },
}

impl Service<Uri> for ProxyConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let mut tcp = self.tcp.clone();
        let mut open = self.open.clone();
        let policy = self.policy.clone();
        let Some(intercept) = self.matcher.intercept(&dst) else {
            return Box::pin(async move {
                match checked_literal(&policy, &dst).await? {
                    Checked::Listed => open.call(dst).await.map_err(Into::into),
                    Checked::Resolve => tcp.call(dst).await.map_err(Into::into),
                }
            });
        };
        let tcp = open;
        let proxy_uri = intercept.uri().clone();
        let proxy = proxy_uri.to_string();
        let auth = intercept.basic_auth().cloned();
        Box::pin(async move {
            let scheme = proxy_uri.scheme_str().unwrap_or("http");
            if scheme != "http" {
                return Err(ProxyConnectError::UnsupportedProxy {
                    proxy,
                    scheme: scheme.to_owned(),
                }
                .into());
            }
            let target = with_explicit_port(&dst)
                .ok_or_else(|| ProxyConnectError::NoHost(dst.to_string()))?;
            // The proxy resolves names; a literal address is judged here.
            checked_literal(&policy, &target).await?;
            let mut tunnel = Tunnel::new(proxy_uri, tcp);
            if let Some(auth) = auth {
                tunnel = tunnel.with_auth(auth);
            }
            tunnel.call(target).await.map_err(|source| {
                ProxyConnectError::Tunnel {
                    proxy,
                    source: Box::new(source),
                }
                .into()
            })
        })
    }
}

/// What the policy says about a destination before any name is resolved.
enum Checked {
    /// Listed in `file_hosts`: connect without checking addresses.
    Listed,
    /// A name, or an allowed literal address: connect through the checked resolver.
    Resolve,
}

/// Applies the destination policy to what can be judged without resolving: `file_hosts`, and
/// a literal address (which the connector does not resolve).
async fn checked_literal(policy: &Policy, dst: &Uri) -> Result<Checked, BoxError> {
    let Some(text) = dst.host() else {
        return Ok(Checked::Resolve);
    };
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    let port = dst
        .port_u16()
        .unwrap_or(if dst.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let host = match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => Host::Ipv4(ip),
        Ok(std::net::IpAddr::V6(ip)) => Host::Ipv6(ip),
        Err(_) => Host::Domain(bare.to_ascii_lowercase()),
    };
    if policy.is_listed(&host, port) {
        return Ok(Checked::Listed);
    }
    if let Ok(address) = bare.parse::<std::net::IpAddr>() {
        policy.check(text, address).await?;
    }
    Ok(Checked::Resolve)
}

/// `dst` with its port spelled out: hyper-util's tunnel assumes 443 when the URI has none, which
/// is wrong for `http://` destinations.
fn with_explicit_port(dst: &Uri) -> Option<Uri> {
    let host = dst.host()?;
    let port = dst
        .port_u16()
        .unwrap_or(if dst.scheme_str() == Some("http") {
            80
        } else {
            443
        });
    let authority = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Uri::builder()
        .scheme(dst.scheme_str().unwrap_or("https"))
        .authority(authority)
        .path_and_query("/")
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use base64::Engine as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::{PageFetch, Upstream, UpstreamError};

    /// A CONNECT proxy: records each request head, answers 200 and splices the bytes.
    async fn connect_proxy() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if client.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    record.lock().unwrap().push(head.clone());
                    let target = head
                        .split_whitespace()
                        .nth(1)
                        .unwrap_or_default()
                        .to_owned();
                    let Ok(mut server) = tokio::net::TcpStream::connect(target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    let _ = client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
            }
        });
        (addr, heads)
    }

    #[tokio::test]
    async fn requests_tunnel_through_the_proxy() {
        let index = serve(|_, _| async { text(200, "via proxy") }).await;
        let (proxy, heads) = connect_proxy().await;
        let matcher = Matcher::builder()
            .http(format!("http://puser:ppass@{proxy}"))
            .build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        let fetched = page(&up, &index.url("/simple/")).await.unwrap();
        assert!(
            matches!(fetched, PageFetch::Fresh { ref body, .. } if body.as_ref() == b"via proxy")
        );
        let heads = heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(
            heads[0].starts_with(&format!(
                "CONNECT 127.0.0.1:{} HTTP/1.1\r\n",
                index.addr.port()
            )),
            "{}",
            heads[0]
        );
        let proxy_auth = base64::engine::general_purpose::STANDARD.encode("puser:ppass");
        assert!(
            heads[0].contains(&format!("Proxy-Authorization: Basic {proxy_auth}")),
            "{}",
            heads[0]
        );
        // Through a tunnel the request itself is origin-form, exactly as without a proxy.
        assert_eq!(index.seen()[0].path, "/simple/");
    }

    #[tokio::test]
    async fn no_proxy_hosts_bypass_the_proxy() {
        let index = serve(|_, _| async { text(200, "direct") }).await;
        let (proxy, heads) = connect_proxy().await;
        let matcher = Matcher::builder()
            .http(format!("http://{proxy}"))
            .no("127.0.0.1")
            .build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();
        assert!(heads.lock().unwrap().is_empty());
        assert_eq!(index.seen().len(), 1);
    }

    #[tokio::test]
    async fn socks_proxies_are_refused_with_a_reason() {
        let index = serve(|_, _| async { text(200, "direct") }).await;
        let matcher = Matcher::builder().http("socks5://127.0.0.1:9").build();
        let up = Upstream::with_proxy(
            settings(&index.url("/simple/")),
            ProxyMode::Explicit(matcher),
        )
        .unwrap();
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains("socks5"), "{err}");
    }

    #[test]
    fn tunnel_targets_always_carry_a_port() {
        let port_of =
            |uri: &str| with_explicit_port(&uri.parse::<Uri>().unwrap()).map(|u| u.to_string());
        assert_eq!(
            port_of("http://example.invalid").as_deref(),
            Some("http://example.invalid:80/")
        );
        assert_eq!(
            port_of("https://example.invalid").as_deref(),
            Some("https://example.invalid:443/")
        );
        assert_eq!(
            port_of("http://example.invalid:8080").as_deref(),
            Some("http://example.invalid:8080/")
        );
        assert_eq!(
            port_of("https://[::1]").as_deref(),
            Some("https://[::1]:443/")
        );
    }
}
