//! Upload bodies (`multipart/form-data`): the first line of the input is the Content-Type, the
//! rest the body, delivered in chunks whose sizes come from the input. Receiving and checking
//! never panic and never leave a temporary file behind.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wheelgate::upload::{check, receive, Limits};

fuzz_target!(|input: &[u8]| {
    let (content_type, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let Ok(content_type) = std::str::from_utf8(content_type) else {
        return;
    };
    // Chunk sizes from the body's own bytes, so that boundaries fall anywhere.
    let mut chunks = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let take = usize::from(rest[0] % 64).max(1).min(rest.len());
        chunks.push(Ok::<_, std::io::Error>(Bytes::copy_from_slice(
            &rest[..take],
        )));
        rest = &rest[take..];
    }
    let tmp = tempfile::tempdir().unwrap();
    let limits = Limits::with_max_upload_size(1 << 20);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let stream = futures_util::stream::iter(chunks);
    let received = runtime.block_on(receive(stream, content_type, tmp.path(), &limits));
    if let Ok(received) = received {
        drop(check(received, &limits));
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "a refused or dropped upload left {left:?}");
});
