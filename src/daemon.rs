//! `tokenwarden run`: scheduled checks, alert decisions, the email outbox.
//!
//! The loop waits for one of: a cron job firing (tokio-cron-scheduler, one job per distinct
//! schedule), a control message (SIGHUP reload, or a test asking for a check), the next moment
//! policy could change its mind (a threshold crossing, a repeat falling due, capped at a minute
//! so a suspended host or a clock jump cannot swallow a warning), or shutdown. Only the *waiting*
//! races shutdown. A SIGTERM during work sets the stop flag ([`crate::liveness::Stop`]): a
//! check in progress is abandoned (it only reads; nothing of it is recorded), a rotation
//! finishes the step in progress and is saved, and nothing new starts.
//!
//! Each check: read the token from its store, inspect it, read the phone number, turn that into
//! a [`Verdict`] and facts, then settle: assess, decide which emails are due, queue them in the
//! persistent outbox *before* recording them as sent in the state, then flush the outbox. A
//! crash between the two writes re-decides the same emails with the same ids, which the outbox
//! ignores, so nothing is lost and nothing is sent twice.
//!
//! A `[[group]]`'s job lists the group's store again, then queues its members in slices of one
//! Graph batch, due evenly over the group's `spread`; the loop runs each slice when it falls
//! due (a wake like any other), checking its tokens together ([`crate::observe::observe_many`]) and saving the
//! state once for the slice.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::alert;
use crate::config::{self, Config, Schedule, StoreConfig, TokenConfig};
use crate::graph::{self, GraphClient};
use crate::metrics::Telemetry;
use crate::notify::email_id;
use crate::notify::{Email, Mailer, Outbox};
use crate::observe::{BATCHES_IN_FLIGHT, READS_IN_FLIGHT, observe, observe_many, read_current};
use crate::policy::{self, TokenFacts, Verdict};
use crate::secret::{Fingerprint, Secret};
use crate::state::{Snapshot, StateError, StateStore};
use crate::store::Store;

/// Tokens of a group checked together when the whole group is checked at once.
const CHECK_CHUNK: usize = 1000;

/// The longest the loop sleeps without re-reading the clock (and beating for `/healthz`).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Where "now" comes from. The daemon asks on every wake; it never trusts a sleep's length.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The real clock shifted by an adjustable offset: tests move time forward with it (together
/// with the sandbox's clock) instead of sleeping.
#[derive(Debug, Default, Clone)]
pub struct OffsetClock(Arc<AtomicI64>);

impl OffsetClock {
    /// Moves this clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let t = Timestamp::now().as_second() + self.0.load(Ordering::SeqCst);
        Timestamp::from_second(t).expect("clock within range")
    }
}

/// Requests to a running daemon.
#[derive(Debug)]
pub enum Control {
    /// Check every token now (tests; operators use SIGHUP, which reloads and checks).
    CheckNow(oneshot::Sender<()>),
    /// Re-read the config; a broken one is refused and the old one keeps running.
    Reload(Option<oneshot::Sender<Result<(), String>>>),
    /// Do what a wake of the loop does (tests): run the queued slices that are due (a
    /// deferred check reads Graph), then re-evaluate alerts from what is known.
    Evaluate(oneshot::Sender<()>),
}

/// Why the daemon could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The config is invalid or a secret it references is unreadable: exit 78.
    #[error("{0}")]
    Config(String),
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The scheduler failed.
    #[error("scheduler: {0}")]
    Scheduler(String),
}

/// The thread (the `token` of an [`Email`]) of alerts about tokenwarden itself.
const HOST_THREAD: &str = "tokenwarden";

/// The daemon's working set.
pub struct Daemon {
    cfg: Config,
    graph: GraphClient,
    mailer: Option<Mailer>,
    outbox: Outbox,
    state: StateStore,
    snap: Snapshot,
    clock: Arc<dyn Clock>,
    next_fire: BTreeMap<String, Timestamp>,
    telemetry: Arc<Telemetry>,
    audit: crate::audit::Audit,
    /// The `[[token]]`s; `cfg.tokens` is these followed by the groups' members.
    statics: Vec<TokenConfig>,
    /// What the last listing of each group found.
    discovery: crate::discover::Discovery,
    /// Slices of a group's scheduled check still to run, each at its time (the spread).
    queue: std::collections::VecDeque<Slice>,
    /// Whether the state changed since it was last saved.
    dirty: bool,
    /// The loop's promise to the watchdog, renewed before every piece of work.
    live: Arc<crate::liveness::Liveness>,
    /// The worst cases of this config's work.
    budget: crate::liveness::Budget,
    /// Space held back for the "disk full" alert.
    reserve: crate::state::Reserve,
    /// A write in the state directory found the disk full since the last save.
    disk_full_seen: bool,
    /// When the current full-disk episode began (its alert was queued then).
    disk_full_since: Option<Timestamp>,
}

/// Part of a group's scheduled check: one Graph batch worth of tokens, due at a moment within
/// the group's spread.
#[derive(Debug)]
struct Slice {
    due: Timestamp,
    /// The group it checks; empty for a throttled token's deferred check.
    group: String,
    tokens: Vec<String>,
}

/// What a cron job asks for when it fires.
#[derive(Debug)]
enum Fire {
    /// Check this `[[token]]`.
    Token(String),
    /// List this group again and check its members over its spread.
    Group(String),
}

