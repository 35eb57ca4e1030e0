//! Tests of the store as a whole: commits, reopen, crash leftovers, eviction, pages, batches.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;

use crate::simple::Sha256Digest;

use super::artifacts::*;
use super::batch::*;
use super::catalog::*;
use super::engine::*;
use super::pages::*;
use super::serve::{Content, FILE_SLICE_MIN};

use super::*;

/// A body size the tests call big: several pages of sled had it been inline.
const BIG: usize = 64 * 1024;

fn open(dir: &Path, max_size: u64) -> Store {
    Store::reopen(StoreOptions {
        path: dir.to_path_buf(),
        max_size,
        memory: 1 << 20,
    })
    .unwrap()
}

/// Writes `body` into a fresh temp of `store`, commits it as `name` and returns the bytes
/// stored (read without recording a use or warming the memory cache).
fn commit(store: &Store, body: &[u8], name: &str) -> Vec<u8> {
    commit_with(store, body, name, None, true)
}

fn commit_with(
    store: &Store,
    body: &[u8],
    name: &str,
    url_key: Option<Sha256Digest>,
    evictable: bool,
) -> Vec<u8> {
    let (path, mut file) = store.create_temp().unwrap();
    file.write_all(body).unwrap();
    drop(file);
    let sha256 = Sha256Digest::of(body);
    store
        .commit_artifact(
            &path,
            ArtifactRecord {
                sha256,
                size: body.len() as u64,
                repository: "pypi".to_owned(),
                filename: name.to_owned(),
                url_key,
                evictable,
                used_at: None,
            },
        )
        .unwrap();
    fs::read(store.inner.blobs.path_of(&sha256)).unwrap()
}

fn read(artifact: Artifact) -> Vec<u8> {
    let size = artifact.size;
    match artifact.body.read(0, size) {
        Content::Bytes(bytes, _) => bytes.to_vec(),
        Content::Stream(stream) => tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(async {
                use futures_util::TryStreamExt as _;
                let blocks: Vec<Bytes> = stream.try_collect().await.unwrap();
                blocks.concat()
            }),
    }
}

fn blob_path(dir: &Path, digest: &Sha256Digest) -> PathBuf {
    let hex = digest.to_hex();
    dir.join("blobs/sha256").join(&hex[..2]).join(&hex)
}

fn tmp_entries(dir: &Path) -> usize {
    fs::read_dir(dir.join("tmp")).unwrap().count()
}

fn key(project: Option<&str>) -> PageKey {
    PageKey {
        repository: "pypi".to_owned(),
        project: project.map(str::to_owned),
    }
}

fn page(body: Vec<u8>, etag: Option<&str>) -> StoredPage {
    StoredPage {
        body: Bytes::from(body),
        content_type: Some("text/html".to_owned()),
        final_url: "https://example.invalid/simple/demo/".to_owned(),
        etag: etag.map(str::to_owned),
        last_modified: None,
        fetched_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    }
}

#[test]
fn open_creates_layout_and_reopen_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let small = b"small metadata".to_vec();
    {
        let store = open(dir.path(), u64::MAX);
        for sub in ["catalog", "blobs/sha256", "tmp"] {
            assert!(dir.path().join(sub).is_dir(), "{sub}");
        }
        assert_eq!(store.path(), dir.path());
        assert_eq!(store.tmp_dir(), dir.path().join("tmp"));
        commit(&store, &small, "a-1.0.tar.gz.metadata");
        store
            .put_page(&key(None), &page(b"<html/>".to_vec(), None))
            .unwrap();
    }
    let store = open(dir.path(), u64::MAX);
    let digest = Sha256Digest::of(&small);
    assert!(store.contains(&digest));
    assert_eq!(read(store.artifact(&digest).unwrap()), small);
    assert_eq!(
        store.page(&key(None)).unwrap().unwrap().body.as_ref(),
        b"<html/>"
    );
    assert_eq!(
        store.stats(),
        StoreStats {
            artifacts: 1,
            artifact_bytes: small.len() as u64,
            pages: 1,
            max_size: u64::MAX
        }
    );
}

#[test]
fn newer_format_is_refused_with_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), u64::MAX));
    {
        let catalog = Catalog::open(&dir.path().join("catalog"), dir.path()).unwrap();
        catalog.set_format_for_test(2);
    }
    let error = Store::open(StoreOptions {
        path: dir.path().to_path_buf(),
        max_size: 1,
        memory: 0,
    })
    .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::NewerFormat {
                found: 2,
                supported: 1,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("format 2") && message.contains("format 1"),
        "{message}"
    );
    assert!(
        message.contains("upgrade wheelgate or point store.path elsewhere"),
        "{message}"
    );
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), u64::MAX);
    let error = Store::open(StoreOptions {
        path: dir.path().to_path_buf(),
        max_size: 1,
        memory: 0,
    })
    .unwrap_err();
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("two wheelgate processes cannot share one store"),
        "{message}"
    );
    // The refused open did not touch the running store's temporary files.
    assert!(first.create_temp().is_ok());
}

