//! The store (issue 3, SPEC §4): what wheelgate has served once it can serve again with the
//! upstream gone and after a restart; concurrent requests for one file share one upstream fetch
//! and stream while it runs; a file that betrays its sha256 leaves nothing behind; a kill -9 in the
//! middle of a 200 MiB transfer leaves a store that opens and serves the whole file again, with
//! the server's memory bounded while it streams.
//!
//! Every claim is checked against the upstream's request log or the store directory itself
//! (`<store>/blobs/sha256/<2 hex>/<64 hex>`, `<store>/tmp/`), not only against what clients saw.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::harness::clients;
use crate::harness::generated::{self, Delivery};
use crate::harness::http::{self, StreamedResponse};
use crate::harness::upstream::Mode;
use crate::harness::{wait_until, TestBed};
use crate::install::expected_app_install;

/// How long asynchronous cleanup (a discarded temporary file) may take to show on disk.
const CLEANUP_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug)]
enum Client {
    Pip,
    Uv,
}

fn install(client: Client, bed: &TestBed, target_name: &str) {
    let target = bed.target_dir(target_name);
    let run = match client {
        Client::Pip => clients::pip_install(&bed.wheelgate.index_url(), &target, &["wgfx-app"]),
        Client::Uv => clients::uv_install(&bed.wheelgate.index_url(), &target, &["wgfx-app"]),
    };
    run.assert_success();
    assert_eq!(
        clients::installed(&target),
        expected_app_install(),
        "{client:?} ({target_name}) installed the wrong set; output:\n{}\nwheelgate's output:\n{}",
        run.output(),
        bed.wheelgate.output()
    );
}

/// Warm the store with one install, stop the upstream, then install again into fresh targets:
/// through the same process, and through a process restarted on the same store.
fn installs_from_the_store_alone(client: Client) {
    let mut bed = TestBed::start(Mode::Json);
    install(client, &bed, "warm");
    assert!(!bed.upstream.requests_for("/simple/wgfx-app/").is_empty(), "the warm-up install never reached the upstream");

    bed.upstream.stop();
    install(client, &bed, "upstream-stopped");

    bed.wheelgate.restart();
    install(client, &bed, "after-restart");
}

#[test]
fn pip_installs_from_the_store_alone_with_the_upstream_stopped_and_after_a_restart() {
    installs_from_the_store_alone(Client::Pip);
}

#[test]
fn uv_installs_from_the_store_alone_with_the_upstream_stopped_and_after_a_restart() {
    installs_from_the_store_alone(Client::Uv);
}

/// What one client of the fifty got.
struct Fetched {
    response: Result<StreamedResponse, String>,
    sha256: String,
}

