//! What the daemon does for a token beyond checking it: its rotation (started when due,
//! resumed when in progress) and the drift check of its targets.

use super::*;

impl Daemon {
    /// Resumes the token's rotation, or starts one when it is due. Returns whether a new token
    /// became current. Runs to the end of the step in progress whatever signals arrive: the
    /// main loop only looks at shutdown between calls.
    pub(super) async fn rotate(&mut self, t: &TokenConfig) -> bool {
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
            sinks: self.sinks(),
            now: &now_fn,
        };
        match crate::rotation::run::drive(&deps, start).await {
            Ok(report) => {
                use crate::rotation::run::Report;
                let r = match &report {
                    Report::Waiting(r) | Report::Stalled(r) | Report::Finished(r) => r,
                    Report::Idle(why) => {
                        // Once per token and state, not at every check: "nothing is staged"
                        // every six hours for weeks says nothing new.
                        let state = self.snap.tokens.get(&t.name).and_then(|ts| ts.state);
                        let said = (state, why.clone());
                        if self.idle_said.get(&t.name) != Some(&said) {
                            tracing::info!(token = %t.name, "rotation due but not started: {why}");
                            self.idle_said.insert(t.name.clone(), said);
                        } else {
                            tracing::debug!(token = %t.name, "rotation due but not started: {why}");
                        }
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

    /// The drift check: every target should hold the store's current token. Skipped while a
    /// rotation is between obtaining and promoting (targets may rightly hold the candidate).
    pub(super) async fn reconcile(&mut self, t: &TokenConfig, current: Option<Secret>) {
        use crate::rotation::{Progress, Step};
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
                Progress::Next(Step::Obtain | Step::Validate | Step::Deliver | Step::Promote)
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
        let mut records = tlog.load_or_empty(&t.name);
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
            event: crate::target::PushEvent::Sync,
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
        self.report_drift(t, &current, &out, now);
    }

    /// Every target of `t` holds the current token: a "targets failing" alert still open on a
    /// receiver is resolved there (PagerDuty's incident, Alertmanager's alert). Receivers that
    /// never had one get nothing, so this costs nothing on an ordinary run.
    fn targets_recovered(&self, t: &TokenConfig, current: &Secret, now: Timestamp) {
        use crate::channel::{Severity, Signal, Status, family};
        if self.channels.is_empty() {
            return;
        }
        let summary = alert::Summary {
            word: "RESOLVED".into(),
            headline: "every target holds the current token again".into(),
            facts: vec![format!(
                "Every target of {} holds the current token {}.",
                t.name,
                current.fingerprint()
            )],
            ..Default::default()
        };
        let signal = Signal {
            family: family::TARGETS,
            severity: Severity::Info,
            status: Status::Resolved,
            state: "OK",
            fingerprint: Some(current.fingerprint()),
            resolves: &[family::TARGETS],
        };
        let id = email_id(&t.name, &format!("targets-ok-{}", now.as_second()));
        let a = crate::channel::Alert::new(&id, &t.name, &summary, &signal, now);
        if let Err(e) = self.channels.dispatch(&a, signal.resolves, None, now) {
            tracing::error!(token = %t.name, error = %e, "cannot queue the end of the targets alert for the receivers");
        }
    }

    /// Logs, audits and emails (at most once a day per finding) what a drift check found.
    fn report_drift(
        &self,
        t: &TokenConfig,
        current: &Secret,
        out: &crate::delivery::Reconciled,
        now: Timestamp,
    ) {
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
            self.audit.record(now, crate::audit::AuditEvent::Reconcile, serde_json::json!({"token": t.name, "fingerprint": current.fingerprint().to_string(), "drifted": out.drifted, "synced": out.synced, "failed": out.failed}));
        }
        if out.failed.is_empty() {
            self.targets_recovered(t, current, now);
        }
        if out.drifted.is_empty() && out.failed.is_empty() {
            return;
        }
        let r = alert::render_targets(&t.name, current.fingerprint(), &out.drifted, &out.failed);
        let day = now.as_second() / 86_400;
        let id = email_id(
            &t.name,
            &format!("targets-{day}-{}", Fingerprint::of(&r.text)),
        );
        // Repaired drift is news; a target still failing is a condition until it holds the
        // current token again.
        let signal = crate::channel::Signal {
            family: crate::channel::family::TARGETS,
            severity: if out.failed.is_empty() {
                crate::channel::Severity::Warning
            } else {
                crate::channel::Severity::Error
            },
            status: if out.failed.is_empty() {
                crate::channel::Status::Notice
            } else {
                crate::channel::Status::Firing
            },
            state: &r.summary.word.clone(),
            fingerprint: Some(current.fingerprint()),
            resolves: &[],
        };
        // The drift path used to skip the audit record the other emails get.
        let _ = crate::notify::queue(
            self.sinks(),
            &self.audit,
            id,
            &t.name,
            r,
            &signal,
            "targets email",
            now,
        );
    }
}
