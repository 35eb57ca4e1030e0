//! A secret read from a file that may be rotated under our feet: the upstream token
//! (`password_file` of `[repository.auth]`) and the tokens of client users (`token_file` of
//! `[[user]]`).
//!
//! Kubernetes mounts a secret as `token -> ..data/token` with `..data -> ..2026_a`, and rotates it
//! by creating `..2026_b` and renaming a new `..data` symlink over the old one. A watch on the file
//! misses that swap, and a token cached forever would need a restart after every rotation. So
//! each time the secret is needed, [`SecretFile::current`] stats the path *through* the symlinks
//! and re-reads the file when the device, inode, modification time or length moved. A stat costs
//! microseconds, which is nothing next to an upstream round trip or a client's request.
//!
//! The token itself lives in [`Secret`], whose `Debug` and `Display` are redacted, so that no log
//! line, error message or metric label can show it by accident.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A file larger than this is certainly not a token (a mis-pointed `password_file` or
/// `token_file`), and reading it whole on every request would be wasteful.
const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// A credential whose text never appears in `Debug` or `Display` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential. Callers that parse it from a file should trim it first.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The credential itself, for building the one header that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Why the secret file could not be used. Messages name the path and never the content; they are
/// written to be embedded after "cannot read … from " (the caller says whose secret it is).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The file (or a symlink on the way to it) is missing or unreadable.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The configured `password_file` or `token_file`.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file holds nothing but whitespace.
    #[error("{}: the file is empty", path.display())]
    Empty {
        /// The configured `password_file` or `token_file`.
        path: PathBuf,
    },
    /// The file is not UTF-8 text, so it cannot be a token.
    #[error("{}: the file is not UTF-8 text", path.display())]
    NotText {
        /// The configured `password_file` or `token_file`.
        path: PathBuf,
    },
    /// The file is too large to be a token.
    #[error("{}: the file is larger than {max} bytes, which is not a token", path.display())]
    TooLarge {
        /// The configured `password_file` or `token_file`.
        path: PathBuf,
        /// The largest size accepted.
        max: u64,
    },
}

impl SecretError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            SecretError::Unreadable { path, .. }
            | SecretError::Empty { path }
            | SecretError::NotText { path }
            | SecretError::TooLarge { path, .. } => path,
        }
    }
}

/// What identifies one version of the file: a rename of a new file over the old one changes the
/// inode, an in-place rewrite changes the mtime (nanoseconds) or the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    device: u64,
    inode: u64,
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(meta: &std::fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let (device, inode) = {
            use std::os::unix::fs::MetadataExt;
            (meta.dev(), meta.ino())
        };
        // Without inode numbers a rename over the file is still caught by mtime and length.
        #[cfg(not(unix))]
        let (device, inode) = (0, 0);
        FileStamp {
            device,
            inode,
            modified: meta.modified().ok(),
            len: meta.len(),
        }
    }
}

struct Cached {
    stamp: FileStamp,
    secret: Arc<Secret>,
}

/// A `password_file` or `token_file`, re-read whenever it changes.
///
/// Cheap to share behind an `Arc`; concurrent callers serialise on a mutex held for one `stat`
/// (and, after a rotation, one small read).
pub struct SecretFile {
    path: PathBuf,
    cached: Mutex<Option<Cached>>,
}

impl fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretFile {
    /// A secret file at `path`. Nothing is read until [`SecretFile::current`] is called, so a
    /// secret mounted after start-up is picked up by the first request that needs it.
    pub fn new(path: PathBuf) -> SecretFile {
        SecretFile {
            path,
            cached: Mutex::new(None),
        }
    }

    /// The configured path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current secret: the cached one if the file has not changed since it was read, the
    /// file's new content otherwise.
    pub fn current(&self) -> Result<Arc<Secret>, SecretError> {
        // A poisoned lock only means another thread panicked between two plain assignments; the
        // cache is still either empty or a complete entry, so it is safe to keep using it.
        let mut cached = crate::lock(&self.cached);
        let now = std::fs::metadata(&self.path).map_err(|source| self.unreadable(source))?;
        if let Some(entry) = cached.as_ref() {
            if entry.stamp == FileStamp::of(&now) {
                return Ok(Arc::clone(&entry.secret));
            }
        }
        let fresh = self.read()?;
        let secret = Arc::clone(&fresh.secret);
        *cached = Some(fresh);
        Ok(secret)
    }