#[test]
fn fifty_concurrent_requests_share_one_upstream_fetch_and_stream_while_it_runs() {
    const CLIENTS: usize = 50;
    let bed = TestBed::start(Mode::Json);
    let slow = generated::expect("wgfx-slow");
    let Delivery::Gated { after } = slow.delivery else { panic!("wgfx-slow must be a gated fixture") };
    let url = bed.file_url(slow.project, slow.filename);

    // Each client counts itself once its first body bytes arrive.
    let started = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (url, started) = (url.clone(), Arc::clone(&started));
            std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                let mut first = true;
                let response = http::get_streaming(&url, &[], &mut |data: &[u8]| {
                    if first && !data.is_empty() {
                        first = false;
                        started.fetch_add(1, Ordering::SeqCst);
                    }
                    hasher.update(data);
                });
                Fetched { response, sha256: hex::encode(hasher.finalize()) }
            })
        })
        .collect();

    // The upstream has sent its first MiB and waits at the gate: every client must already be
    // receiving, so they cannot be waiting for the whole file.
    let all_started = wait_until(Duration::from_secs(30), || started.load(Ordering::SeqCst) == CLIENTS);
    let fetches = bed.upstream.requests_for(&slow.path());
    if !all_started {
        bed.upstream.release_gate();
        panic!(
            "only {} of {CLIENTS} clients received bytes while the upstream held the file after its first {after} bytes \
             (upstream fetches so far: {}); followers must read the growing temporary file",
            started.load(Ordering::SeqCst),
            fetches.len()
        );
    }
    assert_eq!(fetches.len(), 1, "{CLIENTS} concurrent requests must share one upstream fetch: {fetches:?}");

    bed.upstream.release_gate();
    let mut cache_states = Vec::new();
    for (index, handle) in handles.into_iter().enumerate() {
        let fetched = handle.join().unwrap_or_else(|_| panic!("client {index} panicked"));
        let response = fetched.response.unwrap_or_else(|e| panic!("client {index}: no response: {e}"));
        assert_eq!(response.status, StatusCode::OK, "client {index}");
        assert!(response.body_error.is_none(), "client {index}: body broke off: {:?}", response.body_error);
        assert_eq!((response.received, fetched.sha256.as_str()), (slow.size, slow.sha256()), "client {index}: wrong bytes");
        cache_states.push(response.cache().unwrap_or("(none)").to_owned());
    }
    assert_eq!(bed.upstream.requests_for(&slow.path()).len(), 1, "still one upstream fetch after the transfer");
    let misses = cache_states.iter().filter(|s| *s == "miss").count();
    let hits = cache_states.iter().filter(|s| *s == "hit").count();
    assert_eq!((misses, hits), (1, CLIENTS - 1), "one client started the fetch, the others joined it: {cache_states:?}");

    let later = http::get(&url, &[]);
    assert_eq!(later.cache(), Some("hit"), "{url} once stored");
    assert_eq!(crate::harness::fixtures::sha256_hex(later.expect_ok(&url)), slow.sha256());
    assert_eq!(bed.upstream.requests_for(&slow.path()).len(), 1, "a stored file is served without the upstream");
}

#[test]
fn a_file_that_betrays_its_sha256_leaves_nothing_in_the_store() {
    let bed = TestBed::start(Mode::Json);
    let bad = generated::expect("wgfx-badhash");
    let url = bed.file_url(bad.project, bad.filename);
    let corrupted_sha256 = bad.corrupted_sha256();

    let outcome = http::try_get(&url, &[]);
    assert_eq!(bed.upstream.requests_for(&bad.path()).len(), 1, "wheelgate never fetched the file, nothing was tested");
    if let Ok(response) = &outcome {
        assert!(
            !response.status.is_success() || response.body_error.is_some(),
            "GET {url} completed with {} and {} bytes; a file that does not match its sha256 must fail the client",
            response.status,
            response.body.len()
        );
        assert_ne!(response.body.len() as u64, bad.size, "the mismatching bytes arrived whole");
    }

    let leftovers = |bed: &TestBed| -> Vec<String> {
        let blobs = bed.store_files("blobs").into_iter().filter(|path| {
            let same_size = std::fs::metadata(path).is_ok_and(|m| m.len() == bad.size);
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            same_size || name == bad.sha256() || name == corrupted_sha256
        });
        blobs.chain(bed.store_files("tmp")).map(|p| p.display().to_string()).collect()
    };
    assert!(
        wait_until(CLEANUP_WAIT, || leftovers(&bed).is_empty()),
        "a mismatching download must leave no blob and nothing in tmp/; found {:?}",
        leftovers(&bed)
    );

    bed.upstream.set_corrupt(false);
    let repaired = http::get(&url, &[]);
    assert_eq!(repaired.status, StatusCode::OK, "{url} after the upstream was fixed: {}", repaired.text());
    assert_eq!(crate::harness::fixtures::sha256_hex(repaired.expect_ok(&url)), bad.sha256());
    assert_eq!(bed.upstream.requests_for(&bad.path()).len(), 2, "the failed fetch was not kept: the file is fetched again");
    let blob = bed.blob_path(bad.sha256());
    assert!(
        wait_until(CLEANUP_WAIT, || std::fs::metadata(&blob).is_ok_and(|m| m.len() == bad.size)),
        "the verified file must be stored as {}; blobs: {:?}",
        blob.display(),
        bed.store_files("blobs")
    );
    assert!(wait_until(CLEANUP_WAIT, || bed.store_files("tmp").is_empty()), "tmp/ after a commit: {:?}", bed.store_files("tmp"));
}

