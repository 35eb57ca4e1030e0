//! Every way an upload can be refused, each with its HTTP status and a one-line reason.
//!
//! `twine` and `uv publish` show the response body (or the reason phrase) to the person publishing,
//! and that is all they see, so each message names the field or the file it is about and says what
//! to do. Untrusted input in a message is quoted, escaped and cut to 80 characters by [`shown`].

use http::StatusCode;

use crate::simple::{FilenameError, NameError};

/// Why an upload was refused. [`UploadError::status`] gives the HTTP status; `Display` gives the
/// one-line reason for the response body.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    // ---- the request body ----
    #[error(
        "the Content-Type {shown} is not multipart/form-data with a boundary: upload with twine or \
         uv publish, which send the legacy upload form"
    )]
    NotMultipart { shown: String },
    #[error("the upload body is not a valid multipart/form-data form: {reason}")]
    Malformed { reason: String },
    #[error(
        "the upload is larger than the {limit} bytes this server accepts (max_upload_size): ask \
         the operator to raise the limit or publish a smaller file"
    )]
    TooLarge { limit: u64 },
    #[error("the upload body could not be read ({reason}): try the upload again")]
    BodyRead { reason: String },
    #[error(
        "no byte of the upload body arrived for {} (upload_idle_timeout): the upload is \
         abandoned; try it again",
        crate::config::format_duration(*after)
    )]
    BodyIdle { after: std::time::Duration },
    #[error("the upload form has more than {max} parts: send only the file and its metadata")]
    TooManyFields { max: usize },
    #[error("the form field {field} is longer than the {max} bytes allowed for one field")]
    FieldTooLong { field: String, max: usize },
    #[error(
        "the form's text fields add up to more than {max} bytes (at field {field}): send only the \
         file and its metadata"
    )]
    TextTooLarge { field: String, max: usize },
    #[error("the form field {field} is not valid UTF-8: text fields must be UTF-8")]
    NotUtf8 { field: String },
    #[error("the form field {field} was sent more than once: it takes a single value")]
    FieldRepeated { field: String },
    #[error("the upload has no `content` part: send the distribution file as the `content` field")]
    MissingContent,
    #[error("the upload has more than one `content` part: upload one file per request")]
    DuplicateContent,
    #[error(
        "the `content` part has no filename in its Content-Disposition: send the file with its \
         name (e.g. `filename=\"pkg-1.0-py3-none-any.whl\"`)"
    )]
    ContentWithoutFilename,
    #[error("the server could not write the upload to its temporary directory: {source}")]
    TempFile {
        #[source]
        source: std::io::Error,
    },

    // ---- the form's fields ----
    #[error("the form field `{field}` is missing: twine and uv publish send it; send it as well")]
    MissingField { field: &'static str },
    #[error(
        "the upload action {shown} is not supported: this server accepts only \
         `:action=file_upload` (twine upload, uv publish)"
    )]
    UnsupportedAction { shown: String },
    #[error("the form field `name` is not a valid project name: {source}")]
    BadProjectName {
        #[source]
        source: NameError,
    },
    #[error(
        "the {field} sent for {filename} is {sent} but the uploaded bytes have {computed}: the file \
         was changed or cut short on the way; upload it again"
    )]
    DigestMismatch {
        field: &'static str,
        filename: String,
        sent: String,
        computed: String,
    },

    // ---- the file's name ----
    #[error("the uploaded file's name cannot be used: {source}")]
    BadFilename {
        #[source]
        source: FilenameError,
    },
    #[error(
        "{filename} is not a wheel or source distribution whose name and version can be read: \
         upload `<name>-<version>-<tags>.whl`, `<name>-<version>.tar.gz` or `<name>-<version>.zip` \
         as built by a current build backend"
    )]
    NotADistribution { filename: String },
    #[error(
        "{filename} is a source distribution in a format this server does not accept: upload a \
         `.tar.gz` (or `.zip`) sdist, as `python -m build --sdist` makes"
    )]
    UnsupportedSdistFormat { filename: String },
    #[error(
        "the form says filetype {filetype} but {filename} is a {kind}: send `bdist_wheel` for a \
         wheel and `sdist` for a source distribution"
    )]
    FiletypeMismatch {
        filename: String,
        filetype: String,
        kind: &'static str,
    },
    #[error(
        "the form names project {form} but the file {filename} is for project {file}: upload the \
         file with the name it was built for"
    )]
    NameMismatch {
        filename: String,
        form: String,
        file: String,
    },
    #[error(
        "the form gives version {form} but the file {filename} is version {file}: upload the file \
         with the version it was built for"
    )]
    VersionMismatch {
        filename: String,
        form: String,
        file: String,
    },

    // ---- the distribution's contents ----
    #[error("{filename} is not a readable {format} archive ({reason}): rebuild the distribution")]
    CorruptArchive {
        filename: String,
        format: &'static str,
        reason: String,
    },
    #[error(
        "{filename} has more than {max} entries or a central directory larger than {max_bytes} \
         bytes: this server does not accept archives that large"
    )]
    ArchiveTooLarge {
        filename: String,
        max: u64,
        max_bytes: u64,
    },
    #[error(
        "{filename}: no PKG-INFO was found within the first {max_entries} entries and {max_bytes} \
         decompressed bytes, as far as this server reads into an sdist: ask the operator to raise \
         the limit"
    )]
    ScanLimit {
        filename: String,
        max_entries: u64,
        max_bytes: u64,
    },
    #[error("{filename} has no {member}: rebuild the distribution with a current build backend")]
    MetadataMissing { filename: String, member: String },
    #[error("{filename} has more than one {what}: a distribution holds exactly one; rebuild it")]
    MetadataAmbiguous {
        filename: String,
        what: &'static str,
    },
    #[error(
        "{member} in {filename} decompresses to more than {max} bytes: refused as a possible zip \
         bomb"
    )]
    MetadataTooLarge {
        filename: String,
        member: String,
        max: u64,
    },
    #[error(
        "the wheel {filename} holds {dir}, which is not for project {project}: rebuild the wheel"
    )]
    DistInfoMismatch {
        filename: String,
        dir: String,
        project: String,
    },
    #[error("{member} in {filename} cannot be read ({reason}): rebuild the distribution")]
    MetadataUnreadable {
        filename: String,
        member: String,
        reason: String,
    },
    #[error(
        "{place} says {header} {metadata} but the {what} is {expected}: the file does not match \
         its own metadata; rebuild it"
    )]
    MetadataMismatch {
        /// `<member> in <filename>`, both quoted.
        place: String,
        header: &'static str,
        metadata: String,
        what: &'static str,
        expected: String,
    },
}

