//! The test harness: fixtures, a fixture upstream, the Python clients, the wheelgate process and
//! small HTTP clients, plus `TestBed`, which wires one upstream to one wheelgate. A second, fault
//! injecting upstream (`faulty`) comes with its own bed for the hardening tests. The shared store's
//! tests run against a real S3 server (`s3`: Ceph's radosgw), one per test process.
//!
//! Every test builds its own bed (own ports, own store, own token) so that tests stay independent
//! while cargo runs them on parallel threads.

pub mod certs;
pub mod clients;
pub mod crafted;
pub mod faulty;
pub mod fixtures;
pub mod generated;
pub mod http;
pub mod s3;
pub mod tls_front;
pub mod uploads;
pub mod upstream;
pub mod wheelgate;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use self::uploads::UploadForm;
use self::upstream::{Mode, Upstream};
use self::wheelgate::{RemoteConfig, UserConfig, Wheelgate};

/// A fresh random token, distinctive enough to be searched for in captured output.
pub fn new_token() -> String {
    format!("wgfx-secret-{:032x}", rand::random::<u128>())
}

/// A client's credentials for wheelgate's own users (SPEC §8): a name and a fresh random password,
/// distinctive enough to be searched for in captured output.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub password: String,
}

impl Account {
    pub fn new(name: &str) -> Account {
        Account {
            name: name.to_owned(),
            password: new_token(),
        }
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        http::basic_auth(&self.name, &self.password)
    }

    /// The `[[user]]` entry for this account with `roles`, its password hashed by the binary.
    pub fn user(&self, roles: &[&str]) -> UserConfig {
        UserConfig::with_password(&self.name, &self.password, roles)
    }

    /// The same name with another password (a wrong one, for this user).
    pub fn with_wrong_password(&self) -> Account {
        Account::new(&self.name)
    }
}

/// How the token file is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenLayout {
    /// A plain file, rotated by rewriting it in place.
    File,
    /// A Kubernetes secret volume: `..<timestamp>/token`, `..data -> ..<timestamp>`,
    /// `token -> ..data/token`; rotated by swapping the `..data` symlink.
    KubernetesSecret,
}

/// The upstream token on disk, in one of the layouts operators use.
pub struct SecretFile {
    layout: TokenLayout,
    /// The directory holding the file (or the Kubernetes secret directory).
    dir: PathBuf,
    generation: u32,
}

impl SecretFile {
    /// Writes `token` under `dir` in `layout`.
    pub fn create(dir: &Path, layout: TokenLayout, token: &str) -> SecretFile {
        let secret = SecretFile {
            layout,
            dir: dir.join("secret"),
            generation: 0,
        };
        create_dir(&secret.dir);
        match layout {
            TokenLayout::File => write_file(&secret.path(), &format!("{token}\n")),
            TokenLayout::KubernetesSecret => {
                let first = secret.dir.join("..2026_a");
                create_dir(&first);
                write_file(&first.join("token"), &format!("{token}\n"));
                symlink(Path::new("..2026_a"), &secret.dir.join("..data"));
                symlink(Path::new("..data/token"), &secret.path());
            }
        }
        secret
    }

    /// The path the configuration's `password_file` names (a symlink for Kubernetes).
    pub fn path(&self) -> PathBuf {
        self.dir.join("token")
    }

    /// Replaces the secret the way this layout is rotated in production.
    pub fn rotate(&mut self, token: &str) {
        self.generation += 1;
        match self.layout {
            // In place: same inode, new content, as an operator's `echo new > token` does.
            TokenLayout::File => write_file(&self.path(), &format!("{token}\n")),
            TokenLayout::KubernetesSecret => {
                let version = format!("..2026_b{}", self.generation);
                create_dir(&self.dir.join(&version));
                write_file(
                    &self.dir.join(&version).join("token"),
                    &format!("{token}\n"),
                );
                let staging = self.dir.join("..data_tmp");
                symlink(Path::new(&version), &staging);
                std::fs::rename(&staging, self.dir.join("..data")).unwrap_or_else(|e| {
                    panic!(
                        "cannot swap the ..data symlink in {}: {e}",
                        self.dir.display()
                    )
                });
                // The kubelet removes the previous version once the swap is done.
                let previous = if self.generation == 1 {
                    "..2026_a".to_owned()
                } else {
                    format!("..2026_b{}", self.generation - 1)
                };
                let _ = std::fs::remove_dir_all(self.dir.join(previous));
            }
        }
    }
}

