//! `tokenwarden run`: the daemon, with SIGHUP as a reload and SIGTERM or SIGINT as a stop.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Exit, Step, failed, failed_with, shutdown_signal};
use crate::config;
use crate::daemon::{self, Control, DaemonError, SystemClock};

/// Runs the daemon until it is stopped: 0 after a clean stop, 78 for a config it cannot use.
pub(super) async fn run(flag: Option<PathBuf>) -> Step<Exit> {
    use tokio::signal::unix::{SignalKind, signal};
    let path = config::resolve_path(flag);
    let (ctl_tx, ctl_rx) = tokio::sync::mpsc::channel(8);
    let mut hup = signal(SignalKind::hangup())
        .map_err(|e| failed_with(format!("cannot handle SIGHUP: {e}")))?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the configuration");
            if ctl_tx.send(Control::Reload(None)).await.is_err() {
                break;
            }
        }
    });
    // Installed now, before the first check: a SIGTERM that arrives while the first check (or
    // a rotation) runs must wait for it, not kill the process with the default action.
    let shutdown =
        shutdown_signal().map_err(|e| failed_with(format!("cannot handle SIGTERM: {e}")))?;
    match daemon::run(path, Arc::new(SystemClock), ctl_rx, shutdown).await {
        Ok(()) => Ok(Exit::Ok),
        Err(DaemonError::Config(e)) => {
            eprintln!("error: {e}");
            Err(Exit::Config)
        }
        Err(e) => Err(failed(&e)),
    }
}
