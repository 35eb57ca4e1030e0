//! The cache commands (issue 15, SPEC §9): `wheelgate cache stats | verify | gc | purge`, each run
//! as the real binary twice: with a server running on the store, which the command must ask over
//! the admin socket (sled's lock keeps it out of the store), and with the server stopped, when it
//! opens the store itself. Each run must say which it did.
//!
//! `verify` must find a byte flipped in a stored blob, remove it and exit 1, after which the next
//! request fetches the file again and serves the right bytes; a damaged hosted upload is the only
//! copy, so it is kept and reported unless `--forget-damaged-uploads` is given. `gc` evicts down
//! to the configured `max_size`, least recently used first; `purge` forgets a project's page so
//! that the next request goes to the upstream (the running server's copy in memory included).
//! The admin socket is private (mode 0600), removed at a clean stop, recognised as stale after a
//! kill -9, and its route is not on the public listener.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::clients::ClientRun;
use crate::harness::fixtures::sha256_hex;
use crate::harness::generated::{self, Generated};
use crate::harness::http;
use crate::harness::uploads::{big_wheel, UploadForm};
use crate::harness::upstream::{Mode, JSON_MEDIA_TYPE};
use crate::harness::wheelgate;
use crate::harness::{wait_until, TestBed, TokenLayout};
use crate::publish::{assert_uploaded, hosted_file_path, publishing_bed, INTERNAL};

/// How long a fetched file or page may take to be committed (the store's writer batches).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Whether the server runs while the command is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Running,
    Stopped,
}

/// `wheelgate cache <args> --config <the bed's proxy.toml>`.
fn cache(bed: &TestBed, args: &[&str]) -> ClientRun {
    let config = bed.config_path();
    let config = config.to_string_lossy();
    let mut all = vec!["cache"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config]);
    // verify hashes every stored byte: give it more than a one-shot command's 30 s.
    wheelgate::run_for(&all, bed.dir.path(), Duration::from_secs(120))
}

fn socket(bed: &TestBed) -> PathBuf {
    bed.store().join("admin.sock")
}

/// Asserts the exit code of `run`, showing its output (and the server's) otherwise.
fn assert_exit(bed: &TestBed, run: &ClientRun, code: i32, what: &str) {
    assert_eq!(
        run.exit_code,
        Some(code),
        "{what}: `{}` must exit {code}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- wheelgate ---\n{}",
        run.command,
        run.stdout,
        run.stderr,
        bed.wheelgate.output()
    );
}

