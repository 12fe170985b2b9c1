//! `tokenwarden status`: the daemon's last known state of every token, without network.

use std::path::PathBuf;

use super::{Exit, Step, failed, load_config, print_json};

/// Prints the state directory's view of every token.
pub(super) fn run(flag: Option<PathBuf>, json: bool) -> Step<Exit> {
    let mut cfg = load_config(flag)?;
    // Offline: the groups' members as their last listing found them.
    crate::discover::expand_offline(&mut cfg);
    let snap = crate::state::StateStore::new(&cfg.state_dir)
        .load()
        .map_err(|e| failed(&e))?;
    let rows = crate::check::status(&cfg, &snap);
    if json {
        print_json(&rows)?;
    } else {
        print!(
            "{}",
            crate::check::render_status(&rows, jiff::Timestamp::now())
        );
    }
    Ok(Exit::Ok)
}