#[test]
fn every_artifact_is_a_blob_whatever_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let big: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    let small = vec![1u8; BIG - 1];
    let big_digest = Sha256Digest::of(&big);
    let small_digest = Sha256Digest::of(&small);

    commit(&store, &big, "big-1.0-py3-none-any.whl");
    assert_eq!(fs::read(blob_path(dir.path(), &big_digest)).unwrap(), big);
    commit(&store, &small, "small-1.0-py3-none-any.whl");
    assert_eq!(
        fs::read(blob_path(dir.path(), &small_digest)).unwrap(),
        small
    );
    assert_eq!(
        store.inner.catalog.artifact_body(&small_digest).unwrap(),
        None
    );
    assert_eq!(tmp_entries(dir.path()), 0, "temps are moved or deleted");

    let artifact = store.artifact(&big_digest).unwrap();
    assert_eq!((artifact.sha256, artifact.size), (big_digest, BIG as u64));
    assert_eq!(read(artifact), big);
    assert_eq!(read(store.artifact(&small_digest).unwrap()), small);
    assert!(store.artifact(&Sha256Digest::of(b"absent")).is_none());
    assert_eq!(store.stats().artifact_bytes, (2 * BIG - 1) as u64);
}

#[test]
fn bodies_in_memory_are_committed_as_blobs_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..BIG).map(|i| (i % 249) as u8).collect();
    let small = vec![2u8; BIG - 1];
    {
        let store = open(dir.path(), u64::MAX);
        for (body, name) in [
            (&big, "big-1.0-py3-none-any.whl"),
            (&small, "small-1.0-py3-none-any.whl"),
        ] {
            let record = ArtifactRecord {
                sha256: Sha256Digest::of(body),
                size: 0,
                repository: "pypi".to_owned(),
                filename: name.to_owned(),
                url_key: None,
                evictable: true,
                used_at: None,
            };
            store
                .commit_artifact_bytes(Bytes::from(body.clone()), record)
                .unwrap();
            let stored = store.artifact(&Sha256Digest::of(body)).unwrap();
            assert_eq!(
                stored.size,
                body.len() as u64,
                "the size comes from the bytes"
            );
        }
        assert_eq!(tmp_entries(dir.path()), 0);
    }
    let store = open(dir.path(), u64::MAX);
    assert_eq!(
        fs::read(blob_path(dir.path(), &Sha256Digest::of(&big))).unwrap(),
        big
    );
    assert_eq!(
        fs::read(blob_path(dir.path(), &Sha256Digest::of(&small))).unwrap(),
        small
    );
    assert_eq!(read(store.artifact(&Sha256Digest::of(&big)).unwrap()), big);
    assert_eq!(
        read(store.artifact(&Sha256Digest::of(&small)).unwrap()),
        small
    );
    assert_eq!(store.stats().artifact_bytes, (2 * BIG - 1) as u64);
}

#[test]
fn commit_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let big = vec![9u8; BIG * 2];
    commit(&store, &big, "a.whl");
    let again = commit(&store, &big, "a.whl");
    assert_eq!(again, big);
    assert_eq!(store.stats().artifacts, 1);
    assert_eq!(store.stats().artifact_bytes, big.len() as u64);
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn wrong_size_is_refused_and_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let (path, mut file) = store.create_temp().unwrap();
    file.write_all(b"half").unwrap();
    let error = store
        .commit_artifact(
            &path,
            ArtifactRecord {
                sha256: Sha256Digest::of(b"half of it"),
                size: 10,
                repository: "pypi".to_owned(),
                filename: "a.whl".to_owned(),
                url_key: None,
                evictable: true,
                used_at: None,
            },
        )
        .unwrap_err();
    assert!(
        matches!(
            error,
            StoreError::SizeMismatch {
                expected: 10,
                actual: 4,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("a.whl"));
    assert!(!path.exists());
    assert_eq!(store.stats().artifacts, 0);
}

#[test]
fn crash_leftovers_are_cleaned_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let kept = vec![3u8; BIG];
    let lost = vec![4u8; BIG];
    let orphan = vec![5u8; BIG];
    let (kept_d, lost_d, orphan_d) = (
        Sha256Digest::of(&kept),
        Sha256Digest::of(&lost),
        Sha256Digest::of(&orphan),
    );
    {
        let store = open(dir.path(), u64::MAX);
        commit(&store, &kept, "kept.whl");
        commit_with(
            &store,
            &lost,
            "lost.whl",
            Some(Sha256Digest::of(b"url")),
            true,
        );
        store
            .put_page(&key(Some("big")), &page(vec![b'x'; BIG], None))
            .unwrap();
        store.persist_recency().unwrap();
    }
    // A download in progress, a blob renamed but never recorded, a recorded blob deleted,
    // a big page's blob deleted, and a file that is not a blob at all.
    fs::write(dir.path().join("tmp/partial.part"), b"partial").unwrap();
    let orphan_path = blob_path(dir.path(), &orphan_d);
    fs::create_dir_all(orphan_path.parent().unwrap()).unwrap();
    fs::write(&orphan_path, &orphan).unwrap();
    fs::remove_file(blob_path(dir.path(), &lost_d)).unwrap();
    fs::remove_file(blob_path(dir.path(), &Sha256Digest::of(&vec![b'x'; BIG]))).unwrap();
    fs::write(dir.path().join("blobs/sha256/junk"), b"?").unwrap();

    let store = open(dir.path(), u64::MAX);
    assert_eq!(tmp_entries(dir.path()), 0);
    assert!(!orphan_path.exists());
    assert!(!dir.path().join("blobs/sha256/junk").exists());
    assert!(!store.contains(&orphan_d));
    assert!(!store.contains(&lost_d));
    assert!(store.artifact(&lost_d).is_none());
    assert_eq!(
        store.pinned(&Sha256Digest::of(b"url")),
        None,
        "the pin went with its record"
    );
    assert!(store.page(&key(Some("big"))).unwrap().is_none());
    assert_eq!(read(store.artifact(&kept_d).unwrap()), kept);
    assert_eq!(
        store.stats(),
        StoreStats {
            artifacts: 1,
            artifact_bytes: BIG as u64,
            pages: 0,
            max_size: u64::MAX
        }
    );
    // The lost file can be committed again.
    assert_eq!(commit(&store, &lost, "lost.whl"), lost);
}