/// The first line says whom the command asked: the running server by its pid and socket, or
/// the store it opened itself.
fn assert_says_how(bed: &TestBed, run: &ClientRun, server: Server, what: &str) {
    let expected = match server {
        Server::Running => format!(
            "asked the running server (pid {}) over {}",
            bed.wheelgate.pid(),
            socket(bed).display()
        ),
        Server::Stopped => format!(
            "no server running: opened the store at {}",
            bed.store().display()
        ),
    };
    assert_eq!(
        run.stdout.lines().next(),
        Some(expected.as_str()),
        "{what}: the first line must say how the store was reached; stdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
}

/// Fetches a generated file through wheelgate (the right bytes, from the upstream) and returns
/// its wheelgate URL.
fn fetch(bed: &TestBed, file: &Generated, expected_cache: &str, what: &str) -> String {
    let url = bed.file_url(file.project, file.filename);
    let response = http::get(&url, &[]);
    assert_eq!(
        sha256_hex(response.expect_ok(&url)),
        file.sha256(),
        "{what}: {url} served the wrong bytes"
    );
    assert_eq!(response.cache(), Some(expected_cache), "{what}: {url}");
    url
}

/// Runs `cache stats` until it reports `files` stored files (commits are batched), and returns
/// that run.
fn stats_once_committed(bed: &TestBed, files: u64, server: Server) -> ClientRun {
    let line = format!("files: {files}, ");
    let mut last = None;
    let committed = wait_until(COMMIT_WAIT, || {
        let run = cache(bed, &["stats"]);
        let done = run.stdout.lines().any(|l| l.starts_with(&line));
        last = Some(run);
        done
    });
    let run = last.unwrap_or_else(|| panic!("`cache stats` never ran"));
    assert!(
        committed,
        "`cache stats` never reported {files} files; last output:\n{}\n{}",
        run.stdout, run.stderr
    );
    assert_exit(bed, &run, 0, "cache stats");
    assert_says_how(bed, &run, server, "cache stats");
    run
}

/// Flips one byte in the middle of a stored blob, as a rotting disk would.
fn flip_one_byte(path: &Path) {
    let mut bytes =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn lru(name: &str) -> &'static Generated {
    generated::expect(name)
}

fn verify_reports_a_flipped_byte_removes_the_file_and_the_next_request_refetches(server: Server) {
    let mut bed = TestBed::start(Mode::Json);
    let (rotten, intact) = (lru("wgfx-lru-a"), lru("wgfx-lru-b"));
    fetch(&bed, rotten, "miss", "before the damage");
    fetch(&bed, intact, "miss", "before the damage");
    stats_once_committed(&bed, 2, Server::Running);
    if server == Server::Stopped {
        bed.wheelgate.stop();
    }
    let blob = bed.blob_path(rotten.sha256());
    flip_one_byte(&blob);

    let run = cache(&bed, &["verify"]);
    assert_exit(&bed, &run, 1, "verify after a byte was flipped");
    assert_says_how(&bed, &run, server, "verify");
    let damaged = format!(
        "damaged: the file {} (repository pypi), stored as sha256 {}: its {} bytes hash to sha256 ",
        rotten.filename,
        rotten.sha256(),
        rotten.size
    );
    assert!(
        run.stdout.contains(&damaged) && run.stdout.contains("removed: it is fetched again"),
        "verify must name the damaged file, its digest and what it did; stdout:\n{}",
        run.stdout
    );
    // Both project pages were hashed too: every body is a file.
    assert!(
        run.stdout
            .lines()
            .any(|l| l == "checked 2 files, 2.0 MiB (2097152 bytes), and 2 page bodies"),
        "verify must say what it checked; stdout:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.ends_with("1 damaged body found\n"),
        "stdout:\n{}",
        run.stdout
    );
    assert!(!blob.exists(), "the damaged blob must be removed");
    assert!(
        bed.blob_path(intact.sha256()).exists(),
        "the intact file must stay"
    );

    let again = cache(&bed, &["verify"]);
    assert_exit(&bed, &again, 0, "a second verify");
    assert!(
        again.stdout.contains("checked 1 file, ")
            && again
                .stdout
                .contains("every stored body matches its sha256"),
        "stdout:\n{}",
        again.stdout
    );

    if server == Server::Stopped {
        bed.wheelgate.start_again();
    }
    fetch(&bed, rotten, "miss", "after verify removed it");
    assert_eq!(
        bed.upstream.requests_for(&rotten.path()).len(),
        2,
        "the removed file must be fetched from the upstream again"
    );
    fetch(&bed, intact, "hit", "the intact file after verify");
    assert_eq!(bed.upstream.requests_for(&intact.path()).len(), 1);
    stats_once_committed(&bed, 2, Server::Running);
    assert!(
        std::fs::read(&blob).is_ok_and(|b| sha256_hex(&b) == rotten.sha256()),
        "the file fetched again is stored with its right bytes"
    );
}

#[test]
fn cache_verify_with_the_server_running_removes_a_flipped_blob_and_the_next_request_refetches_it() {
    verify_reports_a_flipped_byte_removes_the_file_and_the_next_request_refetches(Server::Running);
}

#[test]
fn cache_verify_with_the_server_stopped_removes_a_flipped_blob_and_the_next_request_refetches_it() {
    verify_reports_a_flipped_byte_removes_the_file_and_the_next_request_refetches(Server::Stopped);
}

#[test]
fn cache_stats_reports_files_pages_and_max_size_through_the_server_and_on_the_store() {
    let mut bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.max_size = Some("8MiB".to_owned());
    });
    let empty = cache(&bed, &["stats"]);
    assert_exit(&bed, &empty, 0, "stats of an empty store");
    assert!(
        empty.stdout.contains("files: 0, 0 bytes\n"),
        "{}",
        empty.stdout
    );
    for name in ["wgfx-lru-a", "wgfx-lru-b"] {
        fetch(&bed, lru(name), "miss", "filling the store");
    }
    let expected = [
        format!("store: {}", bed.store().display()),
        "files: 2, 2.0 MiB (2097152 bytes)".to_owned(),
        "hosted uploads (never evicted): 0 files, 0 bytes".to_owned(),
        "max_size: 8.0 MiB (8388608 bytes), 25.0% used".to_owned(),
    ];
    let running = stats_once_committed(&bed, 2, Server::Running);
    for line in &expected {
        assert!(
            running.stdout.lines().any(|l| l == line),
            "stats through the server must print {line:?}; stdout:\n{}",
            running.stdout
        );
    }
    // The pages of the two projects (committed by the same batches as the files, or later).
    assert!(
        wait_until(COMMIT_WAIT, || cache(&bed, &["stats"])
            .stdout
            .contains("pages: 2\n")),
        "two project pages were fetched"
    );

    bed.wheelgate.stop();
    let stopped = cache(&bed, &["stats"]);
    assert_exit(&bed, &stopped, 0, "stats with the server stopped");
    assert_says_how(&bed, &stopped, Server::Stopped, "stats");
    for line in expected.iter().chain([&"pages: 2".to_owned()]) {
        assert!(
            stopped.stdout.lines().any(|l| l == line),
            "stats on the store must print {line:?}; stdout:\n{}",
            stopped.stdout
        );
    }
}

