//! Central replicas sharing one S3-compatible bucket (`[store.shared]`, issue 17), against a
//! real server (Ceph's radosgw, started by `harness::s3`): a file any replica fetched reaches
//! the others through the bucket, so the upstream sees each file once whichever replica a
//! client reaches; an upload through one replica installs through another, two replicas given
//! one filename at once agree on one winner, a package first published through one replica
//! keeps the upstream's versions of its name out of every replica's group, a replica killed amid
//! uploads loses none it acknowledged and leaves no filename half taken, and a name one replica
//! ingested from the upstream is not published through another. And what the bucket's
//! own troubles cost: a stalled endpoint its idle timeout, an outage the probe has noticed an
//! upload nothing at all, a rotated secret no restart.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::harness::clients::{self, dists, installed, ClientRun};
use crate::harness::http;
use crate::harness::s3::signed::Credentials;
use crate::harness::s3::{unique_bucket_name, S3Server};
use crate::harness::uploads::{app_wheel, app_wheel_rebuilt, plain_wheel, Dist, UploadForm};
use crate::harness::upstream::{Mode, Upstream};
use crate::harness::wheelgate::{toml_string, GroupConfig, RemoteConfig, Wheelgate};
use crate::harness::{new_token, wait_until, write_file, Account};
use crate::install::expected_app_install;

/// What every test here starts from: a new bucket on the shared S3 server, an upstream, a
/// directory for the replicas' homes, and the account that publishes.
struct Fleet {
    s3: &'static S3Server,
    bucket: String,
    upstream: Upstream,
    dir: tempfile::TempDir,
    publisher: Account,
}

impl Fleet {
    /// A replica named `name` on this fleet's bucket and upstream (see `replica`).
    fn replica(&self, name: &str) -> Wheelgate {
        replica(
            self.dir.path(),
            name,
            &self.upstream,
            self.s3,
            &self.bucket,
            &self.publisher,
        )
    }

    fn new(purpose: &str) -> Fleet {
        let s3 = S3Server::shared();
        let bucket = unique_bucket_name(purpose);
        s3.create_bucket(&bucket);
        Fleet {
            s3,
            bucket,
            upstream: Upstream::start(Mode::Json, &new_token()),
            dir: tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}")),
            publisher: Account::new("fleet-publisher"),
        }
    }
}

/// The `[store]` lines that put a replica on `bucket` of `s3`, reached at `endpoint`, signing as
/// `access_key_id` with the secret in `secret_file`.
fn shared_store_toml(
    s3: &S3Server,
    endpoint: &str,
    bucket: &str,
    access_key_id: &str,
    secret_file: &Path,
) -> String {
    format!(
        "shared.endpoint = {}\nshared.bucket = {}\nshared.region = {}\n\
         shared.access_key_id = {}\nshared.secret_access_key_file = {}\n",
        toml_string(endpoint),
        toml_string(bucket),
        toml_string(s3.region()),
        toml_string(access_key_id),
        toml_string(&secret_file.to_string_lossy()),
    )
}

/// A replica with its own empty store in `dir/<name>`, in front of `upstream`, sharing `bucket`:
/// the remote `pypi`, the hosted `internal` that `publisher` may publish to, and the group
/// `all = [internal, pypi]`.
fn replica(
    dir: &Path,
    name: &str,
    upstream: &Upstream,
    s3: &S3Server,
    bucket: &str,
    publisher: &Account,
) -> Wheelgate {
    replica_through(dir, name, upstream, s3, &s3.endpoint(), bucket, publisher)
}

/// As `replica`, reaching the bucket at `endpoint` (a gateway of the test's own).
fn replica_through(
    dir: &Path,
    name: &str,
    upstream: &Upstream,
    s3: &S3Server,
    endpoint: &str,
    bucket: &str,
    publisher: &Account,
) -> Wheelgate {
    let bucket = Bucket {
        endpoint: endpoint.to_owned(),
        name: bucket.to_owned(),
        credentials: Credentials {
            access_key_id: s3.access_key_id().to_owned(),
            secret_access_key: s3.secret_access_key().to_owned(),
        },
        extra_toml: String::new(),
    };
    replica_on(dir, name, upstream, s3, &bucket, publisher)
}

/// How a replica reaches its bucket.
struct Bucket {
    endpoint: String,
    name: String,
    credentials: Credentials,
    /// More `[store]` lines (`shared.idle_timeout`).
    extra_toml: String,
}

