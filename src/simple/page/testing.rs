//! What the page parsers' unit tests share: digests to publish, and the page they come from.

use url::Url;

use super::ProjectPage;
use crate::simple::digest::Sha256Digest;
use crate::simple::name::ProjectName;

pub(super) const HEX_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub(super) const HEX_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

pub(super) fn page_url() -> Url {
    Url::parse("https://index.example.invalid/simple/foo/").unwrap()
}

pub(super) fn foo() -> ProjectName {
    ProjectName::parse("foo").unwrap()
}

pub(super) fn digest(hex: &str) -> Sha256Digest {
    Sha256Digest::parse_hex(hex).unwrap()
}

/// The provenance link of each file of a page, in page order.
pub(super) fn provenance_urls(page: &ProjectPage) -> Vec<Option<&str>> {
    page.files
        .iter()
        .map(|f| f.provenance.as_ref().map(Url::as_str))
        .collect()
}
