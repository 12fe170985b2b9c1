//! Delivery: pushing a token to every environment of a token, wave by wave, each target
//! verified, and the old token put back everywhere if any target fails.
//!
//! [`roll_out`] pushes one wave at a time (for example staging, then production), the targets
//! of a wave concurrently up to `parallelism`, each within its own timeout (push, then the
//! read-back comparison where the target can be read, then its configured verify). The next
//! wave starts only when every target of the previous one is verified. On the first failure
//! the rollout stops and the old token, still valid and still current in the store, is pushed
//! back to every target that may have changed, so no environment is left on a token that is
//! not current. [`reconcile`] is the scheduled drift check: targets that can be read back are
//! compared with the current token and re-pushed when someone changed them behind
//! tokenwarden's back; targets that cannot be read are re-pushed when their last push did not
//! deliver the current token (a failed push is retried on later runs).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::secret::{Fingerprint, Secret};
use crate::state::{Layout, RecordStore, StateError};
use crate::target::{Configured, PushContext, PushEvent, TargetError};

/// Directory inside the state directory with one file per token.
pub const TARGETS_DIR: &str = crate::state::TARGETS_DIR;

/// What is known about one target of a token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// The target's `kind` word (`dotenv`, `aws_secret`, `ssm_parameter`, ...).
    pub kind: String,
    /// When tokenwarden last pushed to it.
    pub last_push: Option<Timestamp>,
    /// Why it was last pushed.
    pub event: Option<PushEvent>,
    /// Whether the last push (and its verify) succeeded.
    pub ok: bool,
    /// The last failure, in words.
    pub error: Option<String>,
    /// The token the target holds as far as tokenwarden knows (after the last good push, or
    /// as a drift check read it back).
    pub fingerprint: Option<Fingerprint>,
}

/// The target records of one state directory: `targets/<token>.json`, through the state
/// directory's [`RecordStore`].
#[derive(Debug, Clone)]
pub struct TargetLog {
    records: RecordStore,
}

impl TargetLog {
    /// The records under `state_dir`.
    pub fn new(state_dir: &Path) -> TargetLog {
        TargetLog {
            records: RecordStore::new(state_dir.join(TARGETS_DIR), Layout::Pretty)
                .aside_loses("targets that cannot be read back then get the current token again at the next drift check"),
        }
    }

    /// The records of `token`'s targets, by name (empty when none were pushed yet).
    ///
    /// # Errors
    /// [`StateError`] when the file exists but cannot be read or parsed.
    pub fn load(&self, token: &str) -> Result<BTreeMap<String, TargetRecord>, StateError> {
        Ok(self.records.load(token)?.unwrap_or_default())
    }

    /// [`load`](Self::load) for the paths that go on without the records (a push, the drift
    /// check, `status`): a file that cannot be read or parsed is logged and treated as no
    /// records, so the next save replaces it with what is known from then on.
    pub fn load_or_empty(&self, token: &str) -> BTreeMap<String, TargetRecord> {
        self.load(token).unwrap_or_else(|e| {
            tracing::warn!(token = %token, error = %e, "the target log cannot be read; starting it afresh");
            BTreeMap::new()
        })
    }

    /// Saves `records` for `token` atomically.
    ///
    /// # Errors
    /// [`StateError::Io`].
    pub fn save(
        &self,
        token: &str,
        records: &BTreeMap<String, TargetRecord>,
    ) -> Result<(), StateError> {
        self.records.save(token, records)
    }
}

/// The result of one target in a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResult {
    /// The target's name.
    pub name: String,
    /// Its wave.
    pub wave: u32,
    /// Whether its value changed (a re-push of the same token changes nothing).
    pub outcome: Result<bool, TargetError>,
}

/// How a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// Every target holds the new token and passed its verify.
    Delivered(Vec<TargetResult>),
    /// A target failed; the rollout stopped and the old token was put back.
    Failed {
        /// The first target that failed (in config order within its wave).
        target: String,
        /// Why.
        reason: String,
        /// Every target's result, in the order they ran.
        results: Vec<TargetResult>,
        /// Targets the old token was pushed back to, and the ones where that failed too.
        restored: Vec<String>,
        /// Targets that could not be restored, with why.
        restore_failed: Vec<(String, String)>,
    },
}

/// Pushes `token` to one target and verifies it, within the target's timeout.
async fn push_and_verify(
    t: Arc<Configured>,
    token: Secret,
    ctx: PushContext,
    http: reqwest::Client,
) -> Result<bool, TargetError> {
    let timeout = t.cfg.timeout;
    let work = async {
        let changed = t.push(&token, &ctx).await?;
        let hide: Vec<&Secret> = std::iter::once(&token).chain(ctx.hide.iter()).collect();
        t.verify(token.fingerprint(), &http, timeout, &hide).await?;
        Ok(changed)
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(TargetError::Transient(format!(
            "{} did not finish within {}",
            t.describe(),
            crate::timefmt::span(timeout.as_secs() as i64)
        ))),
    }
}

