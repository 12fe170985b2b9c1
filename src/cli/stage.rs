//! `tokenwarden stage`: the next token, read from standard input, checked for pasting mistakes
//! and with Meta, then staged.

use std::path::PathBuf;

use super::{Exit, Step, finish, graph_client, load_expanded, read_token_from_stdin, token_config};
use crate::rotation::command;

/// Stages a value for `--token NAME` and ends with the command's code (0, 1, 65, 75).
pub(super) async fn run(flag: Option<PathBuf>, token: &str) -> Step<Exit> {
    let cfg = load_expanded(flag, false).await?;
    let t = token_config(&cfg, token)?;
    let client = graph_client(&cfg)?;
    let value = read_token_from_stdin()?;
    finish(command::stage(&cfg, &client, t, &value, jiff::Timestamp::now()).await)
}
