//! The Python clients under test: pip, uv and twine, run isolated.
//!
//! A passing install only proves something if the packages can have come from nowhere but the
//! index under test, so every run clears the environment, gets a fresh HOME, no configuration file
//! and no cache. The clients themselves (uv, twine) are installed once per machine into a venv under
//! the cargo target's temporary directory, with the machine's normal pip settings.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::fixtures::normalize;

/// How long one client run may take before it is killed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long installing uv and twine may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// The outcome of one client run.
#[derive(Debug)]
pub struct ClientRun {
    pub command: String,
    /// None when the run was killed for exceeding its time.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// Stdout and stderr together, for leak checks and failure messages.
    pub fn output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Panics with the full output unless the run exited 0.
    pub fn assert_success(&self) {
        assert!(
            self.success(),
            "`{}` failed with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.exit_code,
            self.stdout,
            self.stderr
        );
    }
}

/// The real Python interpreter behind `python3` (resolved once, with the normal environment,
/// because a pyenv shim stops working once HOME changes).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let output = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 to find the interpreter (is Python 3 installed?): {e}")
            });
        let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        assert!(
            output.status.success() && !path.is_empty(),
            "python3 did not report its interpreter: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        PathBuf::from(path)
    })
}

/// The venv holding uv and twine, installed on first use (once per machine, reused by later runs).
pub fn tools_venv() -> &'static Path {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let venv = root.join("pyclients");
        let marker = venv.join(".wheelgate-tools-installed");
        if marker.exists() {
            return venv;
        }
        // Build in a private directory and rename it into place: a concurrent test process either
        // wins the rename or finds the finished venv, never a half-built one.
        let staging = root.join(format!("pyclients.staging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        run_setup(
            Command::new(python()).arg("-m").arg("venv").arg(&staging),
            "create the tools venv",
        );
        run_setup(
            Command::new(staging.join("bin").join("python")).args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "uv",
                "twine",
            ]),
            "install uv and twine (with the machine's normal pip settings)",
        );
        std::fs::write(staging.join(".wheelgate-tools-installed"), b"ok\n")
            .unwrap_or_else(|e| panic!("cannot write the marker in {}: {e}", staging.display()));
        if std::fs::rename(&staging, &venv).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
            assert!(
                marker.exists(),
                "another process left {} without its marker; delete it and rerun",
                venv.display()
            );
        }
        venv
    })
}

/// The uv executable from the tools venv.
pub fn uv() -> PathBuf {
    tools_venv().join("bin").join("uv")
}

/// The venv's Python, which can run `-m twine`.
pub fn tools_python() -> PathBuf {
    tools_venv().join("bin").join("python")
}

fn run_setup(command: &mut Command, what: &str) {
    let run = run_bounded(command, INSTALL_TIMEOUT);
    assert!(
        run.success(),
        "could not {what}: `{}` exited {:?}\n{}",
        run.command,
        run.exit_code,
        run.output()
    );
}

/// A command with an empty environment except PATH, a fresh HOME and settings that disable every
/// configuration file. The returned TempDir is the HOME; keep it alive for the run.
pub fn isolated(program: &Path) -> (Command, tempfile::TempDir) {
    let home =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary HOME: {e}"));
    let mut command = Command::new(program);
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", home.path())
        .env("PIP_CONFIG_FILE", "/dev/null")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("UV_NO_CONFIG", "1")
        .env("UV_PYTHON_DOWNLOADS", "never")
        .current_dir(home.path());
    (command, home)
}

/// `pip install --target <target> --index-url <index_url> <requirements>`, isolated.
pub fn pip_install(index_url: &str, target: &Path, requirements: &[&str]) -> ClientRun {
    let (mut command, _home) = pip_install_command(index_url, target, requirements, &[]);
    run_bounded(&mut command, CLIENT_TIMEOUT)
}

