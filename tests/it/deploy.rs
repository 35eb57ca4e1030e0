//! The deployment files (SPEC §9): `wheelgate health`, the probe the container image runs; the
//! systemd unit, checked by `systemd-analyze`; the Kubernetes examples, whose configurations must
//! load and whose probes must hit the health routes on the port the configuration listens on;
//! and the Dockerfile, whose build stage must find what it copies, and which is built and run
//! when a container builder is at hand and `WHEELGATE_TEST_CONTAINER=1` asks for it (the build
//! downloads base images and crates, so it is never run by default).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use crate::harness::clients::{run_bounded, ClientRun};
use crate::harness::wheelgate::{binary, run_with_env, Wheelgate};
use crate::harness::{create_dir, http, wait_until, write_file};

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `wheelgate <args>` with `env` as its whole environment (but PATH), in `cwd`.
fn wheelgate_command(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> ClientRun {
    run_with_env(args, cwd, env, Duration::from_secs(30))
}

/// Whether `program` can be run (`program --version` succeeds).
fn available(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success())
}

#[test]
fn the_health_command_probes_the_server_the_shipped_config_starts_as_the_image_runs_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = repo_file("proxy.toml");
    let store = dir.path().join("volume");
    let store_text = store.display().to_string();
    let config_text = config.display().to_string();
    // What the image sets; port 0 so that tests never collide.
    let image_env = [
        ("WHEELGATE_CONFIG", config_text.as_str()),
        ("WHEELGATE_LISTEN", "127.0.0.1:0"),
        ("WHEELGATE_STORE", store_text.as_str()),
    ];
    let mut server = Wheelgate::start_with_env(&config, dir.path(), "info", &image_env);
    assert!(
        store.join("catalog").is_dir(),
        "WHEELGATE_STORE did not place the store: {}",
        server.output()
    );

    // The probe reads the same configuration (from WHEELGATE_CONFIG, no --config), here with
    // the port the server picked.
    let listen = server.addr().to_string();
    let probe_env = [
        ("WHEELGATE_CONFIG", config_text.as_str()),
        ("WHEELGATE_LISTEN", listen.as_str()),
        ("WHEELGATE_STORE", store_text.as_str()),
    ];
    let healthy = wheelgate_command(&["health"], &probe_env, dir.path());
    assert!(healthy.success(), "{}", healthy.output());
    assert_eq!(
        healthy.stdout.trim(),
        format!("healthy: http://{listen}/-/health"),
        "{}",
        healthy.output()
    );
    // Listening on every interface, the probe asks on loopback.
    let any = format!("0.0.0.0:{}", server.addr().port());
    let any_env = [
        ("WHEELGATE_CONFIG", config_text.as_str()),
        ("WHEELGATE_LISTEN", any.as_str()),
    ];
    let healthy = wheelgate_command(&["health"], &any_env, dir.path());
    assert!(healthy.success(), "{}", healthy.output());

    server.stop();
    let down = wheelgate_command(&["health"], &probe_env, dir.path());
    assert_eq!(down.exit_code, Some(1), "{}", down.output());
    assert!(
        down.stderr
            .contains(&format!("unhealthy: cannot reach http://{listen}/-/health")),
        "{}",
        down.output()
    );
    let missing = dir.path().join("absent.toml").display().to_string();
    let invalid = wheelgate_command(&["health", "--config", &missing], &[], dir.path());
    assert_eq!(invalid.exit_code, Some(2), "{}", invalid.output());
}

#[test]
fn the_systemd_unit_passes_systemd_analyze() {
    if !available("systemd-analyze") {
        eprintln!("skipped: systemd-analyze is not installed, the unit was not verified");
        return;
    }
    let unit = read(&repo_file("deploy/systemd/wheelgate.service"));
    // verify checks that ExecStart's program exists: point it at the binary under test.
    let installed = "ExecStart=/usr/local/bin/wheelgate ";
    assert_eq!(
        unit.matches(installed).count(),
        1,
        "the unit's ExecStart should start /usr/local/bin/wheelgate"
    );
    for line in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=wheelgate",
        "Environment=WHEELGATE_STORE=/var/lib/wheelgate",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line:?}");
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let copy = dir.path().join("wheelgate.service");
    write_file(
        &copy,
        &unit.replace(installed, &format!("ExecStart={} ", binary().display())),
    );
    let copy_text = copy.display().to_string();

    let mut verify = Command::new("systemd-analyze");
    verify.args(["verify", &copy_text]);
    let run = run_bounded(&mut verify, Duration::from_secs(60));
    // Unknown keys and bad values are warnings on stderr with exit 0: none may name the unit.
    assert!(
        run.success() && !run.stderr.contains("wheelgate.service"),
        "systemd-analyze verify:\n{}",
        run.output()
    );

    // The hardening, as systemd scores it (0 is best, 10 worst): at most 2.0.
    let mut security = Command::new("systemd-analyze");
    security.args(["security", "--offline=true", "--threshold=20", &copy_text]);
    let run = run_bounded(&mut security, Duration::from_secs(60));
    if run.stderr.contains("--offline") || run.stderr.contains("unrecognized option") {
        eprintln!("skipped: this systemd-analyze cannot score a unit file offline");
        return;
    }
    assert!(
        run.success(),
        "systemd-analyze security scores the unit above 2.0:\n{}",
        run.output()
    );
}

