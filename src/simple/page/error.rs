//! Why an upstream page could not be used, told so that an operator can act on it.
//!
//! A page error names the kind of page and where it came from (without the userinfo and query a
//! URL may carry credentials in) and ends with what to check. One unusable file is not an error:
//! the parsers drop it and count it, so that it cannot hide the rest of the page.

use std::fmt;

use url::Url;

use crate::simple::name::ProjectName;

/// Which kind of page an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    ProjectPage,
    ProjectList,
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PageKind::ProjectPage => "project page",
            PageKind::ProjectList => "project list",
        })
    }
}

/// Where a page came from, for error messages: the URL without user information and query, which
/// is where credentials would hide, or nothing when the caller did not say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageLocation(Option<String>);

impl PageLocation {
    pub fn of(url: &Url) -> PageLocation {
        let mut shown = format!("{}://", url.scheme());
        if let Some(host) = url.host_str() {
            shown.push_str(host);
        }
        if let Some(port) = url.port() {
            shown.push_str(&format!(":{port}"));
        }
        shown.push_str(url.path());
        PageLocation(Some(shown))
    }
}

impl fmt::Display for PageLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(url) => write!(f, " {url}"),
            None => Ok(()),
        }
    }
}

/// Why an upstream page could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error(
        "the upstream {kind}{at} is {size} bytes, more than the {limit} bytes wheelgate accepts: \
         check that the repository's url points at a simple index"
    )]
    TooLarge {
        kind: PageKind,
        at: PageLocation,
        size: usize,
        limit: usize,
    },
    #[error(
        "the upstream project page of {project}{at} lists more than {limit} files, the most \
         wheelgate accepts on one page: check that the repository's url points at a simple index"
    )]
    TooManyFiles {
        project: ProjectName,
        at: PageLocation,
        limit: usize,
    },
    #[error(
        "the upstream project page of {project}{at} lists more than {limit} versions, the most \
         wheelgate accepts on one page: check that the repository's url points at a simple index"
    )]
    TooManyVersions {
        project: ProjectName,
        at: PageLocation,
        limit: usize,
    },
    #[error(
        "the upstream JSON {kind}{at} is not valid: {source}; check that the upstream serves \
         PEP 691 JSON for application/vnd.pypi.simple.v1+json"
    )]
    Json {
        kind: PageKind,
        at: PageLocation,
        source: serde_json::Error,
    },
    #[error(
        "the upstream JSON {kind}{at} has no meta.api-version: it is not a PEP 691 page; check \
         the repository's url"
    )]
    MissingApiVersion { kind: PageKind, at: PageLocation },
    #[error(
        "the upstream JSON {kind}{at} declares meta.api-version {found:?}, but wheelgate \
         understands only 1.x: ask the upstream for the v1 API or use its HTML pages"
    )]
    UnsupportedApiVersion {
        kind: PageKind,
        at: PageLocation,
        found: String,
    },
    #[error(
        "the upstream HTML {kind}{at} is not valid UTF-8 (first bad byte at offset {offset}): \
         simple index pages must be UTF-8"
    )]
    NotUtf8 {
        kind: PageKind,
        at: PageLocation,
        offset: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simple::page::parse_project_json;
    use crate::simple::page::testing::*;

    #[test]
    fn error_locations_hide_credentials() {
        let url =
            Url::parse("https://__token__:s3cret@index.example.invalid/simple/foo/?k=v").unwrap();
        let err = parse_project_json(b"nope", &url, &foo())
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret") && !err.contains("k=v"), "{err}");
        assert!(err.contains("index.example.invalid/simple/foo/"), "{err}");
    }
}
