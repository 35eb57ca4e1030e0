//! Building responses: bodies, plain-text errors a person can act on, redirects.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use http::{Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

/// Any error a response body can end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The one body type every handler returns: whole buffers for pages and errors, streams for files.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// The header naming the rules or controls that refused a request (SPEC §2).
pub const X_WHEELGATE_DENIED: HeaderName = HeaderName::from_static("x-wheelgate-denied");

pub use crate::repository::X_WHEELGATE_CACHE;
pub use crate::upstream::X_WHEELGATE_RETRIED;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn empty() -> Body {
    Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed_unsync()
}

pub fn stream<S, E>(stream: S) -> Body
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    StreamBody::new(stream.map_ok(Frame::data).map_err(Into::into)).boxed_unsync()
}

/// A complete response with a body and its content type.
pub fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let body = body.into();
    let length = body.len();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
    response
}

/// A plain-text error. The reason is also the HTTP/1.1 reason phrase, because pip shows little
/// else of a failed request.
pub fn error(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = with_body(status, "text/plain; charset=utf-8", format!("{reason}\n"));
    if let Some(phrase) = reason_phrase(reason) {
        response.extensions_mut().insert(phrase);
    }
    response
}

/// A 301 to `location` (a path on this server).
pub fn redirect(location: &str) -> Response<Body> {
    let mut response = with_body(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain; charset=utf-8",
        format!("moved to {location}\n"),
    );
    match HeaderValue::from_str(location) {
        Ok(value) => {
            response.headers_mut().insert(LOCATION, value);
            response
        }
        // Locations are built from normalised names, which are plain ASCII; anything else is a bug
        // worth a clear 500 rather than a redirect to nowhere.
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not build the redirect location",
        ),
    }
}

/// A reason phrase must be visible ASCII and short; anything else falls back to the standard one.
fn reason_phrase(reason: &str) -> Option<hyper::ext::ReasonPhrase> {
    let line: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(200)
        .collect();
    hyper::ext::ReasonPhrase::try_from(line.into_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_phrases_are_sanitised() {
        let phrase = reason_phrase("denied by rule \"no-old\"\r\nX-Evil: 1").unwrap();
        assert_eq!(phrase.as_bytes(), b"denied by rule \"no-old\"??X-Evil: 1");
        let long = "x".repeat(500);
        assert_eq!(reason_phrase(&long).unwrap().as_bytes().len(), 200);
    }

    #[test]
    fn errors_are_plain_text_with_the_reason() {
        let response = error(StatusCode::NOT_FOUND, "no such project");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.headers()[CONTENT_LENGTH], "16");
    }
}