/// One fixture upstream, one wheelgate in front of it, and their temporary directory.
pub struct TestBed {
    pub upstream: Upstream,
    pub wheelgate: Wheelgate,
    pub dir: tempfile::TempDir,
    secret: SecretFile,
    config: RemoteConfig,
}

impl TestBed {
    /// An upstream in `mode` and a wheelgate reading the token from a plain file.
    pub fn start(mode: Mode) -> TestBed {
        Self::start_with(mode, TokenLayout::File, "info")
    }

    pub fn start_with(mode: Mode, layout: TokenLayout, log_level: &str) -> TestBed {
        Self::start_configured(mode, layout, log_level, |_| {})
    }

    /// As `start_with`, with the configuration adjusted by `adjust` before wheelgate starts.
    pub fn start_configured(
        mode: Mode,
        layout: TokenLayout,
        log_level: &str,
        adjust: impl FnOnce(&mut RemoteConfig),
    ) -> TestBed {
        let token = new_token();
        let upstream = Upstream::start(mode, &token);
        let dir =
            tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create the test directory: {e}"));
        let secret = SecretFile::create(dir.path(), layout, &token);
        let mut config = RemoteConfig::new(
            dir.path().join("store"),
            upstream.index_url(),
            secret.path(),
            vec![upstream.third_addr().to_string()],
        );
        adjust(&mut config);
        let config_path = dir.path().join("proxy.toml");
        write_file(&config_path, &config.to_toml());
        let wheelgate = Wheelgate::start(&config_path, dir.path(), log_level);
        TestBed {
            upstream,
            wheelgate,
            dir,
            secret,
            config,
        }
    }

    /// Stops wheelgate gracefully, rewrites its configuration with `adjust`, and starts it again
    /// on the same store. The file is only rewritten while wheelgate is down, so the change is a
    /// restart, never a live reload.
    pub fn restart_with(&mut self, adjust: impl FnOnce(&mut RemoteConfig)) {
        self.wheelgate.stop();
        adjust(&mut self.config);
        write_file(&self.dir.path().join("proxy.toml"), &self.config.to_toml());
        self.wheelgate.start_again();
    }

    /// A JSON-upstream bed with the hosted repository `internal` beside the remote `pypi`, its
    /// configuration adjusted by `adjust` (users, `[access]`, `max_upload_size`, more hosted
    /// repositories).
    pub fn start_hosted(adjust: impl FnOnce(&mut RemoteConfig)) -> TestBed {
        Self::start_configured(Mode::Json, TokenLayout::File, "info", |config| {
            config.hosted = vec!["internal".to_owned()];
            adjust(config)
        })
    }

    /// Posts `form` to `/<repo>/` (the legacy upload API) with `account`'s credentials, if any,
    /// and returns the answer with its reason phrase.
    pub fn upload(
        &self,
        repo: &str,
        form: &UploadForm,
        account: Option<&Account>,
    ) -> http::RawResponse {
        self.post_form(&format!("/{repo}/"), form, account)
    }

