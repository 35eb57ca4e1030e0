//! A hostile upstream's files (issue 16, items 6 and 7): a file longer or shorter than the size
//! its page declared, or over `[server] max_file_size`, is refused and nothing is stored; a file
//! link (or a redirect) to a private, link-local or other internal address is refused by policy
//! without a connection, unless the repository's `file_hosts` lists the host.
//!
//! The upstream is the crafted one (`harness::crafted`), which serves whatever lie a test sets.
//! Each test also fetches an honest file from the same upstream, so that a refusal cannot be the
//! set-up failing.

use std::time::{Duration, Instant};

use crate::harness::crafted::{Crafted, PageFile};
use crate::harness::fixtures::sha256_hex;
use crate::harness::http::{try_get, HttpResponse};
use crate::harness::upstream::Mode;
use crate::harness::wheelgate::RemoteConfig;
use crate::harness::{wait_until, TestBed, TokenLayout};

const PROJECT: &str = "wglim";

/// Incompressible-enough bytes of `len`, different for each `seed`.
pub(crate) fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 7 + i / 251) % 256) as u8 ^ seed)
        .collect()
}

pub(crate) fn wheel_name(tag: &str) -> String {
    format!("{PROJECT}_{tag}-1.0-py3-none-any.whl")
}

/// A wheelgate whose remote `pypi` is the crafted upstream, adjusted by `adjust`.
fn bed(crafted: &Crafted, adjust: impl FnOnce(&mut RemoteConfig)) -> TestBed {
    let url = crafted.index_url();
    TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.upstream_url = url;
        adjust(config)
    })
}

