//! `proxy.toml`: any text either loads or is refused with an error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|source: &str| {
    let env = |name: &str| (name == "WHEELGATE_FUZZ").then(|| "set".to_owned());
    // Relative paths in the text resolve under a directory that does not exist.
    if let Err(error) = wheelgate::config::parse(source, "/nonexistent-fuzz/proxy.toml", &env) {
        // Rendering the message is part of the path a user sees.
        let _ = error.to_string();
    }
});
