//! The wheelgate binary under test, run as a real child process.
//!
//! Tests talk to wheelgate the way a deployment does: a config file, `serve`, the address it logs
//! once listening, SIGTERM to stop. Its stdout and stderr are drained into a buffer for the whole
//! run, so that tests can assert what it logged (and that it never logged the upstream token).
//!
//! The store tests also need the process itself: its pid, its memory (`/proc/<pid>/status`), a
//! SIGKILL at a chosen moment, and a restart with the same configuration and store.

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::clients::{run_bounded, run_bounded_with_input, ClientRun};

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
    /// How long a page stays fresh, as the configuration writes durations (`10m`, `1s`).
    pub index_ttl: String,
    /// Serve only the store, never contacting the upstream.
    pub offline: bool,
    /// `[store] max_size` (`20GiB`); the binary's default when None.
    pub max_size: Option<String>,
    /// How long an upstream 404 is remembered; the binary's default when None.
    pub negative_ttl: Option<String>,
    /// `[server] max_upload_size` (`1MiB`); the binary's default when None.
    pub max_upload_size: Option<String>,
    /// `[access] anonymous_read`; no `[access]` table (the binary's default) when None.
    pub anonymous_read: Option<bool>,
    /// The names of hosted repositories (`type = "hosted"`), defined after the remote one.
    pub hosted: Vec<String>,
    /// Raw TOML of more `[[repository]]` tables (see `bare_remote_toml`), defined after the hosted
    /// repositories and before the groups.
    pub extra_repositories: String,
    /// The group repositories (`type = "group"`), defined last.
    pub groups: Vec<GroupConfig>,
    /// `[server] default_repository`, the repository served at `/simple/`: `pypi` unless changed.
    pub default_repository: String,
    /// The `[[user]]` tables, in order.
    pub users: Vec<UserConfig>,
    /// Raw TOML appended after the repositories and users, such as `[[rule]]` tables (see
    /// `rule_toml`).
    pub extra_toml: String,
    /// Raw TOML lines in the remote repository's own table (`ca_file`, `native_roots`).
    pub remote_toml: String,
    /// `[server] listen`: `127.0.0.1:0` (a free port) unless a test needs a known one.
    pub listen: String,
    /// Raw TOML lines at the end of `[server]` (`max_file_size`).
    pub server_toml: String,
    /// Raw TOML lines at the end of `[store]` (`min_free_space`).
    pub store_toml: String,
}

/// A `type = "group"` repository: its members, in order, served as one index (SPEC §1).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub name: String,
    pub members: Vec<String>,
}

impl GroupConfig {
    pub fn new(name: &str, members: &[&str]) -> GroupConfig {
        GroupConfig {
            name: name.to_owned(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        }
    }

    /// The `[[repository]]` table, every value escaped.
    pub fn to_toml(&self) -> String {
        let members: Vec<String> = self.members.iter().map(|m| toml_string(m)).collect();
        format!(
            "\n[[repository]]\nname = {}\ntype = \"group\"\nmembers = [{}]\n",
            toml_string(&self.name),
            members.join(", ")
        )
    }
}

/// A `type = "remote"` repository table without credentials, pointing at `url`, with one retry.
pub fn bare_remote_toml(name: &str, url: &str) -> String {
    format!(
        "\n[[repository]]\nname = {}\ntype = \"remote\"\nurl = {}\nretries = 1\n",
        toml_string(name),
        toml_string(url)
    )
}

/// How a `[[user]]` proves who it is (SPEC §8).
#[derive(Debug, Clone)]
pub enum UserSecret {
    /// `password_hash`: a PHC string, as `wheelgate hash-password` prints it (see `hash_password`).
    PasswordHash(String),
    /// `token_file`: the password is the file's content, trimmed; the Basic user name is the
    /// user's name or `__token__`.
    TokenFile(PathBuf),
}

/// One `[[user]]` table.
#[derive(Debug, Clone)]
pub struct UserConfig {
    pub name: String,
    pub secret: UserSecret,
    /// `read` and/or `publish`.
    pub roles: Vec<String>,
    /// `repositories = [...]`, the optional limit; no key when None.
    pub repositories: Option<Vec<String>>,
}

impl UserConfig {
    /// A user who logs in with `password`, stored as the argon2id hash the binary itself makes.
    pub fn with_password(name: &str, password: &str, roles: &[&str]) -> UserConfig {
        UserConfig {
            name: name.to_owned(),
            secret: UserSecret::PasswordHash(hash_password(password)),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            repositories: None,
        }
    }

