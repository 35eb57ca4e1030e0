//! Which part of a distribution file a file URL names: the file itself, its PEP 658 core metadata
//! (`<file>.metadata`) or its PEP 740 provenance (`<file>.provenance`).
//!
//! The standards place both beside the file by appending a suffix to its name, and so do our own
//! URLs: pages write the suffix here and the router reads it back here, so the two cannot drift.

use std::fmt;

use super::filename::DistFilename;

/// A part of a distribution file, as the last segment of a file URL names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FilePart {
    /// The distribution file itself.
    #[default]
    File,
    /// Its core metadata (PEP 658, PEP 714).
    Metadata,
    /// Its provenance: the index's attestations for it (PEP 740).
    Provenance,
}

impl FilePart {
    /// What the part appends to the file's name.
    pub fn suffix(self) -> &'static str {
        match self {
            FilePart::File => "",
            FilePart::Metadata => ".metadata",
            FilePart::Provenance => ".provenance",
        }
    }

    /// What the part is, for messages: `core metadata (PEP 658)`.
    pub fn what(self) -> &'static str {
        match self {
            FilePart::File => "file",
            FilePart::Metadata => "core metadata (PEP 658)",
            FilePart::Provenance => "provenance (PEP 740 attestations)",
        }
    }

    /// Splits a URL's last segment into the file's name and the part it names. A name that ends
    /// in neither suffix names the file itself.
    pub fn split(segment: &str) -> (&str, FilePart) {
        for part in [FilePart::Metadata, FilePart::Provenance] {
            if let Some(stem) = segment.strip_suffix(part.suffix()) {
                return (stem, part);
            }
        }
        (segment, FilePart::File)
    }

    /// The part of `filename` named as a client would ask for it: `x.whl.metadata`.
    pub fn of<'a>(self, filename: &'a DistFilename) -> Named<'a> {
        Named {
            filename,
            part: self,
        }
    }
}

/// A part of a named file, displayed as its URL's last segment spells it (unescaped).
#[derive(Debug, Clone, Copy)]
pub struct Named<'a> {
    filename: &'a DistFilename,
    part: FilePart,
}

impl fmt::Display for Named<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.filename.as_str())?;
        f.write_str(self.part.suffix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_name() {
        assert_eq!(
            FilePart::split("x-1.0-py3-none-any.whl"),
            ("x-1.0-py3-none-any.whl", FilePart::File)
        );
        assert_eq!(
            FilePart::split("x-1.0-py3-none-any.whl.metadata"),
            ("x-1.0-py3-none-any.whl", FilePart::Metadata)
        );
        assert_eq!(
            FilePart::split("x-1.0.tar.gz.provenance"),
            ("x-1.0.tar.gz", FilePart::Provenance)
        );
        // Only the last suffix counts.
        assert_eq!(
            FilePart::split("x.provenance.metadata"),
            ("x.provenance", FilePart::Metadata)
        );
        let file = DistFilename::parse("x-1.0.tar.gz").unwrap();
        for part in [FilePart::File, FilePart::Metadata, FilePart::Provenance] {
            let named = part.of(&file).to_string();
            assert_eq!(FilePart::split(&named), ("x-1.0.tar.gz", part));
        }
        assert_eq!(
            FilePart::Provenance.of(&file).to_string(),
            "x-1.0.tar.gz.provenance"
        );
    }
}
