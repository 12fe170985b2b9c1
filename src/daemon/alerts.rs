//! Alerts: assessing each token, deciding which emails are due, queueing them in the outbox
//! before the state records them, flushing the outbox, saving the state, and the host's own
//! alerts (a corrupt state set aside, a full disk).

use super::*;

impl Daemon {
    /// Tells on-call that the state file was corrupt and set aside: the ledger of emails sent
    /// is gone, so some may come again, and nothing else would say why.
    pub(super) fn state_set_aside(&self, aside: &Path) {
        let now = self.clock.now();
        self.audit.record(
            now,
            crate::audit::AuditEvent::StateSetAside,
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
    pub(super) fn queue_host_alert(&self, key: &str, a: &alert::HostAlert<'_>) -> bool {
        // One-off news for chat receivers and email: nothing later says these are over.
        let signal = crate::channel::Signal {
            family: crate::channel::family::HOST,
            severity: crate::channel::Severity::Error,
            status: crate::channel::Status::Notice,
            state: a.word,
            fingerprint: None,
            resolves: &[],
        };
        self.queue_host_alert_with(key, a, &signal, None)
    }

    /// As [`Daemon::queue_host_alert`], with its signal for the receivers, and a receiver that
    /// must not get it (the one it is about).
    pub(super) fn queue_host_alert_with(
        &self,
        key: &str,
        a: &alert::HostAlert<'_>,
        signal: &crate::channel::Signal<'_>,
        except: Option<&str>,
    ) -> bool {
        let r = alert::render_host(a);
        let sinks = crate::notify::Sinks {
            except,
            ..self.sinks()
        };
        crate::notify::queue(
            sinks,
            &self.audit,
            email_id(HOST_THREAD, key),
            HOST_THREAD,
            r,
            signal,
            "host alert",
            self.clock.now(),
        )
        .is_ok()
    }

    /// Writes the state when it changed since the last write.
    pub(super) fn save_state(&mut self) {
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
    pub(super) fn disk_full(&mut self) {
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
                crate::audit::AuditEvent::DiskFull,
                serde_json::json!({"reserve_freed": freed}),
            );
        }
    }

    /// A save succeeded: after a full disk, the reserve is made again once there is room.
    pub(super) fn disk_recovered(&mut self) {
        if self.disk_full_since.is_none() {
            return;
        }
        if self.reserve.ensure().is_ok() {
            tracing::info!("the state directory has room again");
            self.disk_full_since = None;
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
    pub(super) fn settle(&mut self, t: &TokenConfig, now: Timestamp) -> bool {
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
        let (notices, ledger) = policy::decide(&ts.ledger, &a, fp, &t.policy, now);
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
                kind: t.kind,
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
                rotation_due: ts
                    .facts
                    .as_ref()
                    .and_then(|f| crate::rotation::due_at(t, f)),
            };
            let r = alert::render(&ctx, n, now);
            let subject = r.subject.clone();
            let signal = crate::channel::Signal::of_token(n.condition, a.state, fp);
            let sinks = crate::notify::Sinks {
                outbox: self.mailer.as_ref().map(|_| &self.outbox),
                channels: &self.channels,
                except: None,
            };
            let id = email_id(&t.name, &n.key);
            if let Err(e) =
                crate::notify::queue(sinks, &self.audit, id, &t.name, r, &signal, "alert", now)
            {
                // Not recorded as sent: the next pass decides it again.
                self.disk_full_seen |= crate::state::is_disk_full(&e);
                queued = false;
            }
            ts.last_email = Some((now, subject));
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

    /// Sends what is due from the outbox and from each receiver's queue.
    pub async fn flush(&mut self) {
        self.flush_channels().await;
        self.flush_email().await;
    }

    /// Sends what is due from each receiver's queue (all at once), re-sends Alertmanager's
    /// open alerts, and tells the other channels of a receiver that keeps failing (or works
    /// again after that).
    async fn flush_channels(&mut self) {
        if self.channels.is_empty() || crate::liveness::requested() {
            return;
        }
        let now = self.clock.now();
        if self.channels.next_due().is_none_or(|t| t > now) {
            return;
        }
        // Receivers are flushed side by side; the slowest bounds the wait.
        let worst = self
            .channels
            .receivers()
            .iter()
            .map(|r| r.timeout() * (r.queue().len() as u32 + 2))
            .max()
            .unwrap_or_default();
        self.live.busy(worst);
        let (reports, health) = self.channels.flush(&self.http, now).await;
        for (receiver, report) in &reports {
            for id in &report.sent {
                self.audit.record(
                    now,
                    crate::audit::AuditEvent::AlertSent,
                    serde_json::json!({ "receiver": receiver, "id": id }),
                );
            }
            for (id, e) in &report.failed {
                self.audit.record(
                    now,
                    crate::audit::AuditEvent::AlertFailed,
                    serde_json::json!({ "receiver": receiver, "id": id, "error": e.to_string() }),
                );
            }
        }
        self.telemetry.channels_flushed(&self.channels);
        for h in health {
            self.receiver_health(&h, now);
        }
    }

    /// Tells every other channel (email included) that receiver `h` keeps failing, or works
    /// again.
    fn receiver_health(&self, h: &crate::channel::Health, now: Timestamp) {
        let since = crate::timefmt::span(now.as_second() - h.since.as_second());
        let (word, headline, lead, todo, severity);
        match &h.error {
            Some(e) => {
                self.audit.record(
                    now,
                    crate::audit::AuditEvent::ReceiverFailing,
                    serde_json::json!({ "receiver": h.receiver, "kind": h.kind, "since": h.since.to_string(), "error": e }),
                );
                word = "CHANNEL FAILING";
                headline = format!(
                    "{} ({}) has refused or missed every alert for {since}",
                    h.receiver, h.kind
                );
                lead = format!(
                    "Alerts for the receiver {} are not getting through: {e}",
                    h.receiver
                );
                todo = vec![
                    format!("Check the receiver {} ({}): its URL, its routing key or webhook, and whether the service is up.", h.receiver, h.kind),
                    "Run `tokenwarden notify test --channel NAME` to see the receiver's own answer.".into(),
                ];
                severity = crate::channel::Severity::Error;
            }
            None => {
                word = "CHANNEL OK";
                headline = format!("{} ({}) takes alerts again", h.receiver, h.kind);
                lead = format!(
                    "The receiver {} failed from {} and works again; what waited in its queue has been sent.",
                    h.receiver, h.since
                );
                todo = Vec::new();
                severity = crate::channel::Severity::Info;
            }
        }
        let a = alert::HostAlert {
            word,
            headline: &headline,
            lead,
            facts: vec![format!("Failing since {}.", h.since)],
            will_do: vec!["Keep every alert queued for that receiver and retry it (at least hourly) until it is accepted.".into()],
            todo,
        };
        let key = format!(
            "receiver-{}-{}-{}",
            h.receiver,
            if h.error.is_some() { "failing" } else { "ok" },
            h.since.as_second()
        );
        // A condition of its own on the incident receivers (PagerDuty, Alertmanager), ended
        // when the receiver works again.
        let family = format!("{}{}", crate::channel::family::CHANNEL_PREFIX, h.receiver);
        let ends = [family.as_str()];
        let signal = crate::channel::Signal {
            family: &family,
            severity,
            status: if h.error.is_some() {
                crate::channel::Status::Firing
            } else {
                crate::channel::Status::Resolved
            },
            state: word,
            fingerprint: None,
            resolves: if h.error.is_some() { &[] } else { &ends },
        };
        self.queue_host_alert_with(&key, &a, &signal, Some(&h.receiver));
    }

    /// Sends what is due from the email outbox.
    async fn flush_email(&mut self) {
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
            self.audit.record(
                now,
                crate::audit::AuditEvent::EmailSent,
                serde_json::json!({ "id": id }),
            );
        }
        for (id, e) in &report.failed {
            self.audit.record(
                now,
                crate::audit::AuditEvent::EmailFailed,
                serde_json::json!({ "id": id, "error": e.to_string() }),
            );
            tracing::warn!(email = %id, error = %e, remaining = report.remaining, "email not delivered; kept in the outbox");
        }
    }
}

pub(super) fn store_description(t: &TokenConfig, cfg: &Config) -> String {
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

pub(super) fn store_hint(t: &TokenConfig) -> String {
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
pub(super) fn rotation_plan(t: &TokenConfig, facts: Option<&TokenFacts>) -> String {
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
                config::Source::Refresh if t.kind != config::Kind::Whatsapp =>
                    t.kind.advice().renews,
                config::Source::Refresh => "Meta's refresh API",
                _ => "minting a new system-user token",
            }
        ),
    }
}
