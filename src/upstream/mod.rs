//! The client side of a remote repository: fetching bytes from an upstream simple index (SPEC §3).
//!
//! Everything that talks to an upstream goes through [`Upstream`], so that the rules which keep a
//! deployment safe are enforced in one place: the upstream token is only ever sent to the
//! upstream's own origin (or to `auth_hosts`) and never after a redirect left that origin; a
//! rotated token is picked up on the next request; retries are bounded and polite; every wait has
//! a timeout; and no error message, log line or `Debug` output can show the token or a URL's
//! userinfo and query. This module knows nothing about pages: it hands back bytes and lets the
//! page parser judge them.

mod client;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper_util::client::proxy::matcher::Matcher;
use url::Url;

pub use crate::secret::{Secret, SecretError, SecretFile};
pub use client::{FileBody, Upstream};

/// Settings for one remote repository's upstream, filled from `proxy.toml` by the config module.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The repository name, for messages and logs.
    pub repository: String,
    /// The upstream simple-index root, as a user would give it to pip; it ends with `/`.
    pub url: Url,
    /// How long establishing a TCP connection (to the upstream or to the proxy) may take.
    pub connect_timeout: Duration,
    /// How long the upstream may take to send response headers, connection setup included.
    pub first_byte_timeout: Duration,
    /// The longest silence allowed between two pieces of a response body.
    pub idle_timeout: Duration,
    /// Extra attempts after the first, shared by all the hops of one redirect chain.
    pub retries: u32,
    /// Extra PEM roots (a corporate CA) added to the trust store.
    pub ca_file: Option<PathBuf>,
    /// Trust the operating system's roots instead of the bundled Mozilla roots.
    pub native_roots: bool,
    /// Credentials for the upstream, if it needs any.
    pub auth: Option<AuthSettings>,
}

/// `[repository.auth]`: who we are towards the upstream. Holds the secret's path, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The basic-auth user name (`__token__` for token-based indexes).
    pub username: String,
    /// The file holding the password or token; re-read whenever it changes.
    pub password_file: PathBuf,
    /// Other hosts (`host` or `host:port`) that may receive the credentials, such as a separate
    /// files host of the same index.
    pub auth_hosts: Vec<String>,
}

/// Where upstream connections go.
// One value per repository, moved once into the client: boxing the matcher would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Default)]
pub enum ProxyMode {
    /// `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` (upper or lower case), read once
    /// when the [`Upstream`] is built.
    #[default]
    FromEnv,
    /// An explicit matcher, for tests and for callers that configure proxies themselves. An empty
    /// `Matcher::builder().build()` means "always connect directly".
    Explicit(Matcher),
}

/// The cache validators of a page, sent back as `If-None-Match` / `If-Modified-Since`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The upstream's `ETag`, verbatim (quotes and `W/` included).
    pub etag: Option<String>,
    /// The upstream's `Last-Modified`, verbatim.
    pub last_modified: Option<String>,
}

impl Validators {
    /// True when there is nothing to revalidate with.
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// The outcome of [`Upstream::fetch_page`].
#[derive(Debug)]
pub enum PageFetch {
    /// The upstream sent the page.
    Fresh {
        /// The URL the page came from, after redirects (relative links resolve against it).
        final_url: Url,
        /// The upstream's `Content-Type`, verbatim.
        content_type: Option<String>,
        /// The whole page.
        body: Bytes,
        /// The page's validators, for the next revalidation.
        validators: Validators,
        /// Time from the first request to the last byte.
        elapsed: Duration,
    },
    /// The upstream answered 304 to our `If-None-Match` / `If-Modified-Since`: the cached copy is
    /// still good.
    NotModified {
        /// The URL that answered, after redirects.
        final_url: Url,
        /// The validators to keep: the upstream's new ones where it sent any, ours otherwise.
        validators: Validators,
        /// Time from the first request to the response headers.
        elapsed: Duration,
    },
}

/// A file on its way from the upstream. The body is a stream with the idle timeout applied
/// between chunks; nothing is retried once it has started.
#[derive(Debug)]
pub struct FileFetch {
    /// The URL the file came from, after redirects.
    pub final_url: Url,
    /// The upstream's `Content-Length`, when it sent one.
    pub content_length: Option<u64>,
    /// The bytes, as they arrive.
    pub body: FileBody,
}

/// A URL fit for messages and logs: no userinfo, no query, no fragment, since any of them can
/// carry a token.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Redacts `url`.
    pub fn new(url: &Url) -> RedactedUrl {
        let mut shown = url.clone();
        // Both setters only fail for URLs that cannot have credentials (`mailto:` and the like),
        // which then have none to hide.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        RedactedUrl(shown.into())
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Url> for RedactedUrl {
    fn from(url: &Url) -> RedactedUrl {
        RedactedUrl::new(url)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Establishing the TCP connection.
    Connect,
    /// Waiting for the response headers.
    FirstByte,
    /// Waiting for the next piece of the body.
    Idle,
}

impl TimeoutKind {
    /// The `proxy.toml` key that sets this timeout.
    pub fn config_key(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect_timeout",
            TimeoutKind::FirstByte => "first_byte_timeout",
            TimeoutKind::Idle => "idle_timeout",
        }
    }

    fn waiting_for(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "no connection",
            TimeoutKind::FirstByte => "no response headers (first byte)",
            TimeoutKind::Idle => "no body data (idle)",
        }
    }
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstByte => "first byte",
            TimeoutKind::Idle => "idle",
        })
    }
}