impl Daemon {
    /// Builds the daemon from a validated config: resolves secrets, opens the state.
    ///
    /// # Errors
    /// [`DaemonError::Config`] for unreadable secrets or a bad email setup,
    /// [`DaemonError::State`] for an unusable state directory.
    pub fn new(cfg: Config, clock: Arc<dyn Clock>) -> Result<Daemon, DaemonError> {
        let secret = cfg
            .meta
            .app_secret
            .resolve()
            .map_err(|e| DaemonError::Config(format!("`meta.app_secret`: {e}")))?;
        let graph =
            GraphClient::new(&cfg.meta, secret).map_err(|e| DaemonError::Config(e.to_string()))?;
        let mailer = match &cfg.email {
            Some(e) => {
                Some(Mailer::new(e).map_err(|e| DaemonError::Config(format!("[email]: {e}")))?)
            }
            None => None,
        };
        // Whoever can write the state directory can plant files where tokens are written.
        crate::fsutil::check_private_dir(&cfg.state_dir).map_err(DaemonError::Config)?;
        let state = StateStore::new(&cfg.state_dir);
        let cfg_state_dir = cfg.state_dir.clone();
        let audit_limits = cfg.audit;
        // Temp files a kill left behind (they can hold a token).
        for sub in ["", "outbox", "rotations", "targets", "groups"] {
            crate::fsutil::remove_stale_temps(&cfg.state_dir.join(sub), None);
        }
        // And those of env files, in the applications' directories (only each file's own).
        for t in &cfg.tokens {
            for target in &t.targets {
                if let crate::config::TargetKind::Dotenv { path, .. } = &target.kind
                    && let Some(name) = path.file_name()
                {
                    crate::fsutil::remove_stale_temps(
                        crate::fsutil::parent_of(path),
                        Some(&name.to_string_lossy()),
                    );
                }
            }
        }
        let (snap, set_aside) = state.load_or_set_aside(clock.now())?;
        let outbox = Outbox::open(&cfg.state_dir).map_err(|source| StateError::Io {
            path: cfg.state_dir.join("outbox"),
            source,
        })?;
        let statics = cfg.tokens.clone();
        let budget = crate::liveness::Budget::of(&cfg);
        let live = Arc::new(crate::liveness::Liveness::default());
        live.set_step(budget.rotation_step);
        let reserve = crate::state::Reserve::new(&cfg.state_dir, crate::state::RESERVE_BYTES);
        if let Err(e) = reserve.ensure() {
            tracing::warn!(error = %e, "cannot reserve space in the state directory for a disk-full alert");
        }
        let d = Daemon {
            live,
            budget,
            cfg,
            statics,
            discovery: crate::discover::Discovery::default(),
            queue: std::collections::VecDeque::new(),
            dirty: false,
            graph,
            mailer,
            outbox,
            state,
            snap,
            clock,
            next_fire: BTreeMap::new(),
            telemetry: Arc::default(),
            audit: crate::audit::Audit::new(&cfg_state_dir).with_limits(audit_limits),
            reserve,
            disk_full_seen: false,
            disk_full_since: None,
        };
        if let Some(aside) = set_aside {
            d.state_set_aside(&aside);
        }
        Ok(d)
    }

    /// Tells on-call that the state file was corrupt and set aside: the ledger of emails sent
    /// is gone, so some may come again, and nothing else would say why.
    fn state_set_aside(&self, aside: &Path) {
        let now = self.clock.now();
        self.audit.record(
            now,
            "state_set_aside",
            serde_json::json!({"moved_to": aside.display().to_string()}),
        );
        let a = alert::HostAlert {
            word: "STATE RESET",
            headline: "the state file was corrupt and was set aside",
            lead: format!(
                "tokenwarden found `{}` unreadable at start, moved it to `{}` and started with an empty state.",
                self.state.path().display(),
                aside.display()
            ),
            facts: vec![
                "What tokenwarden remembered (last checks, emails already sent) is not in use.".into(),
                "Tokens, rotations and the outbox are kept in their own files and are not affected.".into(),
            ],
            will_do: vec![
                "Check every token again now; alerts that were already sent may be sent once more.".into(),
            ],
            todo: vec![
                format!("Look at `{}` for the cause (a full disk, a manual edit, a storage fault), then delete it.", aside.display()),
            ],
        };
        self.queue_host_alert(&format!("state-reset-{}", now.as_second()), &a);
    }