/// As `replica`, on `bucket`.
fn replica_on(
    dir: &Path,
    name: &str,
    upstream: &Upstream,
    s3: &S3Server,
    bucket: &Bucket,
    publisher: &Account,
) -> Wheelgate {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("{}: {e}", home.display()));
    let token_file = home.join("upstream-token");
    write_file(&token_file, &format!("{}\n", upstream.token()));
    let secret_file = home.join("s3-secret");
    write_file(
        &secret_file,
        &format!("{}\n", bucket.credentials.secret_access_key),
    );
    let mut config = RemoteConfig::new(
        home.join("store"),
        upstream.index_url(),
        token_file,
        vec![upstream.third_addr().to_string()],
    );
    config.store_toml = shared_store_toml(
        s3,
        &bucket.endpoint,
        &bucket.name,
        &bucket.credentials.access_key_id,
        &secret_file,
    ) + &bucket.extra_toml;
    config.hosted = vec!["internal".to_owned()];
    config.users = vec![publisher.user(&["read", "publish"])];
    config.groups = vec![GroupConfig::new("all", &["internal", "pypi"])];
    let path = home.join("proxy.toml");
    write_file(&path, &config.to_toml());
    Wheelgate::start(&path, &home, "info")
}

/// How many times the upstream was asked for each file (anything but an index page).
fn file_requests(upstream: &Upstream) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for request in upstream.requests() {
        if !request.path.starts_with("/simple/") {
            *counts.entry(request.path).or_insert(0) += 1;
        }
    }
    counts
}

/// The remote repository's own index on `replica` (its default is the group).
fn pypi_index(replica: &Wheelgate) -> String {
    replica.url("/pypi/simple/")
}

/// Publishes `dist` to `internal` on `replica` as `account`; returns the status.
fn publish(replica: &Wheelgate, dist: &Dist, account: &Account) -> u16 {
    publish_answer(replica, dist, account).status
}

/// Publishes `dist` to `internal` on `replica` as `account`; returns the answer.
fn publish_answer(replica: &Wheelgate, dist: &Dist, account: &Account) -> http::RawResponse {
    try_publish(replica.addr(), dist, &account.authorization())
        .unwrap_or_else(|e| panic!("upload of {}: {e}\n{}", dist.filename, replica.output()))
}

/// Publishes `dist` to `internal` at `addr` with the `authorization` header; Err when the
/// connection ends without an answer.
fn try_publish(
    addr: SocketAddr,
    dist: &Dist,
    authorization: &str,
) -> Result<http::RawResponse, String> {
    let form = UploadForm::of(dist).multipart();
    let content_type = form.content_type();
    http::raw_request(
        addr,
        "POST",
        b"/internal/",
        &[
            ("content-type", content_type.as_str()),
            ("authorization", authorization),
        ],
        &form.body(),
    )
}

/// The sha256 of the file `filename` on `project`'s JSON page of `index` on `replica`, if listed.
fn listed_sha256(
    replica: &Wheelgate,
    index: &str,
    project: &str,
    filename: &str,
) -> Option<String> {
    let url = replica.url(&format!("/{index}/simple/{project}/"));
    let page = http::get(
        &url,
        &[("accept", crate::harness::upstream::JSON_MEDIA_TYPE)],
    );
    if page.status != ::http::StatusCode::OK {
        return None;
    }
    page.json()["files"].as_array()?.iter().find_map(|file| {
        (file["filename"].as_str() == Some(filename))
            .then(|| file["hashes"]["sha256"].as_str().map(str::to_owned))
            .flatten()
    })
}

/// Whether the first-ingestion record of `package` through `pypi` reaches the bucket within 15 s.
fn origin_shared(s3: &S3Server, bucket: &str, package: &str) -> bool {
    wait_until(Duration::from_secs(15), || {
        !s3.list(bucket, &format!("origins/pypi/{package}"))
            .is_empty()
    })
}

/// `run` succeeded and left exactly `expected` in `target`.
fn assert_installed(run: &ClientRun, target: &Path, expected: BTreeSet<(String, String)>) {
    run.assert_success();
    assert_eq!(installed(target), expected, "{}", run.output());
}

fn target(dir: &Path, name: &str) -> PathBuf {
    dir.join("targets").join(name)
}

