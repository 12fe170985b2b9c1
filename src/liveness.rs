//! Staying alive, visibly, under systemd while Graph (or a store, or a target) hangs.
//!
//! Three parts (issue 14, point 2):
//! - **Worst cases** ([`Budget`]), derived from the config: every call tokenwarden makes has a
//!   timeout and a bounded number of attempts, so every piece of work the daemon's loop does
//!   (one token's check, a slice of a group, a rotation step, a drift repair, an outbox flush)
//!   has a worst-case duration. [`unit_warnings`] compares them with the shipped unit's
//!   timeouts ([`SHIPPED_UNIT`]); `config check` prints the result.
//! - **Liveness** ([`Liveness`]): before each piece of work the loop announces its worst case;
//!   a separate task ([`spawn_watchdog`]) sends `WATCHDOG=1` while the loop is inside that
//!   bound (or idle and waking as it should). A check that hangs on Graph for minutes keeps
//!   the pings going, because each of its calls is bounded; a loop that overran its own worst
//!   case is stuck for some other reason, the pings stop, and systemd restarts it.
//! - **Stopping** ([`Stop`]): SIGTERM sets a flag the work looks at. A check (reads only)
//!   is abandoned at once; a rotation finishes the step in progress, is saved, and resumes at
//!   the next start; nothing new (a rotation, a drift repair, a flush) starts after it.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{Config, MetaConfig, TokenConfig};

/// The longest a store operation may take (Secrets Manager's operation timeout; a file store
/// is local and quicker).
const STORE_OP: Duration = crate::store::aws::STORE_OPERATION_TIMEOUT;

/// Graph calls in the slowest rotation step (validation: the current token's `debug_token`,
/// the candidate's `debug_token` and phone read, and revoking a rejected candidate).
const CALLS_PER_STEP: u32 = 4;

/// Store operations in the slowest rotation step.
const STORE_OPS_PER_STEP: u32 = 3;

/// Slack on top of the idle loop's longest sleep before it counts as stuck.
const IDLE_SLACK: Duration = Duration::from_secs(30);

/// The timeouts a systemd unit gives the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitTimeouts {
    /// `TimeoutStartSec=`: from start to `READY=1`.
    pub start: Duration,
    /// `TimeoutStopSec=`: from SIGTERM to exit.
    pub stop: Duration,
    /// `WatchdogSec=`: the longest gap between `WATCHDOG=1` pings.
    pub watchdog: Duration,
}

/// The timeouts of `systemd/tokenwarden.service` (a test checks they match the file).
pub const SHIPPED_UNIT: UnitTimeouts = UnitTimeouts {
    start: Duration::from_secs(90),
    stop: Duration::from_secs(360),
    watchdog: Duration::from_secs(300),
};

/// Worst-case durations of the daemon's work under one config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// One Graph call: every attempt running to `meta.timeout`, with the longest waits
    /// between attempts (the backoff, or a rate limit's wait of up to 5 s).
    pub graph_call: Duration,
    /// Checking one token: a store read, `debug_token`, the phone read.
    pub token_check: Duration,
    /// The slowest rotation step of any token (what a SIGTERM may wait for).
    pub rotation_step: Duration,
    /// The slowest drift repair of any token (pushes to its targets).
    pub repair: Duration,
    /// From SIGTERM to exit: the slowest piece of work that is finished rather than
    /// abandoned (a rotation step or a drift repair in progress).
    pub stop: Duration,
    /// Listing one group's store ([`LISTING_PAGES`] pages at most, each one store operation).
    pub listing: Duration,
    /// Sending one email (`email.timeout`, connection included).
    pub email: Duration,
}

/// Pages of a group listing the watchdog waits for: Secrets Manager lists 100 secrets a
/// page, so 10,000 members.
pub const LISTING_PAGES: u32 = 100;