    /// Queues an alert about tokenwarden itself (not one token), or logs it without `[email]`.
    fn queue_host_alert(&self, key: &str, a: &alert::HostAlert<'_>) -> bool {
        let r = alert::render_host(a);
        let email = Email {
            id: email_id(HOST_THREAD, key),
            token: HOST_THREAD.into(),
            subject: r.subject,
            text: r.text,
            html: r.html,
        };
        if self.mailer.is_none() {
            tracing::warn!(subject = %email.subject, "host alert (no [email] configured: logged only)");
            return true;
        }
        match self.outbox.enqueue(&email, self.clock.now()) {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(subject = %email.subject, error = %e, "cannot queue the alert");
                false
            }
        }
    }

    /// The current config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Lists every group again (or only `only`) and rebuilds the token list.
    pub async fn refresh_groups(&mut self, only: Option<&str>) {
        let before: std::collections::HashSet<String> =
            self.cfg.tokens.iter().map(|t| t.name.clone()).collect();
        // The first listing is the start, not a change of membership.
        let first = self.discovery.members.is_empty() && self.discovery.failed.is_empty();
        crate::discover::refresh(&mut self.cfg, &self.statics, &mut self.discovery, only).await;
        let now = self.clock.now();
        let after: std::collections::HashSet<String> =
            self.cfg.tokens.iter().map(|t| t.name.clone()).collect();
        let joined: Vec<&String> = after.difference(&before).collect();
        let left: Vec<&String> = before.difference(&after).collect();
        if !first && (!joined.is_empty() || !left.is_empty()) {
            tracing::info!(
                joined = joined.len(),
                left = left.len(),
                "group membership changed"
            );
            self.audit.record(
                now,
                "groups",
                serde_json::json!({"joined": joined, "left": left}),
            );
        }
        *self.telemetry.tokens.write().expect("not poisoned") =
            self.cfg.tokens.iter().map(|t| t.name.clone()).collect();
        let mut groups = self.telemetry.groups.write().expect("not poisoned");
        groups.clear();
        for g in &self.cfg.groups {
            let n = self.discovery.members.get(&g.name).map_or(0, Vec::len);
            groups.insert(
                g.name.clone(),
                (n, !self.discovery.failed.contains_key(&g.name)),
            );
        }
    }

    /// The members of `group` now, by token name.
    fn members_of(&self, group: &str) -> Vec<String> {
        let Some(g) = self.cfg.groups.iter().find(|g| g.name == group) else {
            return Vec::new();
        };
        let statics: std::collections::HashSet<&str> =
            self.statics.iter().map(|t| t.name.as_str()).collect();
        self.discovery
            .members
            .get(group)
            .into_iter()
            .flatten()
            .map(|m| crate::discover::token_name(&g.name, &m.member))
            .filter(|n| !statics.contains(n.as_str()))
            .collect()
    }

    /// Checks every token (groups listed again, their members through Graph batches), then
    /// sends what is due.
    pub async fn check_all(&mut self) {
        self.live
            .busy(self.budget.listing * self.cfg.groups.len() as u32 + self.budget.token_check);
        self.refresh_groups(None).await;
        let statics: Vec<String> = self.statics.iter().map(|t| t.name.clone()).collect();
        for name in statics {
            if crate::liveness::requested() {
                return;
            }
            self.check(&name).await;
        }
        for g in self.cfg.groups.clone() {
            // A thousand at a time (20 Graph batches, 5 rounds at 4 in flight): as fast as
            // all at once, and a fleet's answers are never all in memory together.
            for chunk in self.members_of(&g.name).chunks(CHECK_CHUNK) {
                if crate::liveness::requested() {
                    return;
                }
                self.check_many(chunk).await;
            }
        }
        self.flush().await;
    }

    /// Whether Meta throttled `name`'s last check and access has not returned yet: its check
    /// waits (the queued slice at `throttled_until` runs it).
    fn deferred(&self, name: &str) -> bool {
        let now = self.clock.now();
        self.snap
            .tokens
            .get(name)
            .and_then(|ts| ts.throttled_until)
            .is_some_and(|until| until > now)
    }

    /// Checks one token and settles its alerts (the caller flushes).
    pub async fn check(&mut self, name: &str) {
        let Some(t) = self.cfg.token(name).cloned() else {
            return;
        };
        if self.deferred(name) {
            tracing::debug!(token = %name, "check deferred: Meta is throttling it");
            return;
        }
        self.live.busy(self.budget.token_check);
        // Abandoned on SIGTERM: a hanging Graph must not hold up a stop (nothing is recorded).
        let Some((verdict, facts)) =
            crate::liveness::abandon_on_stop(observe(&self.cfg, &t, &self.graph)).await
        else {
            return;
        };
        crate::failpoint::hit("daemon.after_observe");
        let alerted = self.note(&t, verdict, facts);
        self.save_state();
        if alerted {
            crate::failpoint::hit("daemon.after_save");
        }
        self.follow_up(&t, None).await;
    }

    /// Checks many tokens with Graph batch requests (the caller flushes). The state is saved
    /// once for all of them rather than once per token.
    pub async fn check_many(&mut self, names: &[String]) {
        let tokens: Vec<TokenConfig> = names
            .iter()
            .filter(|n| !self.deferred(n))
            .filter_map(|n| self.cfg.token(n).cloned())
            .collect();
        if tokens.is_empty() {
            return;
        }
        self.live.busy(self.budget.many(
            &self.cfg.meta,
            tokens.len(),
            READS_IN_FLIGHT,
            BATCHES_IN_FLIGHT,
        ));
        let Some(observed) = crate::liveness::abandon_on_stop(observe_many(
            &self.cfg,
            &tokens,
            &self.graph,
            BATCHES_IN_FLIGHT,
        ))
        .await
        else {
            return;
        };
        crate::failpoint::hit("daemon.after_observe");
        let mut alerted = false;
        let mut values = Vec::with_capacity(tokens.len());
        for (t, o) in tokens.iter().zip(observed) {
            alerted |= self.note(t, o.verdict, o.facts);
            values.push(o.token);
        }
        self.save_state();
        if alerted {
            crate::failpoint::hit("daemon.after_save");
        }
        for (t, value) in tokens.iter().zip(values) {
            self.follow_up(t, value).await;
        }
    }

    /// Records what a check saw in the state and settles the token's alerts (the caller saves
    /// the state). Returns whether an email was decided.
    fn note(&mut self, t: &TokenConfig, verdict: Verdict, facts: Option<TokenFacts>) -> bool {
        let now = self.clock.now();
        self.telemetry.beat(now.as_second());
        self.audit.record(
            now,
            "check",
            serde_json::json!({
                "token": t.name,
                "fingerprint": facts.as_ref().map(|f| f.fingerprint.to_string()),
                "verdict": verdict,
            }),
        );
        let ts = self.snap.tokens.entry(t.name.clone()).or_default();
        ts.last_check = Some(now);
        ts.throttled_until = None;
        match &verdict {
            Verdict::Throttled {
                retry_after_secs,
                detail,
            } => {
                ts.failing_since.get_or_insert(now);
                ts.check_errors += 1;
                // Deferred to when access returns, checked then on its own; with no word
                // from Meta, the next scheduled check tries again. Never asked in between.
                ts.throttled_until = retry_after_secs
                    .and_then(|s| Timestamp::from_second(now.as_second() + s as i64).ok());
                if let Some(until) = ts.throttled_until {
                    self.queue.push_back(Slice {
                        due: until,
                        group: String::new(),
                        tokens: vec![t.name.clone()],
                    });
                    self.queue.make_contiguous().sort_by_key(|s| s.due);
                }
                tracing::warn!(token = %t.name, until = ?ts.throttled_until.map(crate::timefmt::utc), error = %detail, "Meta throttled the check; deferred until access returns");
            }
            Verdict::Unreachable { detail } => {
                ts.failing_since.get_or_insert(now);
                ts.check_errors += 1;
                tracing::warn!(token = %t.name, error = %detail, "check failed; will retry on schedule");
            }
            Verdict::OwnCredentials { .. } | Verdict::StoreProblem { .. } => {
                ts.failing_since = None;
                ts.check_errors += 1;
            }
            _ => {
                ts.failing_since = None;
                ts.check_errors = 0;
                ts.last_success = Some(now);
            }
        }
        if facts.is_some() {
            ts.facts = facts;
        }
        ts.verdict = Some(verdict);
        self.dirty = true;
        self.settle(t, now)
    }

    /// After a check: resumes or starts the token's rotation, then repairs its targets.
    /// `current` is the value the check read from the store, when it has it.
    async fn follow_up(&mut self, t: &TokenConfig, current: Option<Secret>) {
        // Nothing new starts once a stop is requested.
        if crate::liveness::requested() {
            return;
        }
        if self.rotate(t).await {
            // The store's current token changed: look at the new one at once, so state,
            // metrics and alerts describe what is now in use.
            Box::pin(self.check(&t.name)).await;
            return;
        }
        self.reconcile(t, current).await;
    }

    /// Writes the state when it changed since the last write.
    fn save_state(&mut self) {
        if !self.dirty {
            return;
        }
        match self.state.save(&self.snap) {
            Ok(()) if !self.disk_full_seen => {
                self.dirty = false;
                self.disk_recovered();
            }
            Ok(()) => {
                // An email could not be queued: still full for the outbox.
                self.dirty = false;
                self.disk_full();
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot save state");
                if matches!(&e, StateError::Io { source, .. } if crate::state::is_disk_full(source))
                    || self.disk_full_seen
                {
                    self.disk_full();
                    // The reserve's room may hold the state too.
                    if self.state.save(&self.snap).is_ok() {
                        self.dirty = false;
                    }
                }
            }
        }
    }

    /// The state directory's disk is full: frees the reserve and queues one alert for the
    /// episode, so on-call hears of it while every other alert waits for room.
    fn disk_full(&mut self) {
        self.disk_full_seen = false;
        if self.disk_full_since.is_some() {
            return;
        }
        let now = self.clock.now();
        let freed = self.reserve.release();
        let dir = self.cfg.state_dir.display().to_string();
        let a = alert::HostAlert {
            word: "DISK FULL",
            headline: "the state directory's disk is full; alerts are held back",
            lead: format!("tokenwarden cannot write to `{dir}`: the disk (or the quota) is full."),
            facts: vec![
                "Alerts about tokens cannot be queued and the state cannot be saved until there is room.".into(),
                if freed {
                    "tokenwarden freed the space it keeps in reserve to send this email.".into()
                } else {
                    "There was no reserved space left to free.".into()
                },
            ],
            will_do: vec![
                "Keep checking; every alert held back goes out once there is room again (nothing is lost).".into(),
            ],
            todo: vec![
                format!("Free space on the file system of `{dir}` (`df -h {dir}`)."),
            ],
        };
        if self.queue_host_alert(&format!("disk-full-{}", now.as_second()), &a) {
            self.disk_full_since = Some(now);
            self.audit.record(
                now,
                "disk_full",
                serde_json::json!({"reserve_freed": freed}),
            );
        }
    }

    /// A save succeeded: after a full disk, the reserve is made again once there is room.
    fn disk_recovered(&mut self) {
        if self.disk_full_since.is_none() {
            return;
        }
        if self.reserve.ensure().is_ok() {
            tracing::info!("the state directory has room again");
            self.disk_full_since = None;
        }
    }

    /// The drift check: every target should hold the store's current token. Skipped while a
    /// rotation is between obtaining and promoting (targets may rightly hold the candidate).
    async fn reconcile(&mut self, t: &TokenConfig, current: Option<Secret>) {
        use crate::rotation::Step;
        if t.targets.is_empty() || crate::liveness::requested() {
            return;
        }
        self.live.busy(self.budget.repair);
        let log = crate::rotation::run::RotationLog::new(&self.cfg.state_dir);
        let Ok(Some(_lock)) = log.try_lock(&t.name) else {
            return;
        };
        if let Ok(Some(r)) = log.load(&t.name)
            && r.is_active()
            && matches!(
                r.step,
                Step::Obtain | Step::Validate | Step::Deliver | Step::Promote
            )
        {
            return;
        }
        let current = match current {
            Some(c) => c,
            None => match read_current(&t.store, &t.name, &self.cfg.state_dir).await {
                Ok(c) => c,
                Err(_) => return,
            },
        };
        let targets = match crate::target::open_all(t).await {
            Ok(x) => x,
            Err((name, e)) => {
                tracing::warn!(token = %t.name, target = %name, error = %e, "cannot open target");
                return;
            }
        };
        let tlog = crate::delivery::TargetLog::new(&self.cfg.state_dir);
        let mut records = tlog.load(&t.name).unwrap_or_default();
        let before = records.clone();
        let now = self.clock.now();
        let expires_at = self
            .snap
            .tokens
            .get(&t.name)
            .and_then(|s| s.effective)
            .map(|e| e.at);
        let ctx = crate::target::PushContext {
            token_name: t.name.clone(),
            expires_at,
            event: "sync".into(),
            request_id: format!("sync-{}", now.as_second() / 86_400),
            now,
            reloads: None,
            hide: Vec::new(),
        };
        let out = crate::delivery::reconcile(
            &targets,
            &mut records,
            &current,
            &ctx,
            &crate::target::http_client(),
            self.cfg.delivery.parallelism,
        )
        .await;
        // Unchanged records are not written again: a fleet's drift checks would otherwise
        // sync thousands of files every run.
        if records != before
            && let Err(e) = tlog.save(&t.name, &records)
        {
            tracing::error!(token = %t.name, error = %e, "cannot save the target records");
        }
        for (name, found) in &out.drifted {
            tracing::warn!(token = %t.name, target = %name, found = %found, "target changed behind tokenwarden's back; the current token was pushed again");
        }
        for name in &out.synced {
            tracing::info!(token = %t.name, target = %name, "target brought up to the current token");
        }
        for (name, e) in &out.failed {
            tracing::warn!(token = %t.name, target = %name, error = %e, "target does not hold the current token; retrying on the next run");
        }
        if !(out.drifted.is_empty() && out.synced.is_empty() && out.failed.is_empty()) {
            self.audit.record(now, "reconcile", serde_json::json!({"token": t.name, "fingerprint": current.fingerprint().to_string(), "drifted": out.drifted, "synced": out.synced, "failed": out.failed}));
        }
        if out.drifted.is_empty() && out.failed.is_empty() {
            return;
        }
        let r = alert::render_targets(&t.name, current.fingerprint(), &out.drifted, &out.failed);
        let day = now.as_second() / 86_400;
        let email = Email {
            id: email_id(
                &t.name,
                &format!("targets-{day}-{}", Fingerprint::of(&r.text)),
            ),
            token: t.name.clone(),
            subject: r.subject,
            text: r.text,
            html: r.html,
        };
        if self.mailer.is_some() {
            if let Err(e) = self.outbox.enqueue(&email, now) {
                tracing::error!(token = %t.name, error = %e, "cannot queue the targets email");
            }
        } else {
            tracing::warn!(token = %t.name, subject = %email.subject, "targets email (no [email] configured: logged only)");
        }
    }

    /// Resumes the token's rotation, or starts one when it is due. Returns whether a new token
    /// became current. Runs to the end of the step in progress whatever signals arrive: the
    /// main loop only looks at shutdown between calls.
    async fn rotate(&mut self, t: &TokenConfig) -> bool {
        let log = crate::rotation::run::RotationLog::new(&self.cfg.state_dir);
        let now = self.clock.now();
        let last = match log.load(&t.name) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(token = %t.name, error = %e, "cannot read the rotation record");
                return false;
            }
        };
        let active = last.as_ref().is_some_and(|r| r.is_active());
        let start = self
            .snap
            .tokens
            .get(&t.name)
            .and_then(|ts| crate::rotation::start_reason(t, ts, last.as_ref(), now));
        if !active && start.is_none() {
            return false;
        }
        let store = match Store::open(&t.store, &t.name, &self.cfg.state_dir).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(token = %t.name, error = %e, "cannot open the store to rotate");
                return false;
            }
        };
        let clock = self.clock.clone();
        let now_fn = move || clock.now();
        let deps = crate::rotation::run::Deps {
            cfg: &self.cfg,
            token: t,
            graph: &self.graph,
            store: &store,
            log: &log,
            audit: &self.audit,
            outbox: self.mailer.as_ref().map(|_| &self.outbox),
            now: &now_fn,
        };
        match crate::rotation::run::drive(&deps, start).await {
            Ok(report) => {
                use crate::rotation::run::Report;
                let r = match &report {
                    Report::Waiting(r) | Report::Stalled(r) | Report::Finished(r) => r,
                    Report::Idle(why) => {
                        tracing::info!(token = %t.name, "rotation due but not started: {why}");
                        return false;
                    }
                    Report::Busy => return false,
                };
                if let Report::Finished(r) = &report {
                    self.telemetry.rotation_finished(r.outcome.as_ref());
                }
                let promoted_before = last
                    .as_ref()
                    .filter(|l| l.id == r.id)
                    .is_some_and(|l| l.promoted_at.is_some());
                r.promoted_at.is_some() && !promoted_before
            }
            Err(e) => {
                tracing::error!(token = %t.name, error = %e, "rotation cannot proceed");
                false
            }
        }
    }

    /// Re-assesses every token from what is known, without network, and sends what is due.
    pub async fn evaluate_all(&mut self) {
        let now = self.clock.now();
        let tokens = std::mem::take(&mut self.cfg.tokens);
        let mut alerted = false;
        for t in &tokens {
            alerted |= self.settle(t, now);
        }
        self.cfg.tokens = tokens;
        self.save_state();
        if alerted {
            crate::failpoint::hit("daemon.after_save");
        }
        self.flush().await;
    }

    /// Assess, decide, queue, then record in the state (which the caller saves): the order that
    /// makes a crash harmless. Returns whether an email was decided.
    fn settle(&mut self, t: &TokenConfig, now: Timestamp) -> bool {
        let Some(ts) = self.snap.tokens.get_mut(&t.name) else {
            return false;
        };
        let Some(verdict) = ts.verdict.clone() else {
            return false;
        };
        let a = policy::assess(
            &verdict,
            ts.facts.as_ref(),
            ts.failing_since,
            &t.policy,
            now,
        );
        let fp = ts.facts.as_ref().map(|f| f.fingerprint);
        let (notices, ledger) = policy::decide(&ts.ledger, &a.conditions, fp, &t.policy, now);
        if a.state != ts.state.unwrap_or(policy::State::Ok) || ts.state.is_none() {
            tracing::info!(token = %t.name, state = a.state.word(), "state");
        }
        let next_check = self.next_fire.get(&t.name).copied();
        let mut queued = true;
        // Built only for an email: the daemon re-assesses every token on each wake, and a
        // fleet's idle loop should not format thousands of texts nobody reads.
        let (store_desc, hint, rotation_plan) = if notices.is_empty() {
            Default::default()
        } else {
            (
                store_description(t, &self.cfg),
                store_hint(t),
                rotation_plan(t, ts.facts.as_ref()),
            )
        };
        for n in &notices {
            let ctx = alert::Context {
                token: &t.name,
                waba_id: t.waba_id.as_deref(),
                phone_number_id: t.phone_number_id.as_deref(),
                store: &store_desc,
                store_hint: &hint,
                facts: ts.facts.as_ref(),
                verdict: &verdict,
                state: a.state,
                effective: a.effective,
                policy: &t.policy,
                next_check,
                failing_since: ts.failing_since,
                rotation: &rotation_plan,
            };
            let r = alert::render(&ctx, n, now);
            let email = Email {
                id: email_id(&t.name, &n.key),
                token: t.name.clone(),
                subject: r.subject.clone(),
                text: r.text,
                html: r.html,
            };
            if self.mailer.is_some() {
                match self.outbox.enqueue(&email, now) {
                    Ok(_) => {
                        tracing::info!(token = %t.name, email = %email.id, subject = %email.subject, "alert queued");
                        self.audit.record(now, "email_queued", serde_json::json!({"token": t.name, "id": email.id, "subject": email.subject}));
                    }
                    Err(e) => {
                        // Not recorded as sent: the next pass decides it again.
                        tracing::error!(token = %t.name, error = %e, "cannot queue alert email");
                        self.disk_full_seen |= crate::state::is_disk_full(&e);
                        queued = false;
                    }
                }
            } else {
                tracing::warn!(token = %t.name, subject = %email.subject, "alert (no [email] configured: logged only)");
            }
            ts.last_email = Some((now, r.subject));
        }
        if !notices.is_empty() {
            crate::failpoint::hit("daemon.after_enqueue");
        }
        let changed = (queued && ts.ledger != ledger)
            || ts.state != Some(a.state)
            || ts.effective != a.effective
            || ts.next_check != next_check;
        if queued {
            ts.ledger = ledger;
        }
        ts.state = Some(a.state);
        ts.effective = a.effective;
        ts.next_check = next_check;
        self.dirty |= changed || !notices.is_empty();
        !notices.is_empty()
    }

    /// Sends what is due from the outbox.
    pub async fn flush(&mut self) {
        let Some(mailer) = &self.mailer else { return };
        // The outbox keeps what is not sent: the next start sends it.
        if self.outbox.is_empty() || crate::liveness::requested() {
            return;
        }
        // Each email within the SMTP timeout, connection included.
        self.live
            .busy(self.budget.email * (self.outbox.len() as u32 + 1));
        let report = self.outbox.flush(mailer, self.clock.now()).await;
        self.telemetry
            .emails_sent
            .fetch_add(report.sent.len() as u64, Ordering::SeqCst);
        self.telemetry
            .emails_failed
            .fetch_add(report.failed.len() as u64, Ordering::SeqCst);
        let now = self.clock.now();
        for id in &report.sent {
            self.audit
                .record(now, "email_sent", serde_json::json!({ "id": id }));
        }
        for (id, e) in &report.failed {
            self.audit.record(
                now,
                "email_failed",
                serde_json::json!({ "id": id, "error": e.to_string() }),
            );
            tracing::warn!(email = %id, error = %e, remaining = report.remaining, "email not delivered; kept in the outbox");
        }
    }

    /// Queues a group's scheduled check as slices of one Graph batch each, spread evenly over
    /// the group's `spread` (all at once when it is zero). A slice still queued from the
    /// group's previous firing is replaced.
    fn spread(&mut self, group: &str) {
        let Some(g) = self.cfg.groups.iter().find(|g| g.name == group) else {
            return;
        };
        let spread = g.spread;
        let members = self.members_of(group);
        self.queue.retain(|s| s.group != group);
        let now = self.clock.now();
        let chunk = if spread.is_zero() {
            CHECK_CHUNK
        } else {
            graph::BATCH_SIZE
        };
        let slices: Vec<Vec<String>> = members.chunks(chunk).map(<[String]>::to_vec).collect();
        let n = slices.len().max(1) as u128;
        for (i, tokens) in slices.into_iter().enumerate() {
            let offset_ms = (spread.as_millis() * i as u128 / n) as i64;
            let due = now
                .checked_add(jiff::SignedDuration::from_millis(offset_ms))
                .unwrap_or(now);
            self.queue.push_back(Slice {
                due,
                group: group.to_string(),
                tokens,
            });
        }
        self.queue.make_contiguous().sort_by_key(|s| s.due);
    }

    /// Runs the queued slices whose time has come. Returns whether any ran.
    async fn run_due_slices(&mut self) -> bool {
        let mut ran = false;
        while self
            .queue
            .front()
            .is_some_and(|s| s.due <= self.clock.now())
        {
            if crate::liveness::requested() {
                break;
            }
            let slice = self.queue.pop_front().expect("checked above");
            self.check_many(&slice.tokens).await;
            ran = true;
        }
        ran
    }

    /// When the loop should wake next without a cron job: the next slice of a group's check,
    /// the nearest policy change or outbox retry, capped so the clock is re-read (and the loop
    /// beats) at least every minute.
    fn next_wake(&self) -> Duration {
        let now = self.clock.now();
        let mut next: Option<Timestamp> = self.outbox.next_due();
        if let Some(s) = self.queue.front() {
            next = Some(next.map_or(s.due, |n| n.min(s.due)));
        }
        for t in &self.cfg.tokens {
            if let Some(ts) = self.snap.tokens.get(&t.name) {
                let c = policy::next_change(
                    ts.facts.as_ref(),
                    &ts.ledger,
                    ts.failing_since,
                    &t.policy,
                    now,
                );
                next = match (next, c) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        match next {
            Some(t) => {
                let secs = (t.as_second() - now.as_second()).max(0) as u64;
                Duration::from_secs(secs).clamp(Duration::from_millis(200), MAX_SLEEP)
            }
            None => MAX_SLEEP,
        }
    }

    /// Swaps in a new config (after SIGHUP), keeping state, ledger and outbox.
    ///
    /// # Errors
    /// As [`Daemon::new`]; the old config stays in force.
    pub fn reconfigure(&mut self, cfg: Config) -> Result<(), DaemonError> {
        let mut fresh = Daemon::new(cfg, self.clock.clone())?;
        fresh.telemetry = self.telemetry.clone();
        // The watchdog task holds this one.
        self.live.set_step(fresh.budget.rotation_step);
        self.budget = fresh.budget;
        self.cfg = fresh.cfg;
        self.statics = fresh.statics;
        self.discovery = fresh.discovery;
        self.queue.clear();
        self.graph = fresh.graph;
        self.mailer = fresh.mailer;
        self.outbox = fresh.outbox;
        self.state = fresh.state;
        self.snap = fresh.snap;
        Ok(())
    }
}

fn store_description(t: &TokenConfig, cfg: &Config) -> String {
    match &t.store {
        StoreConfig::File { path, key } => format!(
            "file store {} entry {}",
            path.clone()
                .unwrap_or_else(|| cfg.state_dir.join(crate::store::file::DEFAULT_FILE))
                .display(),
            key.as_deref().unwrap_or(&t.name)
        ),
        StoreConfig::Aws {
            secret_id,
            json_key,
            ..
        } => match json_key {
            Some(k) => format!("AWS secret {secret_id} key {k}"),
            None => format!("AWS secret {secret_id}"),
        },
    }
}

fn store_hint(t: &TokenConfig) -> String {
    match &t.store {
        StoreConfig::File { .. } => format!(
            "`tokenwarden import --token {}` (paste the token on standard input)",
            t.name
        ),
        StoreConfig::Aws {
            secret_id,
            json_key: None,
            ..
        } => {
            format!(
                "`aws secretsmanager put-secret-value --secret-id {secret_id} --secret-string file:///dev/stdin`"
            )
        }
        StoreConfig::Aws {
            secret_id,
            json_key: Some(k),
            ..
        } => {
            format!(
                "update key {k} of the JSON secret {secret_id} (keep its other keys), for example in the AWS console"
            )
        }
    }
}

/// What tokenwarden does on its own about `t`, for emails.
fn rotation_plan(t: &TokenConfig, facts: Option<&TokenFacts>) -> String {
    let due = facts
        .and_then(|f| crate::rotation::due_at(t, f))
        .map(|at| format!(" (due {})", crate::timefmt::utc(at)))
        .unwrap_or_default();
    match &t.rotation.source {
        config::Source::Staged => {
            format!("Switch to a new token as soon as one is staged and passes every check{due}.")
        }
        s => format!(
            "Rotate the token automatically ({}){due}; on-call gets an email when the rotation succeeds or fails.",
            match s {
                config::Source::Refresh => "Meta's refresh API",
                _ => "minting a new system-user token",
            }
        ),
    }
}

/// The running cron jobs and the offsets their time zones had when they were made.
struct Scheduler {
    inner: JobScheduler,
    jobs: Vec<(uuid::Uuid, Vec<String>, Vec<String>)>,
    offsets: BTreeMap<String, i32>,
}

fn offset_secs(tz: &str, now: Timestamp) -> i32 {
    jiff::tz::TimeZone::get(tz)
        .map(|z| z.to_offset(now).seconds())
        .unwrap_or(0)
}

impl Scheduler {
    /// One job per distinct schedule; each sends its `[[token]]`s' names and its groups'
    /// names down `tx` when it fires.
    async fn start(
        statics: &[TokenConfig],
        groups: &[config::GroupConfig],
        tx: mpsc::Sender<Fire>,
        now: Timestamp,
    ) -> Result<Scheduler, DaemonError> {
        let err =
            |e: tokio_cron_scheduler::JobSchedulerError| DaemonError::Scheduler(e.to_string());
        let inner = JobScheduler::new().await.map_err(err)?;
        type Names = (Vec<String>, Vec<String>);
        let mut by_schedule: BTreeMap<(String, String), Names> = BTreeMap::new();
        for t in statics {
            let Schedule { cron, timezone } = &t.schedule;
            by_schedule
                .entry((cron.clone(), timezone.clone()))
                .or_default()
                .0
                .push(t.name.clone());
        }
        for g in groups {
            let Schedule { cron, timezone } = &g.template.schedule;
            by_schedule
                .entry((cron.clone(), timezone.clone()))
                .or_default()
                .1
                .push(g.name.clone());
        }
        let mut jobs = Vec::new();
        let mut offsets = BTreeMap::new();
        for ((cron, tz), (names, group_names)) in by_schedule {
            // tokio-cron-scheduler freezes a zone's offset when the job is made; the loop
            // rebuilds the jobs when the offset changes, which is how DST is followed.
            let secs = offset_secs(&tz, now);
            offsets.insert(tz.clone(), secs);
            let offset = chrono::FixedOffset::east_opt(secs)
                .unwrap_or_else(|| chrono::FixedOffset::east_opt(0).expect("zero offset"));
            let tx = tx.clone();
            let (fire, fire_groups) = (names.clone(), group_names.clone());
            let job = Job::new_async_tz(cron.as_str(), offset, move |_id, _lock| {
                let tx = tx.clone();
                let (names, groups) = (fire.clone(), fire_groups.clone());
                Box::pin(async move {
                    for n in names {
                        let _ = tx.send(Fire::Token(n)).await;
                    }
                    for g in groups {
                        let _ = tx.send(Fire::Group(g)).await;
                    }
                })
            })
            .map_err(err)?;
            let id = inner.add(job).await.map_err(err)?;
            jobs.push((id, names, group_names));
        }
        inner.start().await.map_err(err)?;
        Ok(Scheduler {
            inner,
            jobs,
            offsets,
        })
    }

    /// Whether any zone's offset moved (a DST change) since the jobs were made.
    fn offsets_changed(&self, now: Timestamp) -> bool {
        self.offsets
            .iter()
            .any(|(tz, secs)| offset_secs(tz, now) != *secs)
    }

    /// Next fire time per token name (a group member's check may come up to the group's
    /// spread later).
    async fn next_fires(&mut self, d: &Daemon) -> BTreeMap<String, Timestamp> {
        let mut out = BTreeMap::new();
        for (id, names, groups) in &self.jobs {
            if let Ok(Some(t)) = self.inner.next_tick_for_job(*id).await
                && let Ok(ts) = Timestamp::from_second(t.timestamp())
            {
                for n in names
                    .iter()
                    .cloned()
                    .chain(groups.iter().flat_map(|g| d.members_of(g)))
                {
                    out.insert(n, ts);
                }
            }
        }
        out
    }

    async fn stop(mut self) {
        let _ = self.inner.shutdown().await;
    }
}

/// Runs the daemon until `shutdown` resolves.
///
/// # Errors
/// [`DaemonError::Config`] when the config or a secret it references is unusable at start
/// (the caller exits 78); other errors when the state directory or scheduler fail.
pub async fn run(
    config_path: PathBuf,
    clock: Arc<dyn Clock>,
    mut control: mpsc::Receiver<Control>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let loaded = config::load(&config_path).map_err(|e| DaemonError::Config(e.to_string()))?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut d = Daemon::new(loaded.config, clock.clone())?;
    d.telemetry.beat(clock.now().as_second());
    let metrics_task = match &d.cfg.metrics {
        Some(m) => {
            let listener = crate::metrics::bind(m.listen)
                .await
                .map_err(|e| DaemonError::Config(format!("`metrics.listen` {}: {e}", m.listen)))?;
            tracing::info!(listen = %m.listen, "serving /metrics and /healthz");
            Some(tokio::spawn(crate::metrics::serve(
                listener,
                d.cfg.state_dir.clone(),
                d.telemetry.clone(),
                m.stall_after,
            )))
        }
        None => None,
    };
    let (tx, mut rx) = mpsc::channel::<Fire>(1024);
    let mut sched = Scheduler::start(&d.statics, &d.cfg.groups, tx.clone(), clock.now()).await?;
    d.next_fire = sched.next_fires(&d).await;
    tracing::info!(
        tokens = d.cfg.tokens.len(),
        email = d
            .mailer
            .as_ref()
            .map(Mailer::describe)
            .unwrap_or_else(|| "none (alerts are logged only)".into()),
        "tokenwarden started"
    );
    // READY once the config and the state are loaded, before any network: a Graph that
    // accepts connections and never answers must not hold the start past systemd's
    // TimeoutStartSec (the first check runs in the loop below, where a stop can end it).
    let notifier = crate::sdnotify::Notifier::from_env();
    notifier.notify("READY=1");
    // Pinged from a task of its own while the loop keeps within the worst case it announced
    // for its current work (`liveness`): a long check on a hanging Graph keeps the pings
    // going, a loop stuck past its bound stops them and systemd restarts the daemon.
    let watchdog = crate::sdnotify::Notifier::watchdog_interval().map(|period| {
        crate::liveness::spawn_watchdog(
            d.live.clone(),
            crate::sdnotify::Notifier::from_env(),
            period,
        )
    });
    let stop = crate::liveness::Stop::default();
    tokio::pin!(shutdown);
    let live = d.live.clone();
    // Boxed: the loop's future is deep enough to overflow the compiler's layout queries.
    let ended = stop
        .scope(
            live.clone(),
            Box::pin(async {
                // Set once SIGTERM/SIGINT arrived: the work in hand stopped, the loop ends.
                let mut signalled = false;
                let mut first = true;
                loop {
                    d.telemetry.beat(clock.now().as_second());
                    if first {
                        first = false;
                        until_stopped(d.check_all(), shutdown.as_mut(), &mut signalled, &stop)
                            .await;
                        if signalled {
                            break;
                        }
                        d.next_fire = sched.next_fires(&d).await;
                        continue;
                    }
                    let sleep = d.next_wake();
                    live.idle(sleep);
                    let wake = tokio::select! {
                        biased;
                        _ = &mut shutdown => break,
                        Some(c) = control.recv() => Wake::Control(c),
                        Some(fire) = rx.recv() => Wake::Fire(fire),
                        _ = tokio::time::sleep(sleep) => Wake::Sleep,
                    };
                    match wake {
                        Wake::Control(Control::CheckNow(done)) => {
                            until_stopped(d.check_all(), shutdown.as_mut(), &mut signalled, &stop)
                                .await;
                            let _ = done.send(());
                        }
                        Wake::Control(Control::Evaluate(done)) => {
                            // As a wake of the loop would: due slices first (a deferred check, a
                            // group's next slice), then every token re-assessed.
                            let work = async {
                                d.run_due_slices().await;
                                d.evaluate_all().await;
                            };
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                            let _ = done.send(());
                        }
                        Wake::Control(Control::Reload(done)) => {
                            let outcome = match config::load(&config_path) {
                                Err(e) => Err(e.to_string()),
                                Ok(l) => d.reconfigure(l.config).map_err(|e| e.to_string()),
                            };
                            match &outcome {
                                Ok(()) => {
                                    tracing::info!("configuration reloaded");
                                    sched.stop().await;
                                    sched = Scheduler::start(
                                        &d.statics,
                                        &d.cfg.groups,
                                        tx.clone(),
                                        clock.now(),
                                    )
                                    .await?;
                                    until_stopped(
                                        d.check_all(),
                                        shutdown.as_mut(),
                                        &mut signalled,
                                        &stop,
                                    )
                                    .await;
                                    d.next_fire = sched.next_fires(&d).await;
                                }
                                Err(e) => tracing::error!(
                                    "reload refused, the previous configuration keeps running: {e}"
                                ),
                            }
                            if let Some(done) = done {
                                let _ = done.send(outcome);
                            }
                        }
                        Wake::Fire(fire) => {
                            // Drain the rest of this firing so it is flushed once.
                            let mut fired = vec![fire];
                            while let Ok(more) = rx.try_recv() {
                                fired.push(more);
                            }
                            let work = async {
                                for f in &fired {
                                    if let Fire::Group(g) = f {
                                        d.live.busy(d.budget.listing);
                                        d.refresh_groups(Some(g)).await;
                                        d.spread(g);
                                    }
                                }
                                d.next_fire = sched.next_fires(&d).await;
                                for f in fired {
                                    if let Fire::Token(name) = f {
                                        d.check(&name).await;
                                    }
                                }
                                d.run_due_slices().await;
                                d.flush().await;
                            };
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                        }
                        Wake::Sleep => {
                            if sched.offsets_changed(clock.now()) {
                                tracing::info!(
                                    "time-zone offset changed (daylight saving): rescheduling"
                                );
                                sched.stop().await;
                                sched = Scheduler::start(
                                    &d.statics,
                                    &d.cfg.groups,
                                    tx.clone(),
                                    clock.now(),
                                )
                                .await?;
                                d.next_fire = sched.next_fires(&d).await;
                            }
                            let work = async {
                                if d.run_due_slices().await {
                                    d.flush().await;
                                } else {
                                    d.evaluate_all().await;
                                }
                            };
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                        }
                    }
                    if signalled {
                        break;
                    }
                }
                Ok::<Scheduler, DaemonError>(sched)
            }),
        )
        .await;
    let sched = ended?;
    tracing::info!("shutting down");
    notifier.notify("STOPPING=1");
    sched.stop().await;
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = watchdog {
        t.abort();
    }
    Ok(())
}

/// What woke the loop.
enum Wake {
    Control(Control),
    Fire(Fire),
    Sleep,
}

/// Runs `work` to its end. A shutdown arriving meanwhile sets the stop flag, which the work
/// reads: a check is abandoned, a rotation finishes the step in progress, nothing new
/// starts. `signalled` says afterwards whether the loop should end.
async fn until_stopped<W, S>(
    work: W,
    shutdown: std::pin::Pin<&mut S>,
    signalled: &mut bool,
    stop: &crate::liveness::Stop,
) where
    W: Future<Output = ()>,
    S: Future<Output = ()>,
{
    tokio::pin!(work);
    if !*signalled {
        tokio::select! {
            biased;
            () = &mut work => return,
            () = shutdown => {
                *signalled = true;
                tracing::info!("stop requested: abandoning the check in progress, finishing any rotation step in progress");
                stop.set();
            }
        }
    }
    work.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dst_change_moves_the_offset_that_triggers_rescheduling() {
        // 2026-03-08 is the US spring-forward day: PST (-8 h) before, PDT (-7 h) after.
        let before = Timestamp::from_second(1_772_928_000).unwrap(); // 2026-03-08 00:00 UTC
        let after = Timestamp::from_second(1_773_014_400).unwrap(); // 2026-03-09 00:00 UTC
        assert_eq!(offset_secs("America/Los_Angeles", before), -8 * 3600);
        assert_eq!(offset_secs("America/Los_Angeles", after), -7 * 3600);
        assert_eq!(offset_secs("UTC", after), 0);
    }

    #[test]
    fn email_ids_are_safe_and_distinct_for_lookalike_names() {
        let a = email_id("shop.a", "warn-604800s-abcd1234");
        let b = email_id("shop-a", "warn-604800s-abcd1234");
        assert_ne!(a, b);
        assert!(crate::notify::Email::valid_id(&a), "{a}");
    }
}