/// Everything that can go wrong building an upstream client or fetching from it.
///
/// No variant holds the secret or an unredacted URL; [`UpstreamError::status`] says what a client
/// of wheelgate should see.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The configured root cannot serve as an upstream.
    #[error(
        "repository {repository}: the upstream url {url} {reason}; give the simple-index root as \
         an http:// or https:// URL ending with '/'"
    )]
    InvalidRoot {
        /// The repository.
        repository: String,
        /// The configured URL, redacted.
        url: RedactedUrl,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The user name cannot be used for HTTP basic authentication.
    #[error(
        "repository {repository}: the upstream auth username contains ':', which HTTP basic \
         authentication cannot carry; fix [repository.auth] username"
    )]
    InvalidUsername {
        /// The repository.
        repository: String,
    },
    /// An `auth_hosts` entry is not a host or `host:port`.
    #[error(
        "repository {repository}: auth_hosts entry {entry:?} {reason}; write a host name or \
         host:port such as \"files.example.invalid\""
    )]
    InvalidAuthHost {
        /// The repository.
        repository: String,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `ca_file` could not be read.
    #[error(
        "repository {repository}: cannot read ca_file {}: {source}; point ca_file at a readable \
         PEM file",
        path.display()
    )]
    CaFile {
        /// The repository.
        repository: String,
        /// The configured path.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// `ca_file` was read but does not hold usable certificates.
    #[error(
        "repository {repository}: ca_file {}: {reason}; it must hold PEM \"BEGIN CERTIFICATE\" \
         blocks",
        path.display()
    )]
    CaFileContents {
        /// The repository.
        repository: String,
        /// The configured path.
        path: PathBuf,
        /// What is wrong with the content.
        reason: String,
    },
    /// `native_roots = true` but the operating system offered no usable root certificate.
    #[error(
        "repository {repository}: native_roots is set but no usable root certificate was found in \
         the system store ({reason}); install the CA bundle or unset native_roots"
    )]
    NativeRoots {
        /// The repository.
        repository: String,
        /// What the loader reported.
        reason: String,
    },
    /// rustls refused the TLS configuration.
    #[error("repository {repository}: cannot set up TLS: {reason}")]
    Tls {
        /// The repository.
        repository: String,
        /// What rustls said.
        reason: String,
    },
    /// A URL to fetch (given by a caller or by an upstream page) is not usable.
    #[error("cannot fetch {url}: {reason}")]
    UnsupportedUrl {
        /// The URL, redacted.
        url: RedactedUrl,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A request header value given by the caller is not valid HTTP header text.
    #[error("cannot send the {name} header to {url}: the value is not valid HTTP header text")]
    InvalidRequestHeader {
        /// The header.
        name: &'static str,
        /// The URL, redacted.
        url: RedactedUrl,
    },
    /// The secret file could not be read.
    #[error(
        "cannot read the upstream credentials for repository {repository} from {source}; mount the \
         secret or fix password_file"
    )]
    Credentials {
        /// The repository.
        repository: String,
        /// Which file and why.
        source: SecretError,
    },
    /// The upstream answered 401/403 to a request that carried our credentials.
    #[error(
        "the upstream refused the credentials for repository {repository}: {url} answered \
         {status}; check the token in password_file and the username"
    )]
    CredentialsRefused {
        /// The repository.
        repository: String,
        /// The URL, redacted.
        url: RedactedUrl,
        /// 401 or 403.
        status: StatusCode,
    },
    /// The upstream answered 401/403 and the repository has no credentials.
    #[error(
        "the upstream demands credentials for repository {repository}: {url} answered {status} and \
         none are configured; add [repository.auth] with username and password_file"
    )]
    CredentialsMissing {
        /// The repository.
        repository: String,
        /// The URL, redacted.
        url: RedactedUrl,
        /// 401 or 403.
        status: StatusCode,
    },
    /// The upstream answered 401/403 on a host that may not receive our credentials.
    #[error(
        "the upstream demands credentials for repository {repository}: {url} answered {status}, \
         and the credentials were withheld because that host is not the upstream's origin nor \
         listed in auth_hosts (or a redirect left the origin); add the host to auth_hosts if it \
         belongs to the index"
    )]
    CredentialsWithheld {
        /// The repository.
        repository: String,
        /// The URL, redacted.
        url: RedactedUrl,
        /// 401 or 403.
        status: StatusCode,
    },
    /// The upstream has no such page or file (404 or 410).
    #[error("the upstream has no {url} ({status})")]
    NotFound {
        /// The URL, redacted.
        url: RedactedUrl,
        /// 404 or 410.
        status: StatusCode,
    },
    /// The upstream answered with an error status (after any retries).
    #[error("the upstream answered {status} for {url}")]
    Status {
        /// The URL, redacted.
        url: RedactedUrl,
        /// What it answered.
        status: StatusCode,
    },
    /// The upstream asked us to come back later than we are willing to wait.
    #[error(
        "the upstream answered {status} for {url} and asked to retry after {} s, longer than the \
         {} s wheelgate waits; try again later",
        wait.as_secs(),
        max.as_secs()
    )]
    RetryAfterTooLong {
        /// The URL, redacted.
        url: RedactedUrl,
        /// 429 or 503.
        status: StatusCode,
        /// What `Retry-After` asked for.
        wait: Duration,
        /// The longest wait wheelgate accepts.
        max: Duration,
    },
    /// A timeout ran out.
    #[error(
        "the upstream timed out at {url}: {} within {after:?}; raise {} for the repository or \
         check the upstream",
        kind.waiting_for(),
        kind.config_key()
    )]
    Timeout {
        /// Which timeout.
        kind: TimeoutKind,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The configured limit.
        after: Duration,
    },
    /// No connection could be made (refused, DNS, TLS, proxy).
    #[error("cannot connect to the upstream at {url}: {reason}")]
    Connect {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The error chain.
        reason: String,
    },
    /// The upstream's response could not be understood or was cut off.
    #[error("malformed or broken response from the upstream at {url}: {reason}")]
    Protocol {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The error chain.
        reason: String,
    },
    /// The redirect chain was too long (or a loop).
    #[error("too many redirects (more than {limit}) starting at {url}")]
    TooManyRedirects {
        /// Where the chain started, redacted.
        url: RedactedUrl,
        /// The hop limit.
        limit: usize,
    },
    /// A redirect could not be followed.
    #[error("cannot follow the upstream's redirect from {url}: {reason}")]
    BadRedirect {
        /// The URL that redirected, redacted.
        url: RedactedUrl,
        /// What is wrong with the redirect.
        reason: String,
    },
    /// A page was larger than the caller allows.
    #[error("upstream page larger than {limit} bytes at {url}")]
    PageTooLarge {
        /// The URL, redacted.
        url: RedactedUrl,
        /// The limit.
        limit: usize,
    },
}

