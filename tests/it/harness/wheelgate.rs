//! The wheelgate binary under test, run as a real child process.
//!
//! Tests talk to wheelgate the way a deployment does: a config file, `serve`, the address it logs
//! once listening, SIGTERM to stop. Its stdout and stderr are drained into a buffer for the whole
//! run, so that tests can assert what it logged (and that it never logged the upstream token).

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::clients::{run_bounded, ClientRun};

/// How long wheelgate may take to log its listening address.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long wheelgate may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The wheelgate executable. Cargo sets `CARGO_BIN_EXE_wheelgate` when these tests are built as
/// part of the wheelgate crate; a scratch crate compiling them has no such binary.
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_wheelgate") {
        Some(path) => PathBuf::from(path),
        None => panic!(
            "the wheelgate binary is not available: these tests were built outside the wheelgate crate \
             (CARGO_BIN_EXE_wheelgate is unset); run them with `cargo test` in the wheelgate repository"
        ),
    }
}

/// The configuration the tests write for a remote repository pointing at the fixture upstream.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    pub store: PathBuf,
    pub upstream_url: String,
    pub password_file: PathBuf,
    pub auth_hosts: Vec<String>,
}

/// A TOML basic string holding `value`, escaped.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

impl RemoteConfig {
    pub fn to_toml(&self) -> String {
        let auth_hosts: Vec<String> = self.auth_hosts.iter().map(|h| toml_string(h)).collect();
        format!(
            "[server]\n\
             listen = \"127.0.0.1:0\"\n\
             default_repository = \"pypi\"\n\
             \n\
             [store]\n\
             path = {store}\n\
             \n\
             [[repository]]\n\
             name = \"pypi\"\n\
             type = \"remote\"\n\
             url = {url}\n\
             index_ttl = \"10m\"\n\
             retries = 1\n\
             [repository.auth]\n\
             username = \"__token__\"\n\
             password_file = {password_file}\n\
             auth_hosts = [{auth_hosts}]\n",
            store = toml_string(&self.store.to_string_lossy()),
            url = toml_string(&self.upstream_url),
            password_file = toml_string(&self.password_file.to_string_lossy()),
            auth_hosts = auth_hosts.join(", "),
        )
    }
}

/// A running `wheelgate serve`. Dropping it kills the process.
pub struct Wheelgate {
    child: Option<Child>,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
}

fn drain_into(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text = String::from_utf8_lossy(chunk.get(..n).unwrap_or_default()).into_owned();
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push_str(&text);
                }
            }
        }
    });
}

/// Finds `listening on http://<ip>:<port>` in wheelgate's log.
pub fn parse_listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = line.split("listening on http://").nth(1)?;
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']'))).unwrap_or(rest.len());
        rest.get(..end)?.parse().ok()
    })
}

impl Wheelgate {
    /// `wheelgate serve --config <config>` in `cwd`, waiting until it logs its address.
    pub fn start(config: &Path, cwd: &Path, log_level: &str) -> Wheelgate {
        Self::start_with_env(config, cwd, log_level, &[])
    }

    /// As `start`, with extra environment variables (the environment is otherwise empty but PATH).
    pub fn start_with_env(config: &Path, cwd: &Path, log_level: &str, env: &[(&str, &str)]) -> Wheelgate {
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .current_dir(cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .env("WHEELGATE_LOG", log_level)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary().display()));
        let output = Arc::new(Mutex::new(String::new()));
        if let Some(stdout) = child.stdout.take() {
            drain_into(stdout, Arc::clone(&output));
        }
        if let Some(stderr) = child.stderr.take() {
            drain_into(stderr, Arc::clone(&output));
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let log = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(addr) = parse_listening_addr(&log) {
                return Wheelgate { child: Some(child), addr, output };
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200)); // let the drains catch the last lines
                let log = output.lock().unwrap_or_else(|p| p.into_inner()).clone();
                panic!("wheelgate exited with {status} before listening; its output:\n{log}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wheelgate did not log `listening on http://…` within {START_TIMEOUT:?}; its output:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The index URL pip and uv are given: the default repository at `/simple/`.
    pub fn index_url(&self) -> String {
        self.url("/simple/")
    }

    /// Everything wheelgate wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sends SIGTERM and waits for the exit; panics with the output if it does not come in time.
    pub fn terminate(mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("wheelgate was already stopped");
        };
        let pid = child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(matches!(sent, Ok(s) if s.success()), "could not send SIGTERM to wheelgate ({pid}): {sent:?}");
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("wheelgate did not exit within {STOP_TIMEOUT:?} of SIGTERM; its output:\n{}", self.output());
                }
            }
        }
    }
}

impl Drop for Wheelgate {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs a one-shot wheelgate command (such as `check`) with an empty environment but PATH.
pub fn run(args: &[&str], cwd: &Path) -> ClientRun {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
        .env("WHEELGATE_LOG", "info");
    run_bounded(&mut command, Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_found_among_log_fields() {
        let log = "2026-01-01T00:00:00Z  INFO wheelgate: store opened\n\
                   2026-01-01T00:00:00Z  INFO wheelgate::server: listening on http://127.0.0.1:40123 repositories=1\n";
        assert_eq!(parse_listening_addr(log), Some("127.0.0.1:40123".parse().expect("addr")));
        assert_eq!(parse_listening_addr("listening on http://127.0.0.1:7/"), Some("127.0.0.1:7".parse().expect("addr")));
        assert_eq!(parse_listening_addr("starting"), None);
    }

    #[test]
    fn config_paths_are_escaped() {
        let config = RemoteConfig {
            store: PathBuf::from("/tmp/a \"b\"/store"),
            upstream_url: "http://127.0.0.1:1/simple/".into(),
            password_file: PathBuf::from("/tmp/t"),
            auth_hosts: vec!["127.0.0.1:2".into()],
        };
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert_eq!(parsed["store"]["path"].as_str(), Some("/tmp/a \"b\"/store"));
        assert_eq!(parsed["repository"][0]["auth"]["auth_hosts"][0].as_str(), Some("127.0.0.1:2"));
    }
}
