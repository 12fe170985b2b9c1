//! `/metrics` (Prometheus text format) and `/healthz` for the daemon, on an optional listener.
//!
//! Per token: the effective expiry as an absolute timestamp (as expiry exporters do, so alert
//! rules compute time left themselves), the state, the last successful check, consecutive check
//! errors. Emails sent and failed, and the outbox's backlog (how many wait, since when, read
//! from the outbox at each scrape so it is right even between flushes). Per group: members and
//! whether the last listing worked. `/healthz` answers 503 once the daemon's loop has not beaten
//! for `stall_after`: a stuck scheduler is a failure even if the process is alive.
//! Everything is read from the state file and a few counters: no token is ever in reach here.
//!
//! The listener must never starve the daemon: it serves at most [`connection_limit`]
//! connections at once (a share of the process's file-descriptor limit, the rest kept for
//! state, audit, outbox and Graph), waits [`HEADER_TIMEOUT`] for a request's head, serves one
//! request per connection and drops any connection after [`CONNECTION_LIFETIME`]. Connections
//! beyond the limit wait in the kernel's backlog, where they cost the daemon no descriptor.

use std::fmt::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::policy::State;
use crate::state::StateStore;

/// Counters the daemon updates and the listener reads.
#[derive(Debug, Default)]
pub struct Telemetry {
    /// Unix seconds of the loop's last beat.
    pub heartbeat: AtomicI64,
    /// Emails the server accepted.
    pub emails_sent: AtomicU64,
    /// Delivery attempts that failed.
    pub emails_failed: AtomicU64,
    /// Rotations that completed.
    pub rotations_completed: AtomicU64,
    /// Rotations whose candidate was rejected.
    pub rotations_rejected: AtomicU64,
    /// Rotations that failed.
    pub rotations_failed: AtomicU64,
    /// Rotations another process or a person superseded.
    pub rotations_superseded: AtomicU64,
    /// Rotations that found Meta handed back the current token, living longer.
    pub rotations_extended: AtomicU64,
    /// The tokens managed now (a group's members change from run to run).
    /// Each with its kind, which every per-token series carries as the `kind` label.
    pub tokens: std::sync::RwLock<Vec<(String, crate::config::Kind)>>,
    /// Per group: its members now, and whether its last listing succeeded.
    pub groups: std::sync::RwLock<std::collections::BTreeMap<String, (usize, bool)>>,
    /// Per receiver beside email: its kind, and the alerts it accepted and failed.
    pub receivers: std::sync::RwLock<Vec<ReceiverCounts>>,
}

/// One receiver's share of `/metrics` that only the daemon knows (the rest is read from its
/// queue and state at each scrape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiverCounts {
    /// The receiver's name.
    pub name: String,
    /// Its kind's word.
    pub kind: &'static str,
    /// Alerts it accepted (this process).
    pub sent: u64,
    /// Delivery attempts that failed (this process).
    pub failed: u64,
}