impl Budget {
    /// The worst cases of `cfg` (its `[[token]]`s and its groups' templates).
    pub fn of(cfg: &Config) -> Budget {
        let graph_call = graph_call(&cfg.meta);
        let token_check = STORE_OP + graph_call * 2;
        let tokens = cfg
            .tokens
            .iter()
            .chain(cfg.groups.iter().map(|g| &g.template));
        let mut rotation_step = Duration::ZERO;
        let mut repair = Duration::ZERO;
        for t in tokens {
            rotation_step = rotation_step.max(rotation_step_of(t, graph_call));
            repair = repair.max(repair_of(t, cfg.delivery.parallelism));
        }
        Budget {
            graph_call,
            token_check,
            rotation_step,
            repair,
            stop: rotation_step.max(repair),
            listing: STORE_OP * LISTING_PAGES,
            email: match &cfg.email {
                Some(crate::config::EmailConfig::Smtp {
                    timeout: Some(t), ..
                }) => crate::config::parse_duration(t).unwrap_or(crate::notify::DEFAULT_TIMEOUT),
                _ => crate::notify::DEFAULT_TIMEOUT,
            },
        }
    }

    /// Checking `n` tokens together (`observe::observe_many`): store reads and phone reads
    /// `reads` at a time, `debug_token` in batches of 50, `in_flight` batches at a time, each
    /// item tried up to `meta.attempts` times.
    pub fn many(&self, meta: &MetaConfig, n: usize, reads: usize, in_flight: usize) -> Duration {
        let read_rounds = n.div_ceil(reads.max(1)) as u32;
        let batches = n.div_ceil(crate::graph::BATCH_SIZE);
        let batch_rounds = batches.div_ceil(in_flight.max(1)) as u32;
        STORE_OP * read_rounds
            + self.graph_call * batch_rounds * meta.attempts.max(1)
            + self.graph_call * read_rounds
    }
}

/// One Graph call's worst case under `meta` (mirrors `GraphClient::send`'s retry loop).
pub fn graph_call(meta: &MetaConfig) -> Duration {
    let attempts = meta.attempts.max(1);
    let mut total = meta.timeout * attempts;
    for attempt in 1..attempts {
        // `graph::backoff` is at most its exponential step (capped at 30 s); a rate limit
        // may stretch the wait to `MAX_RATE_LIMIT_WAIT`, never more.
        let step = meta
            .retry_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(Duration::from_secs(30));
        total += step.max(crate::graph::MAX_RATE_LIMIT_WAIT);
    }
    total
}

fn rotation_step_of(t: &TokenConfig, graph_call: Duration) -> Duration {
    let graph_step = graph_call * CALLS_PER_STEP + STORE_OP * STORE_OPS_PER_STEP;
    // Delivery: wave after wave, the targets of a wave in parallel, each within its timeout
    // (push and verify), and as long again to put the old token back after a failure.
    let mut waves: std::collections::BTreeMap<u32, Duration> = Default::default();
    for target in &t.targets {
        let w = waves.entry(target.wave).or_default();
        *w = (*w).max(target.timeout);
    }
    let deliver = waves.values().sum::<Duration>() * 2 + STORE_OP * 2;
    graph_step.max(deliver)
}

fn repair_of(t: &TokenConfig, parallelism: usize) -> Duration {
    if t.targets.is_empty() {
        return Duration::ZERO;
    }
    let longest = t
        .targets
        .iter()
        .map(|x| x.timeout)
        .max()
        .unwrap_or_default();
    let rounds = t.targets.len().div_ceil(parallelism.max(1)) as u32;
    STORE_OP + longest * rounds
}

/// Where `cfg`'s worst cases do not fit `unit`: each a sentence naming both figures and what
/// to change. Starting needs no network (`READY=1` follows loading the config and the state),
/// so only stopping can outgrow the unit.
pub fn unit_warnings(cfg: &Config, unit: &UnitTimeouts) -> Vec<String> {
    let b = Budget::of(cfg);
    let mut out = Vec::new();
    if b.stop > unit.stop {
        out.push(format!(
            "a rotation step or drift repair in progress may take up to {} s to finish (Graph calls of up to {} s each: `meta.timeout` x `meta.attempts` plus waits; target timeouts), longer than the unit's TimeoutStopSec={}: systemd would kill tokenwarden in the middle of it on a stop. Raise TimeoutStopSec in a drop-in (`systemctl edit tokenwarden`) to at least {} or lower `meta.timeout`, `meta.attempts` or the targets' `timeout`",
            b.stop.as_secs(),
            b.graph_call.as_secs(),
            unit.stop.as_secs(),
            b.stop.as_secs() + 1,
        ));
    }
    out
}