#[test]
fn three_replicas_on_one_bucket_fetch_each_file_from_the_upstream_once() {
    let Fleet {
        s3,
        bucket,
        upstream,
        dir,
        publisher,
    } = Fleet::new("fleet");
    let replicas: Vec<Wheelgate> = ["one", "two", "three"]
        .iter()
        .map(|name| replica(dir.path(), name, &upstream, s3, &bucket, &publisher))
        .collect();

    // A cold install through the first replica: every file comes from the upstream, and each
    // is copied to the bucket in the background.
    let first = target(dir.path(), "one");
    let run = clients::pip_install(&pypi_index(&replicas[0]), &first, &["wgfx-app"]);
    assert_installed(&run, &first, expected_app_install());
    let fetched = file_requests(&upstream);
    // A file behind a redirect is two requests for one body.
    let bodies = fetched
        .keys()
        .filter(|path| !path.starts_with("/redirect/"))
        .count();
    assert!(
        bodies >= 2 * expected_app_install().len(),
        "the first install fetched only {fetched:?}"
    );
    let copied = wait_until(Duration::from_secs(30), || {
        s3.list(&bucket, "artifacts/sha256/").len() >= bodies
    });
    assert!(
        copied,
        "the bucket holds {:?} after the first install fetched {fetched:?}; replica one:\n{}",
        s3.list(&bucket, "artifacts/sha256/"),
        replicas[0].output()
    );

    // The two other replicas, their stores empty, install with pip and uv: from the bucket.
    for (replica, name) in [(&replicas[1], "two"), (&replicas[2], "three")] {
        let target = target(dir.path(), name);
        let run = if name == "two" {
            clients::pip_install(&pypi_index(replica), &target, &["wgfx-app"])
        } else {
            clients::uv_install(&pypi_index(replica), &target, &["wgfx-app"])
        };
        assert_installed(&run, &target, expected_app_install());
    }
    let twice: Vec<(String, usize)> = file_requests(&upstream)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "the upstream was asked more than once for {twice:?}; replica two:\n{}",
        replicas[1].output()
    );
}

#[test]
fn uploads_through_one_replica_are_everywhere_and_a_filename_has_one_winner() {
    let fleet = Fleet::new("uploads");
    let (one, two) = (fleet.replica("one"), fleet.replica("two"));
    let (dir, publisher) = (&fleet.dir, &fleet.publisher);

    // The same filename with different bytes through both replicas at once: one 200, one 409,
    // and both replicas list the winner.
    let (first, second) = (app_wheel(), app_wheel_rebuilt());
    assert_eq!(first.filename, second.filename);
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(|| publish(&one, first, publisher));
        let b = scope.spawn(|| publish(&two, second, publisher));
        (a.join().unwrap_or(0), b.join().unwrap_or(0))
    });
    let mut statuses = [a, b];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 409],
        "one upload wins, the other is refused"
    );
    let winner = if a == 200 { first } else { second };
    for replica in [&one, &two] {
        let project = winner
            .filename
            .split('-')
            .next()
            .unwrap_or_default()
            .replace('_', "-");
        let listed = wait_until(Duration::from_secs(10), || {
            listed_sha256(replica, "internal", &project, &winner.filename).as_deref()
                == Some(winner.sha256.as_str())
        });
        assert!(
            listed,
            "a replica does not list the winning upload:\n{}",
            replica.output()
        );
    }

    // A package first published through replica one: replica two installs it from its group,
    // and never offers the upstream's version of that name.
    let acme = plain_wheel("wgfx-acme-utils", "1.0");
    assert_eq!(publish(&one, &acme, publisher), 200);
    let target = dir.path().join("acme");
    let run = clients::pip_install(&two.url("/all/simple/"), &target, &["wgfx-acme-utils"]);
    assert_installed(&run, &target, dists(&[("wgfx-acme-utils", "1.0")]));
    assert_eq!(
        listed_sha256(
            &two,
            "all",
            "wgfx-acme-utils",
            "wgfx_acme_utils-99.0-py3-none-any.whl"
        ),
        None,
        "replica two offers the upstream's wgfx-acme-utils 99.0 though the name was published \
         through replica one first"
    );
}

