//! `Range` headers: any header and any size give a range inside the body, or the whole body, or
//! a 416.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wheelgate::front::range::{parse, ByteRange};

fuzz_target!(|input: (u64, &str)| {
    let (size, header) = input;
    match parse(Some(header), size) {
        ByteRange::Full | ByteRange::Unsatisfiable => {}
        ByteRange::Partial { start, end } => {
            assert!(
                start <= end,
                "{header:?} on {size} bytes gave {start}-{end}"
            );
            assert!(
                end < size,
                "{header:?} on {size} bytes ends past the body: {start}-{end}"
            );
        }
    }
});
