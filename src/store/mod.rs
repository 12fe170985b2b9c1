//! Secret stores: where each token's current value lives.
//!
//! One closed enum, [`Store`], built from the config's `StoreConfig`, dispatching to one module
//! per backend behind the small [`SecretStore`] trait: [`file`] (a 0600 JSON file, the embedded
//! default) and [`aws`] (AWS Secrets Manager, the `AWSCURRENT` stage). Versions and staging
//! labels follow Secrets Manager's model in both, so a token can move between them unchanged.
//! Errors say what the caller does next: stage a token, fix the store, retry later, or (after a
//! [`StoreError::Conflict`]) re-read the store and decide again.
//!
//! The write side is the first step of rotation and uses the same labels in both stores: a
//! candidate is staged as [`AWSPENDING`], promoted to [`AWSCURRENT`] with a compare-and-swap on
//! the version it replaces (which becomes [`AWSPREVIOUS`]), and can be rolled back to that
//! previous version. Every write is idempotent or compare-and-swap, so two tokenwarden
//! processes (or a restarted one) never silently overwrite each other's decision.

pub mod aws;
pub mod file;

use std::future::Future;
use std::path::Path;

use crate::config::StoreConfig;
use crate::secret::Secret;

/// The staging label of the version in use (Secrets Manager's name, used by both stores).
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The staging label of a candidate waiting to be promoted.
pub const AWSPENDING: &str = "AWSPENDING";
/// The staging label of the version that was current before the last promotion.
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// A store version id (AWS VersionId, or the file store's id).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionId(pub String);

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Checks a request token before any store sees it. Secrets Manager accepts 32 to 64
/// characters and answers anything else with an error that would look like a conflict; the
/// file store applies the same rule so a token that works in one store works in the other.
pub(crate) fn check_request_token(store: &str, request_token: &str) -> Result<(), StoreError> {
    let ok = (32..=64).contains(&request_token.len())
        && request_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Broken {
            store: store.to_string(),
            problem: format!(
                "request token `{request_token}` must be 32 to 64 letters, digits or dashes (a UUID works)"
            ),
        })
    }
}

/// Why a store could not give a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The store holds no current token: someone must put one there.
    #[error("{store} holds no current token; {hint}")]
    Missing {
        /// Which store.
        store: String,
        /// What to do.
        hint: String,
    },
    /// The store or its configuration is wrong (permissions, format, access denied): fix it.
    #[error("{store}: {problem}")]
    Broken {
        /// Which store.
        store: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The store could not be reached this time: retry later.
    #[error("{store} is unavailable: {cause}")]
    Unavailable {
        /// Which store.
        store: String,
        /// Why.
        cause: String,
    },
    /// Someone else changed the store (a lost compare-and-swap, or a request token reused for
    /// another value): re-read the store and decide again.
    #[error("{store} was changed by someone else: {detail}; re-read it and decide again")]
    Conflict {
        /// Which store.
        store: String,
        /// What was found instead of what was expected (version ids and labels, never values).
        detail: String,
    },
}

/// What every store does. Small on purpose: one method per thing the rest of tokenwarden needs.
pub trait SecretStore {
    /// The token's current value.
    fn current(&self) -> impl Future<Output = Result<Secret, StoreError>> + Send;
    /// A description for messages, such as `file store /var/lib/tokenwarden/tokens.json [prod]`.
    fn describe(&self) -> String;

    /// The [`AWSCURRENT`] version: its id and the token.
    fn current_version(
        &self,
    ) -> impl Future<Output = Result<(VersionId, Secret), StoreError>> + Send;

    /// The [`AWSPENDING`] version, if there is one and it is not also the current version
    /// (Secrets Manager can leave the label on a promoted version; that is no candidate).
    fn pending(
        &self,
    ) -> impl Future<Output = Result<Option<(VersionId, Secret)>, StoreError>> + Send;

    /// The [`AWSPREVIOUS`] version (the token a promotion replaced), if the store still has it.
    fn previous(
        &self,
    ) -> impl Future<Output = Result<Option<(VersionId, Secret)>, StoreError>> + Send;

    /// The version `id`, labelled or not (a candidate whose `AWSPENDING` another instance
    /// moved away is still there by its id), or `None` when the store no longer has it.
    fn version(
        &self,
        id: &VersionId,
    ) -> impl Future<Output = Result<Option<Secret>, StoreError>> + Send;

    /// Stages `token` as [`AWSPENDING`]. `request_token` (a UUID-like string of 32 to 64
    /// characters the caller derives deterministically, e.g. from the rotation id) makes it
    /// idempotent: a retry with the same request token and value creates no second version; the
    /// same request token with a different value is [`StoreError::Conflict`]. An existing
    /// `AWSPENDING` on another version is moved to the new one.
    fn put_pending(
        &self,
        token: &Secret,
        request_token: &str,
    ) -> impl Future<Output = Result<VersionId, StoreError>> + Send;