#[test]
fn with_the_bucket_down_a_replica_serves_what_it_holds_refuses_uploads_and_recovers_by_itself() {
    let s3 = S3Server::shared();
    let gateway = s3.start_gateway();
    let bucket = unique_bucket_name("outage");
    s3.create_bucket(&bucket);
    let upstream = Upstream::start(Mode::Json, &new_token());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let publisher = Account::new("fleet-publisher");
    let endpoint = gateway.endpoint();
    let one = replica_through(
        dir.path(),
        "one",
        &upstream,
        s3,
        &endpoint,
        &bucket,
        &publisher,
    );
    let run = clients::pip_install(
        &pypi_index(&one),
        &target(dir.path(), "before"),
        &["wgfx-app"],
    );
    run.assert_success();
    assert_eq!(
        publish(&one, &plain_wheel("wgfx-outage", "1.0"), &publisher),
        200
    );

    gateway.stop();
    // What the replica holds installs as before.
    let after = target(dir.path(), "during");
    let run = clients::pip_install(&pypi_index(&one), &after, &["wgfx-app"]);
    assert_installed(&run, &after, expected_app_install());
    // A package first ingested meanwhile: its record waits for the bucket.
    let page = http::get(&one.url("/pypi/simple/wgfx-kappa/"), &[]);
    assert_eq!(page.status, ::http::StatusCode::OK, "{}", one.output());
    // An upload is refused with 503 and the reason, and nothing of it is published.
    assert_eq!(
        publish(&one, &plain_wheel("wgfx-outage", "2.0"), &publisher),
        503
    );
    assert_eq!(
        listed_sha256(
            &one,
            "internal",
            "wgfx-outage",
            "wgfx_outage-2.0-py3-none-any.whl"
        ),
        None,
        "a refused upload is listed"
    );
    let degraded = wait_until(Duration::from_secs(15), || {
        http::get(&one.url("/-/ready"), &[])
            .text()
            .contains("the shared bucket")
            && http::get(&one.url("/-/metrics"), &[])
                .text()
                .contains("wheelgate_shared_bucket_up 0")
    });
    assert!(
        degraded,
        "/-/ready and the metrics must say the bucket is down:\n{}",
        one.output()
    );
    assert_eq!(
        http::get(&one.url("/-/ready"), &[]).status,
        ::http::StatusCode::OK,
        "a replica that serves its store stays ready"
    );

    // The bucket back: the replica resumes by itself.
    gateway.start();
    let resumed = wait_until(Duration::from_secs(30), || {
        publish(&one, &plain_wheel("wgfx-outage", "2.0"), &publisher) == 200
    });
    assert!(
        resumed,
        "uploads did not resume once the bucket was back:\n{}",
        one.output()
    );
    let up = wait_until(Duration::from_secs(15), || {
        http::get(&one.url("/-/ready"), &[]).text() == "ready\n"
            && http::get(&one.url("/-/metrics"), &[])
                .text()
                .contains("wheelgate_shared_bucket_up 1")
    });
    assert!(
        up,
        "/-/ready and the metrics must say the bucket is back:\n{}",
        one.output()
    );
    // And the record made during the outage reaches the bucket, for the other replicas.
    assert!(
        origin_shared(s3, &bucket, "wgfx-kappa"),
        "the first ingestion of wgfx-kappa during the outage never reached the bucket:\n{}",
        one.output()
    );
}

#[test]
fn an_upload_acknowledged_by_a_replica_killed_right_after_is_not_lost() {
    let fleet = Fleet::new("kill");
    let (mut one, two) = (fleet.replica("one"), fleet.replica("two"));
    let (dir, publisher) = (&fleet.dir, &fleet.publisher);
    let dist = plain_wheel("wgfx-durable", "1.0");
    assert_eq!(publish(&one, &dist, publisher), 200);
    // The 200 came after the bucket had it: kill -9, and even a lost disk, lose nothing.
    one.kill();
    std::fs::remove_dir_all(dir.path().join("one").join("store"))
        .unwrap_or_else(|e| panic!("cannot remove replica one's store: {e}"));
    assert_eq!(
        listed_sha256(&two, "internal", "wgfx-durable", &dist.filename).as_deref(),
        Some(dist.sha256.as_str()),
        "replica two does not list the upload replica one acknowledged:\n{}",
        two.output()
    );
    let target = target(dir.path(), "durable");
    let run = clients::uv_install(&two.url("/internal/simple/"), &target, &["wgfx-durable"]);
    assert_installed(&run, &target, dists(&[("wgfx-durable", "1.0")]));
    // Replica one, back with an empty store, serves it too.
    one.start_again();
    assert_eq!(
        listed_sha256(&one, "internal", "wgfx-durable", &dist.filename).as_deref(),
        Some(dist.sha256.as_str()),
        "replica one does not list its own acknowledged upload after kill -9:\n{}",
        one.output()
    );
}

