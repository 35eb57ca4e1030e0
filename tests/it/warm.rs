//! `wheelgate warm` (SPEC §9): the cache filled from a uv.lock, a requirements.txt or a
//! pylock.toml, directly on the store or through a running server; then, with the upstream
//! stopped, pip and uv install the locked set through wheelgate.
//!
//! The lock files are real: uv locks a small project against the fixture upstream (reached
//! directly, with the token) and exports it as requirements.txt and pylock.toml. Their URLs name
//! the upstream; warm must ignore them and go through wheelgate by project and filename, which
//! the tests see in the upstream's request log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::harness::clients::{self, isolated, run_bounded, uv, ClientRun};
use crate::harness::fixtures::{catalog, FileKind};
use crate::harness::upstream::Mode;
use crate::harness::wheelgate::{binary, rule_toml};
use crate::harness::{wait_until, write_file, Account, TestBed, TokenLayout};
use crate::install::expected_app_install;

/// How long one warm run may take.
const WARM_TIMEOUT: Duration = Duration::from_secs(120);

/// A uv project depending on `wgfx-app`, locked against the fixture upstream, with its exports.
struct Locked {
    dir: tempfile::TempDir,
}

impl Locked {
    /// Locks the project with uv against `bed`'s upstream, reached directly with the token.
    fn new(bed: &TestBed) -> Locked {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        write_file(
            &dir.path().join("pyproject.toml"),
            "[project]\nname = \"warm-demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\n\
             dependencies = [\"wgfx-app\"]\n\n[tool.uv]\npackage = false\n",
        );
        let locked = Locked { dir };
        locked.uv(&[
            "lock",
            "--default-index",
            &bed.upstream.index_url_with_token(),
        ]);
        locked.uv(&[
            "export",
            "--frozen",
            "--no-emit-project",
            "--format",
            "requirements.txt",
            "-o",
            "requirements.txt",
        ]);
        locked.uv(&[
            "export",
            "--frozen",
            "--no-emit-project",
            "--format",
            "pylock.toml",
            "-o",
            "pylock.toml",
        ]);
        locked
    }