    /// Moves [`AWSCURRENT`] from `from` to `to` as a compare-and-swap: if `AWSCURRENT` is no
    /// longer on `from`, fails with [`StoreError::Conflict`] and changes nothing. `from` gets
    /// [`AWSPREVIOUS`]; [`AWSPENDING`] is removed from `to`.
    fn promote(
        &self,
        to: &VersionId,
        from: &VersionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves [`AWSCURRENT`] back to the [`AWSPREVIOUS`] version (compare-and-swap on the current
    /// one, which becomes `AWSPREVIOUS`) and returns the id now current.
    fn rollback(&self) -> impl Future<Output = Result<VersionId, StoreError>> + Send;

    /// Removes [`AWSPENDING`] (a rejected candidate), leaving everything else untouched. Nothing
    /// pending is not an error.
    fn clear_pending(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The current value of each file-store entry among `tokens` (`None` for tokens in another
/// store), reading each file once: a fleet of 10,000 entries in one file read it once per
/// entry before, which made its check quadratic.
pub async fn file_entries<'a>(
    tokens: impl Iterator<Item = (&'a crate::config::StoreConfig, &'a str)>,
    state_dir: &std::path::Path,
) -> Vec<Option<Result<Secret, StoreError>>> {
    let mut files: std::collections::BTreeMap<
        std::path::PathBuf,
        Result<file::StoreFile, StoreError>,
    > = std::collections::BTreeMap::new();
    let mut out = Vec::new();
    for (store, name) in tokens {
        let read = match store {
            crate::config::StoreConfig::File { .. } => {
                match Store::open(store, name, state_dir).await {
                    Ok(Store::File(fs)) => {
                        let file = files
                            .entry(fs.path().to_path_buf())
                            .or_insert_with(|| fs.read());
                        Some(
                            file.as_ref()
                                .map_err(Clone::clone)
                                .and_then(|f| fs.current_in(f))
                                .map(|(_, token)| token),
                        )
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                }
            }
            crate::config::StoreConfig::Aws { .. } => None,
        };
        out.push(read);
    }
    out
}

/// A configured store.
#[derive(Debug, Clone)]
pub enum Store {
    /// The JSON file store.
    File(file::FileStore),
    /// AWS Secrets Manager.
    Aws(aws::AwsStore),
}

impl Store {
    /// Opens the store a token's config names. `state_dir` places the default file store.
    ///
    /// # Errors
    /// [`StoreError::Broken`] when the AWS configuration cannot be loaded.
    pub async fn open(
        cfg: &StoreConfig,
        token_name: &str,
        state_dir: &Path,
    ) -> Result<Store, StoreError> {
        Ok(match cfg {
            StoreConfig::File { path, key } => Store::File(file::FileStore::new(
                path.clone()
                    .unwrap_or_else(|| state_dir.join(file::DEFAULT_FILE)),
                key.clone().unwrap_or_else(|| token_name.to_string()),
            )),
            StoreConfig::Aws {
                secret_id,
                region,
                endpoint,
                json_key,
            } => Store::Aws(
                aws::AwsStore::connect(
                    secret_id,
                    region.as_deref(),
                    endpoint.as_deref(),
                    json_key.clone(),
                )
                .await,
            ),
        })
    }
}

impl SecretStore for Store {
    async fn current(&self) -> Result<Secret, StoreError> {
        match self {
            Store::File(s) => s.current().await,
            Store::Aws(s) => s.current().await,
        }
    }

    fn describe(&self) -> String {
        match self {
            Store::File(s) => s.describe(),
            Store::Aws(s) => s.describe(),
        }
    }

    async fn current_version(&self) -> Result<(VersionId, Secret), StoreError> {
        match self {
            Store::File(s) => s.current_version().await,
            Store::Aws(s) => s.current_version().await,
        }
    }

    async fn pending(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        match self {
            Store::File(s) => s.pending().await,
            Store::Aws(s) => s.pending().await,
        }
    }

    async fn previous(&self) -> Result<Option<(VersionId, Secret)>, StoreError> {
        match self {
            Store::File(s) => s.previous().await,
            Store::Aws(s) => s.previous().await,
        }
    }

    async fn version(&self, id: &VersionId) -> Result<Option<Secret>, StoreError> {
        match self {
            Store::File(s) => s.version(id).await,
            Store::Aws(s) => s.version(id).await,
        }
    }

    async fn put_pending(
        &self,
        token: &Secret,
        request_token: &str,
    ) -> Result<VersionId, StoreError> {
        match self {
            Store::File(s) => s.put_pending(token, request_token).await,
            Store::Aws(s) => s.put_pending(token, request_token).await,
        }
    }

    async fn promote(&self, to: &VersionId, from: &VersionId) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.promote(to, from).await,
            Store::Aws(s) => s.promote(to, from).await,
        }
    }

    async fn rollback(&self) -> Result<VersionId, StoreError> {
        match self {
            Store::File(s) => s.rollback().await,
            Store::Aws(s) => s.rollback().await,
        }
    }

    async fn clear_pending(&self) -> Result<(), StoreError> {
        match self {
            Store::File(s) => s.clear_pending().await,
            Store::Aws(s) => s.clear_pending().await,
        }
    }
}
