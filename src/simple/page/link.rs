//! A file's link as a page gives it: a URL, perhaps relative, perhaps with a digest in its fragment.
//!
//! Both formats link files the same way, so both read links here. A link must resolve to an
//! absolute http or https URL with a host (a `javascript:` or `file:` link makes the file
//! unusable), and the fragment, where PEP 503 puts `sha256=<hex>`, is kept apart from the URL we
//! fetch.

use url::Url;

/// Resolves a link against its base and keeps it only if it is http(s); returns the URL without
/// fragment and the fragment separately (it carries the digest in PEP 503).
pub(super) fn resolve_file_url(base: &Url, href: &str) -> Option<(Url, Option<String>)> {
    let mut url = base.join(href.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return None;
    }
    let fragment = url.fragment().map(str::to_owned);
    url.set_fragment(None);
    Some((url, fragment))
}

/// `sha256=<hex>` (or another algorithm) from a URL fragment.
pub(super) fn split_fragment(fragment: &str) -> Option<(String, &str)> {
    let (algorithm, value) = fragment.split_once('=')?;
    Some((algorithm.to_ascii_lowercase(), value))
}