fn gc_evicts_down_to_the_configured_max_size_least_recently_used_first(server: Server) {
    let mut bed = TestBed::start(Mode::Json);
    let (a, b, c) = (lru("wgfx-lru-a"), lru("wgfx-lru-b"), lru("wgfx-lru-c"));
    fetch(&bed, a, "miss", "filling the store");
    fetch(&bed, b, "miss", "filling the store");
    fetch(&bed, c, "miss", "filling the store");
    stats_once_committed(&bed, 3, Server::Running);
    // A is used again: B is now the least recently used.
    fetch(&bed, a, "hit", "using A again");

    let nothing = cache(&bed, &["gc"]);
    assert_exit(&bed, &nothing, 0, "gc under the default max_size");
    assert!(
        nothing.stdout.contains("nothing to evict\n"),
        "{}",
        nothing.stdout
    );

    // Room for two of the three: a live edit for the running server (its store keeps its own
    // cap until a restart, but gc works to the configured one), a plain edit for the stopped one.
    if server == Server::Stopped {
        bed.wheelgate.stop();
    }
    bed.edit_config(|config| config.max_size = Some("2560KiB".to_owned()));
    let run = cache(&bed, &["gc"]);
    assert_exit(&bed, &run, 0, "gc under a lowered max_size");
    assert_says_how(&bed, &run, server, "gc");
    for line in [
        "evicted 1 file, 1.0 MiB (1048576 bytes), least recently used first",
        "the store holds 2 files, 2.0 MiB (2097152 bytes), for a max_size of 2.5 MiB (2621440 bytes)",
    ] {
        assert!(
            run.stdout.lines().any(|l| l == line),
            "gc must print {line:?}; stdout:\n{}",
            run.stdout
        );
    }
    assert!(
        !bed.blob_path(b.sha256()).exists(),
        "B, the least recently used, must be evicted"
    );
    for kept in [a, c] {
        assert!(
            bed.blob_path(kept.sha256()).exists(),
            "{} must stay",
            kept.filename
        );
    }
    if server == Server::Stopped {
        bed.wheelgate.start_again();
    }
    fetch(&bed, a, "hit", "A after gc");
    fetch(&bed, b, "miss", "B after its eviction");
    assert_eq!(bed.upstream.requests_for(&b.path()).len(), 2);
}

#[test]
fn cache_gc_with_the_server_running_evicts_down_to_the_configured_max_size() {
    gc_evicts_down_to_the_configured_max_size_least_recently_used_first(Server::Running);
}

