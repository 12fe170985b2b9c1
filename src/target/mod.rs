//! Targets: the environments a token is delivered to (`dotenv` files, other Secrets Manager
//! secrets, webhooks, commands), and how each is verified.
//!
//! One module per kind. [`TargetError`] says what the caller does next: retry (transient),
//! or stop the rollout and tell on-call (refused).

pub mod dotenv;
pub mod exec;
pub mod verify;
pub mod webhook;

/// Why a target could not take (or give back) a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// It may work if tried again (a timeout, a 5xx, a network error).
    #[error("{0}")]
    Transient(String),
    /// It will not work until someone fixes the target (a refused path, a 4xx, exit status 1).
    #[error("{0}")]
    Refused(String),
}