#[test]
fn a_blob_deleted_while_running_is_forgotten_and_recommitted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![6u8; BIG];
    let digest = Sha256Digest::of(&body);
    commit(&store, &body, "a.whl");
    fs::remove_file(blob_path(dir.path(), &digest)).unwrap();
    assert!(store.artifact(&digest).is_none());
    assert!(!store.contains(&digest));
    assert_eq!(commit(&store, &body, "a.whl"), body);
    assert!(blob_path(dir.path(), &digest).exists());
}

#[test]
fn eviction_follows_last_use_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let bodies: Vec<Vec<u8>> = (0..4u8).map(|n| vec![n; BIG]).collect();
    let digests: Vec<Sha256Digest> = bodies.iter().map(|b| Sha256Digest::of(b)).collect();
    let limit = 3 * BIG as u64;
    {
        let store = open(dir.path(), limit);
        commit(&store, &bodies[0], "0.whl");
        commit(&store, &bodies[1], "1.whl");
        commit(&store, &bodies[2], "2.whl");
        // 0 becomes the most recent; 1 is now the oldest.
        assert!(store.artifact(&digests[0]).is_some());
        assert_eq!(store.persist_recency().unwrap(), 1);
        assert_eq!(store.persist_recency().unwrap(), 0, "nothing changed since");
    }
    let store = open(dir.path(), limit);
    commit(&store, &bodies[3], "3.whl");
    assert!(!store.contains(&digests[1]), "the least recently used went");
    assert!(!blob_path(dir.path(), &digests[1]).exists());
    for kept in [0, 2, 3] {
        assert!(store.contains(&digests[kept]), "{kept}");
    }
    assert_eq!(store.stats().artifact_bytes, limit);
}

#[test]
fn recency_follows_when_a_use_began_not_when_its_commit_finished() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let (slow, quick) = (vec![1u8; BIG], vec![2u8; BIG]);
    // The slow file was asked for first; its commit (a long fsync) lands after the quick one's.
    let asked_first = store.use_stamp();
    commit(&store, &quick, "quick.whl");
    let (path, mut file) = store.create_temp().unwrap();
    file.write_all(&slow).unwrap();
    drop(file);
    let record = ArtifactRecord {
        sha256: Sha256Digest::of(&slow),
        size: BIG as u64,
        repository: "pypi".to_owned(),
        filename: "slow.whl".to_owned(),
        url_key: None,
        evictable: true,
        used_at: Some(asked_first),
    };
    store.commit_artifact(&path, record).unwrap();
    assert_eq!(
        store.gc(BIG as u64).unwrap(),
        Evicted {
            files: 1,
            bytes: BIG as u64
        }
    );
    assert!(
        !store.contains(&Sha256Digest::of(&slow)),
        "used first, evicted first"
    );
    assert!(store.contains(&Sha256Digest::of(&quick)));
}

#[test]
fn a_hot_body_comes_with_its_kept_open_blob_until_it_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![7u8; BIG];
    let digest = Sha256Digest::of(&body);
    commit(&store, &body, "hot.whl");
    let blob_of = |artifact: Artifact| match artifact.body.read(0, artifact.size) {
        Content::Bytes(bytes, Some(file)) => {
            assert!(bytes == body);
            file
        }
        Content::Bytes(_, None) => panic!("a hot body of {BIG} bytes came without its blob"),
        Content::Stream(_) => panic!("a body of {BIG} bytes was not kept in memory"),
    };
    // Read into memory by the first request, then served from there, the same file both times.
    let first = blob_of(store.artifact(&digest).unwrap());
    let second = blob_of(store.artifact(&digest).unwrap());
    assert!(Arc::ptr_eq(&first.file, &second.file));
    assert!(store.inner.open_blobs.contains_key(&digest));
    // Closed once the server is quiet: the store holds it no more, and reopens it when asked.
    // moka's map frees a removed entry through epoch-based reclamation (crossbeam-epoch), which
    // runs when the cache is next used, not always within the removing call: 1 run in 20 still
    // held the file right after it. So the cache is used until it lets go, for at most 5 s.
    assert_eq!(Arc::strong_count(&first.file), 3);
    store.close_open_blobs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while Arc::strong_count(&first.file) > 2 && std::time::Instant::now() < deadline {
        store.close_open_blobs();
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(
        Arc::strong_count(&first.file),
        2,
        "the store still holds the file 5 s after closing its open blobs"
    );
    drop((first, second));
    let again = blob_of(store.artifact(&digest).unwrap());
    assert!(store.inner.open_blobs.contains_key(&digest));
    drop(again);
    // Removed: the store lets the file go, so its space is freed once the last sender is done.
    store.remove_artifact(&digest).unwrap();
    assert!(!store.inner.open_blobs.contains_key(&digest));
    // A small body is copied rather than sent from its file.
    let small = vec![8u8; (FILE_SLICE_MIN - 1) as usize];
    commit(&store, &small, "small.whl");
    let digest = Sha256Digest::of(&small);
    for _ in 0..2 {
        let artifact = store.artifact(&digest).unwrap();
        assert!(matches!(
            artifact.body.read(0, artifact.size),
            Content::Bytes(_, None)
        ));
    }
}

