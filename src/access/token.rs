//! The credential of a token user: a token in a file (a Kubernetes secret, typically), compared
//! with the password a client sends.
//!
//! The file is read as the upstream token is ([`SecretFile`]: re-read when it changes, so a
//! rotated secret takes effect without a reload). Tokens are long and random, so unlike passwords
//! they are compared directly, with no slow hash and no cache; the comparison is constant-time
//! so that response times do not reveal how much of a guess was right.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::UserName;
use crate::secret::{Secret, SecretFile};

/// The token of one user.
#[derive(Debug)]
pub(crate) struct TokenCredential {
    file: SecretFile,
    /// Set once an unreadable file has been logged, so that a client retrying in a loop does not
    /// fill the log; cleared when the file can be read again.
    warned: AtomicBool,
}

/// The file could not be read: the user cannot log in until it can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenUnavailable;

impl TokenCredential {
    pub(crate) fn new(path: PathBuf) -> TokenCredential {
        TokenCredential {
            file: SecretFile::new(path),
            warned: AtomicBool::new(false),
        }
    }

    /// Whether `presented` is the token in the file now. An unreadable file is logged (once until
    /// it is readable again) naming `user` and the path, never the content.
    pub(crate) fn matches(
        &self,
        user: &UserName,
        presented: &Secret,
    ) -> Result<bool, TokenUnavailable> {
        match self.file.current() {
            Ok(token) => {
                self.warned.store(false, Ordering::Relaxed);
                // Equal-length digests make the comparison independent of the token's length.
                let expected = Sha256::digest(token.expose().as_bytes());
                let given = Sha256::digest(presented.expose().as_bytes());
                Ok(expected.ct_eq(&given).into())
            }
            Err(error) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        user = %user,
                        "user {user} cannot log in until its token file can be read: {error}"
                    );
                }
                Err(TokenUnavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserName {
        UserName::parse("deploy").unwrap()
    }

    fn secret(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }

    #[test]
    fn compares_with_the_file_as_it_is_now() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-1\n").unwrap();
        let token = TokenCredential::new(path.clone());
        assert_eq!(token.matches(&user(), &secret("tok-1")), Ok(true));
        assert_eq!(token.matches(&user(), &secret("tok-")), Ok(false));
        assert_eq!(token.matches(&user(), &secret("tok-1\n")), Ok(false));
        std::fs::write(&path, "tok-2-rotated").unwrap();
        assert_eq!(token.matches(&user(), &secret("tok-1")), Ok(false));
        assert_eq!(token.matches(&user(), &secret("tok-2-rotated")), Ok(true));
    }

    #[test]
    fn an_unreadable_file_is_unavailable_until_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let token = TokenCredential::new(path.clone());
        assert_eq!(token.matches(&user(), &secret("x")), Err(TokenUnavailable));
        assert!(token.warned.load(Ordering::Relaxed));
        assert_eq!(token.matches(&user(), &secret("x")), Err(TokenUnavailable));
        std::fs::write(&path, "x").unwrap();
        assert_eq!(token.matches(&user(), &secret("x")), Ok(true));
        assert!(
            !token.warned.load(Ordering::Relaxed),
            "warns again next time"
        );
    }
}
