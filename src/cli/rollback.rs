//! `tokenwarden rollback`: the previous version made current again, if Meta still calls it
//! valid.

use std::path::PathBuf;

use super::{Exit, Step, finish, graph_client, load_expanded, token_config};
use crate::rotation::command;

/// Rolls `--token NAME` back and ends with the command's code (0, 1, 75).
pub(super) async fn run(flag: Option<PathBuf>, token: &str) -> Step<Exit> {
    let cfg = load_expanded(flag, false).await?;
    let t = token_config(&cfg, token)?;
    let client = graph_client(&cfg)?;
    finish(command::rollback(&cfg, &client, t, jiff::Timestamp::now()).await)
}
