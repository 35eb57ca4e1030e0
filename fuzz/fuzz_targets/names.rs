//! The parsers of names the outside world sends: project names, distribution filenames, PEP 440
//! versions and specifiers, and file keys in download URLs. None may panic, and what a parser
//! accepts must survive its own rendering.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wheelgate::policy::{Specifiers, Version};
use wheelgate::simple::{DistFilename, FileKey, ProjectName};

fuzz_target!(|text: &str| {
    if let Ok(name) = ProjectName::parse(text) {
        let again = ProjectName::parse(name.as_str()).expect("a normalised name parses");
        assert_eq!(name, again, "normalising is idempotent");
    }
    if let Ok(filename) = DistFilename::parse(text) {
        let again = DistFilename::parse(filename.as_str()).expect("a parsed filename parses");
        assert_eq!(filename, again);
    }
    if let Ok(version) = Version::parse(text) {
        let again = Version::parse(&version.to_string()).expect("a rendered version parses");
        assert_eq!(version, again);
    }
    let _ = Specifiers::parse(text);
    if let Ok(key) = FileKey::parse(text) {
        let again = FileKey::parse(&key.to_string()).expect("a rendered key parses");
        assert_eq!(key, again);
    }
});
