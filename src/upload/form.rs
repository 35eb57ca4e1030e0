//! The text fields of the legacy upload form, as a typed value.
//!
//! twine and uv publish send the distribution's metadata again as form fields beside the file. The
//! few that wheelgate acts on (`:action`, `name`, `version`, the digests, …) become typed fields
//! here; the repeated metadata fields (`classifiers`, `requires_dist`, …) and any field a newer
//! client may add are kept by name. The form is built part by part while the body streams in, so
//! the bounds on field count and text size are enforced here, before anything is held.

use std::collections::BTreeMap;

use super::error::{shown, UploadError};
use super::limits::Limits;

/// The form fields of one upload, everything but the file itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// `:action`: `file_upload` for an upload.
    pub action: Option<String>,
    /// `protocol_version`: `1` from every current client.
    pub protocol_version: Option<String>,
    /// `name`: the project name as the client spells it (not normalised).
    pub name: Option<String>,
    /// `version`: as the client spells it.
    pub version: Option<String>,
    /// `filetype`: `bdist_wheel` or `sdist`.
    pub filetype: Option<String>,
    /// `pyversion`: `py3`, `cp311`, … for wheels, `source` for sdists.
    pub pyversion: Option<String>,
    pub metadata_version: Option<String>,
    /// Hexadecimal digests of the file as the client computed them.
    pub sha256_digest: Option<String>,
    pub blake2_256_digest: Option<String>,
    pub md5_digest: Option<String>,
    pub requires_python: Option<String>,
    pub summary: Option<String>,
    pub comment: Option<String>,
    /// Every other field that was kept, by name, in the order sent: the repeated metadata fields
    /// (`classifiers`, `requires_dist`, `project_urls`, …), `description`, `author`, and fields
    /// this server does not know.
    pub fields: BTreeMap<String, Vec<String>>,
    /// Names of fields that were sent but not kept: unknown fields that were not UTF-8 or did not
    /// fit the bounds, and a `description` too long to keep. For logging; never an error.
    pub ignored: Vec<String>,
}

impl Form {
    /// The values of a field kept in [`Form::fields`], or none.
    pub fn values(&self, name: &str) -> &[String] {
        self.fields.get(name).map(Vec::as_slice).unwrap_or_default()
    }
}

/// The fields of the legacy upload API that are not typed in [`Form`] (core metadata 1.0 to 2.4
/// as twine and uv publish send them, and the signature and attestation fields). Breaking the
/// bounds with one of these is an error; with an unknown field it only drops the field.
const KNOWN_FIELDS: [&str; 28] = [
    "attestations",
    "author",
    "author_email",
    "classifiers",
    "description",
    "description_content_type",
    "download_url",
    "dynamic",
    "gpg_signature",
    "home_page",
    "keywords",
    "license",
    "license_expression",
    "license_file",
    "license_files",
    "maintainer",
    "maintainer_email",
    "obsoletes",
    "obsoletes_dist",
    "platform",
    "project_urls",
    "provides",
    "provides_dist",
    "provides_extra",
    "requires",
    "requires_dist",
    "requires_external",
    "supported_platform",
];

/// The long description: it may use the whole text budget, and is skipped rather than refused
/// when longer, since the distribution's own metadata carries it.
const DESCRIPTION: &str = "description";

/// Collects the form's text fields as they arrive, enforcing the bounds of [`Limits`].
#[derive(Debug)]
pub(crate) struct FormBuilder {
    form: Form,
    text_total: usize,
    max_field_size: usize,
    max_text_total: usize,
}

impl FormBuilder {
    pub(crate) fn new(limits: &Limits) -> FormBuilder {
        FormBuilder {
            form: Form::default(),
            text_total: 0,
            max_field_size: limits.max_field_size,
            max_text_total: limits.max_text_total,
        }
    }

    /// The most bytes worth reading for a field of this name: beyond it the field is refused or
    /// skipped, so the caller can stop buffering it.
    pub(crate) fn max_len(&self, name: &str) -> usize {
        if name == DESCRIPTION {
            self.max_text_total
        } else {
            self.max_field_size
        }
    }

    /// Notes a field that was longer than [`FormBuilder::max_len`] and so was not read whole.
    pub(crate) fn add_oversized(&mut self, name: &str) -> Result<(), UploadError> {
        if is_strict(name) {
            return Err(UploadError::FieldTooLong {
                field: shown(name),
                max: self.max_field_size,
            });
        }
        self.form.ignored.push(name.to_owned());
        Ok(())
    }

    /// Adds one field's value.
    pub(crate) fn add(&mut self, name: &str, value: Vec<u8>) -> Result<(), UploadError> {
        let strict = is_strict(name);
        if value.len() > self.max_len(name) {
            return self.add_oversized(name);
        }
        let value = match String::from_utf8(value) {
            Ok(value) => value,
            Err(_) if strict => return Err(UploadError::NotUtf8 { field: shown(name) }),
            Err(_) => {
                self.form.ignored.push(name.to_owned());
                return Ok(());
            }
        };
        if self.text_total + value.len() > self.max_text_total {
            if strict {
                return Err(UploadError::TextTooLarge {
                    field: shown(name),
                    max: self.max_text_total,
                });
            }
            self.form.ignored.push(name.to_owned());
            return Ok(());
        }
        self.text_total += value.len();
        let Some(slot) = self.typed_slot(name) else {
            self.form
                .fields
                .entry(name.to_owned())
                .or_default()
                .push(value);
            return Ok(());
        };
        if slot.is_some() {
            return Err(UploadError::FieldRepeated { field: shown(name) });
        }
        // Clients send empty strings for metadata they do not have; an empty value is no value.
        *slot = Some(value).filter(|v| !v.is_empty());
        Ok(())
    }

