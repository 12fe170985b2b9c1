//! The `aws_secret` target: another Secrets Manager secret (another name, region or account
//! endpoint), as the whole string or one key of a JSON secret whose other keys are kept.
//!
//! It reuses the store's Secrets Manager adapter: a push stages the token as `AWSPENDING` with
//! a request token derived from the rotation, then moves `AWSCURRENT` to it with the same
//! compare-and-swap a rotation uses, so a retried push creates no second version and a push
//! racing another writer fails instead of overwriting it. The value can be read back, so drift
//! (a secret changed behind tokenwarden's back) is seen.

use crate::secret::{Fingerprint, Secret};
use crate::store::aws::AwsStore;
use crate::store::{SecretStore, StoreError};

use super::TargetError;

/// A Secrets Manager secret receiving the token.
#[derive(Debug, Clone)]
pub struct AwsSecretTarget {
    store: AwsStore,
}

impl AwsSecretTarget {
    /// Connects with the default credential chain.
    pub async fn connect(
        secret_id: &str,
        region: Option<&str>,
        endpoint: Option<&str>,
        json_key: Option<String>,
    ) -> AwsSecretTarget {
        AwsSecretTarget {
            store: AwsStore::connect(secret_id, region, endpoint, json_key).await,
        }
    }

    /// Makes `token` the secret's current value; `request_token` (32 to 64 characters of
    /// `[A-Za-z0-9-]`, derived by the caller from the rotation and the token) makes a retry
    /// idempotent. Returns whether the secret changed.
    ///
    /// # Errors
    /// [`TargetError`]: transient when Secrets Manager is unavailable or another writer moved
    /// the label first, refused when the secret is missing or access is denied.
    pub async fn push(&self, token: &Secret, request_token: &str) -> Result<bool, TargetError> {
        let (current_id, current) = self.store.current_version().await.map_err(err)?;
        if current.fingerprint() == token.fingerprint() {
            return Ok(false);
        }
        let staged = self
            .store
            .put_pending(token, request_token)
            .await
            .map_err(err)?;
        if staged == current_id {
            return Ok(false);
        }
        self.store
            .promote(&staged, &current_id)
            .await
            .map_err(err)?;
        Ok(true)
    }

    /// The fingerprint of the token the secret holds now.
    ///
    /// # Errors
    /// As [`AwsSecretTarget::push`].
    pub async fn read_back(&self) -> Result<Fingerprint, TargetError> {
        Ok(self.store.current().await.map_err(err)?.fingerprint())
    }

    /// The secret, in words.
    pub fn describe(&self) -> String {
        self.store.describe()
    }
}

fn err(e: StoreError) -> TargetError {
    match e {
        StoreError::Unavailable { .. } | StoreError::Conflict { .. } => {
            TargetError::Transient(e.to_string())
        }
        StoreError::Missing { store, .. } => TargetError::Refused(format!(
            "{store} does not exist or has no current value; create it first (tokenwarden updates secrets, it does not create them)"
        )),
        StoreError::Broken { .. } => TargetError::Refused(e.to_string()),
    }
}