#[test]
fn an_open_file_survives_its_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BIG as u64);
    let first = vec![1u8; BIG];
    commit(&store, &first, "1.whl");
    let held = store.artifact(&Sha256Digest::of(&first)).unwrap();
    commit(&store, &vec![2u8; BIG], "2.whl");
    assert!(!store.contains(&Sha256Digest::of(&first)));
    assert_eq!(read(held), first);
}

#[test]
fn non_evictable_artifacts_stay_and_the_new_one_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), BIG as u64);
    let hosted = vec![1u8; BIG];
    commit_with(&store, &hosted, "hosted.whl", None, false);
    let remote = vec![2u8; BIG];
    commit(&store, &remote, "remote.whl");
    // Over the limit, but the hosted file may not go and the new one was just committed.
    assert!(store.contains(&Sha256Digest::of(&hosted)));
    assert!(store.contains(&Sha256Digest::of(&remote)));
    commit(&store, &vec![3u8; BIG], "next.whl");
    assert!(store.contains(&Sha256Digest::of(&hosted)));
    assert!(!store.contains(&Sha256Digest::of(&remote)));

    // Uploading content already cached as a remote file protects it.
    let shared = vec![3u8; BIG];
    commit_with(&store, &shared, "upload.whl", None, false);
    commit(&store, &vec![4u8; BIG], "other.whl");
    assert!(store.contains(&Sha256Digest::of(&shared)));
    drop(store);
    let store = open(dir.path(), BIG as u64);
    commit(&store, &vec![5u8; BIG], "after-reopen.whl");
    assert!(
        store.contains(&Sha256Digest::of(&shared)),
        "protection was persisted"
    );
}

#[test]
fn url_pins_follow_commits_and_removal() {
    let dir = tempfile::tempdir().unwrap();
    let url_a = Sha256Digest::of(b"https://files.example.invalid/a.whl");
    let url_b = Sha256Digest::of(b"https://mirror.example.invalid/a.whl");
    let body = b"wheel".to_vec();
    let digest = Sha256Digest::of(&body);
    {
        let store = open(dir.path(), u64::MAX);
        assert_eq!(store.pinned(&url_a), None);
        commit_with(&store, &body, "a.whl", Some(url_a), true);
        commit_with(&store, &body, "a.whl", Some(url_b), true);
        assert_eq!(store.pinned(&url_a), Some(digest));
        assert_eq!(store.pinned(&url_b), Some(digest));
    }
    let store = open(dir.path(), u64::MAX);
    assert_eq!(store.pinned(&url_a), Some(digest));
    assert!(store.remove_artifact(&digest).unwrap());
    assert!(!store.remove_artifact(&digest).unwrap());
    assert_eq!(store.pinned(&url_a), None);
    assert_eq!(store.pinned(&url_b), None);
    drop(store);
    let store = open(dir.path(), u64::MAX);
    assert_eq!(store.pinned(&url_b), None, "removal reached the catalog");
}

#[test]
fn pages_are_blobs_replaced_refreshed_and_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let project = key(Some("demo"));
    assert!(store.page(&project).unwrap().is_none());

    let small = page(b"<a href=x>".to_vec(), Some("\"v1\""));
    store.put_page(&project, &small).unwrap();
    assert_eq!(store.page(&project).unwrap().unwrap(), small);
    assert!(blob_path(dir.path(), &Sha256Digest::of(&small.body)).exists());

    let big_body = vec![b'y'; BIG + 10];
    let big_digest = Sha256Digest::of(&big_body);
    let big = page(big_body, Some("\"v2\""));
    store.put_page(&project, &big).unwrap();
    assert_eq!(store.page(&project).unwrap().unwrap(), big);
    assert!(blob_path(dir.path(), &big_digest).exists());

    let later = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    store
        .refresh_page(&project, later, None, Some("Tue, 01 Jan 2030 00:00:00 GMT"))
        .unwrap();
    let refreshed = store.page(&project).unwrap().unwrap();
    assert_eq!(refreshed.fetched_at, later);
    assert_eq!(
        refreshed.etag.as_deref(),
        Some("\"v2\""),
        "kept when none was sent"
    );
    assert_eq!(
        refreshed.last_modified.as_deref(),
        Some("Tue, 01 Jan 2030 00:00:00 GMT")
    );
    assert_eq!(refreshed.body, big.body);

    // Replacing the page deletes the body it no longer uses.
    store.put_page(&project, &small).unwrap();
    assert!(!blob_path(dir.path(), &big_digest).exists());
    assert_eq!(store.stats().pages, 1);

    store.put_page(&key(None), &small).unwrap();
    assert_eq!(store.stats().pages, 2);
    assert!(store.forget_page(&key(None)).unwrap());
    assert!(!store.forget_page(&key(None)).unwrap());
    assert_eq!(store.forget_project("pypi", "demo").unwrap(), 1);
    assert_eq!(store.forget_project("pypi", "demo").unwrap(), 0);
    assert!(store.page(&project).unwrap().is_none());
    assert_eq!(store.stats().pages, 0);
    // Refreshing a forgotten page does not bring it back.
    store
        .refresh_page(&project, later, Some("\"v3\""), None)
        .unwrap();
    assert!(store.page(&project).unwrap().is_none());
}

