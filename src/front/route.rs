//! Request paths parsed into typed routes.
//!
//! Every path a client sends is untrusted. It is checked and decoded here, once, into the values
//! the rest of wheelgate works with (`RepoName`, `ProjectName`, `FileKey`, `DistFilename`,
//! `FilePart`), so no handler ever sees a raw segment. Anything that could smuggle a separator or
//! climb the tree (`..`, `%2F`, `%5C`, NUL, control characters) is refused with a 400 before it can
//! reach the upstream URL we build or, later, a path in the store.

use std::borrow::Cow;
use std::fmt;

use percent_encoding::percent_decode_str;

use crate::config::RepoName;
use crate::repository::FileRequest;
use crate::simple::digest::FileKey;
use crate::simple::filename::DistFilename;
use crate::simple::name::{is_normalized, ProjectName};
use crate::simple::part::FilePart;

/// Longest request path accepted. Real paths are well under 400 bytes (a wheel filename is at most
/// 255, a digest 64); anything longer is an attack or a broken client.
pub const MAX_PATH_LEN: usize = 2048;

/// Which repository a simple-API request addresses: the default one (`/simple/…`) or a named one
/// (`/<repo>/simple/…`). The distinction matters for redirects and for relative links, which
/// climb a different number of segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoRef {
    Default,
    Named(RepoName),
}

impl RepoRef {
    /// The URL prefix of this repository's simple index, e.g. `/simple/` or `/pypi/simple/`.
    pub fn simple_prefix(&self) -> String {
        match self {
            RepoRef::Default => "/simple/".to_owned(),
            RepoRef::Named(name) => format!("/{name}/simple/"),
        }
    }

    /// How many segments a page `<prefix><project>/` sits below the server root.
    pub fn project_page_depth(&self) -> usize {
        match self {
            RepoRef::Default => 2,
            RepoRef::Named(_) => 3,
        }
    }
}

/// What a request path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Home,
    Health,
    Ready,
    /// `/-/metrics`: the Prometheus exposition.
    Metrics,
    Index(RepoRef),
    Project(RepoRef, ProjectName),
    File(FileRequest),
    /// `/<repo>/` (or `/<repo>/legacy/`): where twine and uv publish send uploads (POST); a
    /// GET is redirected to the repository's index.
    Repository(RepoName),
    /// The path names the right thing in the wrong spelling (missing trailing slash, a project name
    /// that is not PEP 503-normalised): answer 301 to this location.
    Redirect(String),
    /// `/<x>/<project>/json`: the legacy JSON API, which wheelgate does not offer.
    LegacyJson,
}

/// Why a path was refused. `BadRequest` is for paths no honest client sends; `NotFound` for
/// well-formed paths that name nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    BadRequest(String),
    NotFound(String),
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadRequest(reason) | RouteError::NotFound(reason) => f.write_str(reason),
        }
    }
}

fn bad(reason: impl Into<String>) -> RouteError {
    RouteError::BadRequest(reason.into())
}

