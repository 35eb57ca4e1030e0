//! The command line and the process (SPEC §7, §9): `wheelgate check` accepts the shipped
//! `proxy.toml` and refuses an unknown key naming it and its line; SIGTERM stops `serve` with exit
//! code 0, refusing new connections at once and letting a download in progress finish (and be
//! stored, even when its client has gone); the shipped `proxy.toml` serves with no upstream
//! configured and no network; and `wheelgate hash-password` prints a hash that a `[[user]]`
//! accepts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::http::StatusCode;

use crate::harness::fixtures::sha256_hex;
use crate::harness::generated;
use crate::harness::http;
use crate::harness::upstream::Mode;
use crate::harness::wheelgate::{self, toml_string, Wheelgate};
use crate::harness::{wait_until, write_file, TestBed};

/// The `proxy.toml` shipped at the root of the repository.
fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

#[test]
fn check_accepts_the_shipped_config() {
    let dir = temp_dir();
    let config = shipped_config();
    let run = wheelgate::run(
        &["check", "--config", &config.to_string_lossy()],
        dir.path(),
    );
    assert_eq!(
        run.exit_code,
        Some(0),
        "`wheelgate check` on {}:\n{}",
        config.display(),
        run.output()
    );
    // The shipped default is the group of the hosted repository and the remote one.
    for line in [
        "default repository: all (served at /simple/)",
        "    members, first wins: internal, pypi\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "`wheelgate check` must print {line:?}:\n{}",
            run.stdout
        );
    }
}

#[test]
fn check_prints_groups_with_their_members_and_refuses_a_cycle() {
    let dir = temp_dir();
    let config = dir.path().join("proxy.toml");
    let store = toml_string(&dir.path().join("store").to_string_lossy());
    // `all` holds the hosted `internal` and the group `mirrors`, defined after it; `mirrors`
    // holds two remotes. Line 18 is the `members` of `mirrors`.
    let file = |mirrors_members: &str| {
        format!(
            "[server]\n\
             default_repository = \"all\"\n\
             [store]\n\
             path = {store}\n\
             \n\
             [[repository]]\n\
             name = \"all\"\n\
             type = \"group\"\n\
             members = [\"internal\", \"mirrors\"]\n\
             \n\
             [[repository]]\n\
             name = \"internal\"\n\
             type = \"hosted\"\n\
             \n\
             [[repository]]\n\
             name = \"mirrors\"\n\
             type = \"group\"\n\
             members = {mirrors_members}\n\
             \n\
             [[repository]]\n\
             name = \"pypi\"\n\
             type = \"remote\"\n\
             url = \"\"\n\
             \n\
             [[repository]]\n\
             name = \"corp\"\n\
             type = \"remote\"\n\
             url = \"\"\n"
        )
    };
    let check = || {
        wheelgate::run(
            &["check", "--config", &config.to_string_lossy()],
            dir.path(),
        )
    };

    write_file(&config, &file("[\"pypi\", \"corp\"]"));
    let run = check();
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    for expected in [
        "default repository: all (served at /simple/)\n",
        "  all (group, line 6), served at /all/simple/\n\
         \x20   members, first wins: internal, mirrors\n\
         \x20   serves the files of, first wins: internal, pypi, corp\n",
        "  mirrors (group, line 15), served at /mirrors/simple/\n\
         \x20   members, first wins: pypi, corp\n  pypi (remote, line 20)",
    ] {
        assert!(
            run.stdout.contains(expected),
            "`wheelgate check` must print {expected:?}:\n{}",
            run.stdout
        );
    }

    // Refused, exit 2, with the key and the line: `mirrors` back into `all` (a cycle, shown
    // with its way round), and a member that is not defined (named, with those that are).
    for (members, expected) in [
        (
            "[\"pypi\", \"all\"]",
            "line 9: [[repository]] \"all\" members: groups contain each other in a cycle: all -> mirrors -> all",
        ),
        (
            "[\"pypi\", \"crop\"]",
            "line 18: [[repository]] \"mirrors\" members: no repository is named \"crop\"; the other repositories are all, internal, pypi, corp",
        ),
    ] {
        write_file(&config, &file(members));
        let run = check();
        assert_eq!(run.exit_code, Some(2), "{}", run.output());
        assert!(run.stderr.contains(expected), "{expected:?} not in:\n{}", run.stderr);
    }
}