fn memory_commit(body: &[u8], name: &str, url_key: Option<Sha256Digest>) -> Commit {
    Commit::Artifact {
        body: NewArtifact::Memory(Bytes::copy_from_slice(body)),
        record: ArtifactRecord {
            sha256: Sha256Digest::of(body),
            size: body.len() as u64,
            repository: "pypi".to_owned(),
            filename: name.to_owned(),
            url_key,
            evictable: true,
            used_at: None,
        },
    }
}

#[test]
fn a_batch_records_files_and_pages_together_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let small = b"small wheel".to_vec();
    let big = vec![b'w'; BIG + 1];
    let big_page = vec![b'p'; BIG + 2];
    {
        let store = open(dir.path(), u64::MAX);
        let results = store.apply_batch(vec![
            memory_commit(&small, "small.whl", None),
            Commit::Page {
                key: key(Some("demo")),
                page: page(b"<a>demo</a>".to_vec(), None),
                written: None,
            },
            memory_commit(&big, "big.whl", None),
            Commit::Page {
                key: key(Some("huge")),
                page: page(big_page.clone(), None),
                written: None,
            },
        ]);
        assert_eq!(results.len(), 4);
        for result in results {
            assert!(result.unwrap().0.is_none(), "nothing was replaced");
        }
        store.flush_catalog().unwrap();
        assert_eq!(store.stats().artifacts, 2);
        assert_eq!(store.stats().pages, 2);
    }
    let store = open(dir.path(), u64::MAX);
    assert_eq!(
        read(store.artifact(&Sha256Digest::of(&small)).unwrap()),
        small
    );
    assert_eq!(read(store.artifact(&Sha256Digest::of(&big)).unwrap()), big);
    assert!(blob_path(dir.path(), &Sha256Digest::of(&big)).exists());
    assert_eq!(
        store.page(&key(Some("huge"))).unwrap().unwrap().body,
        big_page
    );
    assert_eq!(
        store.page(&key(Some("demo"))).unwrap().unwrap().body,
        &b"<a>demo</a>"[..]
    );
    assert_eq!(
        tmp_entries(dir.path()),
        0,
        "no temporary file is left behind"
    );
}

#[test]
fn a_page_twice_in_one_batch_ends_with_the_second_and_hands_back_the_first_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let project = key(Some("demo"));
    let first = vec![b'1'; BIG + 1];
    let second = vec![b'2'; BIG + 1];
    let results = store.apply_batch(vec![
        Commit::Page {
            key: project.clone(),
            page: page(first.clone(), Some("\"v1\"")),
            written: None,
        },
        Commit::Page {
            key: project.clone(),
            page: page(second.clone(), Some("\"v2\"")),
            written: None,
        },
    ]);
    let mut results = results.into_iter();
    let replaced_by_first = results.next().unwrap().unwrap();
    assert_eq!(replaced_by_first.0, None);
    let replaced_by_second = results.next().unwrap().unwrap();
    assert_eq!(
        replaced_by_second.0,
        Some(Sha256Digest::of(&first)),
        "the second commit saw the first one's record"
    );
    store.flush_catalog().unwrap();
    store.forget_replaced(replaced_by_second);
    store.forget_replaced(replaced_by_first);
    assert_eq!(store.stats().pages, 1, "one page, counted once");
    let stored = store.page(&project).unwrap().unwrap();
    assert_eq!(stored.body, second);
    assert_eq!(stored.etag.as_deref(), Some("\"v2\""));
    assert!(!blob_path(dir.path(), &Sha256Digest::of(&first)).exists());
    assert!(blob_path(dir.path(), &Sha256Digest::of(&second)).exists());
}

