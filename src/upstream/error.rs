//! What can go wrong talking to an upstream, and how it is told.
//!
//! [`UpstreamError`] is the one error type of the upstream client. Each variant says what happened
//! in words an operator can act on (which key to raise, which file to fix), maps to the status a
//! client of wheelgate should see, and holds neither the secret nor an unredacted URL. The errors
//! hyper's client reports are turned into it here too, so that a connect timeout reads as one
//! wherever in the source chain it hides.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use http::StatusCode;
use url::Url;

use super::tls::{certificate_advice, Trust};
use super::{RedactedUrl, SecretError};

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
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` are set but give no usable root certificate.
    #[error(
        "repository {repository}: {variables} gave no usable root certificate ({reason}); point \
         SSL_CERT_FILE at a PEM file of CA certificates or SSL_CERT_DIR at a directory of them, \
         or unset them to use the operating system's store"
    )]
    SystemRootsEnvironment {
        /// The repository.
        repository: String,
        /// The variables and their values, as `SSL_CERT_FILE=<path>`.
        variables: String,
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
    /// The upstream is a wheelgate whose download rules or origin controls refused (its 403
    /// carried `X-Wheelgate-Denied`): passed on as a 403 with its reason, never retried, never
    /// answered from a stored copy.
    #[error(
        "refused by the upstream wheelgate of repository {}: {}",
        .0.repository,
        .0.reason
    )]
    Denied(Box<Denial>),
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
    /// The upstream's TLS certificate was refused (an unknown issuer, another host's name,
    /// outside its dates).
    #[error(
        "the upstream at {url} presented a TLS certificate that wheelgate does not accept \
         ({reason}); {advice}"
    )]
    Certificate {
        /// The URL, redacted.
        url: RedactedUrl,
        /// What rustls said.
        reason: String,
        /// What to do about it: which setting to change.
        advice: String,
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
    /// A `file_hosts` entry is not a host or `host:port`.
    #[error(
        "repository {repository}: file_hosts entry {entry:?} {reason}; write a host name or \
         host:port such as \"files.example.internal\" or \"10.0.0.5:8443\""
    )]
    InvalidFileHost {
        /// The repository.
        repository: String,
        /// The entry as written.
        entry: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The destination policy refused a link or redirect (see `destination`).
    #[error(
        "repository {repository}: will not fetch {url}: {reason}; if that host belongs to the \
         index, add it to file_hosts in the repository's table"
    )]
    Refused {
        /// The repository.
        repository: String,
        /// The URL, redacted.
        url: RedactedUrl,
        /// The refusal: the host, its address and the address class (boxed: a rare error, and
        /// every `Result` of the client would carry its size).
        reason: Box<super::Refused>,
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
            UpstreamError::Denied(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    /// The rules of an upstream wheelgate that refused, for our own `X-Wheelgate-Denied`.
    pub fn denied_by(&self) -> Option<&str> {
        match self {
            UpstreamError::Denied(denial) => Some(&denial.rules),
            _ => None,
        }
    }

    /// True when the upstream said the page or file does not exist (404 or 410).
    pub fn is_not_found(&self) -> bool {
        matches!(self, UpstreamError::NotFound { .. })
    }
}

/// A chained wheelgate's policy refusal ([`UpstreamError::Denied`]).
#[derive(Debug)]
pub struct Denial {
    /// The repository.
    pub repository: String,
    /// The URL, redacted.
    pub url: RedactedUrl,
    /// The upstream's `X-Wheelgate-Denied`: the rules or controls that refused.
    pub rules: String,
    /// The upstream's own explanation (its response body's first line, at most 1 KiB), which
    /// names the package and the rule.
    pub reason: String,
}

/// Turns a hyper client error into ours. A connect timeout surfaces as an `io::ErrorKind::TimedOut`
/// somewhere in the source chain (also when it happened on the way to a proxy); a refused
/// certificate as a rustls error wrapped in `io::Error`s (see [`rustls_error`]). `trust` is what
/// the client trusts, for the advice of a refused certificate.
pub(super) fn classify_client_error(
    error: &(dyn std::error::Error + 'static),
    url: &Url,
    connect_timeout: Duration,
    trust: &Trust,
) -> UpstreamError {
    let url = RedactedUrl::new(url);
    let mut timed_out = false;
    let mut certificate = None;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        let io = e.downcast_ref::<std::io::Error>();
        if io.is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            timed_out = true;
        }
        if let Some(tls @ rustls::Error::InvalidCertificate(refused)) = rustls_error(e) {
            certificate = Some((tls.to_string(), certificate_advice(refused, trust)));
        }
        current = e.source();
    }
    if let Some((reason, advice)) = certificate {
        return UpstreamError::Certificate {
            url,
            reason,
            advice,
        };
    }
    if timed_out {
        return UpstreamError::Timeout {
            kind: TimeoutKind::Connect,
            url,
            after: connect_timeout,
        };
    }
    let reason = error_chain(error);
    let is_connect = error
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect);
    if is_connect {
        UpstreamError::Connect { url, reason }
    } else {
        UpstreamError::Protocol { url, reason }
    }
}

/// The rustls error `error` is or wraps. tokio-rustls wraps it in an `io::Error` and hyper-rustls
/// wraps that in another; `io::Error::source` skips what it wraps, so the wrapped errors are
/// looked at through `get_ref`.
fn rustls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = error;
    loop {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        let inner = current.downcast_ref::<std::io::Error>()?.get_ref()?;
        current = inner;
    }
}

/// "outer: inner: innermost", skipping links that repeat their parent's text.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = e.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// A connector error wrapping an I/O error, as hyper's client reports one.
    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Wrapper(#[source] std::io::Error);

    fn trust() -> Trust {
        Trust {
            system: super::super::tls::SystemRoots::Platform,
            ca_file: None,
        }
    }

    #[test]
    fn a_refused_certificate_says_which_settings_to_change() {
        let url = Url::parse("https://example.invalid/simple/x/").unwrap();
        // As hyper-rustls reports it: the rustls error inside tokio-rustls' io::Error, inside
        // one of its own.
        let refused = Wrapper(std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        )));
        let err = classify_client_error(&refused, &url, Duration::from_secs(5), &trust());
        assert!(matches!(err, UpstreamError::Certificate { .. }), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let message = err.to_string();
        for part in [
            "https://example.invalid/simple/x/",
            "UnknownIssuer",
            "ca_file",
            "SSL_CERT_FILE",
            "native_roots",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }
    }

    #[test]
    fn a_timed_out_connect_is_a_connect_timeout() {
        let url = Url::parse("https://user:pw@example.invalid/simple/?t=1").unwrap();
        let timed_out = Wrapper(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "connect timeout",
        ));
        let err = classify_client_error(&timed_out, &url, Duration::from_secs(5), &trust());
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::Connect,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("connect_timeout") && !err.to_string().contains("pw"),
            "{err}"
        );
        let reset = Wrapper(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        ));
        let err = classify_client_error(&reset, &url, Duration::from_secs(5), &trust());
        assert!(
            matches!(err, UpstreamError::Protocol { ref reason, .. }
                if reason == "tcp connect error: reset"),
            "{err:?}"
        );
    }
}
