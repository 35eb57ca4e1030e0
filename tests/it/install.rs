//! pip and uv install a project with transitive dependencies through wheelgate, against an upstream
//! serving JSON and one serving only HTML.
//!
//! The installed set is asserted exactly: it proves that yanked files and files whose
//! requires-python excludes the interpreter were left out, that the dependency on the second origin
//! and the one behind the cross-origin redirect came through, and nothing else was installed.

use std::collections::BTreeSet;

use crate::harness::clients::{self, dists, ClientRun};
use crate::harness::upstream::{Mode, Upstream};
use crate::harness::{assert_no_secret, new_token, TestBed};

/// What `install wgfx-app` must produce, whichever client and upstream mode:
/// app 2.0.0 requires Python >=3.99, alpha 1.2.0 is yanked, beta 2.0.0 caps delta below 2.
pub(crate) fn expected_app_install() -> BTreeSet<(String, String)> {
    dists(&[
        ("wgfx-app", "1.1.0"),
        ("wgfx-alpha", "1.0.0"),
        ("wgfx-beta", "2.0.0"),
        ("wgfx-delta", "1.5.0"),
        ("wgfx-epsilon", "0.3.0"),
        ("wgfx-gamma-util", "0.2.0"),
        ("wgfx-far", "1.1.0"),
        ("wgfx-hop", "1.0.0"),
    ])
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Pip,
    Uv,
}

fn install(
    client: Client,
    index_url: &str,
    target: &std::path::Path,
    requirements: &[&str],
) -> ClientRun {
    match client {
        Client::Pip => clients::pip_install(index_url, target, requirements),
        Client::Uv => clients::uv_install(index_url, target, requirements),
    }
}

fn install_app_through_wheelgate(client: Client, mode: Mode) {
    let bed = TestBed::start(mode);
    let target = bed.target_dir("app");
    let run = install(client, &bed.wheelgate.index_url(), &target, &["wgfx-app"]);
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        expected_app_install(),
        "{client:?} through wheelgate ({mode:?} upstream) installed the wrong set; output:\n{}",
        run.output()
    );
    // The files really came through wheelgate from the upstream's origins.
    assert!(
        !bed.upstream.requests_for("/simple/wgfx-app/").is_empty(),
        "wheelgate never asked upstream for wgfx-app"
    );
    assert!(
        bed.upstream
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/far/wgfx-far/")),
        "the second-origin file was not fetched from the second origin"
    );
    assert!(
        bed.upstream
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/redirect/wgfx-hop/")),
        "the redirected file was not fetched through the redirect"
    );
    let token = bed.upstream.token();
    assert_no_secret(
        &run.output(),
        std::slice::from_ref(&token),
        &format!("{client:?}'s output"),
    );
    assert_no_secret(&bed.wheelgate.output(), &[token], "wheelgate's output");
}

#[test]
fn pip_installs_through_wheelgate_from_a_json_upstream() {
    install_app_through_wheelgate(Client::Pip, Mode::Json);
}

#[test]
fn pip_installs_through_wheelgate_from_an_html_only_upstream() {
    install_app_through_wheelgate(Client::Pip, Mode::HtmlOnly);
}

#[test]
fn uv_installs_through_wheelgate_from_a_json_upstream() {
    install_app_through_wheelgate(Client::Uv, Mode::Json);
}

#[test]
fn uv_installs_through_wheelgate_from_an_html_only_upstream() {
    install_app_through_wheelgate(Client::Uv, Mode::HtmlOnly);
}

/// Proves the fixtures and the fixture upstream are real: pip and uv install from it directly, in
/// both modes, with the token in the index URL. If this fails, the wheelgate tests mean nothing.
#[test]
fn fixture_upstream_installs_directly() {
    for mode in [Mode::Json, Mode::HtmlOnly] {
        let upstream = Upstream::start(mode, &new_token());
        for client in [Client::Pip, Client::Uv] {
            let target =
                tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a target dir: {e}"));
            let run = install(
                client,
                &upstream.index_url_with_token(),
                target.path(),
                &["wgfx-app"],
            );
            run.assert_success();
            assert_eq!(
                clients::installed(target.path()),
                expected_app_install(),
                "{client:?} directly from the {mode:?} fixture upstream; output:\n{}",
                run.output()
            );
        }
        let json_asked = upstream.requests_for("/simple/wgfx-app/").iter().any(|r| {
            r.accept
                .as_deref()
                .is_some_and(|a| a.contains("application/vnd.pypi.simple.v1+json"))
        });
        assert!(
            json_asked,
            "the clients should ask for PEP 691 JSON; the fixture's negotiation is then exercised"
        );
    }
}
