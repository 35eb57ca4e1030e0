//! A real S3-compatible server for the shared store's tests: Ceph's radosgw (Debian's packages,
//! which `.ci/run` installs) over a one-node Ceph cluster on 127.0.0.1 whose only OSD keeps the
//! objects in memory (memstore).
//!
//! The cluster starts once per test process (`S3Server::shared`), in `<target>/tmp/ceph/<pid>/`,
//! on free ports, with authentication between the daemons turned off; radosgw itself checks S3
//! signatures against one user created at start. Tests share the cluster and isolate themselves
//! with a bucket of their own (`unique_bucket_name`). A test that needs the server to go away and
//! come back starts a gateway of its own (`S3Server::start_gateway`): another radosgw over the same
//! cluster, so it sees the same buckets and objects, which it may stop and start while the shared
//! one keeps serving the other tests.
//!
//! Requests from the harness are signed by curl (`signed`); the daemons are children of the test
//! process that die with it (`daemons`).

mod daemons;
pub mod signed;

use std::fs::File;
use std::net::TcpListener;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use self::signed::{object_path, Credentials, S3Response, Signer};
use super::clients::run_bounded;
use super::create_dir;

/// The region the server is addressed as (radosgw accepts any; wheelgate's config names this one).
const REGION: &str = "us-east-1";
/// The Debian packages that provide the server, as `.ci/run` installs them.
const PACKAGES: &str = "radosgw ceph-mon ceph-osd curl";
/// The programs the harness runs.
const PROGRAMS: [&str; 7] = [
    "monmaptool",
    "ceph-mon",
    "ceph-osd",
    "ceph",
    "radosgw",
    "radosgw-admin",
    "curl",
];
/// In a cluster's directory: the test process that started it, as `daemons::process_identity`.
const OWNER_FILE: &str = "owner";
/// How long one Ceph tool (mkfs, a `ceph` command, the user's creation) may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a radosgw may take to answer a signed request once started.
const GATEWAY_START_TIMEOUT: Duration = Duration::from_secs(60);

/// The one-node Ceph cluster and its shared gateway (`Deref` reaches the gateway's requests).
pub struct S3Server {
    dir: PathBuf,
    conf: PathBuf,
    credentials: Credentials,
    shared: Gateway,
    /// Numbers the gateways tests start, for their Ceph names.
    gateways: AtomicU32,
    /// The monitor and the OSD; they die with the test process.
    _daemons: Vec<Child>,
}

/// One radosgw over the cluster, on a port of its own.
pub struct Gateway {
    /// Ceph's name for it, `client.rgw.<n>`.
    name: String,
    port: u16,
    conf: PathBuf,
    /// The cluster's directory.
    dir: PathBuf,
    signer: Signer,
    /// None while stopped.
    process: Mutex<Option<Child>>,
    /// The shared gateway serves every test, so it is never stopped.
    stoppable: bool,
}