    /// Reads the file and stamps it with the metadata of the very file that was opened, so the
    /// stamp always describes the content we hold: if the file is swapped between our `open` and
    /// the next request's `stat`, the stamps differ and the new file is read then.
    fn read(&self) -> Result<Cached, SecretError> {
        let file = std::fs::File::open(&self.path).map_err(|source| self.unreadable(source))?;
        let meta = file.metadata().map_err(|source| self.unreadable(source))?;
        if meta.len() > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge {
                path: self.path.clone(),
                max: MAX_SECRET_BYTES,
            });
        }
        let mut raw = Vec::new();
        // `take` guards against a file that grows between the stat and the read.
        file.take(MAX_SECRET_BYTES + 1)
            .read_to_end(&mut raw)
            .map_err(|source| self.unreadable(source))?;
        if raw.len() as u64 > MAX_SECRET_BYTES {
            return Err(SecretError::TooLarge {
                path: self.path.clone(),
                max: MAX_SECRET_BYTES,
            });
        }
        let text = String::from_utf8(raw).map_err(|_| SecretError::NotText {
            path: self.path.clone(),
        })?;
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(SecretError::Empty {
                path: self.path.clone(),
            });
        }
        Ok(Cached {
            stamp: FileStamp::of(&meta),
            secret: Arc::new(Secret::new(trimmed.to_owned())),
        })
    }

    fn unreadable(&self, source: std::io::Error) -> SecretError {
        SecretError::Unreadable {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, content: &str) {
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn trims_surrounding_whitespace() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "  pypi-AgEI\n\n");
        let file = SecretFile::new(path);
        assert_eq!(file.current().unwrap().expose(), "pypi-AgEI");
    }

    #[test]
    fn in_place_rewrite_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "first-token");
        let file = SecretFile::new(path.clone());
        assert_eq!(file.current().unwrap().expose(), "first-token");
        write(&path, "second-longer-token");
        assert_eq!(file.current().unwrap().expose(), "second-longer-token");
        // Same length and same inode: only the mtime tells the versions apart. The kernel stamps
        // files from a coarse clock (a few milliseconds), hence the pause.
        std::thread::sleep(std::time::Duration::from_millis(50));
        write(&path, "third--longer-token");
        assert_eq!(file.current().unwrap().expose(), "third--longer-token");
    }

    #[test]
    fn unchanged_file_is_served_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "cached-token");
        let file = SecretFile::new(path);
        let first = file.current().unwrap();
        let second = file.current().unwrap();
        assert!(
            Arc::ptr_eq(&first, &second),
            "an unchanged file must not be re-read"
        );
    }

    #[cfg(unix)]
    #[test]
    fn kubernetes_symlink_swap_is_picked_up() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_a")).unwrap();
        write(&root.join("..2026_a/token"), "token-a");
        symlink("..2026_a", root.join("..data")).unwrap();
        symlink("..data/token", root.join("token")).unwrap();
        let file = SecretFile::new(root.join("token"));
        assert_eq!(file.current().unwrap().expose(), "token-a");

        std::fs::create_dir(root.join("..2026_b")).unwrap();
        write(&root.join("..2026_b/token"), "token-b");
        symlink("..2026_b", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        std::fs::remove_dir_all(root.join("..2026_a")).unwrap();
        assert_eq!(file.current().unwrap().expose(), "token-b");
    }

    #[test]
    fn missing_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent");
        let err = SecretFile::new(path.clone()).current().unwrap_err();
        assert!(matches!(err, SecretError::Unreadable { .. }));
        assert_eq!(err.path(), path);
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn whitespace_only_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, " \n\t ");
        let err = SecretFile::new(path).current().unwrap_err();
        assert!(matches!(err, SecretError::Empty { .. }), "{err:?}");
    }

    #[test]
    fn oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, &"x".repeat(MAX_SECRET_BYTES as usize + 1));
        let err = SecretFile::new(path).current().unwrap_err();
        assert!(matches!(err, SecretError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn debug_and_display_never_show_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        write(&path, "hunter2-very-secret");
        let file = SecretFile::new(path);
        let secret = file.current().unwrap();
        for shown in [
            format!("{file:?}"),
            format!("{secret:?}"),
            format!("{secret}"),
        ] {
            assert!(!shown.contains("hunter2"), "leaked in {shown}");
        }
        assert!(format!("{file:?}").contains("token"));
    }
}
