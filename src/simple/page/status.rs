//! A project's PEP 792 status, as its index states it.
//!
//! An index marks a whole project `active`, `archived`, `quarantined` or `deprecated`, with an
//! optional free-form reason; a page that says nothing means `active`. Both page formats carry it
//! (HTML in `<meta name="pypi:project-status">` and `pypi:project-status-reason`, JSON in the
//! `project-status` object), so both parsers read it here, and the download rules see the marker
//! as `pkg.project.status`.
//!
//! PEP 792 lets later standards add markers. A marker we do not know is kept as it is spelt
//! (lowercased) rather than read as `active`, so that a rule such as
//! `pkg.project.status != 'active'` still catches it and pages pass it on; a value that is not
//! even shaped like a marker (empty, spaces, markup) is no marker at all.

use std::fmt;

/// The longest marker kept; the four PEP 792 defines are at most 11 characters.
const MAX_MARKER_LEN: usize = 64;

/// A PEP 792 project status marker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum StatusMarker {
    /// The default: the project takes uploads and offers its files.
    #[default]
    Active,
    /// The project expects no more releases; its files are still offered.
    Archived,
    /// The project is considered unsafe (e.g. malware); the index offers no files.
    Quarantined,
    /// The project is obsolete and may have been superseded.
    Deprecated,
    /// A marker of a later standard: lowercase `[a-z0-9._-]`, at most 64 characters.
    Other(Box<str>),
}

impl StatusMarker {
    /// Reads a marker as an index writes it (surrounding whitespace and case ignored); `None` for
    /// a value that is not shaped like a marker.
    pub fn parse(text: &str) -> Option<StatusMarker> {
        let text = text.trim();
        let shaped = !text.is_empty()
            && text.len() <= MAX_MARKER_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !shaped {
            return None;
        }
        let lower = text.to_ascii_lowercase();
        Some(match lower.as_str() {
            "active" => StatusMarker::Active,
            "archived" => StatusMarker::Archived,
            "quarantined" => StatusMarker::Quarantined,
            "deprecated" => StatusMarker::Deprecated,
            _ => StatusMarker::Other(lower.into_boxed_str()),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            StatusMarker::Active => "active",
            StatusMarker::Archived => "archived",
            StatusMarker::Quarantined => "quarantined",
            StatusMarker::Deprecated => "deprecated",
            StatusMarker::Other(marker) => marker,
        }
    }
}

impl fmt::Display for StatusMarker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A project's status and the index's reason for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProjectStatus {
    pub marker: StatusMarker,
    /// Free-form text; an empty reason is no reason.
    pub reason: Option<String>,
}

impl ProjectStatus {
    /// The status a page states with a marker and a reason, either possibly absent. A reason
    /// without a marker is a reason for the default status.
    pub fn from_page(marker: Option<&str>, reason: Option<&str>) -> ProjectStatus {
        ProjectStatus {
            marker: marker.and_then(StatusMarker::parse).unwrap_or_default(),
            reason: reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        }
    }

    /// Whether the page says nothing beyond the default (`active`, no reason): such a page needs
    /// no PEP 792 markup.
    pub fn is_default(&self) -> bool {
        self.marker == StatusMarker::Active && self.reason.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers() {
        assert_eq!(
            StatusMarker::parse("archived"),
            Some(StatusMarker::Archived)
        );
        assert_eq!(
            StatusMarker::parse(" Quarantined\n"),
            Some(StatusMarker::Quarantined)
        );
        assert_eq!(StatusMarker::parse("ACTIVE"), Some(StatusMarker::Active));
        assert_eq!(
            StatusMarker::parse("deprecated"),
            Some(StatusMarker::Deprecated)
        );
        assert_eq!(
            StatusMarker::parse("Read-Only_2"),
            Some(StatusMarker::Other("read-only_2".into()))
        );
        for garbage in ["", "  ", "two words", "<b>", "ärchived", &"x".repeat(65)] {
            assert_eq!(StatusMarker::parse(garbage), None, "{garbage:?}");
        }
        assert_eq!(StatusMarker::Other("x.y".into()).to_string(), "x.y");
        assert_eq!(StatusMarker::default().as_str(), "active");
    }

    #[test]
    fn statuses() {
        assert!(ProjectStatus::from_page(None, None).is_default());
        assert!(ProjectStatus::from_page(Some("active"), Some(" ")).is_default());
        assert!(ProjectStatus::from_page(Some("not a marker"), None).is_default());
        let archived = ProjectStatus::from_page(Some("archived"), Some(" moved to x "));
        assert_eq!(archived.marker, StatusMarker::Archived);
        assert_eq!(archived.reason.as_deref(), Some("moved to x"));
        assert!(!archived.is_default());
        let reason_only = ProjectStatus::from_page(None, Some("why"));
        assert_eq!(reason_only.marker, StatusMarker::Active);
        assert!(!reason_only.is_default());
    }
}
