//! Upstream PEP 691 JSON pages: parsing never panics, and what wheelgate renders from a parsed
//! page parses back (as JSON and as HTML) to the same files, digests and attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wheelgate::simple::{parse_index_json, parse_project_json};

#[path = "round_trip.rs"]
mod round_trip;

fuzz_target!(|body: &[u8]| {
    let (page_url, name) = round_trip::upstream_page();
    if let Ok(page) = parse_project_json(body, &page_url, &name) {
        round_trip::check(&page);
    }
    let _ = parse_index_json(body);
});
