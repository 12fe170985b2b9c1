//! The receivers beside email, each with its own queue and its own record of what is open.
//!
//! Layout under `<state_dir>/channels/<receiver>/` (mode 0700):
//! - `queue/`: the receiver's [`Queue`] of [`Alert`]s (same promises as the email outbox:
//!   once per id, never lost, capped backoff; a payload the receiver refuses as malformed is
//!   set aside in `queue/rejected/`).
//! - `state.json`: what this receiver was sent and not yet told is over ([`ReceiverState`]):
//!   the open alerts by key (to resolve them, and for Alertmanager to re-send them), the
//!   resolved ones Alertmanager still hears about, and since when the receiver keeps failing.
//!
//! [`Channels::dispatch`] routes one decided alert to every receiver whose severity filter
//! takes it: a firing alert is queued and noted open; a resolution (a recovery, a rotation
//! that fixed a failure) ends the open alerts of its families on each receiver that had them,
//! so PagerDuty gets `resolve` for exactly the keys it was sent. Chat receivers (Slack, Teams)
//! get one-off news too; incident receivers (PagerDuty, Alertmanager) only conditions.
//! [`Channels::flush`] sends each receiver's queue at once (one receiver's outage never
//! delays another), re-sends Alertmanager's open alerts, and reports a receiver that has kept
//! failing for longer than its `failing_after` so the others can say so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::alertmanager::{Alertmanager, RESOLVED_RESEND};
use super::pagerduty::PagerDuty;
use super::slack::Slack;
use super::teams::Teams;
use super::{Alert, ChannelError, Status};
use crate::config::receivers::{ReceiverConfig, ReceiverKind};
use crate::state::queue::{Backlog, Failure, FlushReport, Plan, Queue, Queued};
use crate::state::{Layout, RecordStore, StateError};

/// The directory of the receivers' queues and records, in the state directory.
pub const CHANNELS_DIR: &str = "channels";

impl Queued for Alert {
    const NOUN: &'static str = "alert";

    fn id(&self) -> &str {
        &self.id
    }

    fn token(&self) -> &str {
        &self.token
    }
}

