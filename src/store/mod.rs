//! Secret stores: where each token's current value lives.
//!
//! One closed enum, [`Store`], built from the config's `StoreConfig`, dispatching to one module
//! per backend behind the small [`SecretStore`] trait: [`file`] (a 0600 JSON file, the embedded
//! default) and [`aws`] (AWS Secrets Manager, the `AWSCURRENT` stage). Versions and staging
//! labels follow Secrets Manager's model in both, so a token can move between them unchanged.
//! Errors say what the caller does next: stage a token, fix the store, or retry later.

pub mod aws;
pub mod file;

use std::future::Future;
use std::path::Path;

use crate::config::StoreConfig;
use crate::secret::Secret;

/// The staging label of the version in use (Secrets Manager's name, used by both stores).
pub const AWSCURRENT: &str = "AWSCURRENT";

/// Why a store could not give a token.
#[derive(Debug, thiserror::Error)]
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
}

/// What every store does. Small on purpose: one method per thing the rest of tokenwarden needs.
pub trait SecretStore {
    /// The token's current value.
    fn current(&self) -> impl Future<Output = Result<Secret, StoreError>> + Send;
    /// A description for messages, such as `file store /var/lib/tokenwarden/tokens.json [prod]`.
    fn describe(&self) -> String;
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
}
