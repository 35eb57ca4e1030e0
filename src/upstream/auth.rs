//! Who may receive the upstream credentials, and the `Authorization` header built from them.
//!
//! An index token is the most valuable thing wheelgate holds, so all that decides whether a request
//! carries it sits here: the upstream's own origin, and the `auth_hosts` entries (a host, and a
//! port when the entry names one). The header is built from the secret file as it is at that
//! moment, so a rotated token is used on the next request, and it is marked sensitive. Whether a
//! hop of a redirect chain may still carry it is the redirect loop's call (`redirect.rs`).

use base64::Engine as _;
use http::HeaderValue;
use url::Url;

use super::client::Upstream;
use super::{AuthSettings, RedactedUrl, UpstreamError};
use crate::secret::SecretFile;

/// The credentials and the hosts that may receive them.
pub(super) struct UpstreamAuth {
    pub(super) username: String,
    pub(super) secret: SecretFile,
    pub(super) hosts: Vec<AuthHost>,
}

impl Upstream {
    /// True when `url` may receive the credentials on its own merits: the upstream's own origin
    /// or an `auth_hosts` host. (Redirect history is the caller's business.)
    pub(super) fn may_receive_auth(&self, url: &Url) -> bool {
        match &self.inner.auth {
            None => false,
            Some(auth) => {
                url.origin() == self.inner.root.origin()
                    || auth
                        .hosts
                        .iter()
                        .any(|h| h.matches(url, self.inner.root.scheme()))
            }
        }
    }

    /// The `Authorization` header, built from the secret file as it is now.
    pub(super) fn authorization(&self, url: &Url) -> Result<Option<HeaderValue>, UpstreamError> {
        let Some(auth) = &self.inner.auth else {
            return Ok(None);
        };
        let secret = auth
            .secret
            .current()
            .map_err(|source| UpstreamError::Credentials {
                repository: self.inner.repository.clone(),
                source,
            })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            auth.username,
            secret.expose()
        ));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}")).map_err(|_| {
            UpstreamError::InvalidRequestHeader {
                name: "Authorization",
                url: RedactedUrl::new(url),
            }
        })?;
        // Keeps it out of hyper's Debug output and out of HTTP/2's HPACK dynamic table.
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

pub(super) fn build_auth(
    repository: &str,
    settings: &AuthSettings,
) -> Result<UpstreamAuth, UpstreamError> {
    if settings.username.contains(':') {
        return Err(UpstreamError::InvalidUsername {
            repository: repository.to_owned(),
        });
    }
    let hosts = parse_hosts(&settings.auth_hosts, |entry, reason| {
        UpstreamError::InvalidAuthHost {
            repository: repository.to_owned(),
            entry: entry.to_owned(),
            reason,
        }
    })?;
    Ok(UpstreamAuth {
        username: settings.username.clone(),
        secret: SecretFile::new(settings.password_file.clone()),
        hosts,
    })
}

/// Parses host entries (`auth_hosts`, `file_hosts`); `invalid` makes the error for an entry and
/// what is wrong with it.
pub(super) fn parse_hosts(
    entries: &[String],
    invalid: impl Fn(&str, &'static str) -> UpstreamError,
) -> Result<Vec<AuthHost>, UpstreamError> {
    entries
        .iter()
        .map(|entry| AuthHost::parse(entry).map_err(|reason| invalid(entry, reason)))
        .collect()
}

/// An `auth_hosts` (or `file_hosts`) entry: a host, and a port when the entry named one (otherwise the default
/// port of the scheme).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct AuthHost {
    host: url::Host<String>,
    port: Option<u16>,
}