/// Why the receivers could not be set up: fix the config or the secret it names.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A secret reference could not be read (the message names the receiver and field).
    #[error("receiver {receiver}: {field}: {message}")]
    Secret {
        /// The receiver's name.
        receiver: String,
        /// The field.
        field: &'static str,
        /// Why (never the secret).
        message: String,
    },
    /// The queue or record directory cannot be created.
    #[error("receiver {receiver}: cannot open {path}: {source}")]
    Io {
        /// The receiver's name.
        receiver: String,
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What one receiver was sent and not yet told is over, and its health; `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverState {
    /// Firing alerts sent and not resolved, by key.
    #[serde(default)]
    pub open: BTreeMap<String, Alert>,
    /// Alertmanager: resolved alerts still re-sent until the time beside them.
    #[serde(default)]
    pub ending: BTreeMap<String, (Alert, Timestamp)>,
    /// Alertmanager: when the open alerts were last re-sent (or tried).
    pub last_resend: Option<Timestamp>,
    /// Since when every delivery has failed; `None` while it works.
    pub failing_since: Option<Timestamp>,
    /// The last failure, scrubbed.
    pub last_error: Option<String>,
    /// Whether the other channels were told that this one keeps failing.
    #[serde(default)]
    pub failing_reported: bool,
}

/// A receiver that has kept failing for longer than its `failing_after`, or has recovered
/// after that was reported: the daemon tells the other channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The receiver's name.
    pub receiver: String,
    /// Its kind's word.
    pub kind: &'static str,
    /// Since when it fails.
    pub since: Timestamp,
    /// Its last error (scrubbed); `None` when it works again.
    pub error: Option<String>,
}

/// The sender of one kind.
#[derive(Debug)]
enum Sender {
    Alertmanager(Alertmanager),
    PagerDuty(PagerDuty),
    Slack(Slack),
    Teams(Teams),
}

impl Sender {
    /// Incident receivers track conditions and skip one-off news.
    fn incidents(&self) -> bool {
        matches!(self, Sender::Alertmanager(_) | Sender::PagerDuty(_))
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        alert: &Alert,
        now: Timestamp,
    ) -> Result<(), ChannelError> {
        match self {
            Sender::Alertmanager(s) => s.send(client, std::slice::from_ref(alert), now).await,
            Sender::PagerDuty(s) => s.send(client, alert).await,
            Sender::Slack(s) => s.send(client, alert).await,
            Sender::Teams(s) => s.send(client, alert).await,
        }
    }
}

/// One configured receiver.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    sender: Sender,
    queue: Queue<Alert>,
    records: RecordStore,
    /// This process's deliveries accepted and failed (for `/metrics`).
    sent: AtomicU64,
    failed: AtomicU64,
}

/// The record name of a receiver's state.
const STATE_RECORD: &str = "state";

impl Receiver {
    /// The receiver's name.
    pub fn name(&self) -> &str {
        &self.cfg.name
    }

    /// The receiver's kind.
    pub fn kind(&self) -> ReceiverKind {
        self.cfg.kind
    }

    /// The longest one delivery to it may take.
    pub fn timeout(&self) -> std::time::Duration {
        self.cfg.timeout()
    }

    /// The receiver's queue.
    pub fn queue(&self) -> &Queue<Alert> {
        &self.queue
    }

    /// Deliveries accepted and failed by this process.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
        )
    }

    /// What this receiver was sent and not yet told is over (empty when never written).
    pub fn state(&self) -> ReceiverState {
        match self.records.load::<ReceiverState>(STATE_RECORD) {
            Ok(s) => s.unwrap_or_default(),
            Err(e) => {
                tracing::error!(receiver = %self.cfg.name, error = %e, "cannot read the receiver's state; starting from empty");
                ReceiverState::default()
            }
        }
    }

    fn save_state(&self, s: &ReceiverState) -> std::io::Result<()> {
        self.records
            .save(STATE_RECORD, s)
            .map_err(StateError::into_io)
    }

    /// Routes one alert to this receiver; returns how many entries were queued.
    fn dispatch(&self, alert: &Alert, resolves: &[&str], now: Timestamp) -> std::io::Result<usize> {
        // The receiver's runbook, in what is queued and in what is kept open (Alertmanager's
        // re-sends carry it too).
        let mut alert = alert.clone();
        if alert.runbook.is_none() {
            alert.runbook.clone_from(&self.cfg.runbook);
        }
        let alert = &alert;
        let mut st = self.state();
        let before = st.clone();
        let mut queued = 0;
        if alert.status == Status::Firing {
            if !self.cfg.takes(alert.severity) {
                return Ok(0);
            }
            if let Some(old) = st.open.get(&alert.key)
                && matches!(self.sender, Sender::Alertmanager(_))
                && Alertmanager::labels(old) != Alertmanager::labels(alert)
            {
                // Alertmanager knows an alert by its labels: an escalation is a new alert,
                // and the old label set must end or it fires on until its endsAt.
                let mut end = old.clone();
                end.status = Status::Resolved;
                end.id = suffixed(&alert.id, "end");
                queued += usize::from(self.queue.enqueue(&end, now)?);
                st.ending.insert(
                    format!("{}#{}", old.key, old.id),
                    (end, after(now, RESOLVED_RESEND)),
                );
            }
            queued += usize::from(self.queue.enqueue(alert, now)?);
            let mut opened = alert.clone();
            // Keeps its first start: Alertmanager's startsAt and PagerDuty's timestamp stay
            // where the condition began.
            if let Some(old) = st.open.get(&alert.key) {
                opened.started_at = old.started_at;
            }
            st.open.insert(alert.key.clone(), opened);
        } else {
            let ended: Vec<Alert> = st
                .open
                .values()
                .filter(|a| a.token == alert.token && resolves.contains(&a.condition.as_str()))
                .cloned()
                .collect();
            for e in &ended {
                st.open.remove(&e.key);
            }
            if self.sender.incidents() {
                for e in &ended {
                    let mut end = e.clone();
                    end.status = Status::Resolved;
                    end.id = suffixed(&alert.id, &e.condition);
                    end.word.clone_from(&alert.word);
                    end.headline.clone_from(&alert.headline);
                    queued += usize::from(self.queue.enqueue(&end, now)?);
                    if matches!(self.sender, Sender::Alertmanager(_)) {
                        st.ending
                            .insert(e.key.clone(), (end, after(now, RESOLVED_RESEND)));
                    }
                }
            } else {
                let news = alert.status == Status::Notice && self.cfg.takes(alert.severity);
                if news || (alert.status == Status::Resolved && !ended.is_empty()) {
                    queued += usize::from(self.queue.enqueue(alert, now)?);
                }
            }
        }
        if st != before {
            self.save_state(&st)?;
        }
        Ok(queued)
    }

    /// Sends what is due, re-sends Alertmanager's open alerts when due, and updates the
    /// receiver's health; returns the report and a health change to tell the others.
    async fn flush(
        &self,
        client: &reqwest::Client,
        now: Timestamp,
    ) -> (FlushReport<ChannelError>, Option<Health>) {
        let via = format!("{} ({})", self.cfg.name, self.cfg.kind.word());
        let report = self
            .queue
            .flush_with(now, &via, |alert| async move {
                self.sender.send(client, &alert, now).await.map_err(failure)
            })
            .await;
        self.sent
            .fetch_add(report.sent.len() as u64, Ordering::SeqCst);
        self.failed
            .fetch_add(report.failed.len() as u64, Ordering::SeqCst);
        let mut st = self.state();
        let before = st.clone();
        let mut worked = !report.sent.is_empty();
        let mut last_error = report.failed.last().map(|(_, e)| e.to_string());
        if let Sender::Alertmanager(am) = &self.sender {
            st.ending.retain(|_, (_, until)| *until > now);
            let due = st.last_resend.is_none_or(|t| after(t, am.resend()) <= now);
            if due && (!st.open.is_empty() || !st.ending.is_empty()) {
                let mut all: Vec<Alert> = st.open.values().cloned().collect();
                all.extend(st.ending.values().map(|(a, _)| a.clone()));
                // Tried, whatever the outcome: a down Alertmanager is tried again after the
                // interval, not at every wake of the daemon.
                st.last_resend = Some(now);
                match am.send(client, &all, now).await {
                    Ok(()) => worked = true,
                    Err(e) => {
                        tracing::warn!(receiver = %self.cfg.name, error = %e, "cannot re-send the open alerts to Alertmanager");
                        last_error = Some(e.to_string());
                    }
                }
            }
        }
        let mut health = None;
        if worked && last_error.is_none() {
            if st.failing_reported {
                health = Some(Health {
                    receiver: self.cfg.name.clone(),
                    kind: self.cfg.kind.word(),
                    since: st.failing_since.unwrap_or(now),
                    error: None,
                });
            }
            st.failing_since = None;
            st.last_error = None;
            st.failing_reported = false;
        } else if let Some(e) = last_error {
            if !worked {
                let since = *st.failing_since.get_or_insert(now);
                if !st.failing_reported && after(since, self.cfg.failing_after()) <= now {
                    st.failing_reported = true;
                    health = Some(Health {
                        receiver: self.cfg.name.clone(),
                        kind: self.cfg.kind.word(),
                        since,
                        error: Some(e.clone()),
                    });
                }
            }
            st.last_error = Some(e);
        }
        if st != before
            && let Err(e) = self.save_state(&st)
        {
            tracing::error!(receiver = %self.cfg.name, error = %e, "cannot save the receiver's state");
        }
        (report, health)
    }

    /// When this receiver next has something to do: a queued entry, or a re-send.
    fn next_due(&self) -> Option<Timestamp> {
        let queued = self.queue.next_due();
        let resend = match &self.sender {
            Sender::Alertmanager(am) => {
                let st = self.state();
                if st.open.is_empty() && st.ending.is_empty() {
                    None
                } else {
                    Some(
                        st.last_resend
                            .map_or(Timestamp::UNIX_EPOCH, |t| after(t, am.resend())),
                    )
                }
            }
            _ => None,
        };
        match (queued, resend) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// A receiver's queue, in its directory `dir`.
fn open_queue(dir: &Path) -> std::io::Result<Queue<Alert>> {
    Queue::open_dir(dir.join("queue"), "the alert it holds is then not sent")
}

/// A receiver's records (its `state.json`), in its directory `dir`.
fn records(dir: &Path) -> RecordStore {
    RecordStore::new(dir.to_path_buf(), Layout::Pretty)
        .aside_loses("alerts open on this receiver are then not resolved there")
}

/// What a receiver's files say now: its backlog, how many alerts it refused as malformed, and
/// since when it keeps failing. Read at each scrape of `/metrics` (another process, such as
/// `tokenwarden rotate`, may have queued or sent meanwhile), without resolving its secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OnDisk {
    /// The alerts waiting, and since when.
    pub backlog: Backlog,
    /// The alerts set aside in `queue/rejected/`.
    pub rejected: usize,
    /// Since when every delivery has failed.
    pub failing_since: Option<Timestamp>,
}

impl OnDisk {
    /// Reads the files of receiver `name` under `state_dir`.
    ///
    /// # Errors
    /// The queue's directory cannot be read.
    pub fn read(state_dir: &Path, name: &str) -> std::io::Result<OnDisk> {
        let dir = state_dir.join(CHANNELS_DIR).join(name);
        let queue = open_queue(&dir)?;
        let state: Option<ReceiverState> = records(&dir).load(STATE_RECORD).ok().flatten();
        Ok(OnDisk {
            backlog: queue.backlog()?,
            rejected: queue.rejected(),
            failing_since: state.and_then(|s| s.failing_since),
        })
    }
}

/// `id` with `-suffix`, kept a valid queue id (cut, with a hash of the whole, when too long).
fn suffixed(id: &str, suffix: &str) -> String {
    let s = format!("{id}-{suffix}");
    if s.len() <= 128 {
        return s;
    }
    let hash = crate::secret::Fingerprint::of(&s).to_string();
    let hash = hash.trim_start_matches("fp:");
    format!("{}-{hash}", &s[..128 - hash.len() - 1])
}

fn after(t: Timestamp, d: std::time::Duration) -> Timestamp {
    jiff::SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(t)
}

/// How the queue treats a receiver's error. A transport failure, a rate limit or a
/// credentials problem concerns every alert of the receiver, so the rest of the flush is not
/// tried; only a malformed payload is this alert's alone.
fn failure(e: ChannelError) -> Failure<ChannelError> {
    let (plan, server_wide) = match &e {
        ChannelError::Retry { after: None, .. } => (Plan::Backoff, true),
        ChannelError::Retry { after: Some(d), .. } => (Plan::After(*d), true),
        ChannelError::Config(_) => (Plan::Cap, true),
        ChannelError::Rejected(_) => (Plan::SetAside, false),
    };
    Failure {
        error: e,
        plan,
        server_wide,
    }
}

/// Every configured receiver.
#[derive(Debug, Default)]
pub struct Channels {
    receivers: Vec<Arc<Receiver>>,
}

impl Channels {
    /// Opens every receiver of `configs`: resolves its secrets now (a missing one is reported
    /// at start, not when on-call most needs the page) and opens its queue under
    /// `<state_dir>/channels/<name>/`. Opens no connection.
    ///
    /// # Errors
    /// [`SetupError`] naming the receiver and field.
    pub fn open(state_dir: &Path, configs: &[ReceiverConfig]) -> Result<Channels, SetupError> {
        let mut receivers = Vec::new();
        for cfg in configs {
            let secret = |field: &'static str| -> Result<crate::secret::Secret, SetupError> {
                let reference = cfg
                    .secret_refs()
                    .into_iter()
                    .find(|(f, _)| *f == field)
                    .map(|(_, r)| r)
                    .ok_or_else(|| SetupError::Secret {
                        receiver: cfg.name.clone(),
                        field,
                        message: "is required".into(),
                    })?;
                reference.resolve().map_err(|e| SetupError::Secret {
                    receiver: cfg.name.clone(),
                    field,
                    message: e.to_string(),
                })
            };
            let timeout = cfg.timeout();
            let sender = match cfg.kind {
                ReceiverKind::Alertmanager => Sender::Alertmanager(Alertmanager::new(
                    cfg.urls.clone().unwrap_or_default(),
                    timeout,
                    cfg.resend(),
                )),
                ReceiverKind::Pagerduty => {
                    let mut pd = PagerDuty::new(secret("routing_key")?, timeout);
                    if let Some(u) = &cfg.url {
                        pd = pd.with_url(u.clone());
                    }
                    if let Some(s) = &cfg.source {
                        pd = pd.with_source(s.clone());
                    }
                    Sender::PagerDuty(pd)
                }
                ReceiverKind::Slack => Sender::Slack(Slack::new(secret("webhook_url")?, timeout)),
                ReceiverKind::Teams => Sender::Teams(Teams::new(secret("webhook_url")?, timeout)),
            };
            let dir = state_dir.join(CHANNELS_DIR).join(&cfg.name);
            let queue = open_queue(&dir).map_err(|source| SetupError::Io {
                receiver: cfg.name.clone(),
                path: dir.clone(),
                source,
            })?;
            receivers.push(Arc::new(Receiver {
                cfg: cfg.clone(),
                sender,
                queue,
                records: records(&dir),
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }));
        }
        Ok(Channels { receivers })
    }

    /// The receivers, in config order.
    pub fn receivers(&self) -> &[Arc<Receiver>] {
        &self.receivers
    }

    /// Whether no receiver is configured.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// Routes `alert` to every receiver (but `except`, the one an alert is about) whose
    /// filter takes it; `resolves` names the condition families a resolution or news ends.
    /// Returns the receivers it was queued for.
    ///
    /// # Errors
    /// When a queue cannot store it (the caller keeps the decision open, to try again); the
    /// receivers before the failing one keep theirs (queueing again is a no-op by id).
    pub fn dispatch(
        &self,
        alert: &Alert,
        resolves: &[&str],
        except: Option<&str>,
        now: Timestamp,
    ) -> std::io::Result<Vec<String>> {
        let mut to = Vec::new();
        for r in &self.receivers {
            if Some(r.name()) == except {
                continue;
            }
            if r.dispatch(alert, resolves, now)? > 0 {
                to.push(r.cfg.name.clone());
            }
        }
        Ok(to)
    }

    /// Flushes every receiver at once; returns each one's report, and the receivers whose
    /// health the others must hear of.
    pub async fn flush(
        &self,
        client: &reqwest::Client,
        now: Timestamp,
    ) -> (Vec<(String, FlushReport<ChannelError>)>, Vec<Health>) {
        let mut set = tokio::task::JoinSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let r = Arc::clone(r);
            let client = client.clone();
            set.spawn(async move { (i, r.flush(&client, now).await) });
        }
        let mut done = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(x) => done.push(x),
                Err(e) => tracing::error!(error = %e, "a receiver's flush panicked"),
            }
        }
        done.sort_by_key(|(i, _)| *i);
        let mut reports = Vec::new();
        let mut health = Vec::new();
        for (i, (report, h)) in done {
            reports.push((self.receivers[i].cfg.name.clone(), report));
            health.extend(h);
        }
        (reports, health)
    }

    /// Adds the counters of `old`'s receivers to those of the same name here (a reload builds
    /// the receivers again; `/metrics` counters must not go back to zero).
    pub fn carry_counts(&self, old: &Channels) {
        for r in &self.receivers {
            if let Some(o) = old.receivers.iter().find(|o| o.name() == r.name()) {
                let (sent, failed) = o.counts();
                r.sent.fetch_add(sent, Ordering::SeqCst);
                r.failed.fetch_add(failed, Ordering::SeqCst);
            }
        }
    }

    /// When a receiver next has something to do.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.receivers.iter().filter_map(|r| r.next_due()).min()
    }

    /// Each receiver's backlog, by name (unreadable queues left out).
    pub fn backlogs(&self) -> Vec<(String, Backlog)> {
        self.receivers
            .iter()
            .filter_map(|r| Some((r.cfg.name.clone(), r.queue.backlog().ok()?)))
            .collect()
    }

    /// Sends `alert` straight to each receiver (or only `only`), bypassing the queues:
    /// `tokenwarden notify test`. Incident receivers get it firing, then resolved, so no test
    /// incident stays open. Returns each receiver's outcome.
    pub async fn test(
        &self,
        client: &reqwest::Client,
        alert: &Alert,
        only: Option<&str>,
        now: Timestamp,
    ) -> Vec<(String, &'static str, Result<(), ChannelError>)> {
        let mut out = Vec::new();
        for r in &self.receivers {
            if only.is_some_and(|o| o != r.name()) {
                continue;
            }
            let mut a = alert.clone();
            a.runbook.clone_from(&r.cfg.runbook);
            let result = if r.sender.incidents() {
                a.status = Status::Firing;
                match r.sender.send(client, &a, now).await {
                    Ok(()) => {
                        a.status = Status::Resolved;
                        r.sender.send(client, &a, now).await
                    }
                    Err(e) => Err(e),
                }
            } else {
                a.status = Status::Notice;
                r.sender.send(client, &a, now).await
            };
            out.push((r.cfg.name.clone(), r.cfg.kind.word(), result));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{Severity, TOKEN_FAMILIES};

    fn receiver(text: &str) -> ReceiverConfig {
        toml::from_str(text).unwrap()
    }

    fn alert(id: &str, severity: Severity, status: Status, state: &str) -> Alert {
        let summary = crate::alert::Summary {
            word: state.into(),
            headline: "expires soon".into(),
            ..Default::default()
        };
        let signal = crate::channel::Signal {
            family: crate::channel::family::EXPIRY,
            severity,
            status,
            state,
            fingerprint: None,
            resolves: &[],
        };
        Alert::new(id, "prod", &summary, &signal, Timestamp::UNIX_EPOCH)
    }

    fn queued(c: &Channels, i: usize) -> Vec<(String, Status, Severity)> {
        c.receivers()[i]
            .queue()
            .pending()
            .unwrap()
            .into_iter()
            .map(|e| (e.item.id, e.item.status, e.item.severity))
            .collect()
    }

    /// Alertmanager knows an alert by its labels: an escalation ends the old label set as the
    /// new one fires, and a recovery ends the new one. A chat receiver filtered to critical
    /// gets the critical alert and its recovery, and no recovery for what it never got.
    #[test]
    fn an_escalation_ends_the_old_label_set_and_a_recovery_ends_what_each_receiver_got() {
        let dir = tempfile::tempdir().unwrap();
        let c = Channels::open(
            dir.path(),
            &[
                receiver("name = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://127.0.0.1:9\"]"),
                receiver("name = \"pd\"\nkind = \"pagerduty\"\nrouting_key = { env = \"HOME\" }\nseverities = [\"critical\"]"),
            ],
        )
        .unwrap();
        let t = |s| Timestamp::from_second(s).unwrap();
        let warn = alert("prod-warn", Severity::Warning, Status::Firing, "WARNING");
        let crit = alert("prod-crit", Severity::Critical, Status::Firing, "CRITICAL");
        let ok = alert("prod-ok", Severity::Info, Status::Resolved, "OK");
        c.dispatch(&warn, &[], None, t(1)).unwrap();
        c.dispatch(&warn, &[], None, t(2)).unwrap(); // decided twice: queued once
        c.dispatch(&crit, &[], None, t(3)).unwrap();
        c.dispatch(&ok, TOKEN_FAMILIES, None, t(4)).unwrap();
        // (Alertmanager takes distinct label sets in any order: the end of the warning and
        // the critical alert are queued at the same moment.)
        let mut q: Vec<(String, bool, Severity)> = queued(&c, 0)
            .into_iter()
            .map(|(id, st, sev)| (id, st == Status::Firing, sev))
            .collect();
        q.sort();
        assert_eq!(
            q,
            vec![
                ("prod-crit".to_string(), true, Severity::Critical),
                ("prod-crit-end".into(), false, Severity::Warning),
                ("prod-ok-expiry".into(), false, Severity::Critical),
                ("prod-warn".into(), true, Severity::Warning),
            ]
        );
        assert_eq!(
            queued(&c, 1),
            vec![
                ("prod-crit".into(), Status::Firing, Severity::Critical),
                (
                    "prod-ok-expiry".into(),
                    Status::Resolved,
                    Severity::Critical
                ),
            ]
        );
        assert!(c.receivers()[0].state().open.is_empty());
        // A second recovery finds nothing open: nothing more queued.
        c.dispatch(
            &alert("prod-ok2", Severity::Info, Status::Resolved, "OK"),
            TOKEN_FAMILIES,
            None,
            t(5),
        )
        .unwrap();
        assert_eq!(queued(&c, 1).len(), 2);
    }

    #[test]
    fn suffixed_ids_stay_valid() {
        assert_eq!(
            suffixed("prod-1a2b-critical", "end"),
            "prod-1a2b-critical-end"
        );
        let long = "a".repeat(127);
        let s = suffixed(&long, "expiry");
        assert!(crate::state::queue::valid_id(&s), "{s}");
        assert_ne!(suffixed(&long, "expiry"), suffixed(&long, "invalid"));
    }
}
