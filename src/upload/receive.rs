//! Receiving the legacy upload form: the multipart body, streamed, bounded and spooled to disk.
//!
//! `twine upload` and `uv publish` POST one `multipart/form-data` body holding the distribution
//! (the `content` part) and its metadata as text fields. The body is parsed as it arrives (multer):
//! the file goes straight to a temporary file through [`Spool`], and the text fields into a
//! [`Form`] under the bounds of [`Limits`]. The body reaches multer through [`Paced`], which
//! refuses a body over `max_upload_size` the moment it crosses the limit and keeps multer's own
//! buffer small.

use std::error::Error as StdError;
use std::path::Path;

use bytes::Bytes;
use futures_util::Stream;

use super::content::ContentFile;
use super::error::{one_line, shown, UploadError};
use super::form::{Form, FormBuilder};
use super::limits::Limits;
use super::paced::{BodyError, Paced};
use super::spool::Spool;

/// The name of the part holding the distribution file.
const CONTENT: &str = "content";

/// A received upload: its form fields and its file, written to a temporary file that is deleted
/// when this value (or the [`ContentFile`] taken out of it) is dropped.
#[derive(Debug)]
pub struct Received {
    pub form: Form,
    pub content: ContentFile,
}

/// Reads an upload body. `content_type` is the request's Content-Type header (it carries the
/// multipart boundary); the file is written to a new temporary file in `tmp_dir`.
///
/// Errors are 400s (a malformed form, see [`UploadError::status`]), a 413 as soon as the body
/// crosses `limits.max_upload_size`, or a 500 when the temporary file cannot be written. On every
/// error, and when the returned future is dropped unfinished, the temporary file is deleted.
pub async fn receive<S, E>(
    body: S,
    content_type: &str,
    tmp_dir: &Path,
    limits: &Limits,
) -> Result<Received, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<Box<dyn StdError + Send + Sync>>,
{
    let boundary = multer::parse_boundary(content_type).map_err(|_| UploadError::NotMultipart {
        shown: shown(content_type),
    })?;
    let (body, progress) = Paced::new(body, limits.max_upload_size, limits.idle_timeout);
    let mut multipart = multer::Multipart::new(body, boundary);
    let mut form = FormBuilder::new(limits);
    let mut content: Option<ContentFile> = None;
    let mut parts = 0usize;
    while let Some(mut field) = multipart.next_field().await.map_err(from_multer)? {
        progress.part();
        parts += 1;
        if parts > limits.max_fields {
            return Err(UploadError::TooManyFields {
                max: limits.max_fields,
            });
        }
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(UploadError::Malformed {
                reason: "a part has no name in its Content-Disposition".to_owned(),
            });
        };
        if name == CONTENT {
            if content.is_some() {
                return Err(UploadError::DuplicateContent);
            }
            let filename = field
                .file_name()
                .filter(|f| !f.is_empty())
                .ok_or(UploadError::ContentWithoutFilename)?
                .to_owned();
            let mut spool = Spool::create(tmp_dir).await?;
            while let Some(chunk) = field.chunk().await.map_err(from_multer)? {
                progress.chunk(chunk.len());
                spool.write(chunk).await?;
            }
            content = Some(spool.finish(filename).await?);
        } else {
            let max = form.max_len(&name);
            let mut value = Vec::new();
            let mut oversized = false;
            while let Some(chunk) = field.chunk().await.map_err(from_multer)? {
                progress.chunk(chunk.len());
                if !oversized && value.len() + chunk.len() > max {
                    // A field of the upload API is refused here; another is read on and dropped.
                    form.add_oversized(&name)?;
                    oversized = true;
                    value = Vec::new();
                }
                if !oversized {
                    value.extend_from_slice(&chunk);
                }
            }
            if !oversized {
                form.add(&name, value)?;
            }
        }
    }
    let content = content.ok_or(UploadError::MissingContent)?;
    Ok(Received {
        form: form.finish(),
        content,
    })
}