/// Parses a request path (without the query string).
pub fn parse(path: &str) -> Result<Route, RouteError> {
    if path.len() > MAX_PATH_LEN {
        return Err(bad(format!(
            "request path is {} bytes long; wheelgate accepts at most {MAX_PATH_LEN}",
            path.len()
        )));
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(bad("request path must start with '/'"));
    };
    // No route has more than MAX_SEGMENTS segments; longer paths are still checked whole (a
    // smuggling attempt is a 400 wherever it is) but only their count is kept. Segments without
    // a `%` are borrowed, so a plain path is parsed without allocating.
    let mut raw = [""; MAX_SEGMENTS];
    let mut decoded: [Cow<'_, str>; MAX_SEGMENTS] = Default::default();
    let mut count = 0;
    for (index, segment) in segments(rest).enumerate() {
        let segment_decoded = decode_segment(segment, index)?;
        if index < MAX_SEGMENTS {
            raw[index] = segment;
            decoded[index] = segment_decoded;
        }
        count = index + 1;
    }
    let mut view = [""; MAX_SEGMENTS];
    for (slot, segment) in view.iter_mut().zip(&decoded) {
        *slot = segment;
    }
    let segs: &[&str] = if count <= MAX_SEGMENTS {
        &view[..count]
    } else {
        &[]
    };
    // An empty segment is only meaningful as the last one (the trailing slash).
    if segs.len() > 1 && segs[..segs.len() - 1].iter().any(|s| s.is_empty()) {
        return Err(RouteError::NotFound(format!(
            "no such page: {path} (empty path segment)"
        )));
    }

    match segs {
        [""] => Ok(Route::Home),
        ["-", "health"] => Ok(Route::Health),
        ["-", "ready"] => Ok(Route::Ready),
        ["-", "metrics"] => Ok(Route::Metrics),
        ["simple"] => Ok(Route::Redirect("/simple/".to_owned())),
        ["simple", ""] => Ok(Route::Index(RepoRef::Default)),
        ["simple", project] => project_redirect(RepoRef::Default, project),
        ["simple", project, ""] => project_route(RepoRef::Default, project, raw[1]),
        [_, _, "json"] | [_, _, "json", ""] | [_, _, _, "json"] | [_, _, _, "json", ""]
            if is_legacy_json(segs) =>
        {
            Ok(Route::LegacyJson)
        }
        [repo, "simple"] => Ok(Route::Redirect(format!("/{}/simple/", repo_name(repo)?))),
        [repo, "simple", ""] => Ok(Route::Index(RepoRef::Named(repo_name(repo)?))),
        [repo, "simple", project] => project_redirect(RepoRef::Named(repo_name(repo)?), project),
        [repo, "simple", project, ""] => {
            project_route(RepoRef::Named(repo_name(repo)?), project, raw[2])
        }
        [repo, "files", project, key, filename] => file_route(repo, project, key, filename),
        [repo, ""] | [repo, "legacy"] | [repo, "legacy", ""] => {
            Ok(Route::Repository(repo_name(repo)?))
        }
        _ => Err(RouteError::NotFound(format!(
            "no such page: {path}. Index pages are under /simple/ or /<repository>/simple/"
        ))),
    }
}

/// The most segments a route has (`<repo>/files/<project>/<key>/<filename>`), plus one so that a
/// longer path is told apart.
const MAX_SEGMENTS: usize = 6;

/// The `/`-separated segments of `path`, as `str::split('/')` gives them. A byte scan: the
/// general string searcher costs more than the rest of routing on paths this short.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let rest = &path.as_bytes()[start..];
        let segment = match rest.iter().position(|&b| b == b'/') {
            Some(end) => {
                let segment = path.get(start..start + end);
                start += end + 1;
                segment
            }
            None => {
                done = true;
                path.get(start..)
            }
        };
        // `/` is ASCII, so every cut falls on a character boundary and `get` always succeeds.
        Some(segment.unwrap_or(""))
    })
}

/// Decodes one percent-encoded segment and refuses everything that could change the shape of a
/// path once decoded. The raw bytes are checked in one pass; only a segment with a `%` (or
/// non-ASCII bytes) is decoded and checked again.
fn decode_segment(segment: &str, index: usize) -> Result<Cow<'_, str>, RouteError> {
    let bytes = segment.as_bytes();
    let mut encoded = false;
    let mut non_ascii = false;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                encoded = true;
                let pair = bytes
                    .get(at + 1..at + 3)
                    .map(|p| [p[0].to_ascii_lowercase(), p[1].to_ascii_lowercase()]);
                if matches!(pair, Some([b'2', b'f']) | Some([b'5', b'c'])) {
                    return Err(bad(format!(
                        "path segment {} contains an encoded '/' or '\\'; names and filenames never do",
                        index + 1
                    )));
                }
            }
            b'\\' => return Err(bad(format!("path segment {} contains '\\'", index + 1))),
            byte if !byte.is_ascii() => non_ascii = true,
            byte if byte.is_ascii_control() => {
                return Err(bad(format!(
                    "path segment {} contains a NUL or control character",
                    index + 1
                )))
            }
            _ => {}
        }
        at += 1;
    }
    let decoded = if encoded || non_ascii {
        let decoded = percent_decode_str(segment).decode_utf8().map_err(|_| {
            bad(format!(
                "path segment {} is not valid UTF-8 once decoded",
                index + 1
            ))
        })?;
        if decoded.chars().any(|c| c.is_control()) {
            return Err(bad(format!(
                "path segment {} contains a NUL or control character",
                index + 1
            )));
        }
        if decoded.contains('\\') {
            return Err(bad(format!("path segment {} contains '\\'", index + 1)));
        }
        Cow::Owned(decoded.into_owned())
    } else {
        Cow::Borrowed(segment)
    };
    if decoded == "." || decoded == ".." {
        return Err(bad("path contains a '.' or '..' segment"));
    }
    Ok(decoded)
}