    fn typed_slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        let form = &mut self.form;
        Some(match name {
            ":action" => &mut form.action,
            "protocol_version" => &mut form.protocol_version,
            "name" => &mut form.name,
            "version" => &mut form.version,
            "filetype" => &mut form.filetype,
            "pyversion" => &mut form.pyversion,
            "metadata_version" => &mut form.metadata_version,
            "sha256_digest" => &mut form.sha256_digest,
            "blake2_256_digest" => &mut form.blake2_256_digest,
            "md5_digest" => &mut form.md5_digest,
            "requires_python" => &mut form.requires_python,
            "summary" => &mut form.summary,
            "comment" => &mut form.comment,
            _ => return None,
        })
    }

    pub(crate) fn finish(self) -> Form {
        self.form
    }
}

/// Whether breaking a bound with this field refuses the upload (a field of the upload API) or only
/// drops the field (an unknown field, or the long description).
fn is_strict(name: &str) -> bool {
    name != DESCRIPTION && (is_typed(name) || KNOWN_FIELDS.contains(&name))
}

fn is_typed(name: &str) -> bool {
    matches!(
        name,
        ":action"
            | "protocol_version"
            | "name"
            | "version"
            | "filetype"
            | "pyversion"
            | "metadata_version"
            | "sha256_digest"
            | "blake2_256_digest"
            | "md5_digest"
            | "requires_python"
            | "summary"
            | "comment"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_limits() -> Limits {
        Limits {
            max_field_size: 16,
            max_text_total: 64,
            ..Limits::default()
        }
    }

    #[test]
    fn typed_and_repeated_fields() {
        let mut b = FormBuilder::new(&Limits::default());
        b.add(":action", b"file_upload".to_vec()).unwrap();
        b.add("name", b"Foo_Bar".to_vec()).unwrap();
        b.add("version", b"1.0".to_vec()).unwrap();
        b.add("md5_digest", Vec::new()).unwrap();
        b.add("classifiers", b"A :: B".to_vec()).unwrap();
        b.add("classifiers", b"C :: D".to_vec()).unwrap();
        b.add("x_future_field", b"kept".to_vec()).unwrap();
        let form = b.finish();
        assert_eq!(form.action.as_deref(), Some("file_upload"));
        assert_eq!(form.name.as_deref(), Some("Foo_Bar"));
        assert_eq!(form.version.as_deref(), Some("1.0"));
        assert_eq!(form.md5_digest, None, "an empty value is no value");
        assert_eq!(form.values("classifiers"), ["A :: B", "C :: D"]);
        assert_eq!(form.values("x_future_field"), ["kept"]);
        assert!(form.values("requires_dist").is_empty());
        assert!(form.ignored.is_empty());
    }

    #[test]
    fn a_typed_field_twice_is_refused() {
        let mut b = FormBuilder::new(&Limits::default());
        b.add("name", b"a".to_vec()).unwrap();
        let err = b.add("name", b"b".to_vec()).unwrap_err();
        assert!(matches!(err, UploadError::FieldRepeated { .. }), "{err}");
        assert!(err.to_string().contains("\"name\""), "{err}");
    }

    #[test]
    fn known_fields_are_bounded_strictly() {
        let mut b = FormBuilder::new(&small_limits());
        let err = b.add("summary", vec![b'x'; 17]).unwrap_err();
        assert!(
            matches!(err, UploadError::FieldTooLong { max: 16, .. }),
            "{err}"
        );
        let err = b.add("classifiers", vec![0xff]).unwrap_err();
        assert!(matches!(err, UploadError::NotUtf8 { .. }), "{err}");
        for _ in 0..4 {
            b.add("classifiers", vec![b'x'; 16]).unwrap();
        }
        let err = b.add("classifiers", b"x".to_vec()).unwrap_err();
        assert!(
            matches!(err, UploadError::TextTooLarge { max: 64, .. }),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_and_description_are_dropped_not_refused() {
        let mut b = FormBuilder::new(&small_limits());
        b.add("x_binary", vec![0xff, 0xfe]).unwrap();
        b.add("x_long", vec![b'x'; 17]).unwrap();
        // The description may use the whole budget...
        b.add("description", vec![b'd'; 60]).unwrap();
        // ...and what no longer fits is dropped when unknown, refused when known.
        b.add("x_late", vec![b'x'; 8]).unwrap();
        b.add("description", vec![b'd'; 65]).unwrap();
        let err = b.add("author", vec![b'a'; 8]).unwrap_err();
        assert!(matches!(err, UploadError::TextTooLarge { .. }), "{err}");
        let form = b.finish();
        assert_eq!(form.values("description").len(), 1);
        assert_eq!(
            form.ignored,
            ["x_binary", "x_long", "x_late", "description"]
        );
    }
}
