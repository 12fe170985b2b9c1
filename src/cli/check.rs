//! `tokenwarden check`: one pass over the tokens, ending with the monitoring-plugin code of the
//! worst one (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

use std::path::PathBuf;

use super::{Exit, Step, check_token_name, graph_client, load_expanded, print_json};

/// Checks every token (or `--token NAME`) once and prints a line per token.
pub(super) async fn run(flag: Option<PathBuf>, token: Option<String>, json: bool) -> Step<Exit> {
    let cfg = load_expanded(flag, true).await?;
    check_token_name(&cfg, token.as_deref())?;
    let client = graph_client(&cfg)?;
    let lines = crate::check::run(&cfg, &client, token.as_deref(), jiff::Timestamp::now()).await;
    if json {
        print_json(&lines)?;
    } else {
        print!("{}", crate::check::render(&lines));
    }
    Ok(Exit::from_code(crate::check::exit_code(&lines)))
}