/// Streams `url`, hashing as it goes; `received` counts the bytes so far for the caller to watch.
fn stream_and_hash(url: &str, received: &AtomicU64) -> (Result<StreamedResponse, String>, String) {
    let mut hasher = Sha256::new();
    let response = http::get_streaming(url, &[], &mut |data: &[u8]| {
        hasher.update(data);
        received.fetch_add(data.len() as u64, Ordering::SeqCst);
    });
    (response, hex::encode(hasher.finalize()))
}

#[test]
fn kill_9_mid_download_then_restart_serves_the_whole_file_with_bounded_memory() {
    const KILL_AFTER: u64 = 40 * 1024 * 1024;
    const RSS_LIMIT_KIB: u64 = 64 * 1024;
    let mut bed = TestBed::start(Mode::Json);
    let huge = generated::expect("wgfx-huge");
    // Computed here, before the page asks for it, so the upstream answers the page at once.
    let expected_sha256 = huge.sha256().to_owned();
    let url = bed.file_url(huge.project, huge.filename);

    // Throttled (3200 chunks) so the transfer is still running when the process is killed.
    bed.upstream.set_throttle(Some(Duration::from_millis(2)));
    let received = Arc::new(AtomicU64::new(0));
    let first = {
        let (url, received) = (url.clone(), Arc::clone(&received));
        std::thread::spawn(move || stream_and_hash(&url, &received))
    };
    let reached = wait_until(Duration::from_secs(90), || received.load(Ordering::SeqCst) >= KILL_AFTER);
    assert!(reached, "the client received only {} bytes of {} in 90 s", received.load(Ordering::SeqCst), huge.size);
    bed.wheelgate.kill();
    let (interrupted, _) = first.join().unwrap_or_else(|_| panic!("the first client panicked"));
    if let Ok(response) = interrupted {
        assert!(
            response.body_error.is_some() || response.received < huge.size,
            "the transfer was killed at {} bytes yet completed",
            received.load(Ordering::SeqCst)
        );
    }
    let killed_at = received.load(Ordering::SeqCst);

    bed.upstream.set_throttle(None);
    bed.wheelgate.start_again();
    assert!(
        wait_until(CLEANUP_WAIT, || bed.store_files("tmp").is_empty()),
        "the restarted server must discard the partial download; tmp/ holds {:?}",
        bed.store_files("tmp")
    );
    assert!(!bed.blob_path(&expected_sha256).exists(), "a partial download was committed as a blob");

    let url = bed.file_url(huge.project, huge.filename);
    let started = Instant::now();
    let (response, sha256) = stream_and_hash(&url, &AtomicU64::new(0));
    let response = response.unwrap_or_else(|e| panic!("GET {url} after the restart: {e}"));
    let peak_kib = bed.wheelgate.peak_rss_kib();
    eprintln!(
        "wgfx-huge: killed after {killed_at} bytes; after the restart {} bytes streamed cold in {:.1?}; \
         the restarted server's peak RSS (VmHWM) is {peak_kib} KiB ({:.1} MiB), RSS now {} KiB",
        response.received,
        started.elapsed(),
        peak_kib as f64 / 1024.0,
        bed.wheelgate.rss_kib()
    );
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.body_error.is_none(), "the transfer after the restart broke off: {:?}", response.body_error);
    assert_eq!((response.received, sha256.as_str()), (huge.size, expected_sha256.as_str()), "the whole file, with its sha256");
    assert_eq!(bed.upstream.requests_for(&huge.path()).len(), 2, "the file must be fetched again after the crash");
    assert!(
        peak_kib < RSS_LIMIT_KIB,
        "streaming a 200 MiB file cold must keep wheelgate's peak RSS under 64 MiB; VmHWM is {peak_kib} KiB"
    );
    assert!(
        wait_until(CLEANUP_WAIT, || std::fs::metadata(bed.blob_path(&expected_sha256)).is_ok_and(|m| m.len() == huge.size)),
        "the verified file must be committed as {}",
        bed.blob_path(&expected_sha256).display()
    );
    assert!(bed.store_files("tmp").is_empty(), "tmp/ after the commit: {:?}", bed.store_files("tmp"));
}