#[test]
fn a_file_twice_in_one_batch_is_stored_once_with_both_pins() {
    let dir = tempfile::tempdir().unwrap();
    let url_a = Sha256Digest::of(b"https://files.example.invalid/a.whl");
    let url_b = Sha256Digest::of(b"https://mirror.example.invalid/a.whl");
    let body = vec![b'a'; BIG + 5];
    let digest = Sha256Digest::of(&body);
    {
        let store = open(dir.path(), u64::MAX);
        let results = store.apply_batch(vec![
            memory_commit(&body, "a.whl", Some(url_a)),
            memory_commit(&body, "a.whl", Some(url_b)),
        ]);
        assert!(results.into_iter().all(|result| result.is_ok()));
        store.flush_catalog().unwrap();
        assert_eq!(store.stats().artifacts, 1);
        assert_eq!(
            store.stats().artifact_bytes,
            body.len() as u64,
            "counted once"
        );
    }
    let store = open(dir.path(), u64::MAX);
    assert_eq!(store.pinned(&url_a), Some(digest));
    assert_eq!(store.pinned(&url_b), Some(digest));
    assert_eq!(read(store.artifact(&digest).unwrap()), body);
}

#[test]
fn a_blob_shared_by_two_records_outlives_one_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![b'z'; BIG];
    let digest = Sha256Digest::of(&body);
    let other = PageKey {
        repository: "mirror".to_owned(),
        project: Some("demo".to_owned()),
    };
    store
        .put_page(&key(Some("demo")), &page(body.clone(), None))
        .unwrap();
    store.put_page(&other, &page(body.clone(), None)).unwrap();
    commit(&store, &body, "same-bytes.whl");
    assert!(store.forget_page(&other).unwrap());
    assert!(store.remove_artifact(&digest).unwrap());
    assert_eq!(
        store
            .page(&key(Some("demo")))
            .unwrap()
            .unwrap()
            .body
            .as_ref(),
        body.as_slice()
    );
    assert!(store.forget_page(&key(Some("demo"))).unwrap());
    assert!(
        !blob_path(dir.path(), &digest).exists(),
        "the last user deleted it"
    );
}

#[test]
fn concurrent_commits_of_one_digest_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![8u8; BIG * 3];
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let body = body.clone();
            std::thread::spawn(move || commit(&store, &body, "a.whl"))
        })
        .collect();
    for thread in threads {
        assert_eq!(thread.join().unwrap(), body);
    }
    assert_eq!(store.stats().artifacts, 1);
    assert_eq!(tmp_entries(dir.path()), 0);
}

/// Flips one bit of the blob of `digest`, as a disk that rots would.
fn flip_a_bit(dir: &Path, digest: &Sha256Digest) {
    let path = blob_path(dir, digest);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&path, bytes).unwrap();
}

fn hosted_upload(store: &Store, body: &[u8], filename: &str) {
    commit(store, body, filename);
    let upload = Upload {
        filename: filename.to_owned(),
        version: "1.0".to_owned(),
        sha256: Sha256Digest::of(body),
        size: body.len() as u64,
        requires_python: None,
        core_metadata: None,
        uploaded_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        uploader: "ci".to_owned(),
    };
    assert_eq!(
        store.record_upload("internal", "acme", &upload).unwrap(),
        UploadOutcome::Recorded
    );
}

#[test]
fn verify_finds_nothing_in_an_intact_store_and_counts_what_it_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    commit(&store, &vec![1u8; BIG], "big.whl");
    commit(&store, b"small", "small.whl.metadata");
    store
        .put_page(&key(Some("big")), &page(vec![b'x'; BIG], None))
        .unwrap();
    store
        .put_page(&key(Some("small")), &page(b"<html/>".to_vec(), None))
        .unwrap();
    let report = store.verify(false).unwrap();
    assert_eq!(
        report,
        Verification {
            files: 2,
            file_bytes: BIG as u64 + 5,
            page_bodies: 2,
            damaged: Vec::new(),
        }
    );
}

#[test]
fn verify_removes_a_rotten_or_missing_file_and_forgets_a_rotten_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let rotten = vec![1u8; BIG];
    let lost = vec![2u8; BIG];
    let intact = vec![3u8; BIG];
    let (rotten_digest, lost_digest) = (Sha256Digest::of(&rotten), Sha256Digest::of(&lost));
    commit(&store, &rotten, "rotten.whl");
    commit(&store, &lost, "lost.whl");
    commit(&store, &intact, "intact.whl");
    let page_body = vec![b'p'; BIG];
    let page_digest = Sha256Digest::of(&page_body);
    store
        .put_page(&key(Some("demo")), &page(page_body, None))
        .unwrap();
    flip_a_bit(dir.path(), &rotten_digest);
    fs::remove_file(blob_path(dir.path(), &lost_digest)).unwrap();
    flip_a_bit(dir.path(), &page_digest);

    let report = store.verify(false).unwrap();
    assert_eq!((report.files, report.page_bodies), (3, 1));
    let find = |digest: &Sha256Digest| {
        report
            .damaged
            .iter()
            .find(|d| d.sha256 == *digest)
            .unwrap_or_else(|| panic!("{digest} not reported: {:?}", report.damaged))
    };
    assert_eq!(report.damaged.len(), 3, "{:?}", report.damaged);
    let rotten_report = find(&rotten_digest);
    assert!(
        matches!(rotten_report.problem, Problem::Differs { size, .. } if size == BIG as u64),
        "{rotten_report:?}"
    );
    assert_eq!(rotten_report.repair, Repair::Removed);
    assert_eq!(
        rotten_report.used_by,
        vec![BodyUser::File {
            repository: "pypi".to_owned(),
            filename: "rotten.whl".to_owned()
        }]
    );
    assert_eq!(find(&lost_digest).problem, Problem::Missing);
    assert_eq!(
        find(&page_digest).used_by,
        vec![BodyUser::Page(key(Some("demo")))]
    );

    assert!(!store.contains(&rotten_digest) && !store.contains(&lost_digest));
    assert!(store.contains(&Sha256Digest::of(&intact)));
    assert!(!blob_path(dir.path(), &rotten_digest).exists());
    assert!(!blob_path(dir.path(), &page_digest).exists());
    assert_eq!(store.page(&key(Some("demo"))).unwrap(), None);
    assert_eq!(store.stats().pages, 0);
    // What was removed can be stored again, and a second run finds nothing.
    assert_eq!(commit(&store, &rotten, "rotten.whl"), rotten);
    assert!(store.verify(false).unwrap().damaged.is_empty());
    drop(store);
    let store = open(dir.path(), u64::MAX);
    assert!(store.contains(&rotten_digest) && !store.contains(&lost_digest));
}