#[test]
fn kill_9_amid_uploads_loses_none_acknowledged_and_leaves_no_filename_half_taken() {
    let fleet = Fleet::new("killmid");
    let (mut one, two) = (fleet.replica("one"), fleet.replica("two"));
    let (dir, publisher) = (&fleet.dir, &fleet.publisher);
    let addr = one.addr();
    let authorization = publisher.authorization();

    // One upload certainly in flight when the kill comes: half of its body sent, the rest never.
    let stalled = plain_wheel("wgfx-stalled", "1.0");
    let form = UploadForm::of(&stalled).multipart();
    let (content_type, body) = (form.content_type(), form.body());
    let headers = [
        ("content-type", content_type.as_str()),
        ("authorization", authorization.as_str()),
    ];
    let mut stalled_request = http::begin_request(
        addr,
        "POST",
        b"/internal/",
        &headers,
        Some(body.len() as u64),
    )
    .unwrap_or_else(|e| panic!("the stalled upload: {e}"));
    stalled_request
        .send(&body[..body.len() / 2])
        .unwrap_or_else(|e| panic!("the stalled upload's first half: {e}"));

    // Two clients publishing one wheel after another through replica one, until it dies under
    // them: the kill lands in the middle of their uploads (receiving, storing or putting into
    // the bucket), wherever that is.
    const ACKNOWLEDGED_BEFORE_THE_KILL: usize = 6;
    let acknowledged = AtomicUsize::new(0);
    let outcomes: Vec<(Dist, Result<u16, String>)> = std::thread::scope(|scope| {
        let uploaders: Vec<_> = (0..2)
            .map(|client| {
                let (acknowledged, authorization) = (&acknowledged, &authorization);
                scope.spawn(move || {
                    let mut outcomes = Vec::new();
                    // Bounded, should the kill never come.
                    for i in 0..200 {
                        let dist = plain_wheel(&format!("wgfx-burst-{client}-{i}"), "1.0");
                        let answer =
                            try_publish(addr, &dist, authorization).map(|answer| answer.status);
                        let cut_off = answer.is_err();
                        if answer == Ok(200) {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        outcomes.push((dist, answer));
                        if cut_off {
                            break;
                        }
                    }
                    outcomes
                })
            })
            .collect();
        let enough = wait_until(Duration::from_secs(60), || {
            acknowledged.load(Ordering::SeqCst) >= ACKNOWLEDGED_BEFORE_THE_KILL
        });
        one.kill();
        assert!(
            enough,
            "replica one acknowledged fewer than {ACKNOWLEDGED_BEFORE_THE_KILL} uploads in 60 s"
        );
        uploaders
            .into_iter()
            .flat_map(|uploader| {
                uploader
                    .join()
                    .unwrap_or_else(|_| panic!("an uploading client panicked"))
            })
            .collect()
    });
    assert!(
        !matches!(
            stalled_request.answer_within(Duration::from_secs(10)),
            Some(Ok(_))
        ),
        "the upload stalled halfway got an answer"
    );

    let (kept, cut_off): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|(_, answer)| *answer == Ok(200));
    for (dist, answer) in &cut_off {
        assert!(
            answer.is_err(),
            "the upload of {} was answered {answer:?} before the kill",
            dist.filename
        );
    }
    // Every acknowledged upload is on replica two, with its bytes.
    for (dist, _) in &kept {
        let listed = wait_until(Duration::from_secs(10), || {
            listed_sha256(&two, "internal", &dist.normalized, &dist.filename).as_deref()
                == Some(dist.sha256.as_str())
        });
        assert!(
            listed,
            "replica two does not list {}, which replica one acknowledged before its kill -9:\n{}",
            dist.filename,
            two.output()
        );
    }
    // What the kill cut off, halfway through its body or through its commit, holds no filename:
    // each can be published again through replica two.
    for dist in cut_off.iter().map(|(dist, _)| dist).chain([&stalled]) {
        assert_eq!(
            publish(&two, dist, publisher),
            200,
            "{}, cut off by the kill, cannot be published again through replica two:\n{}",
            dist.filename,
            two.output()
        );
        assert_eq!(
            listed_sha256(&two, "internal", &dist.normalized, &dist.filename).as_deref(),
            Some(dist.sha256.as_str()),
            "replica two lists other bytes for {}",
            dist.filename
        );
    }
    // And all of them install through replica two, the acknowledged and the published again.
    let all: Vec<&Dist> = kept
        .iter()
        .chain(&cut_off)
        .map(|(dist, _)| dist)
        .chain([&stalled])
        .collect();
    let target = target(dir.path(), "burst");
    let requirements: Vec<&str> = all.iter().map(|dist| dist.name.as_str()).collect();
    let run = clients::uv_install(&two.url("/internal/simple/"), &target, &requirements);
    let expected = all
        .iter()
        .map(|dist| (dist.normalized.clone(), dist.version.clone()))
        .collect();
    assert_installed(&run, &target, expected);
}