/// Runs `jobs` with at most `parallelism` at once; results in the order of `targets`.
async fn run_wave(
    targets: &[Arc<Configured>],
    token: &Secret,
    ctx: &PushContext,
    http: &reqwest::Client,
    parallelism: usize,
) -> Vec<TargetResult> {
    let limit = Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for (i, t) in targets.iter().enumerate() {
        let (t, token, ctx, http, limit) = (
            t.clone(),
            token.clone(),
            ctx.clone(),
            http.clone(),
            limit.clone(),
        );
        set.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("never closed");
            let name = t.cfg.name.clone();
            let wave = t.cfg.wave;
            (
                i,
                TargetResult {
                    name,
                    wave,
                    outcome: push_and_verify(t, token, ctx, http).await,
                },
            )
        });
    }
    let mut out: Vec<(usize, TargetResult)> = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(r) => out.push(r),
            Err(e) => tracing::error!(error = %e, "a delivery task panicked"),
        }
    }
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// Pushes `new` to every target, wave by wave; on a failure pushes `old` back to every target
/// already touched and stops.
pub async fn roll_out(
    targets: &[Arc<Configured>],
    new: &Secret,
    old: Option<&Secret>,
    ctx: &PushContext,
    http: &reqwest::Client,
    parallelism: usize,
) -> Rollout {
    let mut waves: Vec<u32> = targets.iter().map(|t| t.cfg.wave).collect();
    waves.sort_unstable();
    waves.dedup();
    let mut results = Vec::new();
    let mut touched: Vec<Arc<Configured>> = Vec::new();
    for wave in waves {
        let members: Vec<Arc<Configured>> = targets
            .iter()
            .filter(|t| t.cfg.wave == wave)
            .cloned()
            .collect();
        let wave_results = run_wave(&members, new, ctx, http, parallelism).await;
        touched.extend(members);
        let failure = wave_results.iter().find_map(|r| {
            r.outcome
                .as_ref()
                .err()
                .map(|e| (r.name.clone(), e.to_string()))
        });
        results.extend(wave_results);
        if failure.is_none() {
            crate::failpoint::hit("delivery.after_wave");
        }
        if let Some((target, reason)) = failure {
            // The rollback's commands may print the candidate as well: hide it too.
            let rctx = PushContext {
                hide: ctx.hide.iter().cloned().chain([new.clone()]).collect(),
                ..ctx.clone()
            };
            let (restored, restore_failed) = match old {
                Some(old) => restore(&touched, old, &rctx, http, parallelism).await,
                None => (Vec::new(), Vec::new()),
            };
            return Rollout::Failed {
                target,
                reason,
                results,
                restored,
                restore_failed,
            };
        }
    }
    Rollout::Delivered(results)
}

/// Puts `old` back on `touched` targets (all at once within the parallelism).
async fn restore(
    touched: &[Arc<Configured>],
    old: &Secret,
    ctx: &PushContext,
    http: &reqwest::Client,
    parallelism: usize,
) -> (Vec<String>, Vec<(String, String)>) {
    let ctx = PushContext {
        event: PushEvent::Rollback,
        ..ctx.clone()
    };
    // Only targets that may hold the new token are put back. One that reads back the old
    // token never changed; one that refuses even to be read (a symlink, a file that is not
    // UTF-8) refused the push the same way, before any change: pushing to it again would
    // only fail again and report a confusing "putting it back failed".
    let mut changed = Vec::new();
    for t in touched {
        if t.readable() {
            match t.read_back().await {
                Ok(Some(found)) if found == old.fingerprint() => continue,
                Err(TargetError::Refused(_)) => continue,
                _ => {}
            }
        }
        changed.push(t.clone());
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for r in run_wave(&changed, old, &ctx, http, parallelism).await {
        match r.outcome {
            Ok(_) => ok.push(r.name),
            Err(e) => failed.push((r.name, e.to_string())),
        }
    }
    (ok, failed)
}

/// Records `results` (pushed with the token `fp`) into `records`, at `now`.
pub fn record(
    records: &mut BTreeMap<String, TargetRecord>,
    targets: &[Arc<Configured>],
    results: &[TargetResult],
    fp: Fingerprint,
    event: PushEvent,
    now: Timestamp,
) {
    for r in results {
        let kind = targets
            .iter()
            .find(|t| t.cfg.name == r.name)
            .map(|t| t.cfg.kind.word().to_string())
            .unwrap_or_default();
        let rec = records.entry(r.name.clone()).or_default();
        rec.kind = kind;
        rec.last_push = Some(now);
        rec.event = Some(event);
        match &r.outcome {
            Ok(_) => {
                rec.ok = true;
                rec.error = None;
                rec.fingerprint = Some(fp);
            }
            Err(e) => {
                rec.ok = false;
                rec.error = Some(e.to_string());
            }
        }
    }
}

/// What one drift check did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Targets found holding another token, re-pushed (name, what was found).
    pub drifted: Vec<(String, String)>,
    /// Targets pushed because their last push had not delivered the current token.
    pub synced: Vec<String>,
    /// Targets that still do not hold the current token, with why.
    pub failed: Vec<(String, String)>,
}

