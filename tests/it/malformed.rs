//! Malformed requests (SPEC §8): path traversal, encoded separators, NUL, absurd lengths and
//! unknown repositories get a 400 or 404 with a plain-text reason, never a 500 or a panic, and
//! wheelgate keeps serving afterwards. The requests are written by hand over TCP so that no client
//! library cleans the paths up before they reach wheelgate.

use crate::harness::http::raw_get;
use crate::harness::upstream::Mode;
use crate::harness::TestBed;

fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let sha = "a".repeat(64);
    vec![
        ("dot-dot segments", b"/simple/../../etc/passwd".to_vec()),
        (
            "dot-dot in a project path",
            b"/simple/wgfx-app/../../-/health/x/".to_vec(),
        ),
        (
            "encoded dot-dot",
            b"/simple/%2e%2e/%2e%2e/etc/passwd/".to_vec(),
        ),
        (
            "encoded slash in a project name",
            b"/simple/wgfx-app%2F..%2Fx/".to_vec(),
        ),
        (
            "encoded slash in a repository form",
            b"/pypi%2Fsimple/wgfx-app/".to_vec(),
        ),
        ("encoded NUL", b"/simple/wgfx%00app/".to_vec()),
        (
            "encoded NUL in a filename",
            format!("/pypi/files/wgfx-app/{sha}/wgfx_app-1.0.0-py3-none-any.whl%00.txt")
                .into_bytes(),
        ),
        (
            "dot-dot as a filename",
            format!("/pypi/files/wgfx-app/{sha}/..").into_bytes(),
        ),
        (
            "encoded slash in a filename",
            format!("/pypi/files/wgfx-app/{sha}/..%2F..%2Fproxy.toml").into_bytes(),
        ),
        ("backslashes", b"/simple/..\\..\\etc\\passwd/".to_vec()),
        ("invalid percent-encoding", b"/simple/wgfx-app%zz/".to_vec()),
        (
            "a 10 000-character project name",
            format!("/simple/{}/", "a".repeat(10_000)).into_bytes(),
        ),
        (
            "a 10 000-character file path",
            format!("/pypi/files/wgfx-app/{sha}/{}.whl", "b".repeat(10_000)).into_bytes(),
        ),
        ("an unknown repository", b"/nope/simple/x/".to_vec()),
        (
            "an unknown repository's files",
            format!("/nope/files/x/{sha}/x-1.0-py3-none-any.whl").into_bytes(),
        ),
        ("a reserved repository name", b"/files/simple/x/".to_vec()),
    ]
}

#[test]
fn malformed_requests_get_a_plain_reason_and_never_a_500() {
    let bed = TestBed::start(Mode::Json);
    let addr = bed.wheelgate.addr();
    let mut failures = Vec::new();
    for (what, target) in cases() {
        let shown = String::from_utf8_lossy(&target)
            .chars()
            .take(80)
            .collect::<String>();
        match raw_get(addr, &target) {
            Err(e) => failures.push(format!("{what} ({shown}): no HTTP answer: {e}")),
            Ok(response) => {
                if response.status != 400 && response.status != 404 {
                    failures.push(format!(
                        "{what} ({shown}): status {} (body {:?})",
                        response.status,
                        response.text()
                    ));
                }
                if response.text().trim().is_empty() {
                    failures.push(format!(
                        "{what} ({shown}): {} without a reason in the body",
                        response.status
                    ));
                }
                let content_type = response.header("content-type").unwrap_or_default();
                if !content_type.starts_with("text/plain") {
                    failures.push(format!(
                        "{what} ({shown}): reason not plain text ({content_type:?})"
                    ));
                }
            }
        }
    }
    let health = raw_get(addr, b"/-/health").map(|r| r.status);
    assert!(
        failures.is_empty(),
        "malformed requests were mishandled:\n  {}\nwheelgate's log:\n{}",
        failures.join("\n  "),
        bed.wheelgate.output()
    );
    assert_eq!(
        health,
        Ok(200),
        "wheelgate must keep serving after malformed requests"
    );
    assert!(
        !bed.wheelgate.output().contains("panicked"),
        "wheelgate panicked:\n{}",
        bed.wheelgate.output()
    );
}
