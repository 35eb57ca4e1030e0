//! Answering one request: the route is parsed, the repository found, and the page or file served.

use std::sync::Arc;
use std::time::Instant;

use http::header::{HeaderValue, ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, VARY};
use http::{Method, Request, Response, StatusCode};

use super::response::{self, Body};
use super::route::{self, FileRoute, RepoRef, Route, RouteError};
use crate::app::{App, Repository};
use crate::config::RepoName;
use crate::remote::{Remote, RemoteError};
use crate::simple::name::ProjectName;
use crate::simple::negotiate::{format_from_query, negotiate, Format};
use crate::simple::render::{
    render_index_html, render_index_json, render_project_html, render_project_json, Links,
};

/// Files are immutable once their digest is known: clients may keep them forever.
const IMMUTABLE: HeaderValue = HeaderValue::from_static("max-age=31536000, immutable");

/// Serves one request and writes its access-log line.
pub async fn handle<B>(app: Arc<App>, request: Request<B>) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let mut response = dispatch(&app, &request).await;
    if method == Method::HEAD {
        // Keep the headers (Content-Length included) and drop the body.
        *response.body_mut() = response::empty();
    }
    let bytes = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info!(
        target: "wheelgate::access",
        method = %method,
        path = %request.uri().path(),
        status = response.status().as_u16(),
        bytes,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn dispatch<B>(app: &App, request: &Request<B>) -> Response<Body> {
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = response::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{} is not supported here; use GET or HEAD", request.method()),
            );
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
    };
    let route = match route::parse(request.uri().path()) {
        Ok(route) => route,
        Err(RouteError::BadRequest(reason)) => return response::error(StatusCode::BAD_REQUEST, &reason),
        Err(RouteError::NotFound(reason)) => return response::error(StatusCode::NOT_FOUND, &reason),
    };
    let result = match route {
        Route::Home => Ok(home(app)),
        Route::Health => Ok(response::with_body(StatusCode::OK, "text/plain; charset=utf-8", "ok\n")),
        Route::Ready => Ok(response::with_body(StatusCode::OK, "text/plain; charset=utf-8", "ready\n")),
        Route::Redirect(location) => Ok(response::redirect(&location)),
        Route::LegacyJson => Ok(response::error(
            StatusCode::NOT_FOUND,
            "wheelgate does not offer the legacy JSON API (/pypi/<project>/json); \
             use the simple API at /simple/<project>/ (PEP 691 JSON with \
             Accept: application/vnd.pypi.simple.v1+json)",
        )),
        Route::Index(repo) => index_page(app, &repo, request).await,
        Route::Project(repo, project) => project_page(app, &repo, &project, request).await,
        Route::File(file) => serve_file(app, &file, head).await,
    };
    result.unwrap_or_else(|failure| failure.into_response())
}

/// A request that could not be answered, on its way to becoming an error response.
enum Failure {
    NoRepository(String),
    Remote(RemoteError),
}

impl From<RemoteError> for Failure {
    fn from(error: RemoteError) -> Self {
        Failure::Remote(error)
    }
}

impl Failure {
    fn into_response(self) -> Response<Body> {
        match self {
            Failure::NoRepository(reason) => response::error(StatusCode::NOT_FOUND, &reason),
            Failure::Remote(error) => {
                let status = error.status();
                let reason = error.to_string();
                if status.is_server_error() {
                    tracing::warn!(status = status.as_u16(), "{reason}");
                }
                response::error(status, &reason)
            }
        }
    }
}

fn resolve<'a>(app: &'a App, repo: &'a RepoRef) -> Result<(&'a RepoName, &'a Remote), Failure> {
    let name = match repo {
        RepoRef::Default => app.default_repository(),
        RepoRef::Named(name) => name,
    };
    find_remote(app, name).map(|remote| (name, remote))
}