#[test]
fn check_refuses_an_unknown_key_naming_it_and_its_line() {
    let dir = temp_dir();
    let config = dir.path().join("proxy.toml");
    let store = toml_string(&dir.path().join("store").to_string_lossy());
    // The unknown key sits on line 9.
    write_file(
        &config,
        &format!(
            "[server]\n\
             listen = \"127.0.0.1:0\"\n\
             default_repository = \"pypi\"\n\
             \n\
             [store]\n\
             path = {store}\n\
             \n\
             [[repository]]\n\
             frobnicate_level = 3\n\
             name = \"pypi\"\n\
             type = \"remote\"\n\
             url = \"\"\n"
        ),
    );
    let run = wheelgate::run(
        &["check", "--config", &config.to_string_lossy()],
        dir.path(),
    );
    assert_eq!(
        run.exit_code,
        Some(2),
        "an unknown key must be a usage error (exit 2):\n{}",
        run.output()
    );
    assert!(
        run.stderr.contains("frobnicate_level"),
        "the error must name the unknown key:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("line 9") || run.stderr.contains(":9:"),
        "the error must name line 9:\n{}",
        run.stderr
    );
}

#[test]
fn sigterm_stops_serve_with_exit_code_zero() {
    let bed = TestBed::start(Mode::Json);
    let page = http::get(&bed.url("/simple/wgfx-app/"), &[]);
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    terminate_expecting_exit_zero(bed, "wheelgate must exit 0 on SIGTERM");
}

/// Stops `bed`'s wheelgate with SIGTERM, then its upstream, and asserts that wheelgate exited 0.
fn terminate_expecting_exit_zero(bed: TestBed, context: &str) {
    let TestBed {
        wheelgate,
        mut upstream,
        dir,
        ..
    } = bed;
    let output = wheelgate.output();
    let status = wheelgate.terminate();
    assert_eq!(status.code(), Some(0), "{context}; its output:\n{output}");
    upstream.stop();
    drop(dir);
}

#[test]
fn sigterm_refuses_new_connections_and_lets_a_download_in_progress_finish() {
    let bed = TestBed::start(Mode::Json);
    let (slow, after) = generated::expect_gated();
    let url = bed.file_url(slow.project, slow.filename);
    let received = Arc::new(AtomicU64::new(0));
    let client = {
        let (url, received) = (url.clone(), Arc::clone(&received));
        std::thread::spawn(move || {
            let mut body = Vec::new();
            let response = http::get_streaming(&url, &[], &mut |data: &[u8]| {
                received.fetch_add(data.len() as u64, Ordering::SeqCst);
                body.extend_from_slice(data);
            });
            (response, body)
        })
    };
    let receiving = wait_until(Duration::from_secs(30), || {
        received.load(Ordering::SeqCst) > 0
    });
    if !receiving {
        bed.upstream.release_gate();
        panic!("no bytes of {url} arrived while the upstream held it after {after} bytes");
    }

    bed.wheelgate.begin_stop();
    let addr = bed.wheelgate.addr();
    let refused = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(addr).is_err()
    });
    bed.upstream.release_gate();
    assert!(
        refused,
        "a stopping wheelgate must stop accepting connections at once:\n{}",
        bed.wheelgate.output()
    );
    let (response, body) = client.join().expect("the client thread panicked");
    let response = response.unwrap_or_else(|e| panic!("{url}: no response: {e}"));
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.body_error.is_none(),
        "the download broke off during the shutdown: {:?}",
        response.body_error
    );
    assert_eq!(
        (body.len() as u64, sha256_hex(&body)),
        (slow.size, slow.sha256().to_owned()),
        "the download in progress must finish whole"
    );
    terminate_expecting_exit_zero(bed, "wheelgate must exit 0 once drained");
}

