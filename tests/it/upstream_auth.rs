//! The upstream's `__token__` credentials (SPEC §3): sent to the upstream's own origin and to
//! `auth_hosts` only, never across a redirect to another origin; a rotated secret (rewritten in
//! place, or swapped Kubernetes-style) is used on the next request with no restart; a refused
//! token is a 502 that says so; and the token never shows up anywhere the tests can see.

use ::http::StatusCode;

use crate::harness::fixtures::catalog;
use crate::harness::http::{self, HttpResponse};
use crate::harness::upstream::{basic_auth_value, Mode, Origin, JSON_MEDIA_TYPE};
use crate::harness::{assert_no_secret, link_in, new_token, TestBed, TokenLayout};

/// The token and its base64 form: either one appearing would be a leak.
fn secret_forms(token: &str) -> Vec<String> {
    vec![
        token.to_owned(),
        basic_auth_value(token)
            .trim_start_matches("Basic ")
            .to_owned(),
    ]
}

fn assert_response_clean(response: &HttpResponse, secrets: &[String], what: &str) {
    assert_no_secret(&response.text(), secrets, &format!("the body of {what}"));
    assert_no_secret(
        &response.headers_text(),
        secrets,
        &format!("the headers of {what}"),
    );
}

/// Fetches a project page (JSON) and one of its files through wheelgate; returns both responses.
fn fetch_page_and_file(bed: &TestBed, project: &str, filename: &str) -> Vec<HttpResponse> {
    let page_url = bed.url(&format!("/simple/{project}/"));
    let page = http::get(&page_url, &[("accept", JSON_MEDIA_TYPE)]);
    page.expect_ok(&page_url);
    let file_url = link_in(&page, &page_url, filename);
    let file = http::get(&file_url, &[]);
    let expected = &catalog()
        .expect_project(project)
        .expect_file(filename)
        .bytes;
    assert!(
        file.expect_ok(&file_url) == expected.as_slice(),
        "{filename}: wrong bytes through wheelgate"
    );
    vec![page, file]
}

#[test]
fn credentials_go_only_to_the_upstream_origin_and_auth_hosts() {
    let bed = TestBed::start_with(Mode::Json, TokenLayout::File, "debug");
    let token = bed.upstream.token();
    let secrets = secret_forms(&token);
    let mut responses = Vec::new();
    for (project, filename) in [
        ("wgfx-app", "wgfx_app-1.1.0-py3-none-any.whl"),
        ("wgfx-alpha", "wgfx_alpha-1.0.0-py3-none-any.whl"),
        ("wgfx-far", "wgfx_far-1.1.0-py3-none-any.whl"),
        ("wgfx-hop", "wgfx_hop-1.0.0-py3-none-any.whl"),
        ("wgfx-tokenhost", "wgfx_tokenhost-1.0.0-py3-none-any.whl"),
    ] {
        responses.extend(fetch_page_and_file(&bed, project, filename));
    }
    // A client's own Authorization header is never forwarded upstream (whether wheelgate accepts
    // it is a matter for its own access control; what the upstream saw is checked below).
    let client_auth = basic_auth_value("someone-else");
    responses.push(http::get(
        &bed.url("/simple/wgfx-beta/"),
        &[("authorization", client_auth.as_str())],
    ));

    let expected = basic_auth_value(&token);
    let main = bed.upstream.requests_on(Origin::Main);
    assert!(!main.is_empty(), "wheelgate never reached the upstream");
    for request in &main {
        assert_eq!(
            request.authorization.as_deref(),
            Some(expected.as_str()),
            "main origin {} {} without the token",
            request.method,
            request.path
        );
    }
    let second = bed.upstream.requests_on(Origin::Second);
    assert!(
        second.iter().any(|r| r.path.starts_with("/far/wgfx-far/")),
        "the second-origin file was never fetched"
    );
    assert!(
        second.iter().any(|r| r.path.starts_with("/far/wgfx-hop/")),
        "the redirect target was never fetched"
    );
    for request in &second {
        assert_eq!(
            request.authorization, None,
            "second origin {} {} received credentials",
            request.method, request.path
        );
    }
    let third = bed.upstream.requests_on(Origin::Third);
    assert!(!third.is_empty(), "the auth_hosts origin was never asked");
    for request in &third {
        assert_eq!(
            request.authorization.as_deref(),
            Some(expected.as_str()),
            "auth_hosts origin {} without the token",
            request.path
        );
    }

    for (i, response) in responses.iter().enumerate() {
        assert_response_clean(response, &secrets, &format!("response #{i}"));
    }
    assert_no_secret(
        &bed.wheelgate.output(),
        &secrets,
        "wheelgate's log (debug level)",
    );
}