impl UpstreamError {
    /// The status a client of wheelgate should see: 404 when the upstream has no such thing, 504
    /// when it timed out, 502 for every other failure.
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::NotFound { .. } => StatusCode::NOT_FOUND,
            UpstreamError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// True when the upstream said the page or file does not exist (404 or 410).
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_hides_userinfo_query_and_fragment() {
        let url = Url::parse("https://user:s3cret@example.invalid/simple/x/?token=abc#sha256=00")
            .unwrap();
        let shown = RedactedUrl::new(&url).to_string();
        assert_eq!(shown, "https://example.invalid/simple/x/");
        assert!(!format!("{:?}", RedactedUrl::new(&url)).contains("s3cret"));
    }

    #[test]
    fn statuses_follow_the_spec() {
        let url = RedactedUrl::new(&Url::parse("https://example.invalid/simple/").unwrap());
        let not_found = UpstreamError::NotFound {
            url: url.clone(),
            status: StatusCode::GONE,
        };
        assert_eq!(not_found.status(), StatusCode::NOT_FOUND);
        assert!(not_found.is_not_found());
        let timeout = UpstreamError::Timeout {
            kind: TimeoutKind::Idle,
            url: url.clone(),
            after: Duration::from_secs(1),
        };
        assert_eq!(timeout.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(!timeout.is_not_found());
        let refused = UpstreamError::CredentialsRefused {
            repository: "pypi".into(),
            url,
            status: StatusCode::UNAUTHORIZED,
        };
        assert_eq!(refused.status(), StatusCode::BAD_GATEWAY);
    }

    #[test]
    fn timeout_message_names_the_timeout_and_its_key() {
        let url = RedactedUrl::new(&Url::parse("https://example.invalid/simple/").unwrap());
        let message = UpstreamError::Timeout {
            kind: TimeoutKind::FirstByte,
            url,
            after: Duration::from_secs(3),
        }
        .to_string();
        assert!(message.contains("first byte"), "{message}");
        assert!(message.contains("first_byte_timeout"), "{message}");
        assert!(
            message.contains("https://example.invalid/simple/"),
            "{message}"
        );
    }
}
