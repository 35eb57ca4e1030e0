//! Following the upstream's redirects in our own code, hop by hop.
//!
//! hyper-util's client does not follow redirects, and a client that did would carry our
//! `Authorization` header wherever the upstream pointed. Here each hop is a request of its own,
//! sent through the retrying `send` with one retry budget for the whole chain: the chain is
//! bounded, a relative `Location` is resolved against the URL that sent it, only http and https
//! are followed, and once a hop leaves the origin the chain started from, no later hop carries the
//! credentials, not even one that comes back to it.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use url::Url;

use super::client::{check_fetchable, Upstream};
use super::error::Denial;
use super::retry::RetryBudget;
use super::{RedactedUrl, UpstreamError};

/// Redirect hops followed before giving up (browsers use 20, curl 50; an index needs one or two).
const MAX_REDIRECTS: usize = 10;

impl Upstream {
    /// Sends a GET and follows redirects, returning the final URL and a response that is a
    /// success (200/203, or 304 when `conditional`); every other outcome becomes an error.
    pub(super) async fn get(
        &self,
        start: &Url,
        mut headers: HeaderMap,
        conditional: bool,
    ) -> Result<(Url, Response<Incoming>), UpstreamError> {
        check_fetchable(start)?;
        // Bytes must arrive exactly as published (they are hashed), and we carry no decoder.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.insert(header::USER_AGENT, self.inner.user_agent.clone());

        let mut retry = RetryBudget {
            left: self.inner.retries,
            attempt: 0,
        };
        let mut url = start.clone();
        // Once a hop leaves the origin the chain started from, the rest of the chain is not ours.
        let mut origin_kept = true;
        let mut hops = 0usize;
        loop {
            let send_auth = origin_kept && self.may_receive_auth(&url);
            let response = self.send(&url, &headers, send_auth, &mut retry).await?;
            let status = response.status();
            if is_redirect(status) {
                if hops >= MAX_REDIRECTS {
                    return Err(UpstreamError::TooManyRedirects {
                        url: RedactedUrl::new(start),
                        limit: MAX_REDIRECTS,
                    });
                }
                hops += 1;
                let next = redirect_target(&url, response.headers())?;
                if next.origin() != start.origin() {
                    origin_kept = false;
                }
                tracing::debug!(
                    repository = %self.inner.repository,
                    from = %RedactedUrl::new(&url),
                    to = %RedactedUrl::new(&next),
                    "following upstream redirect"
                );
                url = next;
                continue;
            }
            return match status {
                StatusCode::OK | StatusCode::NON_AUTHORITATIVE_INFORMATION => Ok((url, response)),
                StatusCode::NOT_MODIFIED if conditional => Ok((url, response)),
                StatusCode::NOT_MODIFIED => Err(UpstreamError::Protocol {
                    url: RedactedUrl::new(&url),
                    reason: "304 Not Modified to a request that was not conditional".to_owned(),
                }),
                StatusCode::FORBIDDEN if response.headers().contains_key(DENIED) => {
                    Err(self.denial(&url, response).await)
                }
                _ => Err(self.status_error(&url, status, send_auth)),
            };
        }
    }

    /// A chained wheelgate's refusal: its rules from the header, its reason from the body.
    async fn denial(&self, url: &Url, response: Response<Incoming>) -> UpstreamError {
        let rules = response
            .headers()
            .get(DENIED)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = Limited::new(response.into_body(), DENIAL_BODY_LIMIT).collect();
        let reason = match tokio::time::timeout(DENIAL_BODY_WAIT, body).await {
            Ok(Ok(body)) => {
                let bytes = body.to_bytes();
                let text = String::from_utf8_lossy(&bytes);
                text.lines().next().unwrap_or_default().trim().to_owned()
            }
            _ => String::new(),
        };
        let reason = if reason.is_empty() {
            format!("denied by {rules}")
        } else {
            reason
        };
        UpstreamError::Denied(Box::new(Denial {
            repository: self.inner.repository.clone(),
            url: RedactedUrl::new(url),
            rules,
            reason,
        }))
    }
}