    /// A user whose password is the content of `path`.
    pub fn with_token_file(name: &str, path: &Path, roles: &[&str]) -> UserConfig {
        UserConfig {
            name: name.to_owned(),
            secret: UserSecret::TokenFile(path.to_owned()),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            repositories: None,
        }
    }

    /// The same user, limited to `repositories`.
    pub fn limited_to(mut self, repositories: &[&str]) -> UserConfig {
        self.repositories = Some(repositories.iter().map(|r| (*r).to_owned()).collect());
        self
    }

    /// The `[[user]]` table, every value escaped.
    pub fn to_toml(&self) -> String {
        let list = |items: &[String]| {
            items
                .iter()
                .map(|item| toml_string(item))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let secret = match &self.secret {
            UserSecret::PasswordHash(hash) => format!("password_hash = {}\n", toml_string(hash)),
            UserSecret::TokenFile(path) => {
                format!("token_file = {}\n", toml_string(&path.to_string_lossy()))
            }
        };
        let repositories = self
            .repositories
            .as_deref()
            .map(|repos| format!("repositories = [{}]\n", list(repos)))
            .unwrap_or_default();
        format!(
            "\n[[user]]\nname = {}\n{secret}roles = [{}]\n{repositories}",
            toml_string(&self.name),
            list(&self.roles)
        )
    }
}

/// The argon2id PHC string `wheelgate hash-password` prints for `password` (given on stdin, with
/// no newline, as `echo -n pw | wheelgate hash-password` gives it). Hashing is slow on purpose, so
/// each password is hashed once per test process.
pub fn hash_password(password: &str) -> String {
    static HASHES: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(hash) = hashes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(password)
    {
        return hash.clone();
    }
    let run = run_hash_password(password);
    let hash = parse_password_hash(&run.stdout).unwrap_or_else(|| {
        panic!(
            "`wheelgate hash-password` must print one argon2id PHC line (`$argon2id$v=19$...`); exit {:?}, stderr:\n{}",
            run.exit_code, run.stderr
        )
    });
    assert!(
        run.success(),
        "`wheelgate hash-password` exited {:?}:\n{}",
        run.exit_code,
        run.stderr
    );
    hashes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(password.to_owned(), hash.clone());
    hash
}

/// One run of `wheelgate hash-password` with `password` on stdin, in an empty directory (the
/// command needs no configuration file).
pub fn run_hash_password(password: &str) -> ClientRun {
    let dir =
        tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
    let mut command = Command::new(binary());
    command
        .arg("hash-password")
        .current_dir(dir.path())
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("WHEELGATE_LOG", "info");
    run_bounded_with_input(&mut command, Duration::from_secs(60), password.as_bytes())
}

/// The PHC string of `hash-password`'s stdout: exactly one non-empty line, `$argon2id$v=19$…`.
pub fn parse_password_hash(stdout: &str) -> Option<String> {
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.trim().is_empty()).collect();
    match lines.as_slice() {
        [line] if line.trim().starts_with("$argon2id$v=19$") => Some(line.trim().to_owned()),
        _ => None,
    }
}

/// One `[[rule]]` table for repository `pypi` (SPEC §5), every value escaped; `package` and
/// `condition` are left out when None.
pub fn rule_toml(
    name: &str,
    action: &str,
    package: Option<&str>,
    condition: Option<&str>,
) -> String {
    rule_toml_in("pypi", name, action, package, condition)
}

/// As `rule_toml`, for the rule of `repository`.
pub fn rule_toml_in(
    repository: &str,
    name: &str,
    action: &str,
    package: Option<&str>,
    condition: Option<&str>,
) -> String {
    let mut table = format!(
        "\n[[rule]]\nrepository = {}\nname = {}\naction = {}\n",
        toml_string(repository),
        toml_string(name),
        toml_string(action)
    );
    if let Some(package) = package {
        table.push_str(&format!("package = {}\n", toml_string(package)));
    }
    if let Some(condition) = condition {
        table.push_str(&format!("condition = {}\n", toml_string(condition)));
    }
    table
}

/// A TOML basic string holding `value`, escaped.
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

impl RemoteConfig {
    /// A remote with the defaults the tests rely on: pages fresh for ten minutes, online.
    pub fn new(
        store: PathBuf,
        upstream_url: String,
        password_file: PathBuf,
        auth_hosts: Vec<String>,
    ) -> RemoteConfig {
        RemoteConfig {
            store,
            upstream_url,
            password_file,
            auth_hosts,
            index_ttl: "10m".to_owned(),
            offline: false,
            max_size: None,
            negative_ttl: None,
            max_upload_size: None,
            anonymous_read: None,
            hosted: Vec::new(),
            extra_repositories: String::new(),
            groups: Vec::new(),
            default_repository: "pypi".to_owned(),
            users: Vec::new(),
            extra_toml: String::new(),
            remote_toml: String::new(),
            listen: "127.0.0.1:0".to_owned(),
            server_toml: String::new(),
            store_toml: String::new(),
        }
    }