#[test]
fn a_name_one_replica_ingested_from_the_upstream_is_not_published_through_another() {
    let fleet = Fleet::new("ingested");
    let (one, two) = (fleet.replica("one"), fleet.replica("two"));
    let (dir, publisher) = (&fleet.dir, &fleet.publisher);
    // Installed through replica one's group: its page lists the upstream's files, which makes
    // the name's first-ingestion record there, and shares it.
    let target = target(dir.path(), "epsilon");
    let run = clients::pip_install(&one.url("/all/simple/"), &target, &["wgfx-epsilon"]);
    assert_installed(&run, &target, dists(&[("wgfx-epsilon", "0.3.0")]));
    // Replica two never served that page; a publish of the name through it is refused by the
    // record replica one made (it reaches the bucket in the background, just after the page).
    assert!(
        origin_shared(fleet.s3, &fleet.bucket, "wgfx-epsilon"),
        "replica one never shared the record:\n{}",
        one.output()
    );
    let dist = plain_wheel("wgfx-epsilon", "5.0");
    let status = publish(&two, &dist, publisher);
    assert_eq!(
        status,
        403,
        "replica two accepted a name replica one ingested from the upstream:\n{}",
        two.output()
    );
    // And replica one refuses it too, as a single node does.
    assert_eq!(publish(&one, &dist, publisher), 403);
}