impl AuthHost {
    pub(super) fn parse(entry: &str) -> Result<AuthHost, &'static str> {
        let entry = entry.trim();
        if entry.is_empty() {
            return Err("is empty");
        }
        if entry.contains("://") {
            return Err("has a scheme");
        }
        if entry.contains(['/', '@', '?', '#']) {
            return Err("is not a bare host (it has a path, userinfo, query or fragment)");
        }
        let (host, port) = if entry.starts_with('[') {
            // An IPv6 literal: "[::1]" or "[::1]:8443".
            let close = entry
                .find(']')
                .ok_or("has an unclosed '[' (IPv6 literal)")?;
            let (host, rest) = entry.split_at(close + 1);
            match rest.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None if rest.is_empty() => (host, None),
                None => return Err("has text after the IPv6 literal"),
            }
        } else {
            match entry.split_once(':') {
                Some((_, port)) if port.contains(':') => {
                    return Err("has more than one ':' (write IPv6 literals in brackets)")
                }
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        let port = port
            .map(|p| {
                p.parse::<u16>()
                    .map_err(|_| "has a port that is not a number from 0 to 65535")
            })
            .transpose()?;
        let host = url::Host::parse(host).map_err(|_| "is not a valid host name or IP address")?;
        Ok(AuthHost { host, port })
    }

    /// Whether a connection to `host` on `port` goes to this entry: its host, and its port when
    /// it names one (any port otherwise). For `file_hosts`, where no secret is at stake.
    pub(super) fn is_destination(&self, host: &url::Host<String>, port: u16) -> bool {
        self.host == *host && self.port.is_none_or(|own| own == port)
    }

    /// Whether `url` is this host, for an upstream whose URL has the scheme `upstream_scheme`.
    /// The token travels over https, or over http only when the upstream itself is http (an
    /// https upstream's token never goes out in cleartext); without a port in the entry, only
    /// the scheme's default port is this host.
    fn matches(&self, url: &Url, upstream_scheme: &str) -> bool {
        let scheme_allowed = match url.scheme() {
            "https" => true,
            "http" => upstream_scheme == "http",
            _ => false,
        };
        let port_matches = match self.port {
            Some(port) => url.port_or_known_default() == Some(port),
            // `Url` leaves out a port that is the scheme's default.
            None => url.port().is_none(),
        };
        scheme_allowed
            && port_matches
            && url.host().map(|h| h.to_owned()).as_ref() == Some(&self.host)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use http::{header, StatusCode};

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::PageFetch;

    #[tokio::test]
    async fn auth_and_request_headers_go_to_the_upstream_origin() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            vec![],
        ));
        let fetched = page(&up, &index.url("/simple/a/")).await.unwrap();
        assert!(matches!(fetched, PageFetch::Fresh { ref body, .. } if body.as_ref() == b"page"));
        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-1")));
        assert_eq!(
            seen[0].header(header::ACCEPT).as_deref(),
            Some("application/vnd.pypi.simple.v1+json, text/html;q=0.1")
        );
        assert_eq!(
            seen[0].header(header::ACCEPT_ENCODING).as_deref(),
            Some("identity")
        );
        assert!(seen[0]
            .header(header::USER_AGENT)
            .is_some_and(|ua| ua.starts_with("wheelgate/")));
    }

    #[tokio::test]
    async fn auth_is_not_sent_to_another_origin() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let files = serve(|_, _| async { text(200, "wheel bytes") }).await;
        let dir = tempfile::tempdir().unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            vec![],
        ));
        let fetch = up
            .fetch_file(&files.url("/f/x-1.0-py3-none-any.whl"))
            .await
            .unwrap();
        assert_eq!(fetch.content_length, Some(11));
        assert_eq!(drain(fetch.body).await.unwrap(), b"wheel bytes");
        assert_eq!(files.seen()[0].authorization(), None);
        // Same host, other port: another origin too.
        assert_eq!(index.addr.ip(), files.addr.ip());
    }

    #[tokio::test]
    async fn auth_is_sent_to_auth_hosts() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let files = serve(|_, _| async { text(200, "wheel") }).await;
        let elsewhere = serve(|_, _| async { text(200, "wheel") }).await;
        let dir = tempfile::tempdir().unwrap();
        let hosts = vec![format!("127.0.0.1:{}", files.addr.port())];
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            hosts,
        ));
        drain(up.fetch_file(&files.url("/f")).await.unwrap().body)
            .await
            .unwrap();
        drain(up.fetch_file(&elsewhere.url("/f")).await.unwrap().body)
            .await
            .unwrap();
        assert_eq!(files.seen()[0].authorization(), Some(basic("tok-1")));
        assert_eq!(
            elsewhere.seen()[0].authorization(),
            None,
            "the entry named a port"
        );
    }

    // ----- the secret -----

    #[tokio::test]
    async fn a_rewritten_secret_is_used_on_the_next_request() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), "tok-a");
        let up = upstream(with_auth(settings(&index.url("/simple/")), &path, vec![]));
        page(&up, &index.url("/simple/")).await.unwrap();
        std::fs::write(&path, "tok-bb\n").unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();
        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-a")));
        assert_eq!(seen[1].authorization(), Some(basic("tok-bb")));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn a_kubernetes_symlink_swap_is_used_on_the_next_request() {
        use std::os::unix::fs::symlink;
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_a")).unwrap();
        std::fs::write(root.join("..2026_a/token"), "tok-a").unwrap();
        symlink("..2026_a", root.join("..data")).unwrap();
        symlink("..data/token", root.join("token")).unwrap();
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &root.join("token"),
            vec![],
        ));
        page(&up, &index.url("/simple/")).await.unwrap();

        std::fs::create_dir(root.join("..2026_b")).unwrap();
        std::fs::write(root.join("..2026_b/token"), "tok-b").unwrap();
        symlink("..2026_b", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        page(&up, &index.url("/simple/")).await.unwrap();

        let seen = index.seen();
        assert_eq!(seen[0].authorization(), Some(basic("tok-a")));
        assert_eq!(seen[1].authorization(), Some(basic("tok-b")));
    }

    #[tokio::test]
    async fn a_missing_secret_is_a_502_naming_the_file() {
        let index = serve(|_, _| async { text(200, "page") }).await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-mounted");
        let up = upstream(with_auth(settings(&index.url("/simple/")), &path, vec![]));
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        let message = err.to_string();
        assert!(
            message.starts_with("cannot read the upstream credentials for repository pypi from "),
            "{message}"
        );
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(
            message.ends_with("mount the secret or fix password_file"),
            "{message}"
        );
        assert!(
            index.seen().is_empty(),
            "no request goes out without its credentials"
        );
    }

    #[tokio::test]
    async fn debug_output_never_shows_the_secret() {
        let index = serve(|seen, _| async move {
            if seen.path == "/deny" {
                text(401, "")
            } else {
                text(200, "page")
            }
        })
        .await;
        let dir = tempfile::tempdir().unwrap();
        let s = with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "zz-secret-zz"),
            vec![],
        );
        let up = upstream(s.clone());
        let fetched = page(&up, &index.url("/simple/")).await.unwrap();
        let file = up.fetch_file(&index.url("/f")).await.unwrap();
        let err = page(&up, &index.url("/deny")).await.unwrap_err();
        let encoded = basic("zz-secret-zz");
        for shown in [
            format!("{up:?}"),
            format!("{s:?}"),
            format!("{fetched:?}"),
            format!("{file:?}"),
            format!("{err:?}"),
            err.to_string(),
        ] {
            assert!(
                !shown.contains("zz-secret-zz") && !shown.contains(&encoded),
                "leaked in {shown}"
            );
        }
        assert!(
            format!("{up:?}").contains("token"),
            "the Debug output names the secret file"
        );
    }

    // ----- construction and pure helpers -----

    #[test]
    fn bad_auth_settings_are_refused() {
        let root = Url::parse("https://example.invalid/simple/").unwrap();
        let mut s = with_auth(
            settings(&root),
            Path::new("/run/secrets/token"),
            vec!["https://files.example.invalid".to_owned()],
        );
        let err = Upstream::with_proxy(s.clone(), direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::InvalidAuthHost { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("https://files.example.invalid"),
            "{err}"
        );
        if let Some(auth) = s.auth.as_mut() {
            auth.auth_hosts.clear();
            auth.username = "a:b".to_owned();
        }
        let err = Upstream::with_proxy(s, direct()).unwrap_err();
        assert!(
            matches!(err, UpstreamError::InvalidUsername { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn auth_hosts_parse_and_match() {
        let url = |text: &str| Url::parse(text).unwrap();
        let default_port = AuthHost::parse("Files.Example.Invalid").unwrap();
        assert!(default_port.matches(&url("https://files.example.invalid/x"), "https"));
        assert!(!default_port.matches(&url("https://evil.example.invalid/x"), "https"));
        assert!(!default_port.matches(
            &url("https://files.example.invalid.evil.invalid/x"),
            "https"
        ));
        // Without a port in the entry, only the scheme's default port.
        assert!(!default_port.matches(&url("https://files.example.invalid:8443/x"), "https"));
        // An https upstream's token never goes out over http, on any port.
        assert!(!default_port.matches(&url("http://files.example.invalid/x"), "https"));
        assert!(!default_port.matches(&url("http://files.example.invalid:8080/x"), "https"));
        // An http upstream's token may go to the host over http or https.
        assert!(default_port.matches(&url("http://files.example.invalid/x"), "http"));
        assert!(default_port.matches(&url("https://files.example.invalid/x"), "http"));
        assert!(!default_port.matches(&url("ftp://files.example.invalid/x"), "http"));

        let with_port = AuthHost::parse("files.example.invalid:443").unwrap();
        assert!(with_port.matches(&url("https://files.example.invalid/x"), "https"));
        assert!(!with_port.matches(&url("http://files.example.invalid:443/x"), "https"));
        assert!(!with_port.matches(&url("http://files.example.invalid/x"), "http"));

        let v6 = AuthHost::parse("[::1]:8443").unwrap();
        assert!(v6.matches(&url("https://[::1]:8443/x"), "https"));
        assert!(!v6.matches(&url("https://[::1]/x"), "https"));

        for bad in [
            "",
            "https://files.example.invalid",
            "files.example.invalid/simple",
            "a:b:c",
            "host:99999",
            "user@host",
            "[::1",
        ] {
            assert!(AuthHost::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