    fn uv(&self, args: &[&str]) {
        let (mut command, _home) = isolated(&uv());
        command
            .args(args)
            .args(["--no-cache", "--no-config", "--python"])
            .arg(clients::python())
            .current_dir(self.dir.path());
        let run = run_bounded(&mut command, WARM_TIMEOUT);
        run.assert_success();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The files of the locked set (`wgfx-app` 1.1.0 and its dependencies): every wheel and sdist
/// of each locked version, as the fixtures define them.
fn locked_files() -> BTreeSet<String> {
    expected_app_install()
        .iter()
        .flat_map(|(name, version)| {
            catalog()
                .expect_project(name)
                .files
                .iter()
                .filter(move |f| &f.version == version)
                .map(|f| f.filename.clone())
        })
        .collect()
}

fn locked_files_of(kind: FileKind) -> BTreeSet<String> {
    locked_files()
        .into_iter()
        .filter(|name| {
            catalog()
                .file(name)
                .is_some_and(|(_, file)| file.kind == kind)
        })
        .collect()
}

/// `wheelgate warm --config <bed's config> <args>`, with an empty environment but PATH (and
/// `env`), stdout and stderr captured (not a terminal: plain lines).
fn warm(bed: &TestBed, args: &[&str], env: &[(&str, &str)]) -> ClientRun {
    let mut command = Command::new(binary());
    command
        .arg("warm")
        .arg("--config")
        .arg(bed.config_path())
        .args(args)
        .current_dir(bed.dir.path())
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .envs(env.iter().copied());
    run_bounded(&mut command, WARM_TIMEOUT)
}

/// The counts of warm's summary line (`16 files: 14 fetched (…), 0 already cached (…), 2
/// denied, 0 failed`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    files: usize,
    fetched: usize,
    cached: usize,
    denied: usize,
    failed: usize,
}

fn tally(run: &ClientRun) -> Tally {
    let line = run
        .stdout
        .lines()
        .find(|l| l.contains(" files: "))
        .unwrap_or_else(|| panic!("warm printed no summary:\n{}", run.output()));
    let mut tally = Tally::default();
    for part in line.split([':', ',', ';']) {
        let mut words = part.split_whitespace();
        let Some(Ok(count)) = words.next().map(str::parse::<usize>) else {
            continue;
        };
        match words.next() {
            Some("files") => tally.files = count,
            Some("fetched") => tally.fetched = count,
            Some("already") => tally.cached = count,
            Some("denied") => tally.denied = count,
            Some("failed") => tally.failed = count,
            _ => {}
        }
    }
    tally
}

/// Panics with warm's output unless its summary says `expected`.
fn expect_tally(run: &ClientRun, expected: Tally) {
    assert_eq!(tally(run), expected, "{}", run.output());
}

/// Every locked file fetched, nothing else.
fn all_fetched() -> Tally {
    let files = locked_files().len();
    Tally {
        files,
        fetched: files,
        ..Tally::default()
    }
}

/// The filenames of the files the upstream was asked for after its `since`-th request.
fn upstream_files_since(bed: &TestBed, since: usize) -> BTreeSet<String> {
    bed.upstream
        .requests()
        .into_iter()
        .skip(since)
        .filter_map(|r| {
            let path = r.path.split('?').next().unwrap_or_default().to_owned();
            let name = path.rsplit('/').next()?.to_owned();
            catalog().file(&name).map(|_| name)
        })
        .collect()
}

/// pip and uv install `requirements` through wheelgate (the upstream is stopped), each into a
/// fresh target, and must get exactly the locked set.
fn install_offline(bed: &TestBed, requirements: &[&str]) {
    let index = bed.wheelgate.index_url();
    for (client, run, target) in [
        (
            "pip",
            clients::pip_install as fn(&str, &Path, &[&str]) -> ClientRun,
            "pip",
        ),
        ("uv", clients::uv_install, "uv"),
    ] {
        let target = bed.target_dir(target);
        let result = run(&index, &target, requirements);
        result.assert_success();
        assert_eq!(
            clients::installed(&target),
            expected_app_install(),
            "{client} through wheelgate with the upstream stopped; output:\n{}",
            result.output()
        );
    }
}

fn expect_exit(run: &ClientRun, code: i32) {
    assert_eq!(
        run.exit_code,
        Some(code),
        "`{}`\n--- stdout ---\n{}\n--- stderr ---\n{}",
        run.command,
        run.stdout,
        run.stderr
    );
}

#[test]
fn warm_from_a_uv_lock_directly_on_the_store_then_pip_and_uv_install_offline() {
    let mut bed = TestBed::start(Mode::Json);
    let locked = Locked::new(&bed);
    let lock = locked.path("uv.lock");
    let lock = lock.to_string_lossy();
    // No server runs on the store: warm starts its own over it.
    bed.wheelgate.stop();
    let before = bed.upstream.requests().len();

    let run = warm(&bed, &[&lock], &[]);
    expect_exit(&run, 0);
    assert!(
        run.stderr.contains("directly on the store"),
        "warm must say which way it went:\n{}",
        run.stderr
    );
    let files = locked_files();
    expect_tally(&run, all_fetched());
    assert_eq!(
        upstream_files_since(&bed, before),
        files,
        "wheelgate fetched exactly the locked files from its upstream"
    );
    for file in &files {
        assert!(
            run.stderr.contains(&format!("fetched  {file} (")),
            "no line for {file}:\n{}",
            run.stderr
        );
    }

    // A second run finds everything cached and asks the upstream for nothing.
    let before = bed.upstream.requests().len();
    let again = warm(&bed, &[&lock], &[]);
    expect_exit(&again, 0);
    expect_tally(
        &again,
        Tally {
            files: files.len(),
            cached: files.len(),
            ..Tally::default()
        },
    );
    assert!(upstream_files_since(&bed, before).is_empty());

    // The upstream goes away; the locked set installs through wheelgate from its cache.
    bed.wheelgate.start_again();
    bed.upstream.stop();
    let requirements = locked.path("requirements.txt");
    install_offline(&bed, &["-r", &requirements.to_string_lossy()]);
}

#[test]
fn warm_from_a_requirements_txt_through_the_running_server_then_pip_and_uv_install_offline() {
    let mut bed = TestBed::start(Mode::Json);
    // Pinned by hand, without hashes: every file of each pinned version is warmed. The file
    // warm reads includes them and names an index, which warm ignores.
    let pins: String = expected_app_install()
        .iter()
        .map(|(name, version)| format!("{name}=={version}\n"))
        .collect();
    let requirements = bed.dir.path().join("requirements.txt");
    write_file(&requirements, &pins);
    let warm_file = bed.dir.path().join("warm.txt");
    write_file(
        &warm_file,
        "# what CI warms\n--index-url http://idx.example.invalid/simple/\n-r requirements.txt\n",
    );
    let requirements = requirements.to_string_lossy().into_owned();
    let url = bed.url("/");

    let run = warm(&bed, &["--url", &url, &warm_file.to_string_lossy()], &[]);
    expect_exit(&run, 0);
    assert!(
        run.stderr.contains("through the wheelgate at"),
        "{}",
        run.stderr
    );
    expect_tally(&run, all_fetched());
    // Through the running server: its own access log (written in batches) shows warm's requests.
    let served = |log: &str| {
        log.contains("path=/pypi/simple/wgfx-app/ status=200")
            && log.contains("path=/pypi/files/wgfx-app/")
    };
    assert!(
        wait_until(Duration::from_secs(5), || served(&bed.wheelgate.output())),
        "warm's requests must reach the running server:\n{}",
        bed.wheelgate.output()
    );

    bed.upstream.stop();
    install_offline(&bed, &["-r", &requirements]);
}

#[test]
fn warm_with_hashes_through_the_running_tls_server_the_configuration_describes() {
    let certs = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let pair = crate::harness::certs::self_signed(certs.path());
    let (cert, key) = (
        pair.cert.display().to_string(),
        pair.key.display().to_string(),
    );
    let port = free_port();
    let bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.listen = format!("127.0.0.1:{port}");
        config.extra_toml = format!("\n[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n");
    });
    let locked = Locked::new(&bed);
    let requirements = locked.path("requirements.txt");
    let text = std::fs::read_to_string(&requirements).unwrap_or_default();
    assert!(
        text.contains("--hash=sha256:"),
        "uv exports hashes:\n{text}"
    );

    // No --url: the store is held by the server, so warm goes to the configured address, over
    // TLS, trusting the server's own certificate.
    let run = warm(&bed, &[&requirements.to_string_lossy()], &[]);
    expect_exit(&run, 0);
    assert!(
        run.stderr.contains(&format!(
            "through the running server at https://127.0.0.1:{port}/"
        )),
        "{}",
        run.stderr
    );
    expect_tally(&run, all_fetched());
}