#[test]
fn a_wrong_copy_in_the_bucket_is_fetched_from_the_upstream_instead_and_replaced() {
    let Fleet {
        s3,
        bucket,
        upstream,
        dir,
        publisher,
    } = Fleet::new("wrong");
    let one = replica(dir.path(), "one", &upstream, s3, &bucket, &publisher);
    // The bucket holds other bytes under the digest of wgfx-epsilon's wheel, as a damaged or
    // tampered copy would.
    let page = http::get(
        &one.url("/pypi/simple/wgfx-epsilon/"),
        &[("accept", crate::harness::upstream::JSON_MEDIA_TYPE)],
    );
    let files = page.json()["files"].as_array().cloned().unwrap_or_default();
    let wheel = files
        .iter()
        .find(|f| {
            f["filename"]
                .as_str()
                .is_some_and(|n| n.ends_with(".whl") && n.contains("0.3.0"))
        })
        .unwrap_or_else(|| panic!("no wgfx-epsilon 0.3.0 wheel on {files:?}"));
    let sha256 = wheel["hashes"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let key = format!("artifacts/sha256/{sha256}");
    let planted = s3.put_object(&bucket, &key, b"not the wheel at all", &[]);
    assert_eq!(planted.status, 200, "{}", planted.text());

    // pip installs it all the same: the copy fails its digest, the upstream's is served.
    let target = target(dir.path(), "epsilon");
    let run = clients::pip_install(&pypi_index(&one), &target, &["wgfx-epsilon"]);
    assert_installed(&run, &target, dists(&[("wgfx-epsilon", "0.3.0")]));
    // And the verified copy replaces the wrong one in the bucket, for every replica.
    let replaced = wait_until(Duration::from_secs(10), || {
        crate::harness::fixtures::sha256_hex(&s3.get_object(&bucket, &key).body) == sha256
    });
    assert!(
        replaced,
        "the wrong copy stayed in the bucket:\n{}",
        one.output()
    );
    assert!(
        one.output().contains("does not match its digest"),
        "the wrong copy was not logged:\n{}",
        one.output()
    );
}

/// The project names `/internal/simple/` on `replica` lists as PEP 691 JSON, or `None` unless
/// it answers 200.
fn internal_projects_json(replica: &Wheelgate) -> Option<BTreeSet<String>> {
    let index = http::get(
        &replica.url("/internal/simple/"),
        &[("accept", crate::harness::upstream::JSON_MEDIA_TYPE)],
    );
    if index.status != ::http::StatusCode::OK {
        return None;
    }
    Some(
        index.json()["projects"]
            .as_array()?
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect(),
    )
}

#[test]
fn a_project_uploaded_through_one_replica_is_on_every_replicas_project_list() {
    let fleet = Fleet::new("list");
    let (one, two) = (fleet.replica("one"), fleet.replica("two"));
    let publisher = &fleet.publisher;
    // Replica two builds its project list before the upload: it must not keep it.
    assert_eq!(
        internal_projects_json(&two),
        Some(BTreeSet::new()),
        "{}",
        two.output()
    );
    assert_eq!(
        publish(&one, &plain_wheel("wgfx-listed", "1.0"), publisher),
        200
    );
    // Nobody asks replica two for wgfx-listed's own page: its project list names it all the
    // same, within the bucket's sync interval.
    let listed = wait_until(Duration::from_secs(10), || {
        internal_projects_json(&two).is_some_and(|names| names.contains("wgfx-listed"))
    });
    assert!(
        listed,
        "replica two's /internal/simple/ (JSON) never named wgfx-listed, uploaded through \
         replica one: {:?}\n{}",
        internal_projects_json(&two),
        two.output()
    );
    let html = http::get(&two.url("/internal/simple/"), &[("accept", "text/html")]);
    assert_eq!(html.status, ::http::StatusCode::OK, "{}", html.text());
    assert!(
        html.text().contains(">wgfx-listed<"),
        "replica two's /internal/simple/ (HTML) does not name wgfx-listed:\n{}",
        html.text()
    );
    // And the page the list links to is there.
    assert!(
        listed_sha256(
            &two,
            "internal",
            "wgfx-listed",
            "wgfx_listed-1.0-py3-none-any.whl"
        )
        .is_some(),
        "{}",
        two.output()
    );
}

/// A bucket endpoint that accepts connections and never answers: what a stalled server, a
/// half-dead load balancer or a black-holing firewall looks like. Stops accepting when dropped.
struct Stall {
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl Stall {
    /// On a free port of loopback.
    fn start() -> Stall {
        Stall::on("127.0.0.1:0")
    }

    /// On `addr` (the port of a gateway just stopped).
    fn on(addr: &str) -> Stall {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind(addr)
            .unwrap_or_else(|e| panic!("cannot listen on {addr} for the stalled bucket: {e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("stalled bucket: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("stalled bucket: {e}"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let accepting = std::thread::spawn(move || {
            // Held open, never read from, never answered.
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => held.push(stream),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Stall {
            addr,
            stop,
            accepting: Some(accepting),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
    }
}

/// Whether `/-/ready` on `replica` says the shared bucket is unreachable within 20 s.
fn bucket_down_noticed(replica: &Wheelgate) -> bool {
    wait_until(Duration::from_secs(20), || {
        http::get(&replica.url("/-/ready"), &[])
            .text()
            .contains("the shared bucket")
    })
}

#[test]
fn a_bucket_that_accepts_and_never_answers_costs_a_request_its_idle_timeout_not_forever() {
    let s3 = S3Server::shared();
    let stall = Stall::start();
    let upstream = Upstream::start(Mode::Json, &new_token());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let publisher = Account::new("fleet-publisher");
    let bucket = Bucket {
        endpoint: stall.endpoint(),
        name: unique_bucket_name("stall"),
        credentials: Credentials {
            access_key_id: s3.access_key_id().to_owned(),
            secret_access_key: s3.secret_access_key().to_owned(),
        },
        extra_toml: "shared.idle_timeout = \"3s\"\n".to_owned(),
    };
    let one = replica_on(dir.path(), "one", &upstream, s3, &bucket, &publisher);
    // Every file is looked up in the bucket first: each lookup gives up after the idle timeout
    // (and object_store's retries), and the file comes from the upstream.
    let target = target(dir.path(), "stalled");
    let run = clients::pip_install(&pypi_index(&one), &target, &["wgfx-app"]);
    assert_installed(&run, &target, expected_app_install());
    // The probe times out too: the bucket counts as unreachable.
    assert!(
        bucket_down_noticed(&one),
        "/-/ready never said the stalled bucket is unreachable:\n{}",
        one.output()
    );
    // From then on a miss does not ask it (which would cost at least the idle timeout) until
    // the probe gets an answer.
    let page_url = one.url("/pypi/simple/wgfx-epsilon/");
    let page = http::get(
        &page_url,
        &[("accept", crate::harness::upstream::JSON_MEDIA_TYPE)],
    );
    let wheel = "wgfx_epsilon-0.3.0-py3-none-any.whl";
    let file_url = crate::harness::link_in(&page, &page_url, wheel);
    let started = std::time::Instant::now();
    let file = http::get(&file_url, &[]);
    let took = started.elapsed();
    assert_eq!(file.status, ::http::StatusCode::OK, "{}", one.output());
    assert!(
        took < Duration::from_secs(2),
        "a miss waited {took:?} for the stalled bucket its probe had found unreachable:\n{}",
        one.output()
    );
    // An upload is refused with 503, promptly.
    let started = std::time::Instant::now();
    let answer = publish_answer(&one, &plain_wheel("wgfx-stalled", "1.0"), &publisher);
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the refused upload took {:?}",
        started.elapsed()
    );
    // The hosted project list is served meanwhile.
    assert!(internal_projects_json(&one).is_some(), "{}", one.output());
}

#[test]
fn an_upload_is_refused_at_once_when_the_probe_already_found_the_bucket_unreachable() {
    let fleet = Fleet::new("refuse");
    let (s3, publisher) = (fleet.s3, &fleet.publisher);
    let gateway = s3.start_gateway();
    let endpoint = gateway.endpoint();
    let one = replica_through(
        fleet.dir.path(),
        "one",
        &fleet.upstream,
        s3,
        &endpoint,
        &fleet.bucket,
        publisher,
    );
    assert_eq!(
        publish(&one, &plain_wheel("wgfx-prompt", "1.0"), publisher),
        200
    );
    gateway.stop();
    assert!(
        bucket_down_noticed(&one),
        "/-/ready never said the stopped bucket is unreachable:\n{}",
        one.output()
    );
    // Its port now accepts and never answers: an upload that tried the bucket would wait for
    // the idle timeout (30 s); one that believes the probe answers at once.
    let _stall = Stall::on(endpoint.trim_start_matches("http://"));
    let started = std::time::Instant::now();
    let answer = publish_answer(&one, &plain_wheel("wgfx-prompt", "2.0"), publisher);
    let took = started.elapsed();
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(answer.status, 503, "{body}");
    assert!(
        body.contains("unreachable") && body.contains("retry when it is back"),
        "the 503 does not give the reason: {body}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the upload was refused after {took:?}, not at once:\n{}",
        one.output()
    );
    // A package never published here: its origin records are not looked up in the bucket
    // either.
    let started = std::time::Instant::now();
    let answer = publish_answer(&one, &plain_wheel("wgfx-prompt-other", "1.0"), publisher);
    let took = started.elapsed();
    assert_eq!(
        answer.status,
        503,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        took < Duration::from_secs(5),
        "the first upload of a package was refused after {took:?}, not at once:\n{}",
        one.output()
    );
}

#[test]
fn a_rotated_secret_key_is_used_without_a_restart() {
    let s3 = S3Server::shared();
    let uid = format!("wg-rotate-{:08x}", rand::random::<u32>());
    let credentials = s3.create_user(&uid);
    // The bucket belongs to that user, so that only this test signs with the key it rotates.
    let owner = s3.signer_as(credentials.clone());
    let bucket_name = unique_bucket_name("rotate");
    let created = owner.expect_answer("PUT", &format!("/{bucket_name}"), &[], None);
    assert_eq!(created.status, 200, "{}", created.text());
    let upstream = Upstream::start(Mode::Json, &new_token());
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let publisher = Account::new("fleet-publisher");
    let bucket = Bucket {
        endpoint: s3.endpoint(),
        name: bucket_name.clone(),
        credentials: credentials.clone(),
        extra_toml: String::new(),
    };
    let one = replica_on(dir.path(), "one", &upstream, s3, &bucket, &publisher);
    assert_eq!(
        publish(&one, &plain_wheel("wgfx-rotated", "1.0"), &publisher),
        200,
        "{}",
        one.output()
    );

    let secret = s3.rotate_secret(&uid, &credentials.access_key_id);
    // The old secret no longer signs (radosgw has taken the rotation).
    let refused = wait_until(Duration::from_secs(15), || {
        owner
            .request("GET", &format!("/{bucket_name}"), &[], None)
            .is_ok_and(|answer| answer.status == 403)
    });
    assert!(refused, "radosgw still accepts the rotated-out secret");
    write_file(
        &dir.path().join("one").join("s3-secret"),
        &format!("{secret}\n"),
    );
    // The running replica signs with the new one: an upload goes through.
    let published = wait_until(Duration::from_secs(30), || {
        publish(&one, &plain_wheel("wgfx-rotated", "2.0"), &publisher) == 200
    });
    assert!(
        published,
        "uploads fail after the secret file was rotated:\n{}",
        one.output()
    );
    assert!(
        !s3.signer_as(Credentials {
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: secret,
        })
        .list(&bucket_name, "uploads/internal/wgfx-rotated/")
        .is_empty(),
        "the upload is not in the bucket"
    );
}
