//! The Python simple repository API as typed values.
//!
//! This module is the edge where untrusted input becomes domain types: upstream index pages (PEP 503
//! HTML and PEP 691 JSON, with the PEP 592, 658, 700, 714, 740 and 792 additions) are parsed into
//! [`ProjectPage`] and [`ProjectIndex`], and client path segments into [`ProjectName`],
//! [`DistFilename`], [`FileKey`] and [`FilePart`]. It also renders our own pages and chooses their format from the
//! client's `Accept` header. Everything here is pure: no I/O, no async, no global state, so the rest
//! of the proxy can rely on these types having been validated exactly once.

pub mod digest;
pub mod filename;
pub mod name;
pub mod negotiate;
pub mod page;
pub mod part;
pub mod render;

pub use digest::{DigestError, FileKey, Sha256Digest};
pub use filename::{DistFilename, DistKind, FilenameError};
pub use name::{is_normalized, NameError, ProjectName};
pub use negotiate::{format_from_query, negotiate, Format};
pub use page::{
    parse_index_html, parse_index_json, parse_project_html, parse_project_json, CoreMetadata,
    FileEntry, PageError, ProjectIndex, ProjectPage, ProjectStatus, StatusMarker, Yanked,
    MAX_FILES, MAX_PAGE_BYTES,
};
pub use part::FilePart;
pub use render::{
    render_index_html, render_index_json, render_project_html, render_project_json, Links,
};
