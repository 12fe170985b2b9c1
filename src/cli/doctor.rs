//! `tokenwarden doctor`: the runbook's checks as a checklist with fixes; 0 when every check
//! passed (warnings allowed), 1 otherwise.

use std::path::PathBuf;

use super::{Exit, Step, check_token_name, graph_client, load_expanded, print_json};
use crate::doctor::{self, Options};

/// Inspects every token (or `--token NAME`) and prints the checklist.
pub(super) async fn run(flag: Option<PathBuf>, opts: Options, json: bool) -> Step<Exit> {
    let cfg = load_expanded(flag, true).await?;
    check_token_name(&cfg, opts.token.as_deref())?;
    let client = graph_client(&cfg)?;
    let report = doctor::run(&cfg, &client, &opts, jiff::Timestamp::now()).await;
    if json {
        print_json(&report)?;
    } else {
        print!("{}", doctor::render_text(&report));
    }
    Ok(if report.healthy() {
        Exit::Ok
    } else {
        Exit::Failure
    })
}