impl Telemetry {
    /// Counts a finished rotation by its outcome.
    pub fn rotation_finished(&self, outcome: Option<&crate::rotation::Outcome>) {
        use crate::rotation::Outcome;
        let counter = match outcome {
            Some(Outcome::Completed { .. }) | None => &self.rotations_completed,
            Some(Outcome::Rejected { .. }) => &self.rotations_rejected,
            Some(Outcome::Failed { .. }) => &self.rotations_failed,
            Some(Outcome::Superseded { .. }) => &self.rotations_superseded,
            Some(Outcome::Extended { .. }) => &self.rotations_extended,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes the receivers' counters after a flush (or at start).
    pub fn channels_flushed(&self, channels: &crate::channel::Channels) {
        let list = channels
            .receivers()
            .iter()
            .map(|r| {
                let (sent, failed) = r.counts();
                ReceiverCounts {
                    name: r.name().to_string(),
                    kind: r.kind().word(),
                    sent,
                    failed,
                }
            })
            .collect();
        if let Ok(mut w) = self.receivers.write() {
            *w = list;
        }
    }

    /// Records a beat of the daemon's loop at `now` (unix seconds).
    pub fn beat(&self, now: i64) {
        self.heartbeat.store(now, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Shared {
    state: StateStore,
    state_dir: PathBuf,
    outbox: Arc<crate::notify::Outbox>,
    telemetry: Arc<Telemetry>,
    stall_after: Duration,
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state_dir: PathBuf,
    telemetry: Arc<Telemetry>,
    stall_after: Duration,
) -> std::io::Result<()> {
    let shared = Shared {
        outbox: Arc::new(crate::notify::Outbox::open(&state_dir)?),
        state: StateStore::new(&state_dir),
        state_dir: state_dir.clone(),
        telemetry,
        stall_after,
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let limit = connection_limit(open_files_limit());
    tracing::debug!(connections = limit, "metrics listener limits");
    let permits = Arc::new(tokio::sync::Semaphore::new(limit));
    loop {
        // The permit comes first: at the limit, nothing is accepted, so a flood of idle
        // connections waits in the backlog instead of taking the daemon's descriptors.
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: the daemon's own work comes first; try again shortly.
                tracing::debug!(error = %e, "metrics listener could not accept");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            // A client that reads the answer slowly (or never) is dropped too.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
        });
    }
}

/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a connection is kept, answer included (an answer is a few kilobytes).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// Most connections served at once, whatever the descriptor limit: a Prometheus server or
/// two, a health probe and a person with curl need a handful.
pub const MAX_CONNECTIONS: usize = 32;

/// Connections served at once for a process allowed `open_files` descriptors (`None` when
/// unknown): an eighth of them, between 1 and [`MAX_CONNECTIONS`], so seven eighths stay
/// with the daemon's own work however many clients connect.
pub fn connection_limit(open_files: Option<u64>) -> usize {
    let share = open_files.map_or(MAX_CONNECTIONS as u64, |n| n / 8);
    share.clamp(1, MAX_CONNECTIONS as u64) as usize
}

/// The soft limit on open files, from `/proc/self/limits` (no `unsafe` for `getrlimit`).
fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Binds the listener (so a bad address fails at start, not later).
///
/// # Errors
/// The bind error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

async fn healthz(AxumState(s): AxumState<Shared>) -> impl IntoResponse {
    let beat = s.telemetry.heartbeat.load(Ordering::SeqCst);
    let age = jiff::Timestamp::now().as_second() - beat;
    if beat > 0 && age <= s.stall_after.as_secs() as i64 {
        (StatusCode::OK, format!("ok: loop beat {age}s ago\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: the daemon's loop last beat {age}s ago\n"),
        )
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

const STATES: [&str; 6] = ["ok", "warning", "critical", "expired", "invalid", "unknown"];

fn state_label(s: State) -> &'static str {
    match s {
        State::Ok => "ok",
        State::Warning { .. } => "warning",
        State::Critical => "critical",
        State::Expired => "expired",
        State::Invalid => "invalid",
        State::Unknown => "unknown",
    }
}

/// The fields of a token's state that `/metrics` shows (the rest of the state is not read).
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct TokenView {
    state: Option<State>,
    effective: Option<crate::policy::Effective>,
    last_success: Option<jiff::Timestamp>,
    check_errors: u64,
    throttled_until: Option<jiff::Timestamp>,
}

async fn metrics(AxumState(s): AxumState<Shared>) -> impl IntoResponse {
    let tokens = s.telemetry.tokens.read().expect("not poisoned").clone();
    let names: Vec<String> = tokens.iter().map(|(n, _)| n.clone()).collect();
    let mut out = String::new();
    token_families(&mut out, &s.state, &tokens);
    target_families(&mut out, &s.state, &names);
    email_families(&mut out, &s);
    receiver_families(&mut out, &s);
    app_family(&mut out, &s);
    let t = &s.telemetry;
    rotation_family(&mut out, t);
    group_families(&mut out, t);
    family(
        &mut out,
        "tokenwarden_scheduler_heartbeat_timestamp_seconds",
        "gauge",
        "Last beat of the daemon's loop, unix seconds.",
    );
    let _ = writeln!(
        out,
        "tokenwarden_scheduler_heartbeat_timestamp_seconds {}",
        t.heartbeat.load(Ordering::SeqCst)
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
}

/// The per-token families (expiry, state, last success, check errors, throttling), each
/// family's samples together under its header, from the state file.
fn token_families(out: &mut String, store: &StateStore, names: &[(String, crate::config::Kind)]) {
    let tokens = store.load_view::<TokenView>().unwrap_or_default();
    let mut expiry = String::new();
    let mut state = String::new();
    let mut success = String::new();
    let mut errors = String::new();
    let mut throttled = String::new();
    for (name, kind) in names {
        let Some(t) = tokens.get(name) else {
            continue;
        };
        // Every per-token series carries the token's kind, so dashboards and alert rules can
        // tell an Instagram token from a WhatsApp one without a second lookup.
        let kind = kind.word();
        if let Some(e) = t.effective {
            let _ = writeln!(
                expiry,
                "tokenwarden_token_expiry_timestamp_seconds{{token=\"{name}\",kind=\"{kind}\"}} {}",
                e.at.as_second()
            );
        }
        if let Some(st) = t.state {
            for label in STATES {
                let _ = writeln!(
                    state,
                    "tokenwarden_token_state{{token=\"{name}\",kind=\"{kind}\",state=\"{label}\"}} {}",
                    u8::from(state_label(st) == label)
                );
            }
        }
        if let Some(ls) = t.last_success {
            let _ = writeln!(
                success,
                "tokenwarden_token_last_success_timestamp_seconds{{token=\"{name}\",kind=\"{kind}\"}} {}",
                ls.as_second()
            );
        }
        let _ = writeln!(
            errors,
            "tokenwarden_token_check_errors{{token=\"{name}\",kind=\"{kind}\"}} {}",
            t.check_errors
        );
        // 0 when not throttled; else when Meta said access returns (the check waits for it).
        let _ = writeln!(
            throttled,
            "tokenwarden_token_throttled_until_timestamp_seconds{{token=\"{name}\",kind=\"{kind}\"}} {}",
            t.throttled_until.map_or(0, |u| u.as_second())
        );
    }
    family(
        out,
        "tokenwarden_token_expiry_timestamp_seconds",
        "gauge",
        "Effective expiry (the earliest deadline) of the token, unix seconds.",
    );
    out.push_str(&expiry);
    family(
        out,
        "tokenwarden_token_state",
        "gauge",
        "1 for the token's current state, 0 for the others.",
    );
    out.push_str(&state);
    family(
        out,
        "tokenwarden_token_last_success_timestamp_seconds",
        "gauge",
        "Last check that reached a verdict on the token, unix seconds.",
    );
    out.push_str(&success);
    family(
        out,
        "tokenwarden_token_check_errors",
        "gauge",
        "Consecutive failed checks of the token.",
    );
    out.push_str(&errors);
    family(
        out,
        "tokenwarden_token_throttled_until_timestamp_seconds",
        "gauge",
        "When Meta's throttling of the token's checks ends (unix seconds); 0 when not throttled.",
    );
    out.push_str(&throttled);
}

/// Per target: what the last push did, from the records the pushes write.
fn target_families(out: &mut String, store: &StateStore, names: &[String]) {
    let targets = crate::delivery::TargetLog::new(store.dir());
    let mut pushed = String::new();
    let mut push_ok = String::new();
    for name in names {
        for (target, rec) in targets.load(name).unwrap_or_default() {
            if let Some(at) = rec.last_push {
                let labels = format!("token=\"{name}\",target=\"{target}\"");
                let _ = writeln!(
                    pushed,
                    "tokenwarden_target_last_push_timestamp_seconds{{{labels}}} {}",
                    at.as_second()
                );
                let _ = writeln!(
                    push_ok,
                    "tokenwarden_target_last_push_success{{{labels}}} {}",
                    u8::from(rec.ok)
                );
            }
        }
    }
    family(
        out,
        "tokenwarden_target_last_push_timestamp_seconds",
        "gauge",
        "Last push of a token to a target, unix seconds.",
    );
    out.push_str(&pushed);
    family(
        out,
        "tokenwarden_target_last_push_success",
        "gauge",
        "1 when the last push to the target (and its verify) succeeded, else 0.",
    );
    out.push_str(&push_ok);
}

/// Emails sent and failed (this process's counters) and the outbox's backlog.
fn email_families(out: &mut String, s: &Shared) {
    let t = &s.telemetry;
    for (name, kind, help, v) in [
        (
            "tokenwarden_emails_sent_total",
            "counter",
            "Emails the server accepted.",
            t.emails_sent.load(Ordering::SeqCst),
        ),
        (
            "tokenwarden_emails_failed_total",
            "counter",
            "Email delivery attempts that failed.",
            t.emails_failed.load(Ordering::SeqCst),
        ),
    ] {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    // Read at each scrape, not at the last flush: another process (`tokenwarden rotate`) may
    // have queued or sent meanwhile. An unreadable outbox leaves both out rather than say 0.
    match s.outbox.backlog() {
        Ok(b) => {
            family(
                out,
                "tokenwarden_emails_queued",
                "gauge",
                "Emails waiting in the outbox (never dropped; retried at least hourly).",
            );
            let _ = writeln!(out, "tokenwarden_emails_queued {}", b.pending);
            family(
                out,
                "tokenwarden_outbox_oldest_queued_timestamp_seconds",
                "gauge",
                "When the oldest email still waiting in the outbox was queued, unix seconds; absent when none waits.",
            );
            if let Some(t) = b.oldest_queued {
                let _ = writeln!(
                    out,
                    "tokenwarden_outbox_oldest_queued_timestamp_seconds {}",
                    t.as_second()
                );
            }
        }
        Err(e) => {
            tracing::error!(dir = %s.outbox.dir().display(), error = %e, "cannot read the outbox for /metrics")
        }
    }
}

/// Per receiver beside email: alerts sent and failed (this process's counters), and, read at
/// each scrape, how many wait in its queue, since when, how many it refused as malformed, and
/// since when it keeps failing.
fn receiver_families(out: &mut String, s: &Shared) {
    let list = s
        .telemetry
        .receivers
        .read()
        .map(|r| r.clone())
        .unwrap_or_default();
    if list.is_empty() {
        return;
    }
    let mut sent = String::new();
    let mut failed = String::new();
    let mut queued = String::new();
    let mut oldest = String::new();
    let mut rejected = String::new();
    let mut failing = String::new();
    for r in &list {
        let l = format!("receiver=\"{}\",kind=\"{}\"", r.name, r.kind);
        let _ = writeln!(sent, "tokenwarden_alerts_sent_total{{{l}}} {}", r.sent);
        let _ = writeln!(
            failed,
            "tokenwarden_alerts_failed_total{{{l}}} {}",
            r.failed
        );
        match crate::channel::hub::OnDisk::read(&s.state_dir, &r.name) {
            Ok(d) => {
                let _ = writeln!(
                    queued,
                    "tokenwarden_alerts_queued{{{l}}} {}",
                    d.backlog.pending
                );
                let _ = writeln!(
                    rejected,
                    "tokenwarden_alerts_rejected{{{l}}} {}",
                    d.rejected
                );
                if let Some(t) = d.backlog.oldest_queued {
                    let _ = writeln!(
                        oldest,
                        "tokenwarden_alerts_oldest_queued_timestamp_seconds{{{l}}} {}",
                        t.as_second()
                    );
                }
                if let Some(t) = d.failing_since {
                    let _ = writeln!(
                        failing,
                        "tokenwarden_receiver_failing_since_timestamp_seconds{{{l}}} {}",
                        t.as_second()
                    );
                }
            }
            Err(e) => {
                tracing::error!(receiver = %r.name, error = %e, "cannot read the receiver's queue for /metrics")
            }
        }
    }
    for (name, kind, help, body) in [
        (
            "tokenwarden_alerts_sent_total",
            "counter",
            "Alerts the receiver accepted.",
            &sent,
        ),
        (
            "tokenwarden_alerts_failed_total",
            "counter",
            "Alert delivery attempts to the receiver that failed.",
            &failed,
        ),
        (
            "tokenwarden_alerts_queued",
            "gauge",
            "Alerts waiting in the receiver's queue (never dropped; retried at least hourly).",
            &queued,
        ),
        (
            "tokenwarden_alerts_oldest_queued_timestamp_seconds",
            "gauge",
            "When the oldest alert still waiting for the receiver was queued, unix seconds; absent when none waits.",
            &oldest,
        ),
        (
            "tokenwarden_alerts_rejected",
            "gauge",
            "Alerts the receiver refused as malformed, kept aside and not retried.",
            &rejected,
        ),
        (
            "tokenwarden_receiver_failing_since_timestamp_seconds",
            "gauge",
            "Since when every delivery to the receiver has failed, unix seconds; absent while it works.",
            &failing,
        ),
    ] {
        family(out, name, kind, help);
        out.push_str(body);
    }
}

/// Per app tokenwarden authenticates as (the `[meta]` app, a product app), since when Meta
/// refuses its credentials: read at each scrape from the per-app records; no series while
/// every app is accepted.
fn app_family(out: &mut String, s: &Shared) {
    family(
        out,
        "tokenwarden_app_credentials_refused_since_timestamp_seconds",
        "gauge",
        "Since when Meta refuses the secret tokenwarden holds for the app, unix seconds; absent while it is accepted.",
    );
    match crate::appcreds::refused(&s.state_dir) {
        Ok(list) => {
            for (app, r) in list {
                let _ = writeln!(
                    out,
                    "tokenwarden_app_credentials_refused_since_timestamp_seconds{{app=\"{app}\"}} {}",
                    r.since.as_second()
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the apps' credentials records for /metrics")
        }
    }
}

/// Rotations finished by this process, by result.
fn rotation_family(out: &mut String, t: &Telemetry) {
    family(
        out,
        "tokenwarden_rotations_total",
        "counter",
        "Rotations finished by this process, by result.",
    );
    for (result, c) in [
        ("completed", &t.rotations_completed),
        ("rejected", &t.rotations_rejected),
        ("failed", &t.rotations_failed),
        ("superseded", &t.rotations_superseded),
        ("extended", &t.rotations_extended),
    ] {
        let _ = writeln!(
            out,
            "tokenwarden_rotations_total{{result=\"{result}\"}} {}",
            c.load(Ordering::SeqCst)
        );
    }
}

/// Per group: members now and whether the last listing worked; nothing without groups.
fn group_families(out: &mut String, t: &Telemetry) {
    let groups = t.groups.read().expect("not poisoned").clone();
    if groups.is_empty() {
        return;
    }
    family(
        out,
        "tokenwarden_group_members",
        "gauge",
        "Tokens a group manages now.",
    );
    for (g, (n, _)) in &groups {
        let _ = writeln!(out, "tokenwarden_group_members{{group=\"{g}\"}} {n}");
    }
    family(
        out,
        "tokenwarden_group_discovery_success",
        "gauge",
        "1 when the group's last listing succeeded, 0 when its last good list is in use.",
    );
    for (g, (_, ok)) in &groups {
        let _ = writeln!(
            out,
            "tokenwarden_group_discovery_success{{group=\"{g}\"}} {}",
            u8::from(*ok)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_takes_an_eighth_of_the_descriptors_at_most() {
        assert_eq!(connection_limit(Some(1024)), MAX_CONNECTIONS);
        assert_eq!(connection_limit(Some(128)), 16);
        assert_eq!(connection_limit(Some(20)), 2);
        assert_eq!(connection_limit(Some(3)), 1);
        assert_eq!(connection_limit(None), MAX_CONNECTIONS);
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
