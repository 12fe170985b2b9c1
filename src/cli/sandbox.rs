//! `tokenwarden sandbox`: the Graph API simulator, served on loopback only (it accepts any
//! token).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{Exit, Step, failed, failed_with, shutdown_signal};
use crate::sandbox;

/// Serves the sandbox until SIGINT or SIGTERM.
pub(super) async fn run(listen: SocketAddr, scenario: Option<PathBuf>) -> Step<Exit> {
    if !listen.ip().is_loopback() {
        return Err(failed_with(format!(
            "the sandbox listens on loopback only (it accepts any token); use 127.0.0.1 or [::1], not {}",
            listen.ip()
        )));
    }
    let scenario = match scenario {
        Some(p) => sandbox::Scenario::load(&p).map_err(|e| failed(&e))?,
        None => sandbox::Scenario::demo(),
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| failed_with(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener.local_addr().map_err(|e| failed(&e))?;
    println!(
        "Graph sandbox listening on http://{addr} (set `base_url = \"http://{addr}\"` in [meta]); Ctrl-C stops it"
    );
    let stop = shutdown_signal().map_err(|e| failed(&e))?;
    sandbox::serve(listener, scenario, stop)
        .await
        .map_err(|e| failed(&e))?;
    Ok(Exit::Ok)
}