impl S3Server {
    /// The server of this test process, started on first use; returns once radosgw answers a
    /// signed request.
    ///
    /// A failed start is remembered: the tests after the first fail with its reason instead of
    /// starting a second cluster beside the remains of the first.
    pub fn shared() -> &'static S3Server {
        static SERVER: OnceLock<Result<S3Server, String>> = OnceLock::new();
        let started = SERVER.get_or_init(|| {
            std::panic::catch_unwind(S3Server::start).map_err(|payload| {
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default()
            })
        });
        match started {
            Ok(server) => server,
            Err(reason) => panic!("the S3 server did not start: {reason}"),
        }
    }

    /// The access key id of the server's only user.
    pub fn access_key_id(&self) -> &str {
        &self.credentials.access_key_id
    }

    /// Its secret (random per test process, so that leak checks can search for it).
    pub fn secret_access_key(&self) -> &str {
        &self.credentials.secret_access_key
    }

    pub fn region(&self) -> &str {
        REGION
    }

    /// Creates a user `uid` of the test's own with a new key pair: a test that rotates a key
    /// does it on a user no other test signs with.
    pub fn create_user(&self, uid: &str) -> Credentials {
        let credentials = Credentials {
            access_key_id: format!("WG{:018X}", rand::random::<u128>() >> 56),
            secret_access_key: format!("wgs3-secret-{:032x}", rand::random::<u128>()),
        };
        run_tool(
            &self.conf,
            &self.dir,
            "radosgw-admin",
            &[
                "user",
                "create",
                "--uid",
                uid,
                "--display-name",
                uid,
                "--access-key",
                &credentials.access_key_id,
                "--secret-key",
                &credentials.secret_access_key,
            ],
        );
        credentials
    }

    /// Gives the access key `access_key_id` of `uid` a new secret, which the gateways take from
    /// then on; returns it.
    pub fn rotate_secret(&self, uid: &str, access_key_id: &str) -> String {
        let secret = format!("wgs3-rotated-{:032x}", rand::random::<u128>());
        run_tool(
            &self.conf,
            &self.dir,
            "radosgw-admin",
            &[
                "key",
                "create",
                "--uid",
                uid,
                "--key-type",
                "s3",
                "--access-key",
                access_key_id,
                "--secret-key",
                &secret,
            ],
        );
        secret
    }

    /// What signs requests to the shared gateway as `credentials`.
    pub fn signer_as(&self, credentials: Credentials) -> Signer {
        Signer {
            credentials,
            ..self.signer().clone()
        }
    }

    /// Starts a radosgw of the caller's own over the same cluster (same buckets and objects), on a
    /// free port, and returns once it answers. It may be stopped and started; it is killed when
    /// dropped.
    pub fn start_gateway(&self) -> Gateway {
        let number = self.gateways.fetch_add(1, Ordering::Relaxed);
        let gateway = Gateway::new(
            &format!("client.rgw.t{number}"),
            &self.conf,
            &self.dir,
            self.credentials.clone(),
            true,
        );
        gateway.start();
        gateway
    }

    fn start() -> S3Server {
        let began = Instant::now();
        for program in PROGRAMS {
            assert!(
                on_path(program),
                "`{program}` is not installed: the S3 tests run Ceph's radosgw, which .ci/run \
                 installs (apt-get install --no-install-recommends {PACKAGES})"
            );
        }
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ceph");
        remove_leftovers(&root);
        let pid = std::process::id();
        let dir = root.join(pid.to_string());
        for sub in ["run", "log", "mon/mon.a", "osd/osd.0"] {
            create_dir(&dir.join(sub));
        }
        let identity = daemons::process_identity(pid)
            .unwrap_or_else(|| panic!("cannot read /proc/{pid}/stat of this test process"));
        super::write_file(&dir.join(OWNER_FILE), &identity);
        let conf = dir.join("ceph.conf");
        let mon_port = free_port();
        let fsid = new_uuid();
        super::write_file(&conf, &ceph_conf(&dir, &fsid, mon_port));
        let tool = |program: &str, args: &[&str]| run_tool(&conf, &dir, program, args);
        let monmap = dir.join("monmap").display().to_string();
        let mon_addr = format!("[v1:127.0.0.1:{mon_port}]");
        tool(
            "monmaptool",
            &[
                "--create", "--addv", "a", &mon_addr, "--fsid", &fsid, &monmap,
            ],
        );
        tool(
            "ceph-mon",
            &[
                "--id",
                "a",
                "--mkfs",
                "--monmap",
                &monmap,
                "--keyring",
                "/dev/null",
            ],
        );
        let mon = start_daemon(&conf, &dir, "ceph-mon", &["-i", "a"], "mon.a");
        // The OSD is registered under a known uuid and placed in the CRUSH map here, so that it
        // sends no command to the monitor while it boots: such a command, sent before the OSD has
        // the monitor map, carries a null fsid and makes the OSD give up ('wrong fsid').
        let osd_uuid = new_uuid();
        tool("ceph", &["osd", "create", &osd_uuid]);
        tool(
            "ceph",
            &["osd", "crush", "add", "osd.0", "1.0", "root=default"],
        );
        tool("ceph-osd", &["-i", "0", "--mkfs", "--osd-uuid", &osd_uuid]);
        let osd = start_daemon(&conf, &dir, "ceph-osd", &["-i", "0"], "osd.0");
        let credentials = Credentials {
            access_key_id: format!("WG{:018X}", rand::random::<u128>() >> 56),
            secret_access_key: format!("wgs3-secret-{:032x}", rand::random::<u128>()),
        };
        // This waits for the OSD: the user lives in pools (created now), which need it up.
        tool(
            "radosgw-admin",
            &[
                "user",
                "create",
                "--uid",
                "wheelgate",
                "--display-name",
                "wheelgate",
                "--access-key",
                &credentials.access_key_id,
                "--secret-key",
                &credentials.secret_access_key,
            ],
        );
        let shared = Gateway::new("client.rgw.shared", &conf, &dir, credentials.clone(), false);
        shared.start();
        eprintln!(
            "S3 server (Ceph radosgw) ready at {} after {:.1?}, in {}",
            shared.endpoint(),
            began.elapsed(),
            dir.display()
        );
        S3Server {
            dir,
            conf,
            credentials,
            shared,
            gateways: AtomicU32::new(0),
            _daemons: vec![mon, osd],
        }
    }
}