/// A port free a moment ago, for a configuration that must name its address.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
    listener
        .local_addr()
        .unwrap_or_else(|e| panic!("no local address: {e}"))
        .port()
}

#[test]
fn warm_from_a_pylock_counts_the_files_a_rule_denies() {
    let rule = rule_toml("no-sdists", "DENY", None, Some("pkg.file.kind == 'sdist'"));
    let mut bed = TestBed::start_with_rules(Mode::Json, &rule);
    let locked = Locked::new(&bed);
    bed.wheelgate.stop();
    let before = bed.upstream.requests().len();

    let run = warm(&bed, &[&locked.path("pylock.toml").to_string_lossy()], &[]);
    // Denied files are reported, not failures: a lock lists files a policy may well refuse.
    expect_exit(&run, 0);
    let wheels = locked_files_of(FileKind::Wheel);
    let sdists = locked_files_of(FileKind::Sdist);
    assert!(!sdists.is_empty());
    expect_tally(
        &run,
        Tally {
            files: wheels.len() + sdists.len(),
            fetched: wheels.len(),
            denied: sdists.len(),
            ..Tally::default()
        },
    );
    for sdist in &sdists {
        let line = run
            .stderr
            .lines()
            .find(|l| l.starts_with(&format!("denied   {sdist}")))
            .unwrap_or_else(|| panic!("no denied line for {sdist}:\n{}", run.stderr));
        assert!(line.contains("no-sdists"), "the rule is named: {line}");
    }
    assert_eq!(
        upstream_files_since(&bed, before),
        wheels,
        "a denied file is never fetched"
    );

    bed.wheelgate.start_again();
    bed.upstream.stop();
    let target = bed.target_dir("uv-pylock");
    let pins: Vec<String> = expected_app_install()
        .iter()
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    let pins: Vec<&str> = pins.iter().map(String::as_str).collect();
    let result = clients::uv_install(&bed.wheelgate.index_url(), &target, &pins);
    result.assert_success();
    assert_eq!(clients::installed(&target), expected_app_install());
}