impl UploadError {
    /// The HTTP status to answer with: 413 for a body over the size limit, 408 for a body that
    /// stopped coming, 500 when our own temporary file failed, 400 for everything the client sent.
    pub fn status(&self) -> StatusCode {
        match self {
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::BodyIdle { .. } => StatusCode::REQUEST_TIMEOUT,
            UploadError::TempFile { source }
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                StatusCode::INSUFFICIENT_STORAGE
            }
            UploadError::TempFile { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Quotes untrusted input for an error message, escaping control characters and cutting it to 80
/// characters, so that neither a terminal nor a log line can be abused.
pub(crate) fn shown(raw: &str) -> String {
    const MAX_SHOWN: usize = 80;
    let mut out: String = raw.chars().take(MAX_SHOWN).collect();
    if out.len() < raw.len() {
        out.push('…');
    }
    format!("{out:?}")
}

/// A message from elsewhere (a library's error, a client's body error) made safe for a one-line
/// reason: control characters become spaces, and it is cut to 120 characters.
pub(crate) fn one_line(message: &str) -> String {
    const MAX: usize = 120;
    message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            UploadError::TooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let idle = UploadError::BodyIdle {
            after: std::time::Duration::from_secs(90),
        };
        assert_eq!(idle.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(
            idle.to_string().contains("for 1m30s (upload_idle_timeout)"),
            "{idle}"
        );
        assert_eq!(
            UploadError::TempFile {
                source: std::io::Error::other("disk full")
            }
            .status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            UploadError::MissingContent.status(),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn shown_escapes_and_cuts() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = shown(&"x".repeat(1000));
        assert!(long.len() < 90, "{long}");
        assert!(long.ends_with("…\""), "{long}");
    }
}
