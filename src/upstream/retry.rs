//! Sending one request, with the first-byte timeout, and sending it again when that is worth it.
//!
//! A GET that failed before its response headers arrived (a refused or reset connection, a
//! first-byte timeout) or that was answered 429 or 502/503/504 is sent again while the fetch's
//! retry budget lasts, after the wait the upstream asked for in `Retry-After` or else after an
//! exponential backoff with jitter, so that many proxies retrying at once spread out. A
//! `Retry-After` longer than a waiting client should sit through ends the fetch instead. Nothing
//! is retried once the response headers are in, nor an answer of a chained wheelgate marked
//! `X-Wheelgate-Retried` (it has retried its own upstream already: retrying it too would multiply
//! the upstream's requests by every hop's retries).

use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method, Response, StatusCode};
use hyper::body::Incoming;
use rand::Rng as _;
use url::Url;

use super::client::Upstream;
use super::destination::refusal;
use super::error::classify_client_error;
use super::http_date::parse_http_date;
use super::{RedactedUrl, TimeoutKind, UpstreamError};

/// The first retry waits about this long; each further one doubles it.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// No backoff wait is longer than this.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is not waited for: a client of ours is waiting meanwhile, and
/// pip's own timeout is 15 s per read.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

impl Upstream {
    /// One request to one URL, retried on connection failures, first-byte timeouts, 429 and
    /// 502/503/504 while the budget lasts. Returns whatever response ended the retrying.
    pub(super) async fn send(
        &self,
        url: &Url,
        headers: &HeaderMap,
        send_auth: bool,
        retry: &mut RetryBudget,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let inner = &self.inner;
        loop {
            let request = self.build_request(url, headers, send_auth)?;
            let may_retry = retry.left > 0 && is_idempotent(request.method());
            let failure =
                match tokio::time::timeout(inner.first_byte_timeout, inner.client.request(request))
                    .await
                {
                    Ok(Ok(response)) => {
                        let status = response.status();
                        // A chained wheelgate that answers so has retried its own upstream.
                        let retried_upstream =
                            response.headers().contains_key(super::X_WHEELGATE_RETRIED);
                        if !may_retry || !retryable_status(status) || retried_upstream {
                            return Ok(response);
                        }
                        let delay = match retry_after(status, response.headers(), SystemTime::now())
                        {
                            Some(wait) if wait > MAX_RETRY_AFTER => {
                                return Err(UpstreamError::RetryAfterTooLong {
                                    url: RedactedUrl::new(url),
                                    status,
                                    wait,
                                    max: MAX_RETRY_AFTER,
                                });
                            }
                            Some(wait) => wait,
                            None => backoff(retry.attempt),
                        };
                        (
                            UpstreamError::Status {
                                url: RedactedUrl::new(url),
                                status,
                            },
                            delay,
                        )
                    }
                    Ok(Err(error)) => {
                        // A destination the policy refuses is refused again: not retried.
                        if let Some(refused) = refusal(&error) {
                            return Err(UpstreamError::Refused {
                                repository: inner.repository.clone(),
                                url: RedactedUrl::new(url),
                                reason: Box::new(refused.clone()),
                            });
                        }
                        // Any failure before response headers is retried, not only connect
                        // errors: a GET that died before its answer (a reset pooled
                        // connection) is safe to repeat.
                        let error =
                            classify_client_error(&error, url, inner.connect_timeout, &inner.trust);
                        // A refused certificate is refused again: asking again only delays
                        // the message that says what to change.
                        if !may_retry || matches!(error, UpstreamError::Certificate { .. }) {
                            return Err(error);
                        }
                        (error, backoff(retry.attempt))
                    }
                    Err(_elapsed) => {
                        let error = UpstreamError::Timeout {
                            kind: TimeoutKind::FirstByte,
                            url: RedactedUrl::new(url),
                            after: inner.first_byte_timeout,
                        };
                        if !may_retry {
                            return Err(error);
                        }
                        (error, backoff(retry.attempt))
                    }
                };
            let (error, delay) = failure;
            retry.left -= 1;
            retry.attempt += 1;
            tracing::warn!(
                repository = %inner.repository,
                attempt = retry.attempt,
                retries_left = retry.left,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "retrying upstream request"
            );
            tokio::time::sleep(delay).await;
        }
    }
}

/// Retries left for one fetch (all hops of a redirect chain share them) and how many were used,
/// which sets the backoff.
pub(super) struct RetryBudget {
    pub(super) left: u32,
    pub(super) attempt: u32,
}

/// Only requests that can be repeated without side effects are retried. wheelgate only sends
/// GETs today; the check keeps the rule in force should another method ever be added.
fn is_idempotent(method: &Method) -> bool {
    *method == Method::GET || *method == Method::HEAD
}

