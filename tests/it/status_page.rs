//! The status page at `/` (issue 15) as a person sees it, in headless Chromium.
//!
//! After known traffic (a page, a refused file, a repository whose upstream is unreachable), the
//! page is rendered by Chromium: its DOM must show the repositories with their state, the
//! denial, the upstream error and the pip.conf line for this server; screenshots at desktop and
//! phone widths are saved under `target/` for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::clients::run_bounded;
use crate::harness::http;
use crate::harness::upstream::JSON_MEDIA_TYPE;
use crate::metrics::{kappa_file, operations_bed, DEAD, KAPPA, NO_KAPPA_2};

/// The longest a Chromium run may take.
const CHROMIUM_LIMIT: Duration = Duration::from_secs(90);

/// Debian's Chromium. CI installs it (`.ci/run`); a machine without it fails here, saying so,
/// rather than skipping the check.
fn chromium() -> PathBuf {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed, and the status page test needs it: run .ci/run, which \
             installs Debian's chromium when it is absent (or apt-get install -y \
             --no-install-recommends chromium)"
        )
    })
}

/// Runs headless Chromium on `url` with `args`; returns its standard output.
fn run_chromium(args: &[String], url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(url);
    let run = run_bounded(&mut command, CHROMIUM_LIMIT);
    assert!(run.success(), "chromium failed on {url}:\n{}", run.output());
    run.stdout.clone()
}

/// The text of the element with `id` in `dom`, tags stripped.
fn text_of(dom: &str, id: &str) -> String {
    let parsed = tl::parse(dom, tl::ParserOptions::default()).unwrap();
    let parser = parsed.parser();
    let element = parsed
        .get_element_by_id(id)
        .and_then(|handle| handle.get(parser))
        .unwrap_or_else(|| panic!("no element #{id} in the page:\n{dom}"));
    let text = element.inner_text(parser);
    html_escape::decode_html_entities(&text).into_owned()
}

/// Asserts `path` is a PNG of `width` x `height` with more than a blank page's bytes.
fn assert_screenshot(path: &Path, width: u32, height: u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is not a PNG",
        path.display()
    );
    let dimension =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    assert_eq!(
        (dimension(16), dimension(20)),
        (width, height),
        "{}",
        path.display()
    );
    // A blank page of this size compresses to a few kilobytes; text, tables and colour take more.
    assert!(
        bytes.len() > 20_000,
        "{} is only {} bytes: is the page blank?",
        path.display(),
        bytes.len()
    );
}

#[test]
fn the_status_page_shows_repositories_denials_errors_and_client_lines_in_chromium() {
    let (bed, _, _) = operations_bed();
    let page_url = bed.url(&format!("/simple/{KAPPA}/"));
    http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]).expect_ok(&page_url);
    http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]).expect_ok(&page_url);
    let (denied, _) = kappa_file("2.0");
    assert_eq!(
        http::get(&bed.url(&denied), &[]).status,
        StatusCode::FORBIDDEN
    );
    let dead = http::get(&bed.url(&format!("/{DEAD}/simple/{KAPPA}/")), &[]);
    assert_eq!(dead.status, StatusCode::BAD_GATEWAY);

    let url = bed.url("/");
    let dom = run_chromium(&["--dump-dom".to_owned()], &url);

    let repositories = text_of(&dom, "repositories");
    for name in ["pypi", "internal", DEAD] {
        assert!(
            repositories.contains(name),
            "{name} missing:\n{repositories}"
        );
    }
    assert!(repositories.contains("hosted"), "{repositories}");
    // pypi answered; dead's upstream refuses connections. The rows are in configuration order.
    let at = |name: &str| {
        repositories
            .find(name)
            .unwrap_or_else(|| panic!("{name} missing:\n{repositories}"))
    };
    let pypi_row = &repositories[at("pypi")..at("internal")];
    assert!(pypi_row.contains("online"), "{pypi_row}");
    let dead_row = &repositories[at(DEAD)..];
    assert!(dead_row.contains("offline"), "{dead_row}");
    assert!(dead_row.contains("127.0.0.1:9"), "its upstream: {dead_row}");

    let denials = text_of(&dom, "denials");
    for expected in [KAPPA, "2.0", NO_KAPPA_2, "enforce", "pypi"] {
        assert!(denials.contains(expected), "{expected} missing:\n{denials}");
    }
    let errors = text_of(&dom, "upstream-errors");
    assert!(errors.contains(DEAD), "{errors}");
    assert!(errors.contains("127.0.0.1:9"), "{errors}");

    let addr = bed.wheelgate.addr();
    let pip = text_of(&dom, "pip-conf");
    assert!(
        pip.contains(&format!("index-url = http://{addr}/simple/")),
        "{pip}"
    );
    assert!(pip.contains("trusted-host = 127.0.0.1"), "{pip}");
    let uv = text_of(&dom, "uv-toml");
    assert!(
        uv.contains(&format!("url = \"http://{addr}/simple/\"")),
        "{uv}"
    );
    assert!(
        text_of(&dom, "hit-rate").contains('%'),
        "a hit rate after a hit"
    );

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    for (name, width, height) in [
        ("status-page.png", 1280, 900),
        ("status-page-phone.png", 390, 844),
    ] {
        let path = target.join(name);
        let _ = std::fs::remove_file(&path);
        run_chromium(
            &[
                format!("--screenshot={}", path.display()),
                format!("--window-size={width},{height}"),
            ],
            &url,
        );
        assert_screenshot(&path, width, height);
    }
}