/// The isolated `pip install` command with `extra` options (such as `--cert`) before the
/// requirements, and the temporary HOME it runs in, which must outlive the run.
pub fn pip_install_command(
    index_url: &str,
    target: &Path,
    requirements: &[&str],
    extra: &[&str],
) -> (Command, tempfile::TempDir) {
    let (mut command, home) = isolated(python());
    command
        .args([
            "-m",
            "pip",
            "install",
            "--no-cache-dir",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .args(["--progress-bar", "off", "--target"])
        .arg(target)
        .args(["--index-url", index_url])
        .args(extra)
        .args(requirements);
    (command, home)
}

/// `uv pip install --target <target> --index-url <index_url> <requirements>`, isolated.
pub fn uv_install(index_url: &str, target: &Path, requirements: &[&str]) -> ClientRun {
    let (mut command, _home) = isolated(&uv());
    command
        .args(["pip", "install", "--no-cache", "--no-config", "--python"])
        .arg(python())
        .arg("--target")
        .arg(target)
        .args(["--index-url", index_url])
        .args(requirements);
    run_bounded(&mut command, CLIENT_TIMEOUT)
}

/// `twine upload` of `files` to `repository_url` (the legacy upload API) as `username`, isolated:
/// no `.pypirc`, no `TWINE_*` variable, no keyring, never a prompt.
pub fn twine_upload(
    repository_url: &str,
    username: &str,
    password: &str,
    files: &[PathBuf],
) -> ClientRun {
    let (mut command, _home) = isolated(&tools_python());
    command
        .env("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
        .env("NO_COLOR", "1")
        .args([
            "-m",
            "twine",
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
        ])
        .args(["--repository-url", repository_url])
        .args(["--username", username, "--password", password])
        .args(files);
    run_bounded(&mut command, CLIENT_TIMEOUT)
}

/// `uv publish` of `files` to `publish_url` as `username`, isolated; with `check_url` (a simple
/// index URL) uv first looks there for files already published and skips identical ones.
pub fn uv_publish(
    publish_url: &str,
    check_url: Option<&str>,
    username: &str,
    password: &str,
    files: &[PathBuf],
) -> ClientRun {
    let (mut command, _home) = isolated(&uv());
    command
        .args(["publish", "--no-cache", "--no-config", "--no-progress"])
        .args(["--trusted-publishing", "never"])
        .args(["--keyring-provider", "disabled"])
        .args(["--publish-url", publish_url])
        .args(["--username", username, "--password", password]);
    if let Some(check_url) = check_url {
        command.args(["--check-url", check_url]);
    }
    command.args(files);
    run_bounded(&mut command, CLIENT_TIMEOUT)
}

/// Runs a command with piped output, killing it after `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> ClientRun {
    run_bounded_inner(command, limit, None)
}

/// As `run_bounded`, with `input` written to the command's stdin (then closed).
pub fn run_bounded_with_input(command: &mut Command, limit: Duration, input: &[u8]) -> ClientRun {
    run_bounded_inner(command, limit, Some(input))
}

fn run_bounded_inner(command: &mut Command, limit: Duration, input: Option<&[u8]>) -> ClientRun {
    let description = format!("{command:?}");
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = match command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start {description}: {e}"),
    };
    if let (Some(input), Some(mut pipe)) = (input, child.stdin.take()) {
        // Small inputs only (a password): they fit the pipe, so writing cannot block on the child.
        // Dropping the pipe closes it, which is the end of the input.
        if let Err(e) = pipe.write_all(input) {
            panic!("cannot write to the stdin of {description}: {e}");
        }
    }
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buffer = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buffer);
            }
            String::from_utf8_lossy(&buffer).into_owned()
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let exit_code = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status.code(),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    ClientRun {
        command: description,
        exit_code,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// The distributions installed in a `--target` directory, as (normalised name, version).
pub fn installed(target: &Path) -> BTreeSet<(String, String)> {
    let entries = std::fs::read_dir(target)
        .unwrap_or_else(|e| panic!("cannot list the install target {}: {e}", target.display()));
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| parse_dist_info(&entry.file_name().to_string_lossy()))
        .collect()
}

/// `wgfx_gamma_util-0.2.0.dist-info` -> ("wgfx-gamma-util", "0.2.0").
fn parse_dist_info(dir_name: &str) -> Option<(String, String)> {
    let stem = dir_name.strip_suffix(".dist-info")?;
    let (name, version) = stem.rsplit_once('-')?;
    Some((normalize(name), version.to_owned()))
}

/// Builds the expected set from literal pairs.
pub fn dists(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dist_info_names_are_normalised() {
        assert_eq!(
            parse_dist_info("wgfx_gamma_util-0.2.0.dist-info"),
            Some(("wgfx-gamma-util".to_owned(), "0.2.0".to_owned()))
        );
        assert_eq!(parse_dist_info("wgfx_app"), None);
        assert_eq!(parse_dist_info("bin"), None);
    }

    #[test]
    fn bounded_runs_are_killed() {
        let run = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200));
        assert_eq!(run.exit_code, None);
        let run = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            CLIENT_TIMEOUT,
        );
        assert_eq!(
            (run.exit_code, run.stdout.trim(), run.stderr.trim()),
            (Some(3), "out", "err")
        );
    }
}