    pub fn to_toml(&self) -> String {
        let max_size = self
            .max_size
            .as_deref()
            .map(|size| format!("max_size = {}\n", toml_string(size)))
            .unwrap_or_default();
        let max_upload_size = self
            .max_upload_size
            .as_deref()
            .map(|size| format!("max_upload_size = {}\n", toml_string(size)))
            .unwrap_or_default();
        let access = self
            .anonymous_read
            .map(|anonymous| format!("\n[access]\nanonymous_read = {anonymous}\n"))
            .unwrap_or_default();
        let hosted: String = self
            .hosted
            .iter()
            .map(|name| {
                format!(
                    "\n[[repository]]\nname = {}\ntype = \"hosted\"\n",
                    toml_string(name)
                )
            })
            .collect();
        let groups: String = self.groups.iter().map(GroupConfig::to_toml).collect();
        let users: String = self.users.iter().map(UserConfig::to_toml).collect();
        format!(
            "[server]\n\
             listen = {listen}\n\
             default_repository = {default_repository}\n\
             {max_upload_size}\
             {server_toml}\
             \n\
             [store]\n\
             path = {store}\n\
             {max_size}\
             {store_toml}\
             {access}\
             {remote}\
             {hosted}\
             {extra_repositories}\
             {groups}\
             {users}\
             {extra}",
            extra = self.extra_toml,
            server_toml = self.server_toml,
            store_toml = self.store_toml,
            extra_repositories = self.extra_repositories,
            default_repository = toml_string(&self.default_repository),
            remote = self.remote_table("pypi"),
            listen = toml_string(&self.listen),
            store = toml_string(&self.store.to_string_lossy()),
        )
    }