/// The header by which a wheelgate upstream marks its policy refusals (download rules, origin
/// controls), unlike a refusal of our credentials.
const DENIED: &str = "x-wheelgate-denied";

/// How much of a refusal's body is read for its reason.
const DENIAL_BODY_LIMIT: usize = 1024;

/// How long a refusal's body may take to arrive before it is given up.
const DENIAL_BODY_WAIT: Duration = Duration::from_secs(5);

fn is_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

fn redirect_target(from: &Url, headers: &HeaderMap) -> Result<Url, UpstreamError> {
    let bad = |reason: String| UpstreamError::BadRedirect {
        url: RedactedUrl::new(from),
        reason,
    };
    let location = headers
        .get(header::LOCATION)
        .ok_or_else(|| bad("the redirect has no Location header".to_owned()))?
        .to_str()
        .map_err(|_| bad("the Location header is not ASCII text".to_owned()))?;
    let next = from
        .join(location.trim())
        .map_err(|e| bad(format!("the Location header is not a valid URL ({e})")))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err(bad(format!(
            "it points to a {}: URL; only http and https are followed",
            next.scheme()
        )));
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, OnceLock};

    use super::*;
    use crate::upstream::testing::*;
    use crate::upstream::PageFetch;

    #[tokio::test]
    async fn auth_is_dropped_for_the_rest_of_a_chain_that_left_the_origin() {
        let back = Arc::new(OnceLock::<String>::new());
        let back_for_files = Arc::clone(&back);
        let files = serve(move |_, _| {
            let location = back_for_files.get().cloned().unwrap_or_default();
            async move { redirect(302, &location) }
        })
        .await;
        let to_files = files.url("/hop").to_string();
        let index = serve(move |seen, _| {
            let response = if seen.path == "/start" {
                redirect(302, &to_files)
            } else {
                text(200, "done")
            };
            async move { response }
        })
        .await;
        back.set(index.url("/end").to_string()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // The files host may receive credentials on its own, and the chain returns to the
        // upstream's origin: neither may carry them once the chain left the origin it began at.
        let hosts = vec![format!("127.0.0.1:{}", files.addr.port())];
        let up = upstream(with_auth(
            settings(&index.url("/simple/")),
            &token_file(dir.path(), "tok-1"),
            hosts,
        ));
        let fetch = up.fetch_file(&index.url("/start")).await.unwrap();
        assert_eq!(fetch.final_url, index.url("/end"));
        let index_seen = index.seen();
        assert_eq!(index_seen[0].authorization(), Some(basic("tok-1")));
        assert_eq!(index_seen[1].path, "/end");
        assert_eq!(index_seen[1].authorization(), None);
        assert_eq!(files.seen()[0].authorization(), None);
    }

    #[tokio::test]
    async fn redirects_are_followed_relative_to_the_current_url() {
        let index = serve(|seen, _| async move {
            match seen.path.as_str() {
                "/a/r1" => redirect(301, "r2"),
                "/a/r2" => redirect(307, "/final"),
                _ => text(200, "final page"),
            }
        })
        .await;
        let up = upstream(settings(&index.url("/simple/")));
        match page(&up, &index.url("/a/r1")).await.unwrap() {
            PageFetch::Fresh {
                final_url, body, ..
            } => {
                assert_eq!(final_url, index.url("/final"));
                assert_eq!(body.as_ref(), b"final page");
            }
            other => panic!("expected a fresh page, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn redirect_loops_are_bounded() {
        let index = serve(|_, _| async { redirect(302, "/loop?token=abc") }).await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/loop")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::TooManyRedirects {
                    limit: MAX_REDIRECTS,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(
            err.to_string().contains(&index.url("/loop").to_string()),
            "{err}"
        );
        assert_eq!(index.seen().len(), MAX_REDIRECTS + 1);
    }

    #[tokio::test]
    async fn redirects_to_other_schemes_are_refused() {
        let index = serve(|_, _| async { redirect(302, "ftp://files.example.invalid/x") }).await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/simple/x/")).await.unwrap_err();
        assert!(matches!(err, UpstreamError::BadRedirect { .. }), "{err:?}");
        assert!(err.to_string().contains("ftp"), "{err}");
    }
}