#[test]
fn a_rotten_hosted_upload_is_kept_unless_uploads_are_to_be_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![7u8; BIG];
    let digest = Sha256Digest::of(&body);
    hosted_upload(&store, &body, "acme-1.0-py3-none-any.whl");
    let epoch = store.upload_epoch();
    flip_a_bit(dir.path(), &digest);
    let upload = UploadName {
        repository: "internal".to_owned(),
        project: "acme".to_owned(),
        filename: "acme-1.0-py3-none-any.whl".to_owned(),
    };

    let report = store.verify(false).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].repair, Repair::Kept);
    assert!(
        report.damaged[0]
            .used_by
            .contains(&BodyUser::Upload(upload.clone())),
        "{report:?}"
    );
    assert!(store.contains(&digest), "the only copy stays");
    assert_eq!(store.uploads("internal", "acme").unwrap().len(), 1);

    let report = store.verify(true).unwrap();
    assert_eq!(report.damaged[0].repair, Repair::UploadsForgotten);
    assert!(report.damaged[0]
        .used_by
        .contains(&BodyUser::Upload(upload)));
    assert!(!store.contains(&digest));
    assert!(!blob_path(dir.path(), &digest).exists());
    assert!(store.uploads("internal", "acme").unwrap().is_empty());
    assert!(
        store.upload_epoch() > epoch,
        "hosted pages in memory go stale"
    );
    // The filename is free again.
    hosted_upload(&store, &body, "acme-1.0-py3-none-any.whl");
    assert!(store.verify(false).unwrap().damaged.is_empty());
}

#[test]
fn forgetting_an_upload_keeps_bodies_another_upload_uses() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let body = vec![8u8; BIG];
    let digest = Sha256Digest::of(&body);
    hosted_upload(&store, &body, "acme-1.0-py3-none-any.whl");
    let metadata = b"Metadata-Version: 2.1\nName: acme\n".to_vec();
    let metadata_digest = Sha256Digest::of(&metadata);
    commit(&store, &metadata, "acme-2.0-py3-none-any.whl.metadata");
    commit(&store, &vec![9u8; BIG], "acme-2.0-py3-none-any.whl");
    let second = Upload {
        filename: "acme-2.0-py3-none-any.whl".to_owned(),
        version: "2.0".to_owned(),
        sha256: Sha256Digest::of(&vec![9u8; BIG]),
        size: BIG as u64,
        requires_python: None,
        core_metadata: Some(metadata_digest),
        uploaded_at: UNIX_EPOCH,
        uploader: "ci".to_owned(),
    };
    store.record_upload("internal", "acme", &second).unwrap();
    let forgotten = store.forget_uploads_using(&metadata_digest).unwrap();
    assert_eq!(forgotten.len(), 1);
    assert_eq!(forgotten[0].filename, "acme-2.0-py3-none-any.whl");
    assert!(!store.contains(&metadata_digest) && !store.contains(&second.sha256));
    assert!(store.contains(&digest), "the other upload keeps its body");
    assert_eq!(store.uploads("internal", "acme").unwrap().len(), 1);
}

#[test]
fn gc_evicts_down_to_the_given_size_least_recent_first_and_never_hosted_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), u64::MAX);
    let bodies: Vec<Vec<u8>> = (0..3u8).map(|n| vec![n; BIG]).collect();
    hosted_upload(&store, &vec![9u8; BIG], "acme-1.0-py3-none-any.whl");
    for (n, body) in bodies.iter().enumerate() {
        commit(&store, body, &format!("{n}.whl"));
    }
    assert!(store.artifact(&Sha256Digest::of(&bodies[0])).is_some());
    assert_eq!(store.gc(u64::MAX).unwrap(), Evicted::default());
    assert_eq!(
        store.gc(3 * BIG as u64).unwrap(),
        Evicted {
            files: 1,
            bytes: BIG as u64
        }
    );
    assert!(
        !store.contains(&Sha256Digest::of(&bodies[1])),
        "the least recent went"
    );
    assert!(!blob_path(dir.path(), &Sha256Digest::of(&bodies[1])).exists());
    assert_eq!(
        store.gc(0).unwrap(),
        Evicted {
            files: 2,
            bytes: 2 * BIG as u64
        }
    );
    assert_eq!(store.stats().artifacts, 1, "the hosted upload stays");
    assert_eq!(store.unevictable(), (1, BIG as u64));
}

