//! Integrity: an upstream file whose bytes do not match the sha256 its page declares must never
//! reach a client whole. The download has to fail (status or aborted transfer), and pip, which
//! would otherwise install it, has to fail too. Once the upstream serves the true bytes, the file
//! comes through, so nothing wrong was kept.

use ::http::StatusCode;

use crate::harness::clients;
use crate::harness::fixtures::{catalog, sha256_hex};
use crate::harness::http;
use crate::harness::upstream::Mode;
use crate::harness::TestBed;

const CORRUPT_WHEEL: &str = "wgfx_corrupt-1.0.0-py3-none-any.whl";

#[test]
fn a_file_that_does_not_match_its_sha256_never_arrives_whole() {
    let bed = TestBed::start(Mode::Json);
    let fixture = catalog().expect_project("wgfx-corrupt").wheel("1.0.0");
    assert_eq!(fixture.filename, CORRUPT_WHEEL);
    let url = bed.file_url("wgfx-corrupt", CORRUPT_WHEEL);

    // A small file is one chunk, withheld whole: the connection then closes before the response
    // head. A larger one breaks off mid-body. Both are a failed download; a complete 200 is not.
    let outcome = http::try_get(&url, &[]);
    assert!(
        bed.upstream
            .requests()
            .iter()
            .any(|r| r.path.ends_with(CORRUPT_WHEEL)),
        "wheelgate never fetched the file from upstream, so nothing was tested"
    );
    if let Ok(response) = outcome {
        let transfer_failed = !response.status.is_success() || response.body_error.is_some();
        assert!(
            transfer_failed,
            "GET {url} completed with {} and {} bytes (sha256 {}); a mismatching file must abort the transfer",
            response.status,
            response.body.len(),
            sha256_hex(&response.body)
        );
        assert_ne!(
            response.body,
            fixture.corrupted_bytes(),
            "the corrupt bytes arrived whole"
        );
    }

    let target = bed.target_dir("corrupt");
    let run = clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-corrupt"]);
    assert!(
        !run.success(),
        "pip installed a file whose sha256 does not match; output:\n{}",
        run.output()
    );
    assert!(
        clients::installed(&target).is_empty(),
        "pip left an installation behind: {:?}",
        clients::installed(&target)
    );

    // The upstream repairs the file: the next download succeeds with the true bytes.
    bed.upstream.set_corrupt(false);
    let repaired = http::get(&url, &[]);
    assert_eq!(
        repaired.status,
        StatusCode::OK,
        "{url} after the upstream was fixed: {}",
        repaired.text()
    );
    assert!(
        repaired.expect_ok(&url) == fixture.bytes.as_slice(),
        "the repaired file must be the declared bytes"
    );

    let healthy = http::get(&bed.url("/-/health"), &[]);
    assert_eq!(
        healthy.status,
        StatusCode::OK,
        "wheelgate must keep serving after an aborted transfer"
    );
}