impl Deref for S3Server {
    type Target = Gateway;

    /// The shared gateway, which every test may use (but not stop).
    fn deref(&self) -> &Gateway {
        &self.shared
    }
}

impl Gateway {
    fn new(
        name: &str,
        conf: &Path,
        dir: &Path,
        credentials: Credentials,
        stoppable: bool,
    ) -> Gateway {
        let port = free_port();
        Gateway {
            name: name.to_owned(),
            port,
            conf: conf.to_owned(),
            dir: dir.to_owned(),
            signer: Signer {
                endpoint: format!("http://127.0.0.1:{port}"),
                region: REGION.to_owned(),
                credentials,
            },
            process: Mutex::new(None),
            stoppable,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.signer.endpoint.clone()
    }

    /// Creates `bucket`; panics with the server's answer unless it succeeds.
    pub fn create_bucket(&self, bucket: &str) {
        let path = format!("/{bucket}");
        let answer = self.signer.expect_answer("PUT", &path, &[], None);
        assert_eq!(
            answer.status,
            200,
            "creating the bucket {bucket}: {}",
            answer.text()
        );
    }

    /// Every object under `prefix` in `bucket`, as (key, size) in key order.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        self.signer.list(bucket, prefix)
    }

    /// `PUT` of `body` as `key` in `bucket`, with extra `headers` (`if-none-match: *`).
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> S3Response {
        self.signer
            .expect_answer("PUT", &object_path(bucket, key), headers, Some(body))
    }

    /// `GET` of `key` in `bucket`.
    pub fn get_object(&self, bucket: &str, key: &str) -> S3Response {
        self.signer
            .expect_answer("GET", &object_path(bucket, key), &[], None)
    }