fn retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// How long the upstream asked us to wait, for the statuses where `Retry-After` means that
/// (429 and 503). `None` when it gave no usable answer.
fn retry_after(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let value = headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // A number too large for u64 is certainly too long to wait.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter: about 100 ms, 200 ms, 400 ms … capped at 5 s, each drawn
/// from the upper half of its step so that many proxies retrying at once spread out.
fn backoff(attempt: u32) -> Duration {
    let step = BACKOFF_START
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(BACKOFF_CAP);
    let half = step / 2;
    let jitter_ms = rand::thread_rng().gen_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;
    use http::HeaderValue;
    use http_body_util::{BodyExt as _, Full};
    use tokio::net::TcpListener;

    use super::*;
    use crate::upstream::testing::*;

    #[tokio::test]
    async fn retry_after_is_honoured_for_429() {
        let index = serve(|_, n| async move {
            if n == 0 {
                Response::builder()
                    .status(429)
                    .header(header::RETRY_AFTER, "1")
                    .body(Full::new(Bytes::new()).boxed())
                    .unwrap()
            } else {
                text(200, "ok")
            }
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 1;
        let up = upstream(s);
        let started = Instant::now();
        page(&up, &index.url("/simple/")).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "waited only {:?}",
            started.elapsed()
        );
        assert_eq!(index.seen().len(), 2);
    }

    #[tokio::test]
    async fn a_long_retry_after_is_not_waited_for() {
        let index = serve(|_, _| async {
            Response::builder()
                .status(503)
                .header(header::RETRY_AFTER, "120")
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 3;
        let up = upstream(s);
        let err = page(&up, &index.url("/simple/")).await.unwrap_err();
        assert!(
            matches!(err, UpstreamError::RetryAfterTooLong { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("120"), "{err}");
        assert_eq!(index.seen().len(), 1);
    }

    #[tokio::test]
    async fn a_chained_wheelgates_error_after_its_own_retries_is_not_retried() {
        let index = serve(|_, _| async {
            Response::builder()
                .status(502)
                .header(super::super::X_WHEELGATE_RETRIED, "upstream")
                .body(Full::new(Bytes::from_static(b"the upstream failed")).boxed())
                .unwrap()
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 3;
        let up = upstream(s);
        let err = page(&up, &index.url("/simple/x/")).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY, "{err:?}");
        assert_eq!(index.seen().len(), 1);
    }

    async fn flaky_server() -> TestServer {
        serve(|_, n| async move {
            if n < 2 {
                text(503, "busy")
            } else {
                text(200, "ok")
            }
        })
        .await
    }

    #[tokio::test]
    async fn server_errors_are_retried_within_the_budget() {
        let index = flaky_server().await;
        let mut s = settings(&index.url("/simple/"));
        s.retries = 3;
        let up = upstream(s);
        page(&up, &index.url("/simple/")).await.unwrap();
        assert_eq!(index.seen().len(), 3);
    }

    #[tokio::test]
    async fn without_retries_a_server_error_is_a_502() {
        let index = flaky_server().await;
        let up = upstream(settings(&index.url("/simple/")));
        let err = page(&up, &index.url("/simple/x/")).await.unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Status {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
        assert!(
            err.to_string().contains("503") && err.to_string().contains("/simple/x/"),
            "{err}"
        );
        assert_eq!(index.seen().len(), 1);
    }

    #[tokio::test]
    async fn connection_refused_is_a_502_after_retries() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let root = Url::parse(&format!("http://{addr}/simple/")).unwrap();
        let mut s = settings(&root);
        s.retries = 1;
        let err = page(&upstream(s), &root).await.unwrap_err();
        assert!(matches!(err, UpstreamError::Connect { .. }), "{err:?}");
        assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    }

    // ----- the first-byte timeout -----

    #[tokio::test]
    async fn first_byte_timeout_is_a_504() {
        let index = serve(|_, _| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            text(200, "late")
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.first_byte_timeout = Duration::from_millis(200);
        let err = page(&upstream(s), &index.url("/simple/"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Timeout {
                    kind: TimeoutKind::FirstByte,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(err.to_string().contains("first_byte_timeout"), "{err}");
    }

    #[tokio::test]
    async fn first_byte_timeouts_are_retried() {
        // The first answer never starts: only an enforced first-byte timeout gets past it, and
        // the second request proves it was retried rather than waited out.
        let index = serve(|_, n| async move {
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
            text(200, "ok")
        })
        .await;
        let mut s = settings(&index.url("/simple/"));
        s.first_byte_timeout = Duration::from_millis(200);
        s.retries = 1;
        let fetched = tokio::time::timeout(
            Duration::from_secs(30),
            page(&upstream(s), &index.url("/simple/")),
        )
        .await
        .expect("the first-byte timeout was not enforced: the fetch waited for the silent answer");
        fetched.unwrap();
        assert_eq!(index.seen().len(), 2, "one silent answer, then one retry");
    }

    // ----- pure helpers -----

    #[test]
    fn retry_after_reads_seconds_and_dates_for_429_and_503_only() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_770);
        let mut headers = HeaderMap::new();
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            retry_after(StatusCode::TOO_MANY_REQUESTS, &headers, now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(retry_after(StatusCode::BAD_GATEWAY, &headers, now), None);
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now),
            Some(Duration::from_secs(7))
        );
        let later = now + Duration::from_secs(60);
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, later),
            Some(Duration::ZERO)
        );
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(
            retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now),
            None
        );
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("99999999999999999999999"),
        );
        assert!(retry_after(StatusCode::SERVICE_UNAVAILABLE, &headers, now)
            .is_some_and(|d| d > MAX_RETRY_AFTER));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        for _ in 0..50 {
            let first = backoff(0);
            assert!(
                first >= BACKOFF_START / 2 && first <= BACKOFF_START,
                "{first:?}"
            );
            let third = backoff(2);
            assert!(
                third >= Duration::from_millis(200) && third <= Duration::from_millis(400),
                "{third:?}"
            );
            let late = backoff(40);
            assert!(late >= BACKOFF_CAP / 2 && late <= BACKOFF_CAP, "{late:?}");
        }
    }

    #[test]
    fn only_safe_methods_are_retried() {
        assert!(is_idempotent(&Method::GET));
        assert!(is_idempotent(&Method::HEAD));
        assert!(!is_idempotent(&Method::POST));
    }
}
