//! The client side of a remote repository: fetching bytes from an upstream simple index (SPEC §3).
//!
//! Everything that talks to an upstream goes through [`Upstream`], so that the rules which keep a
//! deployment safe are enforced in one place: the upstream token is only ever sent to the
//! upstream's own origin (or to `auth_hosts`) and never after a redirect left that origin; a
//! rotated token is picked up on the next request; retries are bounded and polite; every wait has
//! a timeout; and no error message, log line or `Debug` output can show the token or a URL's
//! userinfo and query. This module knows nothing about pages: it hands back bytes and lets the
//! page parser judge them.
//!
//! [`Upstream`] itself lives in `client`; each rule it keeps has a module of its own beside it:
//! `auth` (who may receive the credentials), `redirect` (following redirects ourselves), `retry`
//! (when to try again and how long to wait, with `http_date` for `Retry-After`), `proxy`
//! (`CONNECT` tunnels chosen by `HTTPS_PROXY` and `NO_PROXY`), `tls` (the roots we trust), `body`
//! (reading bodies under the idle timeout), `destination` (the addresses a link may lead to:
//! no loopback, private or link-local one unless the upstream is on one or `file_hosts` lists
//! it), `error` (what can go wrong, and how hyper's errors
//! become ours), and `redact` (URLs fit to be shown); the token file is read by `crate::secret`.

mod auth;
mod body;
mod client;
mod destination;
mod error;
mod http_date;
mod proxy;
mod redact;
mod redirect;
mod retry;
#[cfg(test)]
mod testing;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use url::Url;

pub use crate::secret::{Secret, SecretError, SecretFile};
pub use body::FileBody;
pub use client::{Upstream, READ_BUFFER};
pub use destination::{classify, AddressClass, Refused};
pub(crate) use error::error_chain;
pub use error::{TimeoutKind, UpstreamError};
pub use proxy::ProxyMode;
pub use redact::RedactedUrl;

/// On an error response (502/503/504) wheelgate sends because its own upstream failed, after the
/// retries it makes itself: a wheelgate chained in front (a sidecar) does not retry such an
/// answer, so that retries do not multiply through the hops. Its value is `upstream`.
pub const X_WHEELGATE_RETRIED: http::HeaderName =
    http::HeaderName::from_static("x-wheelgate-retried");

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
    /// Trust the operating system's roots (or `SSL_CERT_FILE` / `SSL_CERT_DIR`) as well as the
    /// bundled Mozilla roots; `false`: the bundled roots only.
    pub native_roots: bool,
    /// Credentials for the upstream, if it needs any.
    pub auth: Option<AuthSettings>,
    /// Hosts (`host` or `host:port`) that may be connected to although they are on a loopback,
    /// private or link-local address of a class the upstream itself is not on.
    pub file_hosts: Vec<String>,
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