    /// The `[[repository]]` table of the remote `pypi`, named `name`: the fixture upstream with
    /// its credentials. Another name gives a second remote on the same upstream (for
    /// `extra_repositories`).
    pub fn remote_table(&self, name: &str) -> String {
        let auth_hosts: Vec<String> = self.auth_hosts.iter().map(|h| toml_string(h)).collect();
        let negative_ttl = self
            .negative_ttl
            .as_deref()
            .map(|ttl| format!("negative_ttl = {}\n", toml_string(ttl)))
            .unwrap_or_default();
        format!(
            "\n\
             [[repository]]\n\
             name = {name}\n\
             type = \"remote\"\n\
             url = {url}\n\
             index_ttl = {index_ttl}\n\
             {negative_ttl}\
             offline = {offline}\n\
             retries = 1\n\
             {remote}\
             [repository.auth]\n\
             username = \"__token__\"\n\
             password_file = {password_file}\n\
             auth_hosts = [{auth_hosts}]\n",
            name = toml_string(name),
            remote = self.remote_toml,
            url = toml_string(&self.upstream_url),
            password_file = toml_string(&self.password_file.to_string_lossy()),
            auth_hosts = auth_hosts.join(", "),
            index_ttl = toml_string(&self.index_ttl),
            offline = self.offline,
        )
    }
}

/// A `wheelgate serve` process (running unless stopped or killed). Dropping it kills the process.
pub struct Wheelgate {
    child: Option<Child>,
    addr: SocketAddr,
    output: Arc<Mutex<String>>,
    /// The output of the earlier processes of this handle (before restarts).
    earlier_output: String,
    launch: Launch,
}

/// How the process was started, to start it again the same way.
#[derive(Debug, Clone)]
struct Launch {
    config: PathBuf,
    cwd: PathBuf,
    log_level: String,
    env: Vec<(String, String)>,
    /// `RLIMIT_NOFILE` (soft and hard) set by `prlimit` before the binary runs; inherited when None.
    file_limit: Option<u64>,
}

/// A memory figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn drain_into(mut pipe: impl Read + Send + 'static, sink: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let text =
                        String::from_utf8_lossy(chunk.get(..n).unwrap_or_default()).into_owned();
                    sink.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&text);
                }
            }
        }
    });
}

/// Finds `listening on http://<ip>:<port>` in wheelgate's log.
pub fn parse_listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|line| {
        let rest = line
            .split("listening on http://")
            .nth(1)
            .or_else(|| line.split("listening on https://").nth(1))?;
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
            .unwrap_or(rest.len());
        rest.get(..end)?.parse().ok()
    })
}

impl Wheelgate {
    /// `wheelgate serve --config <config>` in `cwd`, waiting until it logs its address.
    pub fn start(config: &Path, cwd: &Path, log_level: &str) -> Wheelgate {
        Self::start_with_env(config, cwd, log_level, &[])
    }

    /// As `start`, with extra environment variables (the environment is otherwise empty but PATH).
    pub fn start_with_env(
        config: &Path,
        cwd: &Path,
        log_level: &str,
        env: &[(&str, &str)],
    ) -> Wheelgate {
        let launch = Launch {
            config: config.to_owned(),
            cwd: cwd.to_owned(),
            log_level: log_level.to_owned(),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            file_limit: None,
        };
        Self::launch(launch)
    }

    /// As `start`, with the process's file limit (`RLIMIT_NOFILE`, soft and hard) set to `limit`
    /// by `prlimit`, which then runs the binary in its place (same pid).
    pub fn start_with_file_limit(
        config: &Path,
        cwd: &Path,
        log_level: &str,
        limit: u64,
    ) -> Wheelgate {
        Self::launch(Launch {
            config: config.to_owned(),
            cwd: cwd.to_owned(),
            log_level: log_level.to_owned(),
            env: Vec::new(),
            file_limit: Some(limit),
        })
    }

    fn launch(launch: Launch) -> Wheelgate {
        let (child, addr, output) = spawn(&launch);
        Wheelgate {
            child: Some(child),
            addr,
            output,
            earlier_output: String::new(),
            launch,
        }
    }