/// The documents of a YAML file.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

/// The pod spec of a Pod or of a Deployment's template.
fn pod_spec(document: &Yaml) -> Option<&Yaml> {
    match document["kind"].as_str()? {
        "Pod" => Some(&document["spec"]),
        "Deployment" => Some(&document["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn list(value: &Yaml) -> &[Yaml] {
    value.as_vec().map(Vec::as_slice).unwrap_or_default()
}

#[test]
fn the_kubernetes_examples_load_and_probe_the_health_routes_on_the_listened_port() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    for name in ["sidecar.yaml", "central.yaml"] {
        let path = repo_file(&format!("deploy/kubernetes/{name}"));
        let documents = yaml_documents(&path);

        // Each ConfigMap's proxy.toml is a valid configuration for this binary; its port is the
        // one the probes use.
        let mut listen_ports = Vec::new();
        for config in documents
            .iter()
            .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        {
            let text = config["data"]["proxy.toml"]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: a ConfigMap without data.proxy.toml"));
            let file = dir.path().join(format!("{name}.toml"));
            write_file(&file, text);
            let check = wheelgate_command(
                &["check", "--config", &file.display().to_string()],
                &[],
                dir.path(),
            );
            assert!(check.success(), "{name}'s proxy.toml:\n{}", check.output());
            let port = check
                .stdout
                .lines()
                .find_map(|line| line.strip_prefix("listen: "))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
                .map(|addr| addr.port())
                .unwrap_or_else(|| panic!("{name}: no listen line in:\n{}", check.stdout));
            listen_ports.push(port);
        }
        assert_eq!(
            listen_ports.len(),
            1,
            "{name}: one ConfigMap with proxy.toml"
        );

        let wheelgates: Vec<&Yaml> = documents
            .iter()
            .filter_map(pod_spec)
            .flat_map(|spec| {
                list(&spec["containers"])
                    .iter()
                    .chain(list(&spec["initContainers"]))
            })
            .filter(|c| c["name"].as_str() == Some("wheelgate"))
            .collect();
        assert_eq!(wheelgates.len(), 1, "{name}: one wheelgate container");
        let container = wheelgates[0];
        let port = list(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some("http"))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("{name}: the wheelgate container names no http port"));
        assert_eq!(
            Some(&(port as u16)),
            listen_ports.first(),
            "{name}: the container port is not the one proxy.toml listens on"
        );
        for (probe, route) in [
            ("livenessProbe", "/-/health"),
            ("readinessProbe", "/-/ready"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(route), "{name}: {probe}");
            assert_eq!(get["port"].as_str(), Some("http"), "{name}: {probe}");
        }
        // A subPath mount is never updated: a rotated token or an edited ConfigMap would not
        // reach wheelgate.
        for mount in list(&container["volumeMounts"]) {
            assert!(
                mount["subPath"].is_badvalue(),
                "{name}: {:?} is mounted with a subPath",
                mount["name"]
            );
        }
    }
}

#[test]
fn the_dockerfile_build_stage_has_what_cargo_needs() {
    let dockerfile = read(&repo_file("Dockerfile"));
    let ignore = read(&repo_file(".dockerignore"));
    let build_stage: String = dockerfile
        .split("\nFROM ")
        .nth(1)
        .unwrap_or_else(|| panic!("the Dockerfile has no build stage"))
        .to_owned();
    let sources: Vec<&str> = build_stage
        .lines()
        .filter_map(|line| line.strip_prefix("COPY "))
        .filter(|rest| !rest.starts_with("--"))
        .flat_map(|rest| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            words[..words.len().saturating_sub(1)].to_vec()
        })
        .collect();
    assert!(sources.contains(&"Cargo.lock"), "{sources:?}");

    // .dockerignore excludes everything and lets each copied source back in.
    assert!(
        ignore.lines().any(|l| l == "*"),
        ".dockerignore should start from `*`"
    );
    let runtime_copies = ["proxy.toml"];
    for source in sources.iter().chain(&runtime_copies) {
        let allowed = format!("!{}", source.trim_end_matches('/'));
        assert!(
            ignore.lines().any(|l| l.trim_end_matches('/') == allowed),
            ".dockerignore does not let {source} into the build context"
        );
    }

    // The copied sources hold every target's source file but the integration tests' (which
    // cargo only discovers): cargo refuses to build a package a declared target is missing
    // from, a [[bench]] included. The lock file must load as it is.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    for source in &sources {
        copy_tree(&repo_file(source), &dir.path().join(source));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for target in cargo_targets(root) {
        let relative = target
            .strip_prefix(root)
            .unwrap_or_else(|_| panic!("{} is outside the package", target.display()));
        if relative.starts_with("tests") {
            continue;
        }
        assert!(
            dir.path().join(relative).is_file(),
            "the build context lacks {}; COPY it in the Dockerfile's build stage",
            relative.display()
        );
    }
    assert!(!cargo_targets(dir.path()).is_empty());
}