#[test]
fn sigterm_waits_for_a_download_whose_client_left_and_stores_it() {
    let mut bed = TestBed::start(Mode::Json);
    let (slow, after) = generated::expect_gated();
    let url = bed.file_url(slow.project, slow.filename);
    let addr = bed.wheelgate.addr();
    // A client that takes the first bytes and hangs up; the download goes on without it.
    let path = url::Url::parse(&url)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .path()
        .to_owned();
    let mut stream =
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout can be set");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        .unwrap_or_else(|e| panic!("cannot send the request for {path}: {e}"));
    let mut head = [0u8; 4096];
    let got = stream.read(&mut head).unwrap_or(0);
    if got == 0 {
        bed.upstream.release_gate();
        panic!("no response to {path} while the upstream held it after {after} bytes");
    }
    drop(stream);

    bed.wheelgate.begin_stop();
    let refused = wait_until(Duration::from_secs(10), || {
        TcpStream::connect(addr).is_err()
    });
    // With no connection left, only the download can keep the process alive.
    let waited = wait_until(Duration::from_secs(1), || !bed.wheelgate.running());
    bed.upstream.release_gate();
    assert!(
        refused,
        "a stopping wheelgate must stop accepting connections"
    );
    assert!(
        !waited,
        "wheelgate exited while a download it had started was still running; its output:\n{}",
        bed.wheelgate.output()
    );
    let status = bed.wheelgate.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "wheelgate must exit 0 once the download is stored; its output:\n{}",
        bed.wheelgate.output()
    );

    bed.wheelgate.start_again();
    let url = bed.file_url(slow.project, slow.filename);
    let response = http::get(&url, &[]);
    assert_eq!(
        (response.status, response.cache()),
        (StatusCode::OK, Some("hit")),
        "the download finished during the stop must be in the store; output:\n{}",
        bed.wheelgate.output()
    );
    assert_eq!(sha256_hex(&response.body), slow.sha256());
    assert_eq!(
        bed.upstream.requests_for(&slow.path()).len(),
        1,
        "the file was fetched from the upstream once"
    );
    assert!(
        !bed.wheelgate.output().contains("not closed cleanly"),
        "a graceful stop leaves nothing to clean up; output:\n{}",
        bed.wheelgate.output()
    );
    terminate_expecting_exit_zero(bed, "wheelgate must exit 0");
}