    /// Starts the process again with the same configuration file, working directory and
    /// environment (so on the same store), after a `stop` or a `kill`. The port is a new one.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "wheelgate is still running: stop or kill it before starting it again"
        );
        let (child, addr, output) = spawn(&self.launch);
        let previous = std::mem::replace(&mut self.output, output);
        self.earlier_output
            .push_str(&previous.lock().unwrap_or_else(|p| p.into_inner()));
        self.earlier_output
            .push_str("\n--- wheelgate restarted ---\n");
        self.child = Some(child);
        self.addr = addr;
    }

    /// A graceful stop (SIGTERM, then the exit) followed by `start_again`.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// The running process's id; panics when it is not running.
    pub fn pid(&self) -> u32 {
        match &self.child {
            Some(child) => child.id(),
            None => panic!("wheelgate is not running, it has no pid"),
        }
    }

    /// SIGKILL, as a crash or an OOM kill would end it, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            panic!("wheelgate was already stopped");
        };
        if let Err(e) = child.kill() {
            panic!("cannot SIGKILL wheelgate ({}): {e}", child.id());
        }
        let _ = child.wait();
    }

    /// Sends SIGHUP, which asks wheelgate to reload its configuration file.
    pub fn hangup(&self) {
        self.signal("HUP");
    }

    /// Sends SIGTERM without waiting for the exit, to watch what a stopping server does.
    pub fn begin_stop(&self) {
        self.signal("TERM");
    }

    fn signal(&self, name: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status();
        assert!(
            matches!(sent, Ok(s) if s.success()),
            "could not send SIG{name} to wheelgate ({pid}): {sent:?}"
        );
    }

    /// The resident set size now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS")
    }

    /// The peak resident set size since the process started (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid());
        let status =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
        parse_status_kib(&status, field)
            .unwrap_or_else(|| panic!("{path} has no {field} line in kB:\n{status}"))
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

    /// Everything wheelgate wrote to stdout and stderr so far (every process of this handle).
    pub fn output(&self) -> String {
        let current = self.output.lock().unwrap_or_else(|p| p.into_inner());
        format!("{}{current}", self.earlier_output)
    }

    /// Sends SIGTERM and waits for the exit; panics with the output if it does not come in time.
    pub fn terminate(mut self) -> ExitStatus {
        self.stop()
    }

    /// As `terminate`, keeping the handle for `start_again`.
    pub fn stop(&mut self) -> ExitStatus {
        self.begin_stop();
        self.wait_exit()
    }

    /// Whether the process is still running (it has not exited, by a signal or by itself).
    pub fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits for the exit that a signal sent earlier asked for, keeping the handle for
    /// `start_again`; panics with the output if it does not come within the stop timeout.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let Some(mut child) = self.child.take() else {
            panic!("wheelgate was already stopped");
        };
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("wheelgate did not exit within {STOP_TIMEOUT:?} of SIGTERM; its output:\n{}", self.output());
                }
            }
        }
    }
}