#[test]
fn cache_gc_with_the_server_stopped_evicts_down_to_the_configured_max_size() {
    gc_evicts_down_to_the_configured_max_size_least_recently_used_first(Server::Stopped);
}

/// Fetches the JSON page of `wgfx-app` and returns its cache status.
fn app_page(bed: &TestBed) -> String {
    let url = bed.url("/simple/wgfx-app/");
    let page = http::get(&url, &[("accept", JSON_MEDIA_TYPE)]);
    page.expect_ok(&url);
    page.cache().unwrap_or("(none)").to_owned()
}

fn purge_forgets_the_page_so_the_next_request_goes_upstream(server: Server) {
    let mut bed = TestBed::start(Mode::Json);
    let upstream_fetches = |bed: &TestBed| bed.upstream.requests_for("/simple/wgfx-app/").len();
    assert_eq!(app_page(&bed), "miss");
    assert_eq!(app_page(&bed), "hit", "fresh for index_ttl (10m)");
    assert_eq!(upstream_fetches(&bed), 1);
    assert!(
        wait_until(COMMIT_WAIT, || cache(&bed, &["stats"])
            .stdout
            .contains("pages: 1\n")),
        "the page must be stored"
    );
    if server == Server::Stopped {
        bed.wheelgate.stop();
    }

    // Any spelling of the name; the page is stored under its normalised one.
    let run = cache(&bed, &["purge", "WGfx_App"]);
    assert_exit(&bed, &run, 0, "purge");
    assert_says_how(&bed, &run, server, "purge");
    assert!(
        run.stdout.lines().any(|l| l
            == "forgot the page of wgfx-app in repository pypi: the next request fetches it from the upstream"),
        "stdout:\n{}",
        run.stdout
    );
    let twice = cache(&bed, &["purge", "wgfx.app", "--repo", "pypi"]);
    assert_exit(&bed, &twice, 0, "a second purge");
    assert!(
        twice
            .stdout
            .contains("repository pypi had no stored page of wgfx-app"),
        "stdout:\n{}",
        twice.stdout
    );

    if server == Server::Stopped {
        bed.wheelgate.start_again();
    }
    assert_eq!(
        app_page(&bed),
        "miss",
        "after the purge the page must come from the upstream, not from memory or the store"
    );
    assert_eq!(upstream_fetches(&bed), 2);
}

#[test]
fn cache_purge_with_the_server_running_makes_the_next_request_fetch_the_page_again() {
    purge_forgets_the_page_so_the_next_request_goes_upstream(Server::Running);
}

#[test]
fn cache_purge_with_the_server_stopped_makes_the_next_request_fetch_the_page_again() {
    purge_forgets_the_page_so_the_next_request_goes_upstream(Server::Stopped);
}

#[test]
fn cache_purge_refuses_unknown_or_hosted_repositories_and_bad_names_with_exit_2() {
    let bed = TestBed::start_hosted(|_| {});
    let unknown = cache(&bed, &["purge", "wgfx-app", "--repo", "nope"]);
    assert_exit(&bed, &unknown, 2, "purge in an unknown repository");
    assert!(
        unknown.stderr.contains(
            "no repository named \"nope\" in the configuration; it defines: pypi, internal"
        ),
        "stderr:\n{}",
        unknown.stderr
    );
    let hosted = cache(&bed, &["purge", "wgfx-app", "--repo", INTERNAL]);
    assert_exit(&bed, &hosted, 2, "purge in a hosted repository");
    assert!(
        hosted.stderr.contains("repository internal is hosted")
            && hosted.stderr.contains("remote repositories (pypi)"),
        "stderr:\n{}",
        hosted.stderr
    );
    let bad = cache(&bed, &["purge", "../wgfx-app"]);
    assert_exit(&bed, &bad, 2, "purge of a name that is no project name");
    assert!(
        bad.stderr.contains("cannot purge \"../wgfx-app\""),
        "stderr:\n{}",
        bad.stderr
    );
    assert!(
        !bed.wheelgate
            .output()
            .contains("cache command over the admin socket"),
        "refused before the server was asked"
    );
}