/// GETs `filename` through wheelgate (its page first, as a client would).
fn fetch(bed: &TestBed, filename: &str) -> HttpResponse {
    let url = bed.file_url(PROJECT, filename);
    try_get(&url, &[]).unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// True when `response` is a complete 200 with exactly `expected`.
fn served(response: &HttpResponse, expected: &[u8]) -> bool {
    response.status.as_u16() == 200 && response.body_error.is_none() && response.body == expected
}

#[test]
fn a_file_other_than_its_declared_size_is_refused_and_nothing_is_stored() {
    let crafted = Crafted::start();
    let big = content(3 << 20, 1);
    let sha = sha256_hex(&big);
    let file = |tag: &str, size: u64| PageFile {
        filename: wheel_name(tag),
        url: crafted.url(&format!("/files/{}", wheel_name(tag))),
        sha256: sha.clone(),
        size: Some(size),
    };
    // The digests are right: only the sizes lie.
    let len = big.len() as u64;
    crafted.page(
        PROJECT,
        &[
            file("length", 10),
            file("nolength", 10),
            file("short", len + 1000),
            file("honest", len),
        ],
    );
    for (tag, length) in [
        ("length", true),
        ("nolength", false),
        ("short", false),
        ("honest", true),
    ] {
        crafted.file(&format!("/files/{}", wheel_name(tag)), big.clone(), length);
    }
    let bed = bed(&crafted, |_| {});

    // A Content-Length other than the declared size: refused before the first byte.
    let refused = fetch(&bed, &wheel_name("length"));
    assert_eq!(refused.status.as_u16(), 502, "{}", refused.text());
    let reason = refused.text();
    assert!(
        reason.contains("PEP 700 size") && reason.contains("10") && reason.contains("3145728"),
        "the refusal names both sizes: {reason}"
    );
    // No Content-Length: held to the declared size as it streams, so no client gets the bytes.
    for tag in ["nolength", "short"] {
        let cut = fetch(&bed, &wheel_name(tag));
        assert!(
            !served(&cut, &big) && cut.body.len() < big.len(),
            "{tag}: status {}, {} bytes, error {:?}",
            cut.status,
            cut.body.len(),
            cut.body_error
        );
    }
    bed.assert_tmp_empties(Duration::from_secs(10), "after the refused downloads");
    assert!(
        !bed.blob_path(&sha).exists(),
        "a file that broke its declared size was stored"
    );
    // Each refusal is logged with the file, its upstream URL and the declared size (once its
    // download task ends, which may be after the client was cut off).
    for tag in ["length", "nolength", "short"] {
        let name = wheel_name(tag);
        let line = || {
            let log = bed.wheelgate.output();
            log.lines()
                .find(|line| line.contains(&format!("file={name}")))
                .map(str::to_owned)
        };
        assert!(
            wait_until(Duration::from_secs(10), || line().is_some()),
            "no log line names {name}:\n{}",
            bed.wheelgate.output()
        );
        let line = line().unwrap_or_default();
        let url = crafted.url(&format!("/files/{name}"));
        assert!(
            line.contains(&url) && line.contains("declared_size=Some("),
            "the log line names the URL and the declared size: {line}"
        );
    }

    // The same bytes under an honest size are served and stored.
    let honest = fetch(&bed, &wheel_name("honest"));
    assert!(served(&honest, &big), "status {}", honest.status);
}

#[test]
fn max_file_size_refuses_a_file_announced_over_it_and_cuts_one_that_grows_over_it() {
    let crafted = Crafted::start();
    let big = content(3 << 20, 2);
    let small = content(512 << 10, 3);
    let entry = |tag: &str, bytes: &[u8], size: Option<u64>| PageFile {
        filename: wheel_name(tag),
        url: crafted.url(&format!("/files/{}", wheel_name(tag))),
        sha256: sha256_hex(bytes),
        size,
    };
    crafted.page(
        PROJECT,
        &[
            entry("announced", &big, Some(big.len() as u64)),
            entry("unannounced", &big, None),
            entry("small", &small, Some(small.len() as u64)),
        ],
    );
    crafted.file(
        &format!("/files/{}", wheel_name("announced")),
        big.clone(),
        true,
    );
    crafted.file(
        &format!("/files/{}", wheel_name("unannounced")),
        big.clone(),
        false,
    );
    crafted.file(
        &format!("/files/{}", wheel_name("small")),
        small.clone(),
        true,
    );
    let bed = bed(&crafted, |config| {
        config.server_toml = "max_file_size = \"1MiB\"\n".to_owned();
    });

    let refused = fetch(&bed, &wheel_name("announced"));
    assert_eq!(refused.status.as_u16(), 502, "{}", refused.text());
    let reason = refused.text();
    assert!(
        reason.contains("max_file_size") && reason.contains(&wheel_name("announced")),
        "{reason}"
    );
    let cut = fetch(&bed, &wheel_name("unannounced"));
    assert!(
        !served(&cut, &big) && cut.body.len() <= 1 << 20,
        "status {}, {} bytes",
        cut.status,
        cut.body.len()
    );
    bed.assert_tmp_empties(Duration::from_secs(10), "after the refused downloads");
    assert!(!bed.blob_path(&sha256_hex(&big)).exists());
    let small_served = fetch(&bed, &wheel_name("small"));
    assert!(
        served(&small_served, &small),
        "status {}",
        small_served.status
    );
}

/// Addresses outside the classes of the upstream (127.0.0.1) that hold none of the files: a
/// connection there could only fail, time out, or find no such file.
const PRIVATE: &str = "10.255.255.1:9";
const LINK_LOCAL: &str = "169.254.169.254";

#[test]
fn links_and_redirects_to_internal_addresses_are_refused_by_policy_unless_listed() {
    let crafted = Crafted::start();
    let honest = content(100_000, 4);
    let sha = sha256_hex(&honest);
    // Each its own digest: a file is found in the store by digest, whatever its link.
    let entry = |tag: &str, url: String| PageFile {
        filename: wheel_name(tag),
        url,
        sha256: if tag == "honest" {
            sha.clone()
        } else {
            sha256_hex(tag.as_bytes())
        },
        size: None,
    };
    crafted.page(
        PROJECT,
        &[
            entry(
                "private",
                format!("http://{PRIVATE}/{}", wheel_name("private")),
            ),
            entry(
                "metadata",
                format!("http://{LINK_LOCAL}/latest/{}", wheel_name("metadata")),
            ),
            entry("redirect", crafted.url("/files/redirect.whl")),
            entry("honest", crafted.url("/files/honest.whl")),
        ],
    );
    crafted.set(
        "/files/redirect.whl",
        crate::harness::crafted::Reply::Redirect(format!(
            "http://{PRIVATE}/{}",
            wheel_name("redirect")
        )),
    );
    crafted.file("/files/honest.whl", honest.clone(), true);
    let connect_timeout = Duration::from_secs(5);
    let mut bed = bed(&crafted, |config| {
        config.remote_toml = "connect_timeout = \"5s\"\n".to_owned();
    });

    for (tag, class) in [
        ("private", "private"),
        ("metadata", "link-local"),
        ("redirect", "private"),
    ] {
        let started = Instant::now();
        let refused = fetch(&bed, &wheel_name(tag));
        let reason = refused.text();
        assert_eq!(refused.status.as_u16(), 502, "{tag}: {reason}");
        for needed in ["refused by policy", class, "file_hosts"] {
            assert!(
                reason.contains(needed),
                "{tag}: the refusal says {needed:?}: {reason}"
            );
        }
        assert!(
            started.elapsed() < connect_timeout,
            "{tag}: refused after {:?}, as if a connection had been tried",
            started.elapsed()
        );
    }
    assert!(
        crafted.seen().contains(&"/files/redirect.whl".to_owned()),
        "the redirect itself was fetched from the upstream"
    );
    let fine = fetch(&bed, &wheel_name("honest"));
    assert!(served(&fine, &honest), "status {}", fine.status);

    // Listed in file_hosts: the private host is tried (whatever answers there, if anything,
    // does not have the file), the link-local one is still refused.
    bed.restart_with(|config| {
        config.remote_toml = format!("connect_timeout = \"2s\"\nfile_hosts = [\"{PRIVATE}\"]\n");
    });
    let tried = fetch(&bed, &wheel_name("private"));
    let reason = tried.text();
    assert!(
        tried.status.as_u16() != 200 && !reason.contains("refused by policy"),
        "a listed host is connected to: {} {reason}",
        tried.status
    );
    let still = fetch(&bed, &wheel_name("metadata"));
    assert!(
        still.text().contains("refused by policy"),
        "{}",
        still.text()
    );
}
