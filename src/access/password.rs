//! Password hashes: making one for `wheelgate hash-password`, and checking a password against one.
//!
//! Both algorithms a `[[user]]` may use live here, behind two functions, so that the rest of
//! wheelgate never touches a hashing crate: argon2 (RustCrypto's `argon2`, PHC strings, the kind
//! wheelgate makes) and bcrypt (the `bcrypt` crate, for hashes carried over from htpasswd files
//! and other proxies). Both are slow on purpose; [`verify`] blocks for tens of milliseconds and
//! must run off the async workers.

use argon2::password_hash::{PasswordHash as Phc, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::config::{HashScheme, PasswordHash};

/// Why `wheelgate hash-password` could not make a hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashPasswordError {
    #[error("the password is empty; type a password, or pipe one line that holds it")]
    Empty,
    #[error("argon2 could not hash the password: {reason}")]
    Argon2 { reason: String },
}

/// Hashes `password` with argon2id, the argon2 crate's default parameters (m=19 MiB, t=2, p=1:
/// OWASP's recommendation) and a random salt from the operating system, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$…`) that `password_hash` in `[[user]]` accepts.
pub fn hash_password(password: &str) -> Result<String, HashPasswordError> {
    if password.is_empty() {
        return Err(HashPasswordError::Empty);
    }
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| HashPasswordError::Argon2 {
            reason: error.to_string(),
        })
}

/// Why a password could not be checked at all (as opposed to not matching). Cannot happen for a
/// hash that [`PasswordHash::parse`] accepted, short of a bug; the message never shows the hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{algorithm} could not check the password: {reason}")]
pub(crate) struct VerifyError {
    algorithm: &'static str,
    reason: String,
}

/// Whether `password` matches `hash`. Slow on purpose (tens of milliseconds with the default
/// argon2 parameters): call it from a blocking thread. The comparison inside both crates is
/// constant-time.
pub(crate) fn verify(hash: &PasswordHash, password: &[u8]) -> Result<bool, VerifyError> {
    let failed = |reason: String| VerifyError {
        algorithm: hash.algorithm(),
        reason,
    };
    match hash.scheme() {
        HashScheme::Argon2 => {
            let phc = Phc::new(hash.expose()).map_err(|error| failed(error.to_string()))?;
            match Argon2::default().verify_password(password, &phc) {
                Ok(()) => Ok(true),
                Err(argon2::password_hash::Error::Password) => Ok(false),
                Err(error) => Err(failed(error.to_string())),
            }
        }
        // bcrypt reads at most 72 bytes of a password, as every bcrypt implementation does.
        HashScheme::Bcrypt => {
            bcrypt::verify(password, hash.expose()).map_err(|error| failed(error.to_string()))
        }
    }
}

/// Hashes for tests, with parameters cheap enough to run hundreds of times.
#[cfg(test)]
pub(crate) mod cheap {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use argon2::{Algorithm, Argon2, Params, Version};

    /// argon2id with m=8 KiB, t=1, p=1: about a millisecond in a debug build.
    pub(crate) fn argon2id(password: &str) -> String {
        let params = Params::new(8, 1, 1, None).expect("valid test parameters");
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .expect("hashing with valid parameters")
            .to_string()
    }

    /// bcrypt at the lowest cost, 4, written with the `$2y$` prefix htpasswd uses.
    pub(crate) fn bcrypt(password: &str) -> String {
        bcrypt::hash_with_result(password, 4)
            .expect("cost 4 is valid")
            .format_for_version(bcrypt::Version::TwoY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> PasswordHash {
        PasswordHash::parse(text).expect("a valid hash")
    }

    #[test]
    fn argon2_hashes_verify() {
        let hash = parsed(&cheap::argon2id("correct horse"));
        assert_eq!(verify(&hash, b"correct horse"), Ok(true));
        assert_eq!(verify(&hash, b"correct horsE"), Ok(false));
        assert_eq!(verify(&hash, b""), Ok(false));
    }

    #[test]
    fn bcrypt_hashes_verify() {
        let hash = parsed(&cheap::bcrypt("correct horse"));
        assert_eq!(hash.scheme(), HashScheme::Bcrypt);
        assert_eq!(verify(&hash, b"correct horse"), Ok(true));
        assert_eq!(verify(&hash, b"wrong"), Ok(false));
    }

    #[test]
    fn hash_password_makes_a_default_argon2id_hash_the_config_accepts() {
        let text = hash_password("s3cret pass").unwrap();
        assert!(
            text.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{text}"
        );
        let hash = parsed(&text);
        assert_eq!(hash.algorithm(), "argon2id");
        assert_eq!(verify(&hash, b"s3cret pass"), Ok(true));
        assert_eq!(verify(&hash, b"s3cret pas"), Ok(false));
        assert_ne!(
            hash_password("s3cret pass").unwrap(),
            text,
            "every hash has its own salt"
        );
        assert_eq!(hash_password(""), Err(HashPasswordError::Empty));
    }
}