/// The loop's promise to the watchdog: "I will be back by then".
#[derive(Debug)]
pub struct Liveness {
    epoch: Instant,
    /// Milliseconds since `epoch` by which the loop must report again.
    deadline_ms: AtomicU64,
    /// The worst case of one rotation step, in milliseconds ([`before_step`]).
    step_ms: AtomicU64,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness {
            epoch: Instant::now(),
            deadline_ms: AtomicU64::new(0),
            step_ms: AtomicU64::new(0),
        }
    }
}

impl Liveness {
    /// Sets the worst case of one rotation step (from [`Budget::rotation_step`]).
    pub fn set_step(&self, worst: Duration) {
        self.step_ms
            .store(worst.as_millis() as u64, Ordering::SeqCst);
    }

    /// The loop starts work that takes at most `worst` (or sleeps that long): alive until then.
    pub fn busy(&self, worst: Duration) {
        let until = self.epoch.elapsed() + worst;
        self.deadline_ms
            .store(until.as_millis() as u64, Ordering::SeqCst);
    }

    /// The loop is about to sleep for at most `sleep`.
    pub fn idle(&self, sleep: Duration) {
        self.busy(sleep + IDLE_SLACK);
    }

    /// Whether the loop is within what it promised.
    pub fn alive(&self) -> bool {
        self.epoch.elapsed().as_millis() as u64 <= self.deadline_ms.load(Ordering::SeqCst)
    }
}

/// Sends `WATCHDOG=1` every `period` while `live` says the loop is alive. Runs apart from
/// the loop, so a long (bounded) check does not starve the pings, and a loop that overran its
/// bound does starve them.
pub fn spawn_watchdog(
    live: Arc<Liveness>,
    notifier: crate::sdnotify::Notifier,
    period: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut warned = false;
        loop {
            tick.tick().await;
            if live.alive() {
                notifier.notify("WATCHDOG=1");
                warned = false;
            } else if !warned {
                tracing::error!(
                    "the main loop overran its worst case; no longer pinging the watchdog, so systemd restarts tokenwarden"
                );
                warned = true;
            }
        }
    })
}

/// What the work running under [`Stop::scope`] can see: the flag, and the loop's liveness
/// (so a rotation can renew it step by step without knowing about the daemon).
#[derive(Debug, Clone)]
struct Scope {
    stop: watch::Receiver<bool>,
    live: Arc<Liveness>,
}

tokio::task_local! {
    static STOP: Scope;
}

/// The stop flag: set once on SIGTERM, read by the work in progress.
#[derive(Debug)]
pub struct Stop {
    tx: watch::Sender<bool>,
}

impl Default for Stop {
    fn default() -> Self {
        Stop {
            tx: watch::channel(false).0,
        }
    }
}

impl Stop {
    /// Runs `fut` with this flag visible to [`requested`], [`abandon_on_stop`] and
    /// [`before_step`], which renews `live`.
    pub async fn scope<F: Future>(&self, live: Arc<Liveness>, fut: F) -> F::Output {
        let scope = Scope {
            stop: self.tx.subscribe(),
            live,
        };
        STOP.scope(scope, fut).await
    }

    /// Sets the flag.
    pub fn set(&self) {
        self.tx.send_replace(true);
    }
}

/// Whether a stop was requested (false outside [`Stop::scope`], as in the one-shot commands).
pub fn requested() -> bool {
    STOP.try_with(|s| *s.stop.borrow()).unwrap_or(false)
}

/// Called by a rotation before each step: renews the loop's liveness for one step's worst
/// case, and says whether to stop here instead (the record is saved after every step, so the
/// next start resumes where this one stopped).
pub fn before_step() -> bool {
    STOP.try_with(|s| {
        let step = Duration::from_millis(s.live.step_ms.load(Ordering::SeqCst));
        s.live.busy(step);
        *s.stop.borrow()
    })
    .unwrap_or(false)
}