/// Asks for a project page wheelgate has not fetched before (so no cache can answer) and checks
/// that it arrived and that the upstream saw `token` for it.
fn fresh_page_uses(bed: &TestBed, project: &str, token: &str) -> HttpResponse {
    let url = bed.url(&format!("/simple/{project}/"));
    let response = http::get(&url, &[]);
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{url} after rotation: {}\nwheelgate's log:\n{}",
        response.text(),
        bed.wheelgate.output()
    );
    let seen = bed.upstream.requests_for(&format!("/simple/{project}/"));
    let last = seen
        .last()
        .unwrap_or_else(|| panic!("{project} was never asked upstream"));
    assert_eq!(
        last.authorization.as_deref(),
        Some(basic_auth_value(token).as_str()),
        "{project}: not the rotated token"
    );
    response
}

fn rotation(layout: TokenLayout) {
    let mut bed = TestBed::start_with(Mode::Json, layout, "debug");
    let first = bed.upstream.token();
    let mut responses = vec![fresh_page_uses(&bed, "wgfx-app", &first)];

    let second = bed.rotate_token();
    responses.push(fresh_page_uses(&bed, "wgfx-beta", &second));

    let third = bed.rotate_token();
    responses.push(fresh_page_uses(&bed, "wgfx-delta", &third));

    let secrets: Vec<String> = [first, second, third]
        .iter()
        .flat_map(|t| secret_forms(t))
        .collect();
    for (i, response) in responses.iter().enumerate() {
        assert_response_clean(response, &secrets, &format!("page #{i}"));
    }
    assert_no_secret(
        &bed.wheelgate.output(),
        &secrets,
        "wheelgate's log (debug level)",
    );
}

#[test]
fn a_token_rewritten_in_place_is_used_on_the_next_request() {
    rotation(TokenLayout::File);
}

#[test]
fn a_kubernetes_secret_swap_is_used_on_the_next_request() {
    rotation(TokenLayout::KubernetesSecret);
}

#[test]
fn a_refused_token_is_a_502_that_does_not_show_it() {
    let bed = TestBed::start_with(Mode::Json, TokenLayout::File, "debug");
    let configured = bed.upstream.token();
    // The upstream moves on; wheelgate's secret file still holds the old token.
    let upstream_side = new_token();
    bed.upstream.set_token(&upstream_side);
    let url = bed.url("/simple/wgfx-epsilon/");
    let response = http::get(&url, &[]);
    assert_eq!(
        response.status,
        StatusCode::BAD_GATEWAY,
        "{url}: {}",
        response.text()
    );
    assert!(
        response.text().to_ascii_lowercase().contains("credential"),
        "the 502 must say the upstream refused the credentials, got {:?}",
        response.text()
    );
    let secrets: Vec<String> = [configured, upstream_side]
        .iter()
        .flat_map(|t| secret_forms(t))
        .collect();
    assert_response_clean(&response, &secrets, "the 502");
    assert_no_secret(
        &bed.wheelgate.output(),
        &secrets,
        "wheelgate's log (debug level)",
    );
}
