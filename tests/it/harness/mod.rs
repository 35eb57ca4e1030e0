//! The test harness: fixtures, a fixture upstream, the Python clients, the wheelgate process and
//! small HTTP clients, plus `TestBed`, which wires one upstream to one wheelgate.
//!
//! Every test builds its own bed (own ports, own store, own token) so that tests stay independent
//! while cargo runs them on parallel threads.

pub mod clients;
pub mod fixtures;
pub mod http;
pub mod upstream;
pub mod wheelgate;

use std::path::{Path, PathBuf};

use self::upstream::{Mode, Upstream};
use self::wheelgate::{RemoteConfig, Wheelgate};

/// A fresh random token, distinctive enough to be searched for in captured output.
pub fn new_token() -> String {
    format!("wgfx-secret-{:032x}", rand::random::<u128>())
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
        let secret = SecretFile { layout, dir: dir.join("secret"), generation: 0 };
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
                write_file(&self.dir.join(&version).join("token"), &format!("{token}\n"));
                let staging = self.dir.join("..data_tmp");
                symlink(Path::new(&version), &staging);
                std::fs::rename(&staging, self.dir.join("..data"))
                    .unwrap_or_else(|e| panic!("cannot swap the ..data symlink in {}: {e}", self.dir.display()));
                // The kubelet removes the previous version once the swap is done.
                let previous = if self.generation == 1 { "..2026_a".to_owned() } else { format!("..2026_b{}", self.generation - 1) };
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
}

impl TestBed {
    /// An upstream in `mode` and a wheelgate reading the token from a plain file.
    pub fn start(mode: Mode) -> TestBed {
        Self::start_with(mode, TokenLayout::File, "info")
    }

    pub fn start_with(mode: Mode, layout: TokenLayout, log_level: &str) -> TestBed {
        let token = new_token();
        let upstream = Upstream::start(mode, &token);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("cannot create the test directory: {e}"));
        let secret = SecretFile::create(dir.path(), layout, &token);
        let config = RemoteConfig {
            store: dir.path().join("store"),
            upstream_url: upstream.index_url(),
            password_file: secret.path(),
            auth_hosts: vec![upstream.third_addr().to_string()],
        };
        let config_path = dir.path().join("proxy.toml");
        write_file(&config_path, &config.to_toml());
        let wheelgate = Wheelgate::start(&config_path, dir.path(), log_level);
        TestBed { upstream, wheelgate, dir, secret }
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

pub fn write_file(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

pub fn create_dir(path: &Path) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("cannot link {} -> {}: {e}", link.display(), target.display()));
}

/// Resolves a link from a page against the page's URL, as a client does.
pub fn resolve(page_url: &str, href: &str) -> url::Url {
    let base = url::Url::parse(page_url).unwrap_or_else(|e| panic!("bad page URL {page_url:?}: {e}"));
    base.join(href).unwrap_or_else(|e| panic!("link {href:?} on {page_url} does not resolve: {e}"))
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
    fn secrets_rotate_in_both_layouts() {
        for layout in [TokenLayout::File, TokenLayout::KubernetesSecret] {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut secret = SecretFile::create(dir.path(), layout, "first");
            let read = |s: &SecretFile| std::fs::read_to_string(s.path()).expect("readable through links");
            assert_eq!(read(&secret), "first\n");
            let inode = |s: &SecretFile| std::fs::metadata(s.path()).expect("stat").ino();
            for token in ["second", "third"] {
                // Compared rotation by rotation: a freed inode may be reused two swaps later.
                let before = inode(&secret);
                secret.rotate(token);
                assert_eq!(read(&secret), format!("{token}\n"), "{layout:?}");
                let same_inode = inode(&secret) == before;
                assert_eq!(same_inode, layout == TokenLayout::File, "{layout:?}: in place keeps the inode, a swap changes it");
            }
            if layout == TokenLayout::KubernetesSecret {
                assert!(std::fs::symlink_metadata(secret.path()).expect("lstat").file_type().is_symlink());
                assert!(!dir.path().join("secret/..2026_a").exists(), "old versions are removed");
            }
        }
    }
}
