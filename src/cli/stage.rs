//! `tokenwarden stage`: the next token, read from standard input, checked for pasting mistakes
//! and with Meta, then staged. For an Instagram or Threads token its expiry can be given
//! (`--expires-in`, `--expires-at`), recorded as `import` does before the checks, so the
//! candidate is judged with it.

use std::path::PathBuf;

use super::import::{Given, given_expiry, record_given};
use super::{Exit, Step, finish, graph_client, load_expanded, read_token_from_stdin, token_config};
use crate::rotation::command;

/// Stages a value for `--token NAME` and ends with the command's code (0, 1, 65, 75).
pub(super) async fn run(flag: Option<PathBuf>, token: &str, given: Given) -> Step<Exit> {
    let cfg = load_expanded(flag, false).await?;
    let t = token_config(&cfg, token)?;
    let now = jiff::Timestamp::now();
    let given_at = given_expiry(t, &given, now, "staged")?;
    let client = graph_client(&cfg)?;
    let value = read_token_from_stdin()?;
    // Kept even when the value is then refused: a record of a version never staged is
    // harmless (records are found by fingerprint, the last few kept). An exchange on `stage`
    // records Meta's own expiry for the long-lived token it gets.
    if let Some(at) = given_at {
        let log = crate::observe::ExpiryLog::new(&cfg.state_dir);
        record_given(&log, &t.name, value.fingerprint(), at, now)?;
    }
    finish(command::stage(&cfg, &client, t, &value, now).await)
}
