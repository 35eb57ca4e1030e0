//! Remembers, for a few minutes, which user name and password pairs were checked and found right.
//!
//! A password hash takes tens of milliseconds to check on purpose, and pip sends the same
//! credentials with every one of the hundreds of requests of an install. Checking each would add
//! seconds to an install and let a handful of clients keep every core busy. So a successful check
//! is remembered, and the next request with the same pair costs one SHA-256.
//!
//! The cache never holds a password, nor anything a password can be recovered from offline: an
//! entry is keyed by SHA-256 over a random key made for this cache alone (never stored or shown),
//! the user name and the password. Failed checks are not remembered, so a wrong password costs a
//! full check every time, and a password changed in the configuration takes effect at once (the
//! cache belongs to one configuration's users).
//!
//! Concurrent checks of the same pair are merged: while one runs, the other requests with that
//! pair wait for its result instead of starting their own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use moka::future::Cache;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use crate::config::UserName;
use crate::secret::Secret;

/// How long a successful check is trusted. Short, so that a client whose password was changed
/// elsewhere (or a removed user, before the configuration reload that removes it) is not let in
/// for long; long enough to cover a whole install.
const TRUSTED_FOR: Duration = Duration::from_secs(5 * 60);

/// Distinct (user, password) pairs remembered at once. Each entry is a few dozen bytes; the bound
/// only keeps a flood of distinct right passwords (which no one has) from growing memory.
const MAX_ENTRIES: u64 = 10_000;

/// The key of one (user, password) pair.
type PairKey = [u8; 32];

/// Successful password checks, by keyed hash of the pair.
pub(crate) struct VerifiedPasswords {
    /// Secret for the life of the cache; without it, the cache keys would be unsalted hashes of
    /// passwords, and a memory dump would let an attacker test guesses quickly.
    key: [u8; 32],
    verified: Cache<PairKey, ()>,
}

impl VerifiedPasswords {
    pub(crate) fn new() -> VerifiedPasswords {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        VerifiedPasswords {
            key,
            verified: Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(TRUSTED_FOR)
                .build(),
        }
    }

    /// Ok when `password` was recently found right for `user`; otherwise runs `check` (at most
    /// one at a time per pair), remembers its success, and returns its error without remembering
    /// it.
    pub(crate) async fn get_or_check<E, F>(
        &self,
        user: &UserName,
        password: &Secret,
        check: F,
    ) -> Result<(), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: Future<Output = Result<(), E>>,
    {
        let pair = self.pair_key(user, password);
        self.verified.try_get_with(pair, check).await
    }

    fn pair_key(&self, user: &UserName, password: &Secret) -> PairKey {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        // The length keeps ("ab", "c") and ("a", "bc") apart.
        hasher.update((user.as_str().len() as u64).to_le_bytes());
        hasher.update(user.as_str());
        hasher.update(password.expose());
        hasher.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn name(text: &str) -> UserName {
        UserName::parse(text).unwrap()
    }

    fn secret(text: &str) -> Secret {
        Secret::new(text.to_owned())
    }

    #[tokio::test]
    async fn success_is_remembered_and_failure_is_not() {
        let cache = VerifiedPasswords::new();
        let runs = AtomicU32::new(0);
        let succeed = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok::<(), ()>(())
        };
        let fail = || async {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<(), ()>(())
        };
        let ci = name("ci");
        assert!(cache
            .get_or_check(&ci, &secret("pw"), fail())
            .await
            .is_err());
        assert!(cache
            .get_or_check(&ci, &secret("pw"), fail())
            .await
            .is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 2, "failures are checked again");
        assert!(cache
            .get_or_check(&ci, &secret("pw"), succeed())
            .await
            .is_ok());
        assert!(cache.get_or_check(&ci, &secret("pw"), fail()).await.is_ok());
        assert_eq!(runs.load(Ordering::SeqCst), 3, "a success is remembered");
        assert!(cache
            .get_or_check(&ci, &secret("pw2"), fail())
            .await
            .is_err());
        assert!(cache
            .get_or_check(&name("other"), &secret("pw"), fail())
            .await
            .is_err());
        assert_eq!(runs.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn pair_keys_separate_user_and_password() {
        let cache = VerifiedPasswords::new();
        assert_ne!(
            cache.pair_key(&name("ab"), &secret("c")),
            cache.pair_key(&name("a"), &secret("bc"))
        );
        assert_eq!(
            cache.pair_key(&name("a"), &secret("b")),
            cache.pair_key(&name("a"), &secret("b"))
        );
        assert_ne!(
            VerifiedPasswords::new().pair_key(&name("a"), &secret("b")),
            cache.pair_key(&name("a"), &secret("b")),
            "each cache has its own key"
        );
    }
}