fn find_remote<'a>(app: &'a App, name: &RepoName) -> Result<&'a Remote, Failure> {
    match app.repository(name) {
        Some(Repository::Remote(remote)) => Ok(remote),
        None => {
            let known: Vec<&str> = app.repository_names().map(RepoName::as_str).collect();
            Err(Failure::NoRepository(format!(
                "no repository named {name}; this server has: {}",
                known.join(", ")
            )))
        }
    }
}

fn format_for<B>(request: &Request<B>) -> Format {
    format_from_query(request.uri().query()).unwrap_or_else(|| {
        negotiate(request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()))
    })
}

fn page_response(format: Format, body: Vec<u8>) -> Response<Body> {
    let mut response = response::with_body(StatusCode::OK, format.content_type(), body);
    response.headers_mut().insert(VARY, HeaderValue::from_static("Accept"));
    response
}

async fn index_page<B>(app: &App, repo: &RepoRef, request: &Request<B>) -> Result<Response<Body>, Failure> {
    let (_, remote) = resolve(app, repo)?;
    let index = remote.index().await?;
    let format = format_for(request);
    let body = match format {
        Format::Json => render_index_json(&index),
        Format::HtmlV1 | Format::Html => render_index_html(&index, "").into_bytes(),
    };
    Ok(page_response(format, body))
}

async fn project_page<B>(
    app: &App,
    repo: &RepoRef,
    project: &ProjectName,
    request: &Request<B>,
) -> Result<Response<Body>, Failure> {
    let (name, remote) = resolve(app, repo)?;
    let page = remote.project_page(project).await?;
    let links = match &app.config.server.public_url {
        Some(base) => Links::absolute(base, name.as_str()),
        None => Links::relative(repo.project_page_depth(), name.as_str()),
    };
    let format = format_for(request);
    let body = match format {
        Format::Json => render_project_json(&page, &links),
        Format::HtmlV1 | Format::Html => render_project_html(&page, &links).into_bytes(),
    };
    Ok(page_response(format, body))
}

async fn serve_file(app: &App, file: &FileRoute, head: bool) -> Result<Response<Body>, Failure> {
    let remote = find_remote(app, &file.repo)?;
    let content_type = if file.metadata {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    };
    let (mut response, length, digest) = if head {
        let info = remote
            .file_info(&file.project, &file.key, &file.filename, file.metadata)
            .await?;
        (Response::new(response::empty()), info.content_length, info.sha256)
    } else {
        let open = remote
            .open_file(&file.project, &file.key, &file.filename, file.metadata, &app.fetch_slots)
            .await?;
        let (length, digest) = (open.content_length, open.sha256);
        (Response::new(response::stream(open.body)), length, digest)
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = length {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    }
    if let Some(digest) = digest {
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{digest}\"")) {
            headers.insert(ETAG, etag);
        }
        headers.insert(CACHE_CONTROL, IMMUTABLE);
    }
    Ok(response)
}

/// The small page a person sees at `/`.
fn home(app: &App) -> Response<Body> {
    let mut rows = String::new();
    for name in app.repository_names() {
        let status = match app.repository(name) {
            Some(Repository::Remote(remote)) => match remote.upstream_root() {
                Some(root) => format!("remote, upstream {}", crate::upstream::RedactedUrl::new(root)),
                None => "remote, offline (no upstream url)".to_owned(),
            },
            None => "unavailable".to_owned(),
        };
        rows.push_str(&format!(
            "<li><a href=\"{name}/simple/\">{name}</a>: {}</li>\n",
            html_escape::encode_text(&status)
        ));
    }
    let default = app.default_repository();
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>wheelgate</title></head><body>\n\
         <h1>wheelgate</h1>\n\
         <p>Point pip or uv here: <code>--index-url http://&lt;this host&gt;/simple/</code> \
         (repository <b>{default}</b>).</p>\n<h2>Repositories</h2>\n<ul>\n{rows}</ul>\n\
         <p><a href=\"-/health\">health</a> · <a href=\"-/ready\">ready</a></p>\n</body></html>\n"
    );
    response::with_body(StatusCode::OK, "text/html; charset=utf-8", body)
}
