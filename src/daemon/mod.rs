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
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::{mpsc, oneshot};
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::alert;
use crate::config::{self, Config, Schedule, StoreConfig, TokenConfig};
use crate::graph::{self, GraphClient};
use crate::metrics::Telemetry;
use crate::notify::email_id;
use crate::notify::{Mailer, Outbox};
use crate::observe::{BATCHES_IN_FLIGHT, READS_IN_FLIGHT, observe, observe_many, read_current};
use crate::policy::{self, TokenFacts, Verdict};
use crate::secret::{Fingerprint, Secret};
use crate::state::{Snapshot, StateError, StateStore};
use crate::store::Store;

/// Tokens of a group checked together when the whole group is checked at once.
const CHECK_CHUNK: usize = 1000;

/// The longest the loop sleeps without re-reading the clock (and beating for `/healthz`).
const MAX_SLEEP: Duration = Duration::from_secs(60);

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
    /// The `[[receiver]]`s beside email, each with its own queue.
    channels: crate::channel::Channels,
    /// The HTTP client of the receivers: no redirect, no proxy from the environment.
    http: reqwest::Client,
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
    /// Per token, the state and reason last logged for a rotation that is due but cannot
    /// start (said once per change, not at every check).
    idle_said: BTreeMap<String, (Option<crate::policy::State>, String)>,
    /// What the checks since the last settling saw of each app's own credentials, by app id:
    /// settled once per check or pass ([`crate::appcreds`]), so a refused app is one alert
    /// for the app, not one per token.
    apps_seen: BTreeMap<String, AppSeen>,
    /// The product apps (Instagram, Threads) of the tokens checked since the last settling,
    /// by app id, to be asked about their own secret ([`Daemon::settle_apps`]).
    product_apps: BTreeMap<String, (crate::meta::kind::Kind, config::KindApp, Duration)>,
    /// When each product app's secret was last asked about (at most once per
    /// [`PRODUCT_APP_EVERY`]).
    product_asked: BTreeMap<String, Timestamp>,
}

/// How often a product app's secret is asked about alone (a Threads app token, dropped at
/// once): often enough that a reset secret is told within the hour, rare enough that a
/// fleet's checks do not multiply the calls.
const PRODUCT_APP_EVERY: Duration = Duration::from_secs(3600);

/// What a pass saw of one app's credentials.
#[derive(Debug)]
struct AppSeen {
    kind: crate::meta::kind::Kind,
    seen: crate::appcreds::Seen,
    /// The shortest `repeat_interval` of the tokens that saw it.
    repeat: Duration,
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
        let graph =
            GraphClient::from_config(&cfg.meta).map_err(|e| DaemonError::Config(e.to_string()))?;
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
        for sub in crate::state::RECORD_DIRS {
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
            path: cfg.state_dir.join(crate::state::OUTBOX_DIR),
            source,
        })?;
        let channels = crate::channel::Channels::open(&cfg.state_dir, &cfg.receivers)
            .map_err(|e| DaemonError::Config(format!("[[receiver]]: {e}")))?;
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
            channels,
            http: crate::target::http_client(),
            state,
            snap,
            clock,
            next_fire: BTreeMap::new(),
            telemetry: Arc::default(),
            audit: crate::audit::Audit::new(&cfg_state_dir).with_limits(audit_limits),
            reserve,
            disk_full_seen: false,
            disk_full_since: None,
            idle_said: BTreeMap::new(),
            apps_seen: BTreeMap::new(),
            product_apps: BTreeMap::new(),
            product_asked: BTreeMap::new(),
        };
        d.telemetry.channels_flushed(&d.channels);
        if let Some(aside) = set_aside {
            d.state_set_aside(&aside);
        }
        Ok(d)
    }

    /// The current config.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The outbox when `[email]` is configured (without it, alerts are only logged).
    fn outbox(&self) -> Option<&Outbox> {
        self.mailer.as_ref().map(|_| &self.outbox)
    }

    /// Where alerts go: the outbox (with `[email]`) and the receivers.
    fn sinks(&self) -> crate::notify::Sinks<'_> {
        crate::notify::Sinks {
            outbox: self.outbox(),
            channels: &self.channels,
            except: None,
        }
    }

    /// Rebuilds the daemon from a new config (after SIGHUP): everything is made again by
    /// [`Daemon::new`], as at start (the state, outbox, audit log and reserve of the config's
    /// state directory, the Graph client, the mailer, the budget), so no field can keep the
    /// old config's value. Only what outlives a config is carried over: the counters `/metrics`
    /// serves and the watchdog's handle on the loop. Unsaved state is saved first, where it
    /// belongs. The caller restarts the cron jobs and `/metrics`.
    ///
    /// # Errors
    /// As [`Daemon::new`]; the old config stays in force.
    pub fn reconfigure(&mut self, cfg: Config) -> Result<(), DaemonError> {
        let mut fresh = Daemon::new(cfg, self.clock.clone())?;
        self.save_state();
        fresh.telemetry = self.telemetry.clone();
        // Counters are counters: a reload must not start a receiver's from zero.
        fresh.channels.carry_counts(&self.channels);
        fresh.telemetry.channels_flushed(&fresh.channels);
        fresh.live = self.live.clone();
        fresh.live.set_step(fresh.budget.rotation_step);
        *self = fresh;
        Ok(())
    }
}

mod alerts;
mod checks;
mod clock;
mod run;
mod schedule;
mod upkeep;

pub use clock::{Clock, OffsetClock, SystemClock};
pub use run::run;
use schedule::Scheduler;