/// Turns multer's error into ours: a body over the limit or a failed read keeps its meaning, and
/// everything else is a malformed form.
fn from_multer(error: multer::Error) -> UploadError {
    match error {
        multer::Error::StreamReadFailed(source) => match source.downcast::<BodyError>() {
            Ok(body) => match *body {
                BodyError::TooLarge { limit } => UploadError::TooLarge { limit },
                BodyError::Read(reason) => UploadError::BodyRead { reason },
                BodyError::Idle { after } => UploadError::BodyIdle { after },
                BodyError::Unframed { max } => UploadError::Malformed {
                    reason: format!(
                        "more than {max} bytes hold no form data (a part's headers never end, or \
                         the boundary is missing)"
                    ),
                },
            },
            Err(other) => UploadError::BodyRead {
                reason: one_line(&other.to_string()),
            },
        },
        multer::Error::IncompleteFieldData { .. } | multer::Error::IncompleteStream => {
            UploadError::Malformed {
                reason: "the body ended before the form's closing boundary".to_owned(),
            }
        }
        other => UploadError::Malformed {
            reason: one_line(&other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use futures_util::{stream, StreamExt};

    use super::*;
    use crate::upload::testutil::{
        chunked, multipart, receive_multipart, Part, BOUNDARY, CONTENT_TYPE,
    };

    /// Small chunks, so that parts and boundaries straddle chunk edges.
    const SMALL_CHUNK: usize = 7;

    fn body_of(bytes: Vec<u8>) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + Unpin {
        chunked(&bytes, SMALL_CHUNK)
    }

    fn entries(dir: &Path) -> usize {
        std::fs::read_dir(dir).unwrap().count()
    }

    async fn receive_parts(parts: &[Part<'_>], dir: &Path) -> Result<Received, UploadError> {
        receive_multipart(parts, SMALL_CHUNK, dir, &Limits::default()).await
    }

    #[tokio::test]
    async fn a_form_with_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = b"not really a wheel, but bytes".to_vec();
        let received = receive_parts(
            &[
                Part::text(":action", "file_upload"),
                Part::text("name", "demo"),
                Part::text("classifiers", "A :: B"),
                Part::file("content", "demo-1.0-py3-none-any.whl", &file),
                Part::text("classifiers", "C :: D"),
            ],
            dir.path(),
        )
        .await
        .unwrap();
        assert_eq!(received.form.action.as_deref(), Some("file_upload"));
        assert_eq!(received.form.values("classifiers"), ["A :: B", "C :: D"]);
        assert_eq!(received.content.filename(), "demo-1.0-py3-none-any.whl");
        assert_eq!(received.content.size(), file.len() as u64);
        assert_eq!(std::fs::read(received.content.path()).unwrap(), file);
        assert_eq!(
            received.content.sha256(),
            crate::simple::Sha256Digest::of(&file)
        );
        assert_eq!(entries(dir.path()), 1);
        drop(received);
        assert_eq!(
            entries(dir.path()),
            0,
            "dropping the upload deletes the file"
        );
    }

    #[tokio::test]
    async fn content_type_must_be_multipart_with_a_boundary() {
        let dir = tempfile::tempdir().unwrap();
        for content_type in [
            "application/json",
            "multipart/form-data",
            "",
            "multipart/mixed; boundary=x",
        ] {
            let err = receive(
                body_of(Vec::new()),
                content_type,
                dir.path(),
                &Limits::default(),
            )
            .await
            .unwrap_err();
            assert!(
                matches!(err, UploadError::NotMultipart { .. }),
                "{content_type}: {err}"
            );
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn missing_and_duplicate_content() {
        let dir = tempfile::tempdir().unwrap();
        let err = receive_parts(&[Part::text("name", "demo")], dir.path())
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::MissingContent), "{err}");

        let err = receive_parts(
            &[
                Part::file("content", "a-1.0.tar.gz", b"one"),
                Part::file("content", "a-1.0.tar.gz", b"two"),
            ],
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::DuplicateContent), "{err}");
        assert_eq!(entries(dir.path()), 0, "the first file was deleted");

        let err = receive_parts(&[Part::text("content", "no filename")], dir.path())
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::ContentWithoutFilename), "{err}");
    }

    #[tokio::test]
    async fn malformed_bodies_are_400s() {
        let dir = tempfile::tempdir().unwrap();
        let good = multipart(&[
            Part::text("name", "demo"),
            Part::file("content", "a-1.0.tar.gz", b"0123456789"),
        ]);
        let cut = good[..good.len() - 20].to_vec();
        let bodies: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("no boundary at all", b"just some bytes".to_vec()),
            ("cut short", cut),
            (
                "part without a name",
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n"
                )
                .into_bytes(),
            ),
            (
                "headers never end",
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"a\"").into_bytes(),
            ),
        ];
        for (what, body) in bodies {
            let err = receive(body_of(body), CONTENT_TYPE, dir.path(), &Limits::default())
                .await
                .unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{what}: {err}");
            let message = err.to_string();
            assert!(!message.contains('\n'), "{what}: {message}");
            assert_eq!(entries(dir.path()), 0, "{what}");
        }
    }

    #[tokio::test]
    async fn size_limit_trips_mid_stream_and_the_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let limit = 1 << 20;
        let head = multipart(&[Part::text("name", "demo")]);
        let head = head[..head.len() - BOUNDARY.len() - 6].to_vec();
        let file_head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; \
             filename=\"demo-1.0.tar.gz\"\r\n\r\n"
        );
        // A body that would go on for 10 GiB, in 64 KiB chunks, counting what was pulled.
        let mut start = head;
        start.extend_from_slice(file_head.as_bytes());
        let (endless, pulled) = endless(start, b'z', 160 << 10);
        let limits = Limits::with_max_upload_size(limit);
        let err = receive(endless, CONTENT_TYPE, dir.path(), &limits)
            .await
            .unwrap_err();
        assert!(
            matches!(err, UploadError::TooLarge { limit: l } if l == limit),
            "{err}"
        );
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        let pulled = pulled.load(Ordering::Relaxed);
        assert!(
            pulled <= limit + (64 << 10),
            "read {pulled} bytes for a limit of {limit}"
        );
        assert_eq!(entries(dir.path()), 0, "the partial file was deleted");
    }

    #[tokio::test]
    async fn a_body_read_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let head = multipart(&[Part::file("content", "a-1.0.tar.gz", b"0123")]);
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from(head[..head.len() - 30].to_vec())),
            Err(std::io::Error::other("connection reset")),
        ];
        let err = receive(
            stream::iter(chunks),
            CONTENT_TYPE,
            dir.path(),
            &Limits::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::BodyRead { .. }), "{err}");
        assert!(err.to_string().contains("connection reset"), "{err}");
        assert_eq!(entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn a_dropped_request_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let head = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; \
             filename=\"demo-1.0.tar.gz\"\r\n\r\nsome bytes of the file"
        );
        // The client sends part of the file, then nothing more: the request never completes.
        let body = stream::iter([Ok::<_, Infallible>(Bytes::from(head))]).chain(stream::pending());
        let dir_path = dir.path().to_owned();
        let limits = Limits::default();
        let request = receive(body, CONTENT_TYPE, &dir_path, &limits);
        let outcome = tokio::time::timeout(std::time::Duration::from_millis(200), request).await;
        assert!(outcome.is_err(), "the request cannot have completed");
        assert_eq!(entries(dir.path()), 0, "the abandoned file was deleted");
    }

    #[tokio::test]
    async fn too_many_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut parts = vec![Part::file("content", "a-1.0.tar.gz", b"x")];
        parts.extend((0..5).map(|_| Part::text("classifiers", "x")));
        let limits = Limits {
            max_fields: 4,
            ..Limits::default()
        };
        let err = receive_multipart(&parts, SMALL_CHUNK, dir.path(), &limits)
            .await
            .unwrap_err();
        assert!(
            matches!(err, UploadError::TooManyFields { max: 4 }),
            "{err}"
        );
        assert_eq!(entries(dir.path()), 0);
    }

    #[tokio::test]
    async fn oversized_fields() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(70 << 10);
        let err = receive_parts(
            &[
                Part::file("content", "a-1.0.tar.gz", b"x"),
                Part::text("summary", &long),
            ],
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::FieldTooLong { .. }), "{err}");
        assert!(err.to_string().contains("\"summary\""), "{err}");

        let received = receive_parts(
            &[
                Part::text("x_unknown", &long),
                Part::file("content", "a-1.0.tar.gz", b"x"),
                Part::text("description", &long),
            ],
            dir.path(),
        )
        .await
        .unwrap();
        assert_eq!(received.form.ignored, ["x_unknown"]);
        assert_eq!(received.form.values("description"), [long]);
    }

    #[tokio::test]
    async fn non_utf8_text_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = receive_parts(
            &[
                Part::bytes("name", &[0x66, 0xff]),
                Part::file("content", "a-1.0.tar.gz", b"x"),
            ],
            dir.path(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::NotUtf8 { .. }), "{err}");
    }

    /// `head`, then `chunks` chunks of 64 KiB of `filler`, counting the bytes pulled.
    fn endless(
        head: Vec<u8>,
        filler: u8,
        chunks: usize,
    ) -> (
        impl Stream<Item = Result<Bytes, Infallible>> + Send + Unpin,
        Arc<AtomicU64>,
    ) {
        let pulled = Arc::new(AtomicU64::new(0));
        let counter = pulled.clone();
        let chunk = Bytes::from(vec![filler; 64 << 10]);
        let body = stream::iter(
            std::iter::once(Bytes::from(head)).chain(std::iter::repeat_n(chunk, chunks)),
        )
        .map(move |c| {
            counter.fetch_add(c.len() as u64, Ordering::Relaxed);
            Ok::<_, Infallible>(c)
        });
        (body, pulled)
    }

    #[tokio::test]
    async fn bodies_that_are_not_forms_are_not_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let heads = [
            (
                "headers that never end",
                format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Junk: "),
            ),
            ("no boundary", "no boundary here".to_owned()),
        ];
        for (what, head) in heads {
            let (body, pulled) = endless(head.into_bytes(), b'z', 1 << 10);
            let err = receive(body, CONTENT_TYPE, dir.path(), &Limits::default())
                .await
                .unwrap_err();
            assert!(
                matches!(err, UploadError::Malformed { .. }),
                "{what}: {err}"
            );
            let pulled = pulled.load(Ordering::Relaxed);
            assert!(
                pulled <= crate::upload::paced::MAX_UNFRAMED + (128 << 10),
                "{what}: read {pulled} bytes"
            );
        }
    }

    #[tokio::test]
    async fn many_small_fields_in_large_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let values: Vec<String> = (0..900).map(|i| format!("Topic :: Demo :: {i}")).collect();
        let mut parts: Vec<Part<'_>> = values
            .iter()
            .map(|v| Part::text("classifiers", v))
            .collect();
        let file = vec![9u8; 3 << 20];
        parts.push(Part::file("content", "demo-1.0.tar.gz", &file));
        let received = receive_multipart(&parts, 256 << 10, dir.path(), &Limits::default())
            .await
            .unwrap();
        assert_eq!(received.form.values("classifiers").len(), 900);
        assert_eq!(received.content.size(), file.len() as u64);
    }

    #[test]
    fn the_receiving_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let body = stream::iter(Vec::<Result<Bytes, Infallible>>::new());
        let limits = Limits::default();
        let future = receive(body, CONTENT_TYPE, Path::new("."), &limits);
        assert_send(&future);
    }
}
