//! `tokenwarden rotate [--dry-run]`: a rotation now, whatever the schedule (or the one in
//! progress, resumed); with `--dry-run`, each step it would take, changing nothing.

use std::path::PathBuf;

use super::{Exit, Step, finish, graph_client, load_expanded, token_config};
use crate::rotation::command;

/// Rotates `--token NAME` and ends with the rotation's code (0, 1, 75).
pub(super) async fn run(flag: Option<PathBuf>, token: &str, dry_run: bool) -> Step<Exit> {
    let cfg = load_expanded(flag, false).await?;
    let t = token_config(&cfg, token)?;
    let client = graph_client(&cfg)?;
    let done = if dry_run {
        command::dry_run(&cfg, &client, t, jiff::Timestamp::now()).await
    } else {
        command::rotate(&cfg, &client, t, &jiff::Timestamp::now).await
    };
    finish(done)
}