/// `wheelgate serve --config <config>`, waiting until it logs its address.
fn spawn(launch: &Launch) -> (Child, SocketAddr, Arc<Mutex<String>>) {
    let mut command = match launch.file_limit {
        None => Command::new(binary()),
        Some(limit) => {
            let mut prlimit = Command::new("prlimit");
            prlimit
                .arg(format!("--nofile={limit}:{limit}"))
                .arg("--")
                .arg(binary());
            prlimit
        }
    };
    command
        .arg("serve")
        .arg("--config")
        .arg(&launch.config)
        .current_dir(&launch.cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("WHEELGATE_LOG", &launch.log_level)
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
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
            return (child, addr, output);
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
    run_for(args, cwd, Duration::from_secs(30))
}

/// As `run`, killed after `limit` (for `serve`, which must exit by itself only when it refuses
/// its configuration).
pub fn run_for(args: &[&str], cwd: &Path, limit: Duration) -> ClientRun {
    run_with_env(args, cwd, &[], limit)
}

/// As `run_for`, with `env` added to the environment.
pub fn run_with_env(args: &[&str], cwd: &Path, env: &[(&str, &str)], limit: Duration) -> ClientRun {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("WHEELGATE_LOG", "info")
        .envs(env.iter().copied());
    run_bounded(&mut command, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_line_is_found_among_log_fields() {
        let log = "2026-01-01T00:00:00Z  INFO wheelgate: store opened\n\
                   2026-01-01T00:00:00Z  INFO wheelgate::server: listening on http://127.0.0.1:40123 repositories=1\n";
        assert_eq!(
            parse_listening_addr(log),
            Some("127.0.0.1:40123".parse().expect("addr"))
        );
        assert_eq!(
            parse_listening_addr("listening on http://127.0.0.1:7/"),
            Some("127.0.0.1:7".parse().expect("addr"))
        );
        assert_eq!(parse_listening_addr("starting"), None);
    }

    #[test]
    fn config_paths_are_escaped() {
        let mut config = RemoteConfig::new(
            PathBuf::from("/tmp/a \"b\"/store"),
            "http://127.0.0.1:1/simple/".into(),
            PathBuf::from("/tmp/t"),
            vec!["127.0.0.1:2".into()],
        );
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert_eq!(parsed["store"]["path"].as_str(), Some("/tmp/a \"b\"/store"));
        assert_eq!(
            parsed["repository"][0]["auth"]["auth_hosts"][0].as_str(),
            Some("127.0.0.1:2")
        );
        assert_eq!(parsed["repository"][0]["index_ttl"].as_str(), Some("10m"));
        assert_eq!(parsed["repository"][0]["offline"].as_bool(), Some(false));
        assert!(
            parsed["store"].get("max_size").is_none()
                && parsed["repository"][0].get("negative_ttl").is_none()
        );

        config.index_ttl = "1s".into();
        config.offline = true;
        config.max_size = Some("1GiB".into());
        config.negative_ttl = Some("5s".into());
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert_eq!(parsed["repository"][0]["index_ttl"].as_str(), Some("1s"));
        assert_eq!(parsed["repository"][0]["offline"].as_bool(), Some(true));
        assert_eq!(parsed["store"]["max_size"].as_str(), Some("1GiB"));
        assert_eq!(parsed["repository"][0]["negative_ttl"].as_str(), Some("5s"));

        config.extra_toml = rule_toml(
            "no-\"2\"",
            "DENY",
            Some("wgfx-kappa"),
            Some("pkg.version.id == '2.0'"),
        );
        config
            .extra_toml
            .push_str(&rule_toml("wide", "ALLOW", None, None));
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        let rules = parsed["rule"].as_array().expect("two [[rule]] tables");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["name"].as_str(), Some("no-\"2\""));
        assert_eq!(
            rules[0]["condition"].as_str(),
            Some("pkg.version.id == '2.0'")
        );
        assert_eq!(rules[0]["repository"].as_str(), Some("pypi"));
        assert!(rules[1].get("package").is_none() && rules[1].get("condition").is_none());
        assert_eq!(rules[1]["action"].as_str(), Some("ALLOW"));
    }

    /// A remote repository without `auth_hosts`, as the table tests start from.
    fn plain_config() -> RemoteConfig {
        RemoteConfig::new(
            PathBuf::from("/tmp/store"),
            "http://127.0.0.1:1/simple/".into(),
            PathBuf::from("/tmp/t"),
            Vec::new(),
        )
    }

    #[test]
    fn hosted_repositories_users_and_access_go_in_their_tables() {
        let mut config = plain_config();
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert!(parsed.get("access").is_none() && parsed.get("user").is_none());
        assert!(parsed["server"].get("max_upload_size").is_none());
        assert_eq!(parsed["repository"].as_array().map(Vec::len), Some(1));

        config.anonymous_read = Some(false);
        config.max_upload_size = Some("1MiB".into());
        config.hosted = vec!["internal".into(), "staging".into()];
        config.users = vec![
            UserConfig {
                name: "ci-\"publisher\"".into(),
                secret: UserSecret::PasswordHash(
                    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                ),
                roles: vec!["read".into(), "publish".into()],
                repositories: None,
            },
            UserConfig::with_token_file("bot", Path::new("/run/token"), &["read"])
                .limited_to(&["internal"]),
        ];
        config.extra_toml = rule_toml("wide", "ALLOW", None, None);
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert_eq!(parsed["access"]["anonymous_read"].as_bool(), Some(false));
        assert_eq!(parsed["server"]["max_upload_size"].as_str(), Some("1MiB"));
        assert_eq!(parsed["server"]["listen"].as_str(), Some("127.0.0.1:0"));
        let repositories = parsed["repository"].as_array().expect("repositories");
        assert_eq!(repositories.len(), 3);
        assert_eq!(
            repositories[0]["auth"]["username"].as_str(),
            Some("__token__")
        );
        for (repository, name) in repositories[1..].iter().zip(["internal", "staging"]) {
            assert_eq!(repository["name"].as_str(), Some(name));
            assert_eq!(repository["type"].as_str(), Some("hosted"));
            assert!(repository.get("auth").is_none() && repository.get("url").is_none());
        }
        let users = parsed["user"].as_array().expect("two [[user]] tables");
        assert_eq!(users.len(), 2);
        assert_eq!(users[0]["name"].as_str(), Some("ci-\"publisher\""));
        assert_eq!(
            users[0]["password_hash"].as_str(),
            Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA")
        );
        assert_eq!(
            users[0]["roles"],
            toml::Value::from(vec!["read", "publish"])
        );
        assert!(users[0].get("repositories").is_none() && users[0].get("token_file").is_none());
        assert_eq!(users[1]["token_file"].as_str(), Some("/run/token"));
        assert_eq!(
            users[1]["repositories"],
            toml::Value::from(vec!["internal"])
        );
        assert_eq!(parsed["rule"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn groups_and_more_remotes_follow_the_hosted_repositories() {
        let mut config = plain_config();
        config.hosted = vec!["internal".into()];
        config.extra_repositories = bare_remote_toml("mirror", "http://127.0.0.1:2/simple/");
        config.groups = vec![
            GroupConfig::new("all", &["internal", "pypi"]),
            GroupConfig::new("outer \"x\"", &["all", "mirror"]),
        ];
        config.extra_toml = rule_toml_in("all", "no-x", "DENY", Some("wgfx-x"), None);
        config.default_repository = "all".into();
        let parsed: toml::Value = toml::from_str(&config.to_toml()).expect("valid TOML");
        assert_eq!(parsed["server"]["default_repository"].as_str(), Some("all"));
        let repositories = parsed["repository"].as_array().expect("repositories");
        let shape: Vec<(Option<&str>, Option<&str>)> = repositories
            .iter()
            .map(|r| (r["name"].as_str(), r["type"].as_str()))
            .collect();
        assert_eq!(
            shape,
            [
                (Some("pypi"), Some("remote")),
                (Some("internal"), Some("hosted")),
                (Some("mirror"), Some("remote")),
                (Some("all"), Some("group")),
                (Some("outer \"x\""), Some("group")),
            ]
        );
        assert_eq!(
            repositories[2]["url"].as_str(),
            Some("http://127.0.0.1:2/simple/")
        );
        assert!(repositories[2].get("auth").is_none());
        assert_eq!(
            repositories[3]["members"],
            toml::Value::from(vec!["internal", "pypi"])
        );
        assert_eq!(
            repositories[4]["members"],
            toml::Value::from(vec!["all", "mirror"])
        );
        assert_eq!(parsed["rule"][0]["repository"].as_str(), Some("all"));
    }

    #[test]
    fn hash_password_output_is_one_phc_line() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
        assert_eq!(
            parse_password_hash(&format!("{phc}\n")).as_deref(),
            Some(phc)
        );
        assert_eq!(
            parse_password_hash(&format!("\n{phc}\n\n")).as_deref(),
            Some(phc)
        );
        assert_eq!(
            parse_password_hash(&format!("{phc}\n{phc}\n")),
            None,
            "two lines"
        );
        assert_eq!(
            parse_password_hash("$2b$12$bcryptbcryptbcrypt\n"),
            None,
            "not argon2id"
        );
        assert_eq!(parse_password_hash(""), None);
    }

    #[test]
    fn memory_figures_are_read_from_proc_status() {
        let status =
            "Name:\twheelgate\nVmPeak:\t  123456 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30720 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(40960));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(30720));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
        assert_eq!(
            parse_status_kib("VmRSS:\t12 MB\n", "VmRSS"),
            None,
            "only kB is understood"
        );
        let own = std::fs::read_to_string("/proc/self/status").expect("procfs");
        assert!(parse_status_kib(&own, "VmHWM").is_some_and(|peak| peak > 0));
    }
}
