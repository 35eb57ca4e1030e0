//! Reading the headers of a core metadata file (`METADATA`, `PKG-INFO`).
//!
//! The core metadata format is RFC 822-style headers, then a blank line, then the description.
//! Only a few headers matter to an upload (`Name`, `Version`, `Requires-Python`,
//! `Metadata-Version`), so this is a small parser of the header block rather than a mail-parsing
//! dependency. It follows Python's `email` parser, which is what pip and the build backends use:
//! continuation lines start with a space or tab, and the headers end at the first blank line (or
//! at the first line that is neither a header nor a continuation).

/// Why a core metadata file cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("it is not valid UTF-8")]
    NotUtf8,
    #[error("it has no `{0}` header")]
    Missing(&'static str),
    #[error("it has more than one `{0}` header")]
    Repeated(&'static str),
}

/// The headers of a core metadata file, in order, with continuation lines joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreMetadata {
    headers: Vec<(String, String)>,
}

impl CoreMetadata {
    /// Parses the header block of `bytes`. The description after the first blank line is not read.
    pub fn parse(bytes: &[u8]) -> Result<CoreMetadata, MetadataError> {
        let text = std::str::from_utf8(bytes).map_err(|_| MetadataError::NotUtf8)?;
        // A byte-order mark is not part of the first header's name.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if line.starts_with([' ', '\t']) {
                match headers.last_mut() {
                    Some((_, value)) => {
                        value.push('\n');
                        value.push_str(line.trim());
                        continue;
                    }
                    // A continuation before any header: the file has no header block.
                    None => break,
                }
            }
            let Some((name, value)) = line.split_once(':') else {
                break;
            };
            let name = name.trim_end();
            if name.is_empty() || name.contains([' ', '\t']) {
                break;
            }
            headers.push((name.to_owned(), value.trim().to_owned()));
        }
        Ok(CoreMetadata { headers })
    }

    /// The values of a header, in order; header names compare case-insensitively.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The value of a header that may appear at most once.
    pub fn get_single(&self, name: &'static str) -> Result<Option<&str>, MetadataError> {
        let mut values = self.get_all(name);
        let first = values.next();
        if values.next().is_some() {
            return Err(MetadataError::Repeated(name));
        }
        Ok(first)
    }

    /// The value of a header that must appear exactly once.
    pub fn get_required(&self, name: &'static str) -> Result<&str, MetadataError> {
        self.get_single(name)?.ok_or(MetadataError::Missing(name))
    }

    /// `Name`, which must be present once.
    pub fn name(&self) -> Result<&str, MetadataError> {
        self.get_required("Name")
    }

    /// `Version`, which must be present once.
    pub fn version(&self) -> Result<&str, MetadataError> {
        self.get_required("Version")
    }

    /// `Requires-Python`, if present and not empty.
    pub fn requires_python(&self) -> Result<Option<&str>, MetadataError> {
        Ok(self
            .get_single("Requires-Python")?
            .filter(|v| !v.is_empty()))
    }

    /// `Metadata-Version`, if present.
    pub fn metadata_version(&self) -> Result<Option<&str>, MetadataError> {
        self.get_single("Metadata-Version")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One line a piece: a `\` line continuation in a Rust string would eat the continuation
    // lines' leading whitespace.
    const SAMPLE: &str = concat!(
        "Metadata-Version: 2.1\r\n",
        "Name: Foo_Bar\r\n",
        "Version: 1.0.0\r\n",
        "Summary: A demo\r\n",
        "License: line one\r\n",
        "  line two\r\n",
        "\tline three\r\n",
        "Requires-Python: >=3.8\r\n",
        "Classifier: A :: B\r\n",
        "classifier: C :: D\r\n",
        "\r\n",
        "Name: not-a-header\r\n",
        "Body text.\r\n",
    );

    /// Parses `text` and checks the headers every upload reads; returns the parsed metadata.
    fn assert_parses_to(
        text: &[u8],
        name: &str,
        version: &str,
        requires_python: Option<&str>,
    ) -> CoreMetadata {
        let m = CoreMetadata::parse(text).unwrap();
        assert_eq!(m.name(), Ok(name));
        assert_eq!(m.version(), Ok(version));
        assert_eq!(m.requires_python(), Ok(requires_python));
        m
    }

    #[test]
    fn parses_headers_until_the_blank_line() {
        let m = assert_parses_to(SAMPLE.as_bytes(), "Foo_Bar", "1.0.0", Some(">=3.8"));
        assert_eq!(m.metadata_version(), Ok(Some("2.1")));
        assert_eq!(
            m.get_all("License").collect::<Vec<_>>(),
            ["line one\nline two\nline three"]
        );
        assert_eq!(
            m.get_all("CLASSIFIER").collect::<Vec<_>>(),
            ["A :: B", "C :: D"]
        );
    }

    #[test]
    fn unix_line_ends_and_no_body() {
        let m = assert_parses_to(b"Name: x\nVersion: 2\n", "x", "2", None);
        assert_eq!(m.metadata_version(), Ok(None));
    }

    #[test]
    fn values_are_trimmed_and_empty_requires_python_is_none() {
        assert_parses_to(
            b"Name:   x  \nVersion:1.0\nRequires-Python: \n",
            "x",
            "1.0",
            None,
        );
    }

    #[test]
    fn missing_and_repeated_headers() {
        let m = CoreMetadata::parse(b"Version: 1\n").unwrap();
        assert_eq!(m.name(), Err(MetadataError::Missing("Name")));
        let m = CoreMetadata::parse(b"Name: a\nName: b\nVersion: 1\n").unwrap();
        assert_eq!(m.name(), Err(MetadataError::Repeated("Name")));
        // Headers after the blank line are the description, not headers.
        let m = CoreMetadata::parse(b"Version: 1\n\nName: a\n").unwrap();
        assert_eq!(m.name(), Err(MetadataError::Missing("Name")));
    }

    #[test]
    fn a_line_that_is_not_a_header_ends_the_headers() {
        let m = CoreMetadata::parse(b"Name: a\nnot a header\nVersion: 1\n").unwrap();
        assert_eq!(m.name(), Ok("a"));
        assert_eq!(m.version(), Err(MetadataError::Missing("Version")));
        let m = CoreMetadata::parse(b" leading continuation\nName: a\n").unwrap();
        assert_eq!(m.name(), Err(MetadataError::Missing("Name")));
    }

    #[test]
    fn not_utf8_and_bom() {
        assert_eq!(
            CoreMetadata::parse(b"Name: \xff\n"),
            Err(MetadataError::NotUtf8)
        );
        let m = CoreMetadata::parse("\u{feff}Name: a\n".as_bytes()).unwrap();
        assert_eq!(m.name(), Ok("a"));
    }
}