/// Compares each target with `current` and re-pushes where needed (see the module docs).
pub async fn reconcile(
    targets: &[Arc<Configured>],
    records: &mut BTreeMap<String, TargetRecord>,
    current: &Secret,
    ctx: &PushContext,
    http: &reqwest::Client,
    parallelism: usize,
) -> Reconciled {
    let fp = current.fingerprint();
    let mut out = Reconciled::default();
    let mut due = Vec::new();
    for t in targets {
        let rec = records.get(&t.cfg.name);
        if t.readable() {
            match t.read_back().await {
                Ok(Some(found)) if found == fp => {
                    // Found current without a push (it held the token before tokenwarden
                    // looked): remember it, so a later change reads as drift and gets its
                    // email rather than passing for a first sync.
                    if !rec.is_some_and(|r| r.ok && r.fingerprint == Some(fp)) {
                        let rec = records.entry(t.cfg.name.clone()).or_default();
                        rec.kind = t.cfg.kind.word().to_string();
                        rec.ok = true;
                        rec.error = None;
                        rec.fingerprint = Some(fp);
                    }
                    continue;
                }
                Ok(found) => {
                    // Drift only when tokenwarden had delivered the current token before;
                    // otherwise this is the first sync of a new target.
                    if rec.is_some_and(|r| r.ok && r.fingerprint == Some(fp)) {
                        out.drifted.push((
                            t.cfg.name.clone(),
                            found.map_or("no token".into(), |f| format!("token {f}")),
                        ));
                    } else {
                        out.synced.push(t.cfg.name.clone());
                    }
                }
                Err(e) => {
                    out.failed.push((t.cfg.name.clone(), e.to_string()));
                    continue;
                }
            }
        } else if rec.is_some_and(|r| r.ok && r.fingerprint == Some(fp)) {
            continue;
        } else {
            out.synced.push(t.cfg.name.clone());
        }
        due.push(t.clone());
    }
    if due.is_empty() {
        return out;
    }
    let event = if out.drifted.is_empty() {
        PushEvent::Sync
    } else {
        PushEvent::Drift
    };
    let ctx = PushContext {
        event,
        ..ctx.clone()
    };
    let results = run_wave(&due, current, &ctx, http, parallelism).await;
    for r in &results {
        if let Err(e) = &r.outcome {
            out.failed.push((r.name.clone(), e.to_string()));
        }
    }
    record(records, &due, &results, fp, event, ctx.now);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The push event became a type; `targets/<token>.json` keeps its words, so a log written
    /// before loads and is written back the same.
    #[test]
    fn the_target_log_keeps_the_push_event_words() {
        let dir = tempfile::tempdir().unwrap();
        let log = TargetLog::new(dir.path());
        let old = r#"{
  "api": {
    "kind": "webhook",
    "last_push": "2026-09-21T13:46:40Z",
    "event": "drift",
    "ok": true,
    "error": null,
    "fingerprint": "ba7816bf"
  },
  "env": {
    "kind": "dotenv",
    "last_push": null,
    "event": null,
    "ok": false,
    "error": null,
    "fingerprint": null
  }
}"#;
        std::fs::create_dir(dir.path().join(TARGETS_DIR)).unwrap();
        let file = dir.path().join(TARGETS_DIR).join("prod.json");
        std::fs::write(&file, old).unwrap();
        let mut records = log.load("prod").unwrap();
        assert_eq!(records["api"].event, Some(PushEvent::Drift));
        assert_eq!(records["env"].event, None);
        log.save("prod", &records).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), old);
        for (e, word) in [
            (PushEvent::Rotation, "rotation"),
            (PushEvent::Rollback, "rollback"),
            (PushEvent::Drift, "drift"),
            (PushEvent::Sync, "sync"),
        ] {
            records.get_mut("env").unwrap().event = Some(e);
            log.save("prod", &records).unwrap();
            let v: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
            assert_eq!(v["env"]["event"], word);
            assert_eq!(e.word(), word);
            assert_eq!(log.load("prod").unwrap()["env"].event, Some(e));
        }
    }

    /// A corrupt target log used to be read as empty without a word (and then overwritten);
    /// it is reported, naming the file and what starting afresh means, and treated as empty.
    #[test]
    fn a_corrupt_target_log_is_reported_and_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = TargetLog::new(dir.path());
        std::fs::create_dir(dir.path().join(TARGETS_DIR)).unwrap();
        let file = dir.path().join(TARGETS_DIR).join("prod.json");
        std::fs::write(&file, "{\"api\":").unwrap();
        let e = log.load("prod").unwrap_err().to_string();
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("is corrupt (line 1 column"), "{e}");
        assert!(e.contains("next drift check"), "{e}");
        assert!(log.load_or_empty("prod").is_empty());
    }
}
