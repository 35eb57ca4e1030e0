//! URLs as they may be shown in messages and logs.
//!
//! An upstream URL can carry a token in its userinfo, its query or even its fragment. The upstream
//! client names URLs in errors, log lines and `Debug` output only as a [`RedactedUrl`], which
//! keeps none of the three, so a message cannot leak what the URL carried.

use std::fmt;

use url::Url;

/// A URL fit for messages and logs: no userinfo, no query, no fragment, since any of them can
/// carry a token.
#[derive(Clone, PartialEq, Eq)]
pub struct RedactedUrl(String);

impl RedactedUrl {
    /// Redacts `url`.
    pub fn new(url: &Url) -> RedactedUrl {
        let mut shown = url.clone();
        // Both setters only fail for URLs that cannot have credentials (`mailto:` and the like),
        // which then have none to hide.
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        shown.set_query(None);
        shown.set_fragment(None);
        RedactedUrl(shown.into())
    }

    /// The redacted text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&Url> for RedactedUrl {
    fn from(url: &Url) -> RedactedUrl {
        RedactedUrl::new(url)
    }
}

impl fmt::Display for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RedactedUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_url_hides_userinfo_query_and_fragment() {
        let url = Url::parse("https://user:s3cret@example.invalid/simple/x/?token=abc#sha256=00")
            .unwrap();
        let shown = RedactedUrl::new(&url).to_string();
        assert_eq!(shown, "https://example.invalid/simple/x/");
        assert!(!format!("{:?}", RedactedUrl::new(&url)).contains("s3cret"));
    }
}
