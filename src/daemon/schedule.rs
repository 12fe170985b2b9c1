//! When the loop wakes: the cron jobs (one per distinct schedule, re-made when a time zone's
//! offset changes), and the nearest of a due slice, a policy change and an outbox retry.

use super::*;

impl Daemon {
    /// When the loop should wake next without a cron job: the next slice of a group's check,
    /// the nearest policy change or outbox retry, capped so the clock is re-read (and the loop
    /// beats) at least every minute.
    pub(super) fn next_wake(&self) -> Duration {
        let now = self.clock.now();
        let mut next: Option<Timestamp> = match (self.outbox.next_due(), self.channels.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
}

/// The running cron jobs and the offsets their time zones had when they were made.
pub(super) struct Scheduler {
    inner: JobScheduler,
    jobs: Vec<(uuid::Uuid, Vec<String>, Vec<String>)>,
    offsets: BTreeMap<String, i32>,
}

pub(super) fn offset_secs(tz: &str, now: Timestamp) -> i32 {
    jiff::tz::TimeZone::get(tz)
        .map(|z| z.to_offset(now).seconds())
        .unwrap_or(0)
}

impl Scheduler {
    /// One job per distinct schedule; each sends its `[[token]]`s' names and its groups'
    /// names down `tx` when it fires.
    pub(super) async fn start(
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
    pub(super) fn offsets_changed(&self, now: Timestamp) -> bool {
        self.offsets
            .iter()
            .any(|(tz, secs)| offset_secs(tz, now) != *secs)
    }

    /// Next fire time per token name (a group member's check may come up to the group's
    /// spread later).
    pub(super) async fn next_fires(&mut self, d: &Daemon) -> BTreeMap<String, Timestamp> {
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

    pub(super) async fn stop(mut self) {
        let _ = self.inner.shutdown().await;
    }
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
}