#[test]
fn the_first_upload_records_the_package_origin_and_later_events_leave_it() {
    use crate::origin::record::{Allowance, OriginEvent};
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path(), u64::MAX);
        assert_eq!(store.origin_record("internal", "acme"), None);
        hosted_upload(&store, &vec![3u8; BIG], "acme-1.0-py3-none-any.whl");
        let record = store.origin_record("internal", "acme").unwrap();
        assert_eq!(
            (record.publish, record.upstream, record.event),
            (Allowance::Allow, Allowance::Block, OriginEvent::FirstUpload)
        );
        assert_eq!(record.version.as_deref(), Some("1.0"));
        assert_eq!(
            record.time(),
            UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        // An ingestion through a remote is the remote's record; the first one stays.
        let first = store
            .record_ingestion("pypi", "acme", UNIX_EPOCH + Duration::from_secs(10))
            .unwrap()
            .expect("the first ingestion makes the record");
        let again = store
            .record_ingestion("pypi", "acme", UNIX_EPOCH + Duration::from_secs(20))
            .unwrap();
        assert_eq!(again, None, "a later ingestion makes nothing");
        assert_eq!(store.origin_record("pypi", "acme"), Some(first.clone()));
        assert_eq!(
            (first.publish, first.upstream, first.event),
            (
                Allowance::Block,
                Allowance::Allow,
                OriginEvent::FirstIngestion
            )
        );
        assert_eq!(
            store.origin_allowances("internal", "acme"),
            Some((Allowance::Allow, Allowance::Block))
        );
        store.flush().unwrap();
    }
    // Both survive a restart (the mirror is loaded from the catalog).
    let store = open(dir.path(), u64::MAX);
    assert_eq!(
        store.origin_record("internal", "acme").unwrap().event,
        OriginEvent::FirstUpload
    );
    assert_eq!(store.origin_record("pypi", "acme").unwrap().at, 10_000);
}

#[test]
fn bodies_an_earlier_version_kept_inline_become_blobs_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (file, rotten, page_body) = (
        b"a small wheel".to_vec(),
        b"the real metadata".to_vec(),
        b"<a href=demo-1.0.tar.gz>".to_vec(),
    );
    let (digest, rotten_digest) = (Sha256Digest::of(&file), Sha256Digest::of(&rotten));
    let project = key(Some("demo"));
    {
        let store = open(dir.path(), u64::MAX);
        commit(&store, &file, "demo-1.0-py3-none-any.whl");
        commit(&store, &rotten, "demo-1.0-py3-none-any.whl.metadata");
        store
            .put_page(&project, &page(page_body.clone(), None))
            .unwrap();
        // Rewritten as versions before 2026-12 left them: bodies in the catalog, no blobs.
        let catalog = &store.inner.catalog;
        let entry = catalog.artifact(&digest).unwrap().unwrap();
        catalog.put_legacy_inline_artifact(&digest, &entry, &file);
        let entry = catalog.artifact(&rotten_digest).unwrap().unwrap();
        catalog.put_legacy_inline_artifact(&rotten_digest, &entry, b"rotten metadata");
        let entry = catalog.page(&project).unwrap().unwrap();
        catalog.put_legacy_inline_page(&project, &entry, &page_body);
        catalog.flush().unwrap();
        for body in [&file, &rotten, &page_body] {
            fs::remove_file(blob_path(dir.path(), &Sha256Digest::of(body))).unwrap();
        }
    }
    let store = open(dir.path(), u64::MAX);
    let catalog = &store.inner.catalog;
    assert_eq!(fs::read(blob_path(dir.path(), &digest)).unwrap(), file);
    assert_eq!(catalog.artifact_body(&digest).unwrap(), None);
    assert!(!catalog.artifact(&digest).unwrap().unwrap().inline);
    assert_eq!(read(store.artifact(&digest).unwrap()), file);
    assert_eq!(
        fs::read(blob_path(dir.path(), &Sha256Digest::of(&page_body))).unwrap(),
        page_body
    );
    assert_eq!(catalog.page_body(&project).unwrap(), None);
    assert_eq!(store.page(&project).unwrap().unwrap().body, page_body);
    // A body that does not match its digest stays where it is, for `cache verify`.
    assert!(catalog.artifact_body(&rotten_digest).unwrap().is_some());
    assert!(!blob_path(dir.path(), &rotten_digest).exists());
    let report = store.verify(false).unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    drop(store);
    // Nothing is left to move: a second open changes nothing.
    let store = open(dir.path(), u64::MAX);
    assert_eq!(read(store.artifact(&digest).unwrap()), file);
    assert!(store.inner.catalog.inline_page_keys().unwrap().is_empty());
    assert!(store
        .inner
        .catalog
        .inline_artifact_digests()
        .unwrap()
        .is_empty());
}