fn is_legacy_json(segs: &[&str]) -> bool {
    // `/pypi/<project>/json` and `/pypi/<project>/<version>/json`: neither `simple` nor `files`
    // in first or second position, which is where the simple API puts them.
    segs.first().is_some_and(|s| *s != "simple")
        && segs.get(1).is_some_and(|s| *s != "simple" && *s != "files")
}

fn repo_name(raw: &str) -> Result<RepoName, RouteError> {
    RepoName::parse(raw).map_err(|_| {
        RouteError::NotFound(format!(
            "no repository named {raw:?}: repository names are [a-z0-9][a-z0-9._-]{{0,63}}"
        ))
    })
}

fn project_name(raw: &str) -> Result<ProjectName, RouteError> {
    ProjectName::parse(raw).map_err(|e| bad(format!("invalid project name {raw:?}: {e}")))
}

fn project_redirect(repo: RepoRef, raw: &str) -> Result<Route, RouteError> {
    let name = project_name(raw)?;
    Ok(Route::Redirect(format!(
        "{}{}/",
        repo.simple_prefix(),
        name
    )))
}

/// `decoded` is the segment after percent-decoding, `raw` as sent: a page is only served at its
/// one canonical URL, so an encoded spelling of even a normalised name is redirected.
fn project_route(repo: RepoRef, decoded: &str, raw: &str) -> Result<Route, RouteError> {
    let name = project_name(decoded)?;
    if raw == decoded && is_normalized(decoded) {
        Ok(Route::Project(repo, name))
    } else {
        Ok(Route::Redirect(format!(
            "{}{}/",
            repo.simple_prefix(),
            name
        )))
    }
}