#[test]
fn the_shipped_config_serves_without_an_upstream() {
    let dir = temp_dir();
    let shipped = std::fs::read_to_string(shipped_config())
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", shipped_config().display()));
    let mut replaced = false;
    let config: String = shipped
        .lines()
        .map(|line| {
            if !replaced && line.trim_start().starts_with("listen") && line.contains('=') {
                replaced = true;
                "listen = \"127.0.0.1:0\"".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        replaced,
        "the shipped proxy.toml has no `listen` line to replace"
    );
    let config_path = dir.path().join("proxy.toml");
    write_file(&config_path, &config);
    // The environment is empty: WHEELGATE_UPSTREAM_URL is unset, so the remote is offline; the
    // working directory is the temp dir, so a relative store path lands there.
    let wheelgate = Wheelgate::start(&config_path, dir.path(), "info");
    let ready = http::get(&wheelgate.url("/-/ready"), &[]);
    assert_eq!(
        ready.status,
        StatusCode::OK,
        "/-/ready with the shipped config: {}\n{}",
        ready.text(),
        wheelgate.output()
    );
    let health = http::get(&wheelgate.url("/-/health"), &[]);
    assert_eq!(
        health.status,
        StatusCode::OK,
        "/-/health with the shipped config"
    );
    let status = wheelgate.terminate();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM after serving the shipped config"
    );
}

/// Runs `wheelgate hash-password` with `input` piped to its stdin.
fn hash_password_with(input: &[u8], cwd: &Path) -> std::process::Output {
    let mut child = std::process::Command::new(wheelgate::binary())
        .arg("hash-password")
        .current_dir(cwd)
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start wheelgate hash-password: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .unwrap_or_else(|e| panic!("cannot write the password: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("wheelgate hash-password did not finish: {e}"))
}

#[test]
fn hash_password_prints_a_hash_that_a_user_accepts() {
    let dir = temp_dir();
    let output = hash_password_with(b"correct horse\n", dir.path());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "hash-password: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let hash = stdout.trim();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$") && stdout.lines().count() == 1,
        "one argon2id hash expected on stdout, got {stdout:?}"
    );
    let config = dir.path().join("proxy.toml");
    write_file(
        &config,
        &format!(
            "[access]\nanonymous_read = false\n\n\
             [[repository]]\nname = \"pypi\"\ntype = \"remote\"\nurl = \"\"\n\n\
             [[user]]\nname = \"ci-publisher\"\npassword_hash = {}\nroles = [\"read\", \"publish\"]\n",
            toml_string(hash)
        ),
    );
    let run = wheelgate::run(
        &["check", "--config", &config.to_string_lossy()],
        dir.path(),
    );
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    assert!(
        run.stdout
            .contains("ci-publisher (line 9): roles read, publish on every repository; password (argon2id hash)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains(hash), "check must not print the hash");

    let empty = hash_password_with(b"\n", dir.path());
    assert_eq!(
        empty.status.code(),
        Some(2),
        "an empty password is a usage error"
    );
    assert!(
        String::from_utf8_lossy(&empty.stderr).contains("the password is empty"),
        "{}",
        String::from_utf8_lossy(&empty.stderr)
    );
    assert!(empty.stdout.is_empty());
}

/// Three repositories and four package groups: `/pypi//acme-utils-core$` inherits through
/// `/pypi//acme-utils~` from `/pypi//acme~`, which sets what `/pypi/*` would otherwise give.
const ORIGIN_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
default_repository = "all"

[store]
path = "./data"

[[repository]]
name = "pypi"
type = "remote"
url = ""

[[repository]]
name = "internal"
type = "hosted"

[[repository]]
name = "all"
type = "group"
members = ["internal", "pypi"]

[[package_group]]
pattern = "/pypi//acme-utils-core$"

[[package_group]]
pattern = "/pypi//acme~"
description = "Acme's own packages"
contact = "platform@example.invalid"
publish = "ALLOW_SPECIFIC_REPOSITORIES"
publish_repositories = ["internal"]
external_upstream = "BLOCK"
mode = "audit"

[[package_group]]
pattern = "/pypi//acme-utils~"

[[package_group]]
pattern = "/pypi/*"
external_upstream = "ALLOW_SPECIFIC_REPOSITORIES"
external_upstream_repositories = ["pypi"]
publish = "BLOCK"
"#;

#[test]
fn origin_list_prints_the_groups_as_a_tree_with_what_they_inherit() {
    let dir = temp_dir();
    let config = dir.path().join("proxy.toml");
    write_file(&config, ORIGIN_CONFIG);
    let config = config.to_string_lossy().into_owned();
    let run = wheelgate::run(&["origin", "list", "--config", &config], dir.path());
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    let expected = "\
/*  (mode enforce, not in the file: allows every origin)
    publish: ALLOW, enforce
    external_upstream: ALLOW, enforce
    internal_upstream: ALLOW, enforce
  /pypi/*  (mode enforce, line 38)
      publish: BLOCK, enforce
      external_upstream: ALLOW_SPECIFIC_REPOSITORIES [pypi], enforce
      internal_upstream: ALLOW, enforce, inherited from /*
    /pypi//acme~  (mode audit, line 26)
        description: Acme's own packages
        contact: platform@example.invalid
        publish: ALLOW_SPECIFIC_REPOSITORIES [internal], audit
        external_upstream: BLOCK, audit
        internal_upstream: ALLOW, enforce, inherited from /*
      /pypi//acme-utils~  (mode enforce, line 35)
          publish: ALLOW_SPECIFIC_REPOSITORIES [internal], audit, inherited from /pypi//acme~
          external_upstream: BLOCK, audit, inherited from /pypi//acme~
          internal_upstream: ALLOW, enforce, inherited from /*
        /pypi//acme-utils-core$  (mode enforce, line 23)
            publish: ALLOW_SPECIFIC_REPOSITORIES [internal], audit, inherited from /pypi//acme~
            external_upstream: BLOCK, audit, inherited from /pypi//acme~
            internal_upstream: ALLOW, enforce, inherited from /*
";
    assert_eq!(
        run.stdout, expected,
        "`wheelgate origin list` printed:\n{}",
        run.stdout
    );

    // `check` describes the same groups; an invalid one is refused naming its pattern and line.
    let run = wheelgate::run(&["check", "--config", &config], dir.path());
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    assert!(
        run.stdout.contains("  /pypi//acme~ (line 26, mode audit): publish ALLOW_SPECIFIC_REPOSITORIES [internal], external_upstream BLOCK, internal_upstream INHERIT\n"),
        "{}",
        run.stdout
    );
    let broken = dir.path().join("broken.toml");
    write_file(
        &broken,
        &ORIGIN_CONFIG.replace(
            "external_upstream_repositories = [\"pypi\"]",
            "external_upstream_repositories = [\"all\"]",
        ),
    );
    let broken = broken.to_string_lossy().into_owned();
    for command in ["list", "check"] {
        let args: Vec<&str> = if command == "list" {
            vec!["origin", "list", "--config", &broken]
        } else {
            vec!["check", "--config", &broken]
        };
        let run = wheelgate::run(&args, dir.path());
        assert_eq!(run.exit_code, Some(2), "{}", run.output());
        assert!(
            run.stderr.contains("line 41: [[package_group]] \"/pypi/*\" external_upstream_repositories: \"all\" is a group repository, but `external_upstream_repositories` names remote repositories"),
            "`wheelgate {}`:\n{}",
            args.join(" "),
            run.output()
        );
    }
}

/// The shipped `proxy.toml` with its commented `[[package_group]]` examples written in.
fn shipped_config_with_package_groups() -> String {
    let shipped = std::fs::read_to_string(shipped_config())
        .unwrap_or_else(|e| panic!("cannot read the shipped proxy.toml: {e}"));
    let mut out = String::new();
    let mut in_example = false;
    for line in shipped.lines() {
        let uncommented = line.strip_prefix("# ").unwrap_or_default();
        if uncommented == "[[package_group]]" {
            in_example = true;
        } else if !(in_example && uncommented.contains(" = ")) {
            in_example = false;
        }
        out.push_str(if in_example { uncommented } else { line });
        out.push('\n');
    }
    out
}

#[test]
fn the_shipped_package_group_example_is_valid_for_its_repositories() {
    let dir = temp_dir();
    let config = dir.path().join("proxy.toml");
    let text = shipped_config_with_package_groups();
    assert_eq!(
        text.matches("\n[[package_group]]\n").count(),
        2,
        "the shipped proxy.toml has two commented [[package_group]] examples:\n{text}"
    );
    write_file(&config, &text);
    let config = config.to_string_lossy().into_owned();
    let run = wheelgate::run(&["origin", "list", "--config", &config], dir.path());
    assert_eq!(run.exit_code, Some(0), "{}", run.output());
    for line in [
        "    /pypi//acme~  (mode enforce, line ",
        "        publish: ALLOW_SPECIFIC_REPOSITORIES [internal], enforce\n",
        "        external_upstream: BLOCK, enforce\n",
        "        internal_upstream: ALLOW_SPECIFIC_REPOSITORIES [all], enforce, inherited from /pypi/*\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "`wheelgate origin list` must print {line:?}:\n{}",
            run.stdout
        );
    }
}
