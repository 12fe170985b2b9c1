//! `tokenwarden demo`: the sandbox, `doctor` on two demo tokens, their rotation, then a minute
//! of the daemon (all in [`crate::demo`]).

use super::{Exit, Step, failed};

/// Runs the demo; any failure is reported as "the demo failed" with its cause.
pub(super) async fn run(pace: u64) -> Step<Exit> {
    match crate::demo::run(pace).await {
        Ok(()) => Ok(Exit::Ok),
        Err(e) => Err(failed(&DemoFailed(e))),
    }
}

/// The demo's error under the words `main` always printed before it.
#[derive(Debug, thiserror::Error)]
#[error("the demo failed")]
struct DemoFailed(#[source] crate::demo::DemoError);
