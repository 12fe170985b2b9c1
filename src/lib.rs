//! tokenwarden keeps Meta Graph API access tokens (first of all WhatsApp Cloud API system-user
//! tokens) alive: it inspects them, warns on-call before they expire, rotates and delivers them.
//!
//! # Layout
//! - [`cli`]: the `tokenwarden` commands, one file each, and [`cli::Exit`], the exit codes.
//! - [`config`]: the TOML file, validated into [`config::Config`], every error reported at once.
//! - [`graph`]: the Graph API client.
//! - [`meta`]: Meta's vocabulary without a client: the WhatsApp scopes, Graph versions and
//!   their end dates, the classification of Graph's errors, `debug_token`'s answers (pure).
//! - [`store`]: where tokens live (a 0600 JSON file, AWS Secrets Manager).
//! - [`notify`]: email to on-call: SMTP or a folder of `.eml` files, behind a persistent outbox;
//!   `notify::queue` also hands each alert to the receivers.
//! - [`channel`]: on-call receivers beside email (Alertmanager, PagerDuty, Slack, Teams), each
//!   with its own persistent queue.
//! - [`daemon`]: `tokenwarden run`: the schedule, checks, alert decisions, the outbox.
//! - [`observe`]: the check of a token (store, Graph, the usability rule), below the daemon,
//!   `check` and rotation.
//! - [`check`]: `tokenwarden check` (one pass, plugin exit codes) and `status`.
//! - [`doctor`]: the runbook's manual checks as a checklist (observe, then a pure evaluation).
//! - [`policy`]: effective expiry, states, and which email to send when (pure).
//! - [`usable`]: whether a token can do the WhatsApp job, the one rule for the check, `doctor`
//!   and a candidate's validation (pure).
//! - [`alert`]: the words of on-call email (pure).
//! - [`state`]: the state directory: `state.json`, and the one record store every record file
//!   there (rotations, targets, groups, outbox entries) is read, written and locked through.
//! - [`lint`]: recognising a wrongly pasted token value.
//! - [`timefmt`]: times in UTC and Meta's Pacific time.
//! - [`secret`]: the `Secret` type that cannot leak, fingerprints, `appsecret_proof`.
//! - [`fsutil`]: atomic file writes, private directories, exclusive temp files.
//! - [`discover`]: token groups, listed from a store and expanded from their template.
//! - [`rotation`]: the rotation state machine (pure) and its steps against the store and Meta.
//! - [`target`]: the environments a new token is delivered to (dotenv, secret, webhook, exec, and
//!   the platforms: SSM, GitHub Actions, Heroku, Vercel, Render, Kubernetes).
//! - [`delivery`]: rollouts in waves, their rollback, and the drift check.
//! - [`scan`]: forgotten copies of an old token, searched before it is revoked.
//! - [`failpoint`]: crash points for the crash tests (compiled in with the `failpoints` feature).
//! - [`scrub`]: known secrets taken out of text that came from outside (Graph errors, SMTP).
//! - [`demo`]: `tokenwarden demo`, the sandbox and doctor on two throw-away tokens.
//! - [`metrics`]: `/metrics` (Prometheus) and `/healthz` for the daemon.
//! - [`audit`]: the append-only JSON-lines audit log.
//! - [`sdnotify`]: systemd's READY/STOPPING/WATCHDOG notifications.
//! - [`liveness`]: worst cases from the config, the watchdog's proof of a live loop, stopping.
//! - [`sandbox`]: a Graph API simulator on loopback for tests, the demo and trying a config.
//! - `fuzzing` (hidden): the checks the fuzz targets in `fuzz/` and their corpus replay run.
#![forbid(unsafe_code)]
// `GraphError` carries Meta's whole error (message, trace id) so people can act on it; errors
// are rare and off every hot path, so their size does not matter.
#![allow(clippy::result_large_err)]

pub mod alert;
pub mod appcreds;
pub mod audit;
pub mod channel;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod demo;
pub mod discover;
pub mod doctor;
pub mod failpoint;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod lint;
pub mod liveness;
pub mod meta;
pub mod metrics;
pub mod notify;
pub mod observe;
pub mod policy;
pub mod rotation;
pub mod sandbox;
pub mod scan;
pub mod scrub;
pub mod sdnotify;
pub mod secret;
pub mod state;
pub mod store;
pub mod target;
pub mod timefmt;
pub mod usable;
