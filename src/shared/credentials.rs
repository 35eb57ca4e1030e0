//! The bucket's credentials from `access_key_id` and `secret_access_key_file`, the secret re-read
//! when the file changes (a rotated secret is used without a restart), as the other secret files
//! are ([`crate::secret::SecretFile`]).
//!
//! object_store asks its credential provider before signing each request; this one stats the
//! file (microseconds) and re-reads it only when it moved. A file that cannot be read fails that
//! request with the file named, which counts the bucket as unreachable until it can be read.

use std::sync::{Arc, Mutex};

use object_store::aws::AwsCredential;
use object_store::CredentialProvider;

use crate::secret::{Secret, SecretFile};

/// `access_key_id` with the secret in `secret_access_key_file`.
#[derive(Debug)]
pub(super) struct SecretFileCredentials {
    access_key_id: String,
    secret: SecretFile,
    /// The credential built from the secret last read, reused while the secret is the same.
    built: Mutex<Option<(Arc<Secret>, Arc<AwsCredential>)>>,
}

impl SecretFileCredentials {
    /// Reads the secret now: a missing or unreadable file is an error at start, not at the
    /// first request.
    pub(super) fn open(
        access_key_id: &str,
        secret_access_key_file: &std::path::Path,
    ) -> Result<SecretFileCredentials, crate::secret::SecretError> {
        let credentials = SecretFileCredentials {
            access_key_id: access_key_id.to_owned(),
            secret: SecretFile::new(secret_access_key_file.to_owned()),
            built: Mutex::new(None),
        };
        credentials.current()?;
        Ok(credentials)
    }

    fn current(&self) -> Result<Arc<AwsCredential>, crate::secret::SecretError> {
        let secret = self.secret.current()?;
        let mut built = crate::lock(&self.built);
        if let Some((read, credential)) = built.as_ref() {
            if Arc::ptr_eq(read, &secret) {
                return Ok(credential.clone());
            }
        }
        let credential = Arc::new(AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: secret.expose().to_owned(),
            token: None,
        });
        *built = Some((secret, credential.clone()));
        Ok(credential)
    }
}

#[async_trait::async_trait]
impl CredentialProvider for SecretFileCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        self.current()
            .map_err(|error| object_store::Error::Generic {
                store: "S3",
                source: Box::new(super::SharedError::SecretFile { source: error }),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_secret_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s3-secret");
        std::fs::write(&path, "first-secret\n").unwrap();
        let credentials = SecretFileCredentials::open("KEYID", &path).unwrap();
        let first = credentials.current().unwrap();
        assert_eq!(
            (first.key_id.as_str(), first.secret_key.as_str()),
            ("KEYID", "first-secret")
        );
        // A new file renamed over the old one, as a secret mount rotates it.
        let next = dir.path().join("s3-secret.new");
        std::fs::write(&next, "second-secret\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(credentials.current().unwrap().secret_key, "second-secret");
    }
}
