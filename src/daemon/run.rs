//! The loop of `tokenwarden run`: start (config, state, metrics, READY), then wait for a cron
//! job, a control message, a due slice or shutdown, and do the work each brings.

use super::*;

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
    let mut metrics_task = start_metrics(&d).await?;
    let (tx, mut rx) = mpsc::channel::<Fire>(1024);
    let mut sched = Scheduler::start(&d.statics, &d.cfg.groups, tx.clone(), clock.now()).await?;
    d.next_fire = sched.next_fires(&d).await;
    let (notifier, watchdog) = announce_ready(&d);
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
                // The first check, after READY: a stop can end it.
                until_stopped(d.check_all(), shutdown.as_mut(), &mut signalled, &stop).await;
                d.next_fire = sched.next_fires(&d).await;
                while !signalled {
                    d.telemetry.beat(clock.now().as_second());
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
                            let work = on_evaluate(&mut d);
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                            let _ = done.send(());
                        }
                        Wake::Control(Control::Reload(done)) => {
                            let outcome = reload(&mut d, &config_path).await;
                            if outcome.is_ok() {
                                sched = follow_config(&d, sched, &tx, &mut metrics_task).await?;
                                until_stopped(
                                    d.check_all(),
                                    shutdown.as_mut(),
                                    &mut signalled,
                                    &stop,
                                )
                                .await;
                                d.next_fire = sched.next_fires(&d).await;
                            }
                            done.map(|done| done.send(outcome));
                        }
                        Wake::Fire(fire) => {
                            let work = on_fire(&mut d, &mut sched, fire, &mut rx);
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                        }
                        Wake::Sleep => {
                            if sched.offsets_changed(clock.now()) {
                                tracing::info!(
                                    "time-zone offset changed (daylight saving): rescheduling"
                                );
                                sched = restart(&d, sched, &tx).await?;
                            }
                            let work = on_sleep(&mut d);
                            until_stopped(work, shutdown.as_mut(), &mut signalled, &stop).await;
                        }
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
pub(super) enum Wake {
    Control(Control),
    Fire(Fire),
    Sleep,
}

/// Runs `work` to its end. A shutdown arriving meanwhile sets the stop flag, which the work
/// reads: a check is abandoned, a rotation finishes the step in progress, nothing new
/// starts. `signalled` says afterwards whether the loop should end.
pub(super) async fn until_stopped<W, S>(
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

/// Serves `/metrics` and `/healthz` for `d`'s config, when it has a `[metrics]` section.
async fn start_metrics(
    d: &Daemon,
) -> Result<Option<tokio::task::JoinHandle<std::io::Result<()>>>, DaemonError> {
    let Some(m) = &d.cfg.metrics else {
        return Ok(None);
    };
    let listener = crate::metrics::bind(m.listen)
        .await
        .map_err(|e| DaemonError::Config(format!("`metrics.listen` {}: {e}", m.listen)))?;
    tracing::info!(listen = %m.listen, "serving /metrics and /healthz");
    Ok(Some(tokio::spawn(crate::metrics::serve(
        listener,
        d.cfg.state_dir.clone(),
        d.telemetry.clone(),
        m.stall_after,
    ))))
}

/// READY once the config and the state are loaded, before any network: a Graph that accepts
/// connections and never answers must not hold the start past systemd's `TimeoutStartSec`
/// (the first check runs in the loop, where a stop can end it). The watchdog is pinged from a
/// task of its own while the loop keeps within the worst case it announced for its current
/// work (`liveness`): a long check on a hanging Graph keeps the pings going, a loop stuck
/// past its bound stops them and systemd restarts the daemon.
fn announce_ready(
    d: &Daemon,
) -> (
    crate::sdnotify::Notifier,
    Option<tokio::task::JoinHandle<()>>,
) {
    tracing::info!(
        tokens = d.cfg.tokens.len(),
        email = d
            .mailer
            .as_ref()
            .map(Mailer::describe)
            .unwrap_or_else(|| "none (alerts are logged only)".into()),
        "tokenwarden started"
    );
    let notifier = crate::sdnotify::Notifier::from_env();
    notifier.notify("READY=1");
    let watchdog = crate::sdnotify::Notifier::watchdog_interval().map(|period| {
        crate::liveness::spawn_watchdog(
            d.live.clone(),
            crate::sdnotify::Notifier::from_env(),
            period,
        )
    });
    (notifier, watchdog)
}

/// Reads the config again and rebuilds the daemon from it; a broken one is refused and the
/// old one keeps running.
async fn reload(d: &mut Daemon, config_path: &Path) -> Result<(), String> {
    let outcome = match config::load(config_path) {
        Err(e) => Err(e.to_string()),
        Ok(l) => d.reconfigure(l.config).map_err(|e| e.to_string()),
    };
    match &outcome {
        Ok(()) => tracing::info!("configuration reloaded"),
        Err(e) => tracing::error!("reload refused, the previous configuration keeps running: {e}"),
    }
    outcome
}

/// The cron jobs made again (a time zone's offset changed).
async fn restart(
    d: &Daemon,
    sched: Scheduler,
    tx: &mpsc::Sender<Fire>,
) -> Result<Scheduler, DaemonError> {
    sched.stop().await;
    Scheduler::start(&d.statics, &d.cfg.groups, tx.clone(), d.clock.now()).await
}

/// A firing of cron jobs (the rest of it drained from `rx`, so it is flushed once): groups
/// listed again and spread, tokens checked, due slices run, the outbox flushed.
async fn on_fire(d: &mut Daemon, sched: &mut Scheduler, fire: Fire, rx: &mut mpsc::Receiver<Fire>) {
    let mut fired = vec![fire];
    while let Ok(more) = rx.try_recv() {
        fired.push(more);
    }
    for f in &fired {
        if let Fire::Group(g) = f {
            d.live.busy(d.budget.listing);
            d.refresh_groups(Some(g)).await;
            d.spread(g);
        }
    }
    d.next_fire = sched.next_fires(d).await;
    for f in fired {
        if let Fire::Token(name) = f {
            d.check(&name).await;
        }
    }
    d.run_due_slices().await;
    d.flush().await;
}

/// After a reload, everything built from the config follows it: the cron jobs, and
/// `/metrics` (a new state directory, a new listen address).
async fn follow_config(
    d: &Daemon,
    sched: Scheduler,
    tx: &mpsc::Sender<Fire>,
    metrics: &mut Option<tokio::task::JoinHandle<std::io::Result<()>>>,
) -> Result<Scheduler, DaemonError> {
    let sched = restart(d, sched, tx).await?;
    if let Some(t) = metrics.take() {
        t.abort();
        let _ = t.await;
    }
    *metrics = start_metrics(d).await?;
    Ok(sched)
}

/// A test's `Evaluate`, as a wake of the loop would: due slices first (a deferred check, a
/// group's next slice), then every token re-assessed.
async fn on_evaluate(d: &mut Daemon) {
    d.run_due_slices().await;
    d.evaluate_all().await;
}

/// A wake with nothing else to do: the due slices, or else every token re-assessed (a
/// threshold crossed, a repeat fallen due, the outbox's retries).
async fn on_sleep(d: &mut Daemon) {
    if d.run_due_slices().await {
        d.flush().await;
    } else {
        d.evaluate_all().await;
    }
}