fn file_route(repo: &str, project: &str, key: &str, filename: &str) -> Result<Route, RouteError> {
    let repo = repo_name(repo)?;
    let project = project_name(project)?;
    let key = FileKey::parse(key)
        .map_err(|e| bad(format!("invalid file key {key:?} in the file URL: {e}")))?;
    let (name, part) = FilePart::split(filename);
    let filename =
        DistFilename::parse(name).map_err(|e| bad(format!("invalid filename {name:?}: {e}")))?;
    Ok(Route::File(FileRequest {
        repo,
        project,
        key,
        filename,
        part,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn named(name: &str) -> RepoRef {
        RepoRef::Named(RepoName::parse(name).unwrap())
    }

    #[test]
    fn upload_endpoints() {
        for path in ["/internal/", "/internal/legacy/", "/internal/legacy"] {
            assert_eq!(
                parse(path),
                Ok(Route::Repository(RepoName::parse("internal").unwrap())),
                "{path}"
            );
        }
        assert!(matches!(parse("/Internal/"), Err(RouteError::NotFound(_))));
    }

    #[test]
    fn index_and_project_pages() {
        assert_eq!(parse("/simple/"), Ok(Route::Index(RepoRef::Default)));
        assert_eq!(parse("/pypi/simple/"), Ok(Route::Index(named("pypi"))));
        assert_eq!(
            parse("/simple/foo-bar/"),
            Ok(Route::Project(
                RepoRef::Default,
                ProjectName::parse("foo-bar").unwrap()
            ))
        );
        assert_eq!(
            parse("/pypi/simple/foo/"),
            Ok(Route::Project(
                named("pypi"),
                ProjectName::parse("foo").unwrap()
            ))
        );
    }

    #[test]
    fn redirects_to_normalised_names_and_trailing_slashes() {
        assert_eq!(parse("/simple"), Ok(Route::Redirect("/simple/".into())));
        assert_eq!(
            parse("/pypi/simple"),
            Ok(Route::Redirect("/pypi/simple/".into()))
        );
        assert_eq!(
            parse("/simple/Foo_Bar/"),
            Ok(Route::Redirect("/simple/foo-bar/".into()))
        );
        assert_eq!(
            parse("/simple/foo.bar"),
            Ok(Route::Redirect("/simple/foo-bar/".into()))
        );
        assert_eq!(
            parse("/simple/foo"),
            Ok(Route::Redirect("/simple/foo/".into()))
        );
        assert_eq!(
            parse("/pypi/simple/FOO-bar/"),
            Ok(Route::Redirect("/pypi/simple/foo-bar/".into()))
        );
        assert_eq!(
            parse("/simple/Foo%5FBar/"),
            Ok(Route::Redirect("/simple/foo-bar/".into()))
        );
        assert_eq!(
            parse("/simple/%66oo/"),
            Ok(Route::Redirect("/simple/foo/".into()))
        );
    }

    #[test]
    fn file_routes() {
        let route = parse(&format!(
            "/pypi/files/foo/{DIGEST}/foo-1.0-py3-none-any.whl"
        ))
        .unwrap();
        let Route::File(file) = route else {
            panic!("not a file route: {route:?}")
        };
        assert_eq!(file.repo.as_str(), "pypi");
        assert_eq!(file.filename.as_str(), "foo-1.0-py3-none-any.whl");
        assert_eq!(file.part, FilePart::File);
        let route = parse(&format!(
            "/pypi/files/foo/{DIGEST}/foo-1.0-py3-none-any.whl.metadata"
        ))
        .unwrap();
        let Route::File(file) = route else {
            panic!("not a file route: {route:?}")
        };
        assert_eq!(file.part, FilePart::Metadata);
        assert_eq!(file.filename.as_str(), "foo-1.0-py3-none-any.whl");
        let route = parse(&format!(
            "/pypi/files/foo/{DIGEST}/foo-1.0.tar.gz.provenance"
        ))
        .unwrap();
        let Route::File(file) = route else {
            panic!("not a file route: {route:?}")
        };
        assert_eq!(file.part, FilePart::Provenance);
        assert_eq!(file.filename.as_str(), "foo-1.0.tar.gz");
    }

    #[test]
    fn refuses_traversal_and_smuggling() {
        for path in [
            "/simple/../etc/passwd/",
            "/simple/%2e%2e/",
            "/pypi/files/foo/abc/..",
            "/simple/foo%2Fbar/",
            "/simple/foo%2fbar/",
            "/simple/foo%5cbar/",
            "/simple/foo%00/",
            "/simple/foo%0a/",
            "/simple/foo%ff/",
            "no-leading-slash",
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::BadRequest(_))),
                "{path} was not refused with 400: {:?}",
                parse(path)
            );
        }
        let long = format!("/simple/{}/", "a".repeat(MAX_PATH_LEN));
        assert!(matches!(parse(&long), Err(RouteError::BadRequest(_))));
    }

    #[test]
    fn bad_names_keys_and_filenames_are_400() {
        for path in [
            "/simple/-foo-/",
            "/simple/foo bar/",
            "/pypi/files/foo/nothex/foo-1.0.tar.gz",
            &format!("/pypi/files/foo/{DIGEST}/.hidden"),
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::BadRequest(_))),
                "{path}"
            );
        }
    }

    #[test]
    fn unknown_shapes_are_404() {
        for path in [
            "/nope",
            "/Bad Repo/simple/",
            "/a/b/c/d/e/f/g",
            "/simple//foo/",
            "/-/nothing",
        ] {
            assert!(
                matches!(parse(path), Err(RouteError::NotFound(_))),
                "{path}: {:?}",
                parse(path)
            );
        }
        assert_eq!(parse("/pypi/foo/json"), Ok(Route::LegacyJson));
        assert_eq!(parse("/pypi/foo/1.0/json"), Ok(Route::LegacyJson));
        assert!(matches!(
            parse("/simple/foo/json"),
            Err(RouteError::NotFound(_))
        ));
    }

    #[test]
    fn segments_split_like_str_split() {
        for path in [
            "",
            "a",
            "a/",
            "/a",
            "a//b/",
            "simple/bench-core/",
            "é/ü/",
            "//",
        ] {
            assert_eq!(
                segments(path).collect::<Vec<_>>(),
                path.split('/').collect::<Vec<_>>(),
                "{path:?}"
            );
        }
    }

    #[test]
    fn operational_routes() {
        assert_eq!(parse("/"), Ok(Route::Home));
        assert_eq!(parse("/-/health"), Ok(Route::Health));
        assert_eq!(parse("/-/ready"), Ok(Route::Ready));
        assert_eq!(parse("/-/metrics"), Ok(Route::Metrics));
    }
}
