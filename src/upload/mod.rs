//! The legacy upload API's request body, received and checked (SPEC §2 `POST /<repo>/`).
//!
//! Hosted repositories take packages from `twine upload` and `uv publish`, which POST a
//! `multipart/form-data` form holding the distribution file and its metadata. This module is the
//! part of publishing that needs no HTTP and no store: [`receive`] streams the form into a
//! temporary file and a typed [`Form`] under the bounds of [`Limits`]; [`check`] decides whether
//! the file is the wheel or sdist the form says it is (digests, filename, and the core metadata
//! inside the archive) and hands back a [`Checked`] upload for the caller to commit. Every refusal
//! is an [`UploadError`] with an HTTP status and a one-line reason, and no refused upload leaves a
//! file behind.
//!
//! The caller's sequence: `receive(body, content_type, store_tmp_dir, &limits).await`, then
//! `spawn_blocking(move || check(received, &limits))`, then (still on a blocking thread)
//! `checked.content.sync_all()`, `checked.content.into_path()` and a rename into the store.

mod check;
mod content;
mod error;
mod form;
mod inspect;
mod limits;
mod metadata;
mod paced;
mod receive;
mod spool;
#[cfg(test)]
mod testutil;

pub use check::{check, Checked};
pub use content::{ContentFile, Digests};
pub use error::UploadError;
pub use form::Form;
pub use limits::Limits;
pub use metadata::{CoreMetadata, MetadataError};
pub use receive::{receive, Received};
