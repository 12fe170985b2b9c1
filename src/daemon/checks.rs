//! The daemon's checks: a token alone, many together (a group's slice, through Graph
//! batches), the groups' listings, the deferral of a throttled token, and what follows a check
//! (the token's rotation, then its drift check). Recording a verdict and settling its alerts
//! is [`super::alerts`]'s.

use super::*;

impl Daemon {
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
                crate::audit::AuditEvent::Groups,
                serde_json::json!({"joined": joined, "left": left}),
            );
        }
        *self.telemetry.tokens.write().expect("not poisoned") = self
            .cfg
            .tokens
            .iter()
            .map(|t| (t.name.clone(), t.kind))
            .collect();
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
    pub(super) fn members_of(&self, group: &str) -> Vec<String> {
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
    pub(super) fn deferred(&self, name: &str) -> bool {
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
        self.settle_apps().await;
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
        self.settle_apps().await;
        for (t, value) in tokens.iter().zip(values) {
            self.follow_up(t, value).await;
        }
    }

    /// Records what a check saw in the state and settles the token's alerts (the caller saves
    /// the state). Returns whether an email was decided.
    pub(super) fn note(
        &mut self,
        t: &TokenConfig,
        verdict: Verdict,
        facts: Option<TokenFacts>,
    ) -> bool {
        let now = self.clock.now();
        self.telemetry.beat(now.as_second());
        self.audit.record(
            now,
            crate::audit::AuditEvent::Check,
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
            Verdict::OwnCredentials { .. }
            | Verdict::OtherApp { .. }
            | Verdict::StoreProblem { .. } => {
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
        if t.kind.debug_token() {
            // Every inspection is made with the `[meta]` app: its answer is also the app's.
            let seen = match &verdict {
                Verdict::OwnCredentials { detail } => Some(crate::appcreds::Seen::Refused {
                    secret: self.graph.app_secret_fingerprint(),
                    detail: detail.clone(),
                }),
                Verdict::Healthy
                | Verdict::Dead { .. }
                | Verdict::Unusable { .. }
                | Verdict::OtherApp { .. } => Some(crate::appcreds::Seen::Accepted),
                _ => None,
            };
            if let Some(seen) = seen {
                let app_id = self.graph.app_id().to_string();
                self.saw_app(t.kind, app_id, seen, t.policy.repeat_interval);
            }
        } else if let Some(app) = &t.app {
            // A product app is a dependency of its tokens: its secret is asked about alone.
            let repeat = t.policy.repeat_interval;
            let e = self
                .product_apps
                .entry(app.app_id.clone())
                .or_insert_with(|| (t.kind, app.clone(), repeat));
            e.2 = e.2.min(repeat);
        }
        let ts = self.snap.tokens.entry(t.name.clone()).or_default();
        ts.verdict = Some(verdict);
        self.dirty = true;
        self.settle(t, now)
    }

    /// Notes what a check saw of an app's credentials, settled by [`Daemon::settle_apps`]:
    /// a refusal outweighs an acceptance in the same pass.
    pub(super) fn saw_app(
        &mut self,
        kind: crate::meta::kind::Kind,
        app_id: String,
        seen: crate::appcreds::Seen,
        repeat: Duration,
    ) {
        let entry = self.apps_seen.entry(app_id).or_insert(AppSeen {
            kind,
            seen: seen.clone(),
            repeat,
        });
        entry.repeat = entry.repeat.min(repeat);
        if matches!(seen, crate::appcreds::Seen::Refused { .. }) {
            entry.seen = seen;
        }
    }

    /// Asks Meta about the secret of each product app whose tokens were just checked (at most
    /// once per [`PRODUCT_APP_EVERY`]; only Threads offers a call for it).
    async fn ask_product_apps(&mut self) {
        let now = self.clock.now();
        for (app_id, (kind, app, repeat)) in std::mem::take(&mut self.product_apps) {
            let recent = self.product_asked.get(&app_id).is_some_and(|at| {
                now.as_second() - at.as_second() < PRODUCT_APP_EVERY.as_secs() as i64
            });
            if recent || crate::liveness::requested() {
                continue;
            }
            self.product_asked.insert(app_id.clone(), now);
            let secret = match app.app_secret.resolve() {
                Ok(s) => s,
                Err(e) => {
                    // `config check` and `doctor` name it; the renewal fails on it in words.
                    tracing::warn!(app = %app_id, error = %e, "cannot read the product app's secret");
                    continue;
                }
            };
            self.live.busy(self.budget.token_check);
            let seen = match self.graph.check_kind_app(kind, &app_id, &secret).await {
                Ok(graph::AppCheck::Accepted) => crate::appcreds::Seen::Accepted,
                Ok(graph::AppCheck::NotCheckable) => continue,
                Err(graph::GraphError::OwnCredentials(api)) => crate::appcreds::Seen::Refused {
                    secret: secret.fingerprint(),
                    detail: api.to_string(),
                },
                Err(e) => {
                    tracing::warn!(app = %app_id, error = %e, "cannot check the product app's secret; asking again later");
                    self.product_asked.remove(&app_id);
                    continue;
                }
            };
            self.saw_app(kind, app_id, seen, repeat);
        }
    }

    /// Records what the last checks saw of each app's credentials and queues the alerts that
    /// calls for: one per app and refused secret, and one recovery (see [`crate::appcreds`]).
    pub(super) async fn settle_apps(&mut self) {
        self.ask_product_apps().await;
        let now = self.clock.now();
        for (app_id, s) in std::mem::take(&mut self.apps_seen) {
            let sinks = self.sinks();
            let app = crate::appcreds::App {
                kind: s.kind,
                app_id: &app_id,
            };
            if let Err(e) = crate::appcreds::settle(
                &self.cfg.state_dir,
                sinks,
                &self.audit,
                app,
                &s.seen,
                s.repeat,
                now,
            ) {
                // Decided again at the next check: nothing was recorded.
                self.disk_full_seen |= matches!(&e, StateError::Io { source, .. } if crate::state::is_disk_full(source));
                tracing::error!(app = %app_id, error = %e, "cannot settle the app's credentials alert");
            }
        }
    }

    /// After a check: resumes or starts the token's rotation, then repairs its targets.
    /// `current` is the value the check read from the store, when it has it.
    pub(super) async fn follow_up(&mut self, t: &TokenConfig, current: Option<Secret>) {
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

    /// Queues a group's scheduled check as slices of one Graph batch each, spread evenly over
    /// the group's `spread` (all at once when it is zero). A slice still queued from the
    /// group's previous firing is replaced.
    pub(super) fn spread(&mut self, group: &str) {
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
    pub(super) async fn run_due_slices(&mut self) -> bool {
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
}