/// The source file of every target of the package at `root`, with the lock file as it is.
fn cargo_targets(root: &Path) -> Vec<PathBuf> {
    let mut metadata = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    metadata
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--locked",
            "--offline",
        ])
        .current_dir(root);
    let run = run_bounded(&mut metadata, Duration::from_secs(120));
    assert!(
        run.success(),
        "cargo cannot load the package in {}:\n{}",
        root.display(),
        run.stderr
    );
    let metadata: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("cargo metadata printed no JSON ({e}):\n{}", run.stdout));
    metadata["packages"][0]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|target| target["src_path"].as_str())
        .map(PathBuf::from)
        .collect()
}

fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        create_dir(to);
        let entries = std::fs::read_dir(from)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
        for entry in entries.filter_map(Result::ok) {
            copy_tree(&entry.path(), &to.join(entry.file_name()));
        }
    } else {
        std::fs::copy(from, to)
            .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
    }
}

/// The first container builder that answers: docker or podman (which can also run the image), or
/// buildah (build only).
fn container_builder() -> Option<&'static str> {
    ["docker", "podman", "buildah"].into_iter().find(|tool| {
        let probe = if *tool == "buildah" {
            "version"
        } else {
            "info"
        };
        Command::new(tool)
            .arg(probe)
            .output()
            .is_ok_and(|output| output.status.success())
    })
}

#[test]
fn the_container_image_builds_and_reports_healthy() {
    if std::env::var("WHEELGATE_TEST_CONTAINER").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set WHEELGATE_TEST_CONTAINER=1 to build the image (it downloads base \
             images and crates)"
        );
        return;
    }
    let Some(builder) = container_builder() else {
        eprintln!("skipped: no container builder (docker, podman or buildah) is available");
        return;
    };
    let tag = format!("wheelgate-test:{:016x}", rand::random::<u64>());
    let context = env!("CARGO_MANIFEST_DIR");
    let mut build = Command::new(builder);
    if builder == "buildah" {
        build.args(["bud", "--layers", "-t", &tag, context]);
    } else {
        build.args(["build", "-t", &tag, context]);
    }
    let run = run_bounded(&mut build, Duration::from_secs(3600));
    assert!(run.success(), "{builder} build:\n{}", run.output());
    if builder == "buildah" {
        let _ = Command::new(builder).args(["rmi", &tag]).output();
        eprintln!("built {tag} with buildah; running it needs docker or podman");
        return;
    }

    let mut start = Command::new(builder);
    start.args(["run", "-d", "--rm", "-p", "127.0.0.1::3141", &tag]);
    let started = run_bounded(&mut start, Duration::from_secs(120));
    assert!(started.success(), "{builder} run:\n{}", started.output());
    let container = started.stdout.trim().to_owned();
    let cleanup = || {
        let _ = Command::new(builder)
            .args(["rm", "-f", &container])
            .output();
        let _ = Command::new(builder).args(["rmi", &tag]).output();
    };

    // The image's own probe, run inside it as its HEALTHCHECK runs it.
    let healthy = wait_until(Duration::from_secs(60), || {
        Command::new(builder)
            .args(["exec", &container, "wheelgate", "health"])
            .output()
            .is_ok_and(|output| output.status.success())
    });
    let published = Command::new(builder)
        .args(["port", &container, "3141/tcp"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    let user = Command::new(builder)
        .args(["exec", &container, "id", "-u"])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default();
    let logs = Command::new(builder)
        .args(["logs", &container])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stderr).into_owned())
        .unwrap_or_default();
    let ready = published
        .lines()
        .next()
        .map(|addr| http::get(&format!("http://{addr}/-/ready"), &[]).status);
    cleanup();
    assert!(
        healthy,
        "`wheelgate health` never succeeded in the container:\n{logs}"
    );
    assert_eq!(user, "10001", "the container runs as uid {user}");
    assert_eq!(
        ready,
        Some(::http::StatusCode::OK),
        "/-/ready through the published port {published:?}:\n{logs}"
    );
}