#[test]
fn the_admin_socket_is_private_off_the_public_listener_and_gone_or_stale_once_the_server_is() {
    let mut bed = TestBed::start(Mode::Json);
    let path = socket(&bed);
    let mode = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("the running server must create {}: {e}", path.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{} must be private", path.display());
    let public = http::raw_request(
        bed.wheelgate.addr(),
        "POST",
        b"/cache",
        &[],
        br#"{"command":"stats"}"#,
    )
    .unwrap_or_else(|e| panic!("POST /cache on the public listener: {e}"));
    assert_ne!(
        public.status, 200,
        "the admin route must not be on the public listener"
    );
    assert!(
        !String::from_utf8_lossy(&public.body).contains("\"report\""),
        "the public listener answered a cache command: {:?}",
        String::from_utf8_lossy(&public.body)
    );

    bed.wheelgate.stop();
    assert!(!path.exists(), "a clean stop removes the admin socket");
    bed.wheelgate.start_again();
    assert!(path.exists(), "a new server creates it again");

    bed.wheelgate.kill();
    assert!(path.exists(), "a killed server leaves its socket behind");
    let run = cache(&bed, &["stats"]);
    assert_exit(&bed, &run, 0, "stats after a kill -9");
    assert_says_how(&bed, &run, Server::Stopped, "stats after a kill -9");
    assert!(
        run.stdout.contains(&format!(
            "removed the stale admin socket {} (its server did not stop cleanly)",
            path.display()
        )),
        "stdout:\n{}",
        run.stdout
    );
    assert!(!path.exists());
    bed.wheelgate.start_again();
    let run = cache(&bed, &["stats"]);
    assert_exit(&bed, &run, 0, "stats after the restart");
    assert_says_how(&bed, &run, Server::Running, "stats after the restart");
}

#[test]
fn a_damaged_hosted_upload_is_kept_and_reported_until_forgotten_then_it_can_be_published_again() {
    let (bed, publisher, _) = publishing_bed(|_| {});
    let dist = big_wheel();
    assert_uploaded(
        &bed,
        &bed.upload(INTERNAL, &UploadForm::of(dist), Some(&publisher)),
        "the first upload",
    );
    let blob = bed.blob_path(&dist.sha256);
    flip_one_byte(&blob);
    let upload = format!(
        "the upload {} of {} in repository {INTERNAL}",
        dist.filename, dist.normalized
    );

    let kept = cache(&bed, &["verify"]);
    assert_exit(&bed, &kept, 1, "verify of a damaged upload");
    assert_says_how(&bed, &kept, Server::Running, "verify");
    assert!(
        kept.stdout.contains(&upload) && kept.stdout.contains("KEPT, since it is the only copy"),
        "verify must name the upload and say it was kept; stdout:\n{}",
        kept.stdout
    );
    assert!(blob.exists(), "the only copy must not be removed");

    let forgotten = cache(&bed, &["verify", "--forget-damaged-uploads"]);
    assert_exit(&bed, &forgotten, 1, "verify --forget-damaged-uploads");
    assert!(
        forgotten.stdout.contains(&upload)
            && forgotten
                .stdout
                .contains("the uploads were forgotten: publish the file again"),
        "stdout:\n{}",
        forgotten.stdout
    );
    assert!(!blob.exists());
    let file_url = bed.url(&hosted_file_path(INTERNAL, dist));
    assert_eq!(
        http::get(&file_url, &[]).status,
        StatusCode::NOT_FOUND,
        "a forgotten upload is not served"
    );

    assert_uploaded(
        &bed,
        &bed.upload(INTERNAL, &UploadForm::of(dist), Some(&publisher)),
        "publishing it again",
    );
    let served = http::get(&file_url, &[]);
    assert_eq!(sha256_hex(served.expect_ok(&file_url)), dist.sha256);
    let clean = cache(&bed, &["verify"]);
    assert_exit(&bed, &clean, 0, "verify after publishing again");
}