    /// As `upload`, to any path (such as `/<repo>/legacy/`).
    pub fn post_form(
        &self,
        path: &str,
        form: &UploadForm,
        account: Option<&Account>,
    ) -> http::RawResponse {
        let multipart = form.multipart();
        let content_type = multipart.content_type();
        let authorization = account.map(Account::authorization);
        let mut headers = vec![("content-type", content_type.as_str())];
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        http::raw_request(
            self.wheelgate.addr(),
            "POST",
            path.as_bytes(),
            &headers,
            &multipart.body(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "POST {path}: {e}\nwheelgate's output:\n{}",
                self.wheelgate.output()
            )
        })
    }

    /// `GET <path>` written by hand (so the reason phrase is seen), with `account`'s credentials
    /// if any.
    pub fn raw_get_as(&self, path: &str, account: Option<&Account>) -> http::RawResponse {
        let authorization = account.map(Account::authorization);
        let mut headers = Vec::new();
        if let Some(value) = &authorization {
            headers.push(("authorization", value.as_str()));
        }
        http::raw_request(self.wheelgate.addr(), "GET", path.as_bytes(), &headers, &[])
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `http://<name>:<password>@<wheelgate><path>`: an index URL carrying credentials, as pip
    /// and uv take them.
    pub fn url_as(&self, account: &Account, path: &str) -> String {
        format!(
            "http://{}:{}@{}{path}",
            account.name,
            account.password,
            self.wheelgate.addr()
        )
    }

    /// A JSON-upstream bed whose configuration ends with `rules` (raw `[[rule]]` TOML).
    pub fn start_with_rules(mode: Mode, rules: &str) -> TestBed {
        Self::start_configured(mode, TokenLayout::File, "info", |config| {
            config.extra_toml = rules.to_owned()
        })
    }

    /// The configuration file wheelgate was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    /// Rewrites the configuration with `adjust` while wheelgate keeps running (a live edit, picked
    /// up by its file watch or a SIGHUP). The new file is renamed into place, as editors and
    /// Kubernetes ConfigMap updates do, so that wheelgate never reads a half-written file.
    pub fn edit_config(&mut self, adjust: impl FnOnce(&mut RemoteConfig)) {
        adjust(&mut self.config);
        let staging = self.dir.path().join("proxy.toml.new");
        write_file(&staging, &self.config.to_toml());
        std::fs::rename(&staging, self.config_path()).unwrap_or_else(|e| {
            panic!(
                "cannot move {} over {}: {e}",
                staging.display(),
                self.config_path().display()
            )
        });
    }

    /// The wheelgate URL of `filename`, as its project's JSON page links it (the page is fetched,
    /// which is also what lets wheelgate know where the file lives upstream).
    pub fn file_url(&self, project: &str, filename: &str) -> String {
        file_url_on(&self.wheelgate, project, filename)
    }

    /// The store directory (`[store] path`).
    pub fn store(&self) -> PathBuf {
        self.config.store.clone()
    }

    /// Where the store keeps the body whose sha256 is `sha256`:
    /// `<store>/blobs/sha256/<first two hex>/<all hex>`.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        blob_path_in(&self.store(), sha256)
    }

    /// The regular files under `<store>/<sub>` (none when the directory does not exist).
    pub fn store_files(&self, sub: &str) -> Vec<PathBuf> {
        files_under(&self.store().join(sub))
    }

    /// Waits up to `limit` for `<store>/tmp` to hold no file (discarded temporary files may go
    /// asynchronously); panics naming `what` and what it still holds.
    pub fn assert_tmp_empties(&self, limit: Duration, what: &str) {
        assert!(
            wait_until(limit, || self.store_files("tmp").is_empty()),
            "{what}: tmp/ holds {:?}",
            self.store_files("tmp")
        );
    }

    /// Panics naming `what` if the upstream was ever asked for a path that holds `part`.
    pub fn assert_upstream_never_asked(&self, part: &str, what: &str) {
        let asked: Vec<_> = self
            .upstream
            .requests()
            .into_iter()
            .filter(|r| r.path.contains(part))
            .collect();
        assert!(asked.is_empty(), "{what}, yet the upstream saw {asked:?}");
    }

    /// `http://<wheelgate><path>`.
    pub fn url(&self, path: &str) -> String {
        self.wheelgate.url(path)
    }

    /// A fresh directory for a client's `--target`.
    pub fn target_dir(&self, name: &str) -> PathBuf {
        let path = self.dir.path().join("targets").join(name);
        create_dir(&path);
        path
    }

    /// Rotates the token on both sides: the secret on disk is replaced the way its layout is
    /// rotated in production, and the upstream expects the new one. Returns the new token.
    pub fn rotate_token(&mut self) -> String {
        let token = new_token();
        self.secret.rotate(&token);
        self.upstream.set_token(&token);
        token
    }
}

/// Writes `<dir>/proxy.toml` for a wheelgate that is only checked or refuses to start, adjusted by
/// `adjust`: the upstream is a closed port and the token file exists. Returns its path.
pub fn standalone_config(dir: &Path, adjust: impl FnOnce(&mut RemoteConfig)) -> PathBuf {
    let token = dir.join("token");
    write_file(&token, "wgfx-unused-token\n");
    let mut config = RemoteConfig::new(
        dir.join("store"),
        "http://127.0.0.1:9/simple/".into(),
        token,
        Vec::new(),
    );
    adjust(&mut config);
    let path = dir.join("proxy.toml");
    write_file(&path, &config.to_toml());
    path
}

