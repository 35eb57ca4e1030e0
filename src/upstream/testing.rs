//! What the upstream client's unit tests share: a recording HTTP/1 server on localhost, canned
//! responses, and clients set up to reach it directly whatever proxies the environment names.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{header, HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use url::Url;

use super::{
    AuthSettings, FileBody, PageFetch, ProxyMode, Upstream, UpstreamError, UpstreamSettings,
};

pub(super) type TestBody = BoxBody<Bytes, Infallible>;

/// One request as the test server saw it.
#[derive(Clone, Debug)]
pub(super) struct Seen {
    pub(super) path: String,
    pub(super) headers: HeaderMap,
}

impl Seen {
    pub(super) fn header(&self, name: header::HeaderName) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
    pub(super) fn authorization(&self) -> Option<String> {
        self.header(header::AUTHORIZATION)
    }
}

pub(super) struct TestServer {
    pub(super) addr: SocketAddr,
    pub(super) seen: Arc<Mutex<Vec<Seen>>>,
}

impl TestServer {
    pub(super) fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{}", self.addr, path)).unwrap()
    }
    pub(super) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// A hyper HTTP/1 server on 127.0.0.1:0. The handler gets each request and its index among
/// all requests the server received.
pub(super) async fn serve<F, Fut>(handler: F) -> TestServer
where
    F: Fn(Seen, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = Arc::new(handler);
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = Arc::clone(&handler);
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let entry = Seen {
                        path: request
                            .uri()
                            .path_and_query()
                            .map(|p| p.to_string())
                            .unwrap_or_default(),
                        headers: request.headers().clone(),
                    };
                    let index = {
                        let mut all = record.lock().unwrap();
                        all.push(entry.clone());
                        all.len() - 1
                    };
                    let response = handler(entry, index);
                    async move { Ok::<_, Infallible>(response.await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TestServer { addr, seen }
}

pub(super) fn text(status: u16, body: &'static str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(body.as_bytes())).boxed())
        .unwrap()
}

pub(super) fn redirect(status: u16, location: &str) -> Response<TestBody> {
    Response::builder()
        .status(status)
        .header(header::LOCATION, location)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// A chunked body: `first`, then silence for `pause`, then `rest`.
pub(super) fn stalling(
    first: &'static str,
    pause: Duration,
    rest: &'static str,
) -> Response<TestBody> {
    let head = futures_util::stream::once(async move {
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(first.as_bytes())))
    });
    let tail = futures_util::stream::once(async move {
        tokio::time::sleep(pause).await;
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(rest.as_bytes())))
    });
    Response::new(http_body_util::BodyExt::boxed(StreamBody::new(
        head.chain(tail),
    )))
}

pub(super) fn settings(root: &Url) -> UpstreamSettings {
    UpstreamSettings {
        repository: "pypi".to_owned(),
        url: root.clone(),
        connect_timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(5),
        retries: 0,
        ca_file: None,
        native_roots: false,
        auth: None,
        file_hosts: Vec::new(),
    }
}

pub(super) fn with_auth(
    mut settings: UpstreamSettings,
    password_file: &Path,
    auth_hosts: Vec<String>,
) -> UpstreamSettings {
    settings.auth = Some(AuthSettings {
        username: "__token__".to_owned(),
        password_file: password_file.to_path_buf(),
        auth_hosts,
    });
    settings
}

/// Never the process environment: a developer's HTTP_PROXY must not change test outcomes.
pub(super) fn direct() -> ProxyMode {
    ProxyMode::Explicit(Matcher::builder().build())
}

pub(super) fn upstream(settings: UpstreamSettings) -> Upstream {
    Upstream::with_proxy(settings, direct()).unwrap()
}

pub(super) fn basic(token: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("__token__:{token}"))
    )
}

pub(super) fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

pub(super) async fn page(up: &Upstream, url: &Url) -> Result<PageFetch, UpstreamError> {
    up.fetch_page(
        url,
        "application/vnd.pypi.simple.v1+json, text/html;q=0.1",
        None,
        1 << 20,
    )
    .await
}

pub(super) async fn drain(mut body: FileBody) -> Result<Vec<u8>, UpstreamError> {
    let mut all = Vec::new();
    while let Some(chunk) = body.next().await {
        all.extend_from_slice(&chunk?);
    }
    Ok(all)
}