#[test]
fn a_failed_file_makes_warm_exit_1_and_usage_errors_exit_2() {
    let bed = TestBed::start(Mode::Json);
    let requirements = bed.dir.path().join("requirements.txt");
    let delta = catalog().expect_project("wgfx-delta").wheel("1.0.0");
    write_file(
        &requirements,
        &format!(
            "wgfx-delta==1.0.0 --hash=sha256:{}\n\
             wgfx-corrupt==1.0.0\n\
             wgfx-nosuch==1.0\n\
             wgfx-alpha==9.9.9\n\
             -e ./tools\n",
            delta.sha256
        ),
    );
    let requirements = requirements.to_string_lossy().into_owned();
    let url = bed.url("/");
    let run = warm(&bed, &["--url", &url, "--jobs", "2", &requirements], &[]);
    expect_exit(&run, 1);
    expect_tally(
        &run,
        Tally {
            files: 4,
            fetched: 1,
            failed: 3,
            ..Tally::default()
        },
    );
    for failed in [
        "failed   wgfx_corrupt-1.0.0-py3-none-any.whl: ",
        "failed   wgfx-nosuch==1.0: its page: 404",
        "failed   wgfx-alpha==9.9.9: ",
        "skipped  ",
    ] {
        assert!(run.stderr.contains(failed), "{failed}:\n{}", run.stderr);
    }
    assert!(run.stdout.contains("1 skipped"), "{}", run.stdout);

    // The server holds the store and listens on port 0: warm cannot guess its address.
    let run = warm(&bed, &[&requirements], &[]);
    expect_exit(&run, 2);
    assert!(run.stderr.contains("--url"), "{}", run.stderr);

    let unpinned = bed.dir.path().join("unpinned.txt");
    write_file(&unpinned, "wgfx-alpha==1.0.0\nwgfx-beta>=1\n");
    let run = warm(&bed, &["--url", &url, &unpinned.to_string_lossy()], &[]);
    expect_exit(&run, 2);
    assert!(
        run.stderr.contains("unpinned.txt line 2") && run.stderr.contains("name==version"),
        "{}",
        run.stderr
    );
}

#[test]
fn warm_reads_as_a_user_where_anonymous_reads_are_off() {
    let reader = Account::new("ci-reader");
    let mut bed = TestBed::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
        config.anonymous_read = Some(false);
        config.users = vec![reader.user(&["read"])];
    });
    let requirements = bed.dir.path().join("requirements.txt");
    write_file(&requirements, "wgfx-delta==1.5.0\n");
    let requirements = requirements.to_string_lossy().into_owned();
    let files = 2; // the wheel and the sdist of wgfx-delta 1.5.0

    // Through the running server: without credentials, every file fails and says why.
    let url = bed.url("/");
    let run = warm(&bed, &["--url", &url, &requirements], &[]);
    expect_exit(&run, 1);
    assert!(run.stderr.contains("credentials"), "{}", run.stderr);
    let with_user = bed.url_as(&reader, "/");
    let run = warm(&bed, &["--url", &with_user, &requirements], &[]);
    expect_exit(&run, 0);
    assert_eq!(tally(&run).fetched, files, "{}", run.output());
    assert!(
        !run.output().contains(&reader.password),
        "the password stays out of warm's output"
    );

    // Directly on the store, warm reads as a user of its own.
    bed.wheelgate.stop();
    let run = warm(&bed, &[&requirements], &[]);
    expect_exit(&run, 0);
    assert_eq!(tally(&run).cached, files, "{}", run.output());
}