/// The URL on `wheelgate` of `filename`, as its project's JSON page links it (the page is
/// fetched, which is also what lets wheelgate know where the file lives upstream).
pub fn file_url_on(wheelgate: &Wheelgate, project: &str, filename: &str) -> String {
    let page_url = wheelgate.url(&format!("/simple/{project}/"));
    let page = http::get(&page_url, &[("accept", upstream::JSON_MEDIA_TYPE)]);
    page.expect_ok(&page_url);
    link_in(&page, &page_url, filename)
}

/// Where a store keeps the body whose sha256 is `sha256`:
/// `<store>/blobs/sha256/<first two hex>/<all hex>`.
pub fn blob_path_in(store: &Path, sha256: &str) -> PathBuf {
    store
        .join("blobs")
        .join("sha256")
        .join(sha256.get(..2).unwrap_or(sha256))
        .join(sha256)
}

/// Every regular file below `dir`, recursively; an absent directory holds none.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => found.push(entry.path()),
                _ => {}
            }
        }
    }
    found.sort();
    found
}

/// Polls `condition` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn write_file(path: &Path, content: &str) {
    std::fs::write(path, content)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

pub fn create_dir(path: &Path) {
    std::fs::create_dir_all(path)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap_or_else(|e| {
        panic!(
            "cannot link {} -> {}: {e}",
            link.display(),
            target.display()
        )
    });
}

/// Resolves a link from a page against the page's URL, as a client does.
/// The href of `filename` in a JSON page, resolved against the page's URL.
pub fn link_in(page: &http::HttpResponse, page_url: &str, filename: &str) -> String {
    let json = page.json();
    let href = json["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["filename"] == filename)
        .and_then(|f| f["url"].as_str())
        .unwrap_or_else(|| panic!("{page_url} does not list {filename}: {json}"));
    resolve(page_url, href).to_string()
}

pub fn resolve(page_url: &str, href: &str) -> url::Url {
    let base =
        url::Url::parse(page_url).unwrap_or_else(|e| panic!("bad page URL {page_url:?}: {e}"));
    base.join(href)
        .unwrap_or_else(|e| panic!("link {href:?} on {page_url} does not resolve: {e}"))
}

/// Panics if any of `secrets` occurs in `haystack`, naming where it was found.
pub fn assert_no_secret(haystack: &str, secrets: &[String], place: &str) {
    for secret in secrets {
        assert!(
            !haystack.contains(secret.as_str()),
            "a secret ({}…) leaked into {place}",
            secret.get(..12).unwrap_or_default()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_listed_recursively() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(files_under(&dir.path().join("absent")).is_empty());
        create_dir(&dir.path().join("a/b"));
        write_file(&dir.path().join("a/b/one"), "1");
        write_file(&dir.path().join("two"), "2");
        let found: Vec<_> = files_under(dir.path())
            .iter()
            .map(|p| p.strip_prefix(dir.path()).expect("below").to_owned())
            .collect();
        assert_eq!(found, [PathBuf::from("a/b/one"), PathBuf::from("two")]);
        assert!(wait_until(Duration::from_secs(1), || true));
        assert!(!wait_until(Duration::from_millis(100), || false));
    }

    #[test]
    fn secrets_rotate_in_both_layouts() {
        for layout in [TokenLayout::File, TokenLayout::KubernetesSecret] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut secret = SecretFile::create(dir.path(), layout, "first");
            let read =
                |s: &SecretFile| std::fs::read_to_string(s.path()).expect("readable through links");
            assert_eq!(read(&secret), "first\n");
            let inode = |s: &SecretFile| std::fs::metadata(s.path()).expect("stat").ino();
            for token in ["second", "third"] {
                // Compared rotation by rotation: a freed inode may be reused two swaps later.
                let before = inode(&secret);
                secret.rotate(token);
                assert_eq!(read(&secret), format!("{token}\n"), "{layout:?}");
                let same_inode = inode(&secret) == before;
                assert_eq!(
                    same_inode,
                    layout == TokenLayout::File,
                    "{layout:?}: in place keeps the inode, a swap changes it"
                );
            }
            if layout == TokenLayout::KubernetesSecret {
                assert!(std::fs::symlink_metadata(secret.path())
                    .expect("lstat")
                    .file_type()
                    .is_symlink());
                assert!(
                    !dir.path().join("secret/..2026_a").exists(),
                    "old versions are removed"
                );
            }
        }
    }
}