/// Runs `fut` unless a stop is requested first: `None` when it was abandoned. Only for work
/// that can be dropped halfway without harm (reads).
pub async fn abandon_on_stop<F: Future>(fut: F) -> Option<F::Output> {
    let Ok(mut rx) = STOP.try_with(|s| s.stop.clone()) else {
        return Some(fut.await);
    };
    tokio::select! {
        biased;
        _ = rx.wait_for(|s| *s) => None,
        out = fut => Some(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra_meta: &str, targets: &str) -> Config {
        crate::config::parse(
            std::path::Path::new("t.toml"),
            &format!(
                "[meta]\napp_id = \"1\"\napp_secret = {{ env = \"S\" }}\n{extra_meta}[[token]]\nname = \"a\"\n{targets}"
            ),
        )
        .unwrap()
    }

    #[test]
    fn a_graph_call_costs_every_attempt_and_wait() {
        let c = cfg("", "");
        // 4 attempts of 15 s, and three waits of at most max(backoff, 5 s): 5 + 5 + 5.
        assert_eq!(graph_call(&c.meta), Duration::from_secs(75));
        let c = cfg("timeout = \"1s\"\nattempts = 1\n", "");
        assert_eq!(graph_call(&c.meta), Duration::from_secs(1));
        let c = cfg(
            "timeout = \"10s\"\nattempts = 3\nretry_delay = \"20s\"\n",
            "",
        );
        // 30 s of attempts, waits of 20 s and 30 s (40 s capped at 30).
        assert_eq!(graph_call(&c.meta), Duration::from_secs(80));
    }

    #[test]
    fn the_default_config_fits_the_shipped_unit_and_a_slow_one_is_named() {
        let c = cfg("", "");
        let b = Budget::of(&c);
        // Validation: 4 calls of 75 s and 3 store operations of 15 s.
        assert_eq!(b.rotation_step, Duration::from_secs(345));
        assert_eq!(b.stop, Duration::from_secs(345));
        assert!(unit_warnings(&c, &SHIPPED_UNIT).is_empty());
        let slow = cfg("timeout = \"60s\"\n", "");
        let w = unit_warnings(&slow, &SHIPPED_UNIT);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("TimeoutStopSec=360"), "{w:?}");
        assert!(w[0].contains(&format!("{} s", Budget::of(&slow).stop.as_secs())));
        // Targets count: two waves of a 120 s command, twice (the rollback) and the store.
        let targets = "[[token.target]]\nname = \"x\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\ntimeout = \"120s\"\nwave = 1\n[[token.target]]\nname = \"y\"\nkind = \"exec\"\ncommand = [\"/bin/true\"]\ntimeout = \"120s\"\nwave = 2\n";
        let c = cfg("", targets);
        assert_eq!(
            Budget::of(&c).rotation_step,
            Duration::from_secs(4 * 120 + 30)
        );
        assert_eq!(unit_warnings(&c, &SHIPPED_UNIT).len(), 1);
    }

    #[test]
    fn the_shipped_unit_says_what_shipped_unit_says() {
        let unit = include_str!("../systemd/tokenwarden.service");
        let value = |key: &str| -> Duration {
            let line = unit
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("no {key}= in the unit"));
            crate::config::parse_duration(&format!("{line}s")).unwrap()
        };
        assert_eq!(value("TimeoutStartSec"), SHIPPED_UNIT.start);
        assert_eq!(value("TimeoutStopSec"), SHIPPED_UNIT.stop);
        assert_eq!(value("WatchdogSec"), SHIPPED_UNIT.watchdog);
    }

    #[test]
    fn liveness_holds_until_the_promised_time() {
        let l = Liveness::default();
        l.busy(Duration::from_secs(60));
        assert!(l.alive());
        l.busy(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.alive());
    }

    #[tokio::test]
    async fn a_stop_abandons_reads_inside_the_scope_only() {
        let stop = Stop::default();
        // Outside a scope nothing is abandoned.
        assert_eq!(abandon_on_stop(async { 1 }).await, Some(1));
        assert!(!requested());
        let live = Arc::new(Liveness::default());
        live.set_step(Duration::from_secs(60));
        let out = stop
            .scope(live.clone(), async {
                assert!(!before_step());
                assert!(live.alive(), "a step renews the liveness");
                assert!(!requested());
                stop.set();
                assert!(requested());
                assert!(before_step());
                abandon_on_stop(std::future::pending::<()>()).await
            })
            .await;
        assert_eq!(out, None);
    }
}