    /// What signs and sends this gateway's requests, for any other request.
    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// Kills this radosgw (SIGKILL) and waits for it: from then on its port refuses connections.
    /// The cluster keeps the data.
    pub fn stop(&self) {
        assert!(
            self.stoppable,
            "the shared gateway serves every test: stop a gateway of your own \
             (S3Server::start_gateway)"
        );
        if let Some(mut process) = self.lock_process().take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts this radosgw (again) on its port and waits until it answers a signed request.
    pub fn start(&self) {
        let mut process = self.lock_process();
        if process.is_some() {
            return;
        }
        let frontend = format!("--rgw-frontends=beast endpoint=127.0.0.1:{}", self.port);
        let child = start_daemon(
            &self.conf,
            &self.dir,
            "radosgw",
            &["-n", &self.name, &frontend],
            &self.name,
        );
        *process = Some(child);
        let deadline = Instant::now() + GATEWAY_START_TIMEOUT;
        loop {
            // Until then it does not listen yet, or cannot read the user yet.
            let answer = self.signer.request("GET", "/", &[], None);
            if answer.is_ok_and(|answer| answer.status == 200) {
                return;
            }
            let exited = process
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "radosgw {} ({}) did not answer a signed request within {:?} (exit: {exited:?})\n{}",
                    self.name,
                    self.endpoint(),
                    GATEWAY_START_TIMEOUT,
                    log_tail(&self.dir.join("log"), &self.name)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn lock_process(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        // A test that panicked while holding the lock left a consistent Option behind.
        self.process
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut process) = self.lock_process().take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }
}

/// A bucket name no other test uses: `<purpose>-<random>` (S3 names: lowercase, digits, `-`).
pub fn unique_bucket_name(purpose: &str) -> String {
    format!("{purpose}-{:016x}", rand::random::<u64>())
}

/// The cluster's configuration: no authentication between daemons (radosgw still checks S3
/// signatures), every path under `dir` and no admin sockets (a deep target directory would exceed
/// the 108 bytes of a socket path), one monitor on `mon_port` speaking only the v1 protocol
/// (radosgw 16.2 fails to authenticate to a v2 monitor with authentication off), a memstore OSD,
/// pools of one replica, and monitor proposals every 10 ms instead of every second: each pool
/// radosgw creates costs a few proposals, which otherwise make the start take 15 s instead of 1.5.
fn ceph_conf(dir: &Path, fsid: &str, mon_port: u16) -> String {
    let dir = dir.display();
    format!(
        "[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
ms bind msgr2 = false
auth cluster required = none
auth service required = none
auth client required = none
keyring = /dev/null
admin socket =
run dir = {dir}/run
pid file = {dir}/run/$name.pid
log file = {dir}/log/$name.log
mon data = {dir}/mon/$name
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 0
mon data avail crit = 0
paxos propose interval = 0.01
paxos min wait = 0.001
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
osd crush update on start = false
osd class update on start = false
osd data = {dir}/osd/$name
osd objectstore = memstore
memstore device bytes = 1073741824
"
    )
}

/// Runs a Ceph tool with the cluster's configuration; panics with its output (and the daemons'
/// log directory) unless it succeeds within `TOOL_TIMEOUT`.
fn run_tool(conf: &Path, dir: &Path, program: &str, args: &[&str]) {
    let mut command = Command::new(program);
    command.arg("-c").arg(conf).args(args);
    let run = run_bounded(&mut command, TOOL_TIMEOUT);
    assert!(
        run.success(),
        "`{}` failed ({:?}, limit {TOOL_TIMEOUT:?}); logs in {}\n{}",
        run.command,
        run.exit_code,
        dir.join("log").display(),
        run.output()
    );
}

/// Starts a Ceph daemon in the foreground as a child that dies with the test process; its stdout
/// and stderr go to `<dir>/log/<name>.out` beside its log.
fn start_daemon(conf: &Path, dir: &Path, program: &str, args: &[&str], name: &str) -> Child {
    let out_path = dir.join("log").join(format!("{name}.out"));
    let out = File::create(&out_path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", out_path.display()));
    let err = out
        .try_clone()
        .unwrap_or_else(|e| panic!("cannot share {}: {e}", out_path.display()));
    let mut command = Command::new(program);
    command
        .arg("-c")
        .arg(conf)
        .arg("-f")
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    daemons::spawn_daemon(command).unwrap_or_else(|e| panic!("cannot start {program} {name}: {e}"))
}

/// Kills the daemons of earlier test processes that have ended and removes their directories.
/// A directory whose process still runs (its `owner` file names it, start time included) belongs
/// to a concurrent `cargo test` and is left alone.
fn remove_leftovers(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let owner = std::fs::read_to_string(entry.path().join(OWNER_FILE)).ok();
        let running = owner.as_deref().map(str::trim).is_some_and(|owner| {
            let pid = owner.split(' ').next().and_then(|pid| pid.parse().ok());
            pid.and_then(daemons::process_identity).as_deref() == Some(owner)
        });
        if running {
            continue;
        }
        daemons::kill_users_of(&entry.path().join("ceph.conf"));
        std::fs::remove_dir_all(entry.path()).unwrap_or_else(|e| {
            panic!(
                "cannot remove an earlier test run's cluster {}: {e}",
                entry.path().display()
            )
        });
    }
}

/// The last lines of a daemon's log and of its output, for failure messages.
fn log_tail(log_dir: &Path, name: &str) -> String {
    let mut tail = String::new();
    for file in [format!("{name}.log"), format!("{name}.out")] {
        let path = log_dir.join(&file);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        tail.push_str(&format!("--- {} (last lines) ---\n", path.display()));
        for line in &lines[lines.len().saturating_sub(20)..] {
            tail.push_str(line);
            tail.push('\n');
        }
    }
    tail
}

/// A port nothing listens on now (the OS's choice for an ephemeral bind).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .unwrap_or_else(|e| panic!("cannot find a free port on 127.0.0.1: {e}"))
        .port()
}

/// A random (version 4) UUID in its text form, as Ceph's fsids are written.
fn new_uuid() -> String {
    // Version 4 in the 13th hex digit, the RFC 4122 variant in the top bits of the 17th.
    let bits = (rand::random::<u128>() & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `program` is on PATH.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
