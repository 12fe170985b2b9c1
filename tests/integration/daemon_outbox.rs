//! Every email the daemon decides reaches on-call exactly once: across an SMTP outage, a
//! restart, a day without a relay (backoff capped, nothing dropped) and a crash at each step of
//! the check and email path.

use tokenwarden::daemon::OffsetClock;

use crate::util::{
    DAY, Running, SinkOpts, SmtpDown, SmtpSink, TokenEntry, Workspace, World, daemon_command,
    expiry_of, free_port, message_ids, prod_spec, sample, sandbox, says, scrape, sections, signal,
    state_dir, step_to, subjects,
};

#[tokio::test]
async fn smtp_down_then_up_delivers_every_email_once_across_a_restart() {
    let sb = sandbox().await;
    // "Down" is a port held by a listener that never answers: unlike a freed port, no other
    // test's server can take it meanwhile. Connections hang until the email timeout (1 s).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let expires = expiry_of(&sb);
    let token = sb.issue_token(prod_spec());
    let meta = sections(port, "").replace(
        "backup@example.com\"]\ntimeout = \"5s\"",
        "backup@example.com\"]\ntimeout = \"1s\"",
    );
    assert!(meta.contains("timeout = \"1s\""));
    let ws = Workspace::with_meta(&sb, &[TokenEntry::new("prod", &token)], &meta);
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    step_to(&sb, &clock, expires, 7 * DAY);
    d.check_now().await; // SMTP is down: the warning waits in the outbox.
    step_to(&sb, &clock, expires, 3 * DAY);
    d.check_now().await;
    let outbox = state_dir(&ws.config).join("outbox");
    let queued = std::fs::read_dir(&outbox)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .count();
    assert_eq!(queued, 2, "both warnings are kept");
    // The daemon restarts while SMTP is still down: nothing is lost.
    d.stop().await;
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    drop(silent);
    let sink = SmtpSink::start(&SinkOpts {
        port: Some(port),
        ..SinkOpts::default()
    });
    clock.advance(2 * 3600); // past the outbox's backoff
    sb.advance_clock(2 * 3600);
    d.evaluate().await;
    d.evaluate().await;
    d.check_now().await;
    let got = subjects(&sink);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        says(&got[0], "expires in 7 days") && says(&got[1], "expires in 3 days"),
        "{got:#?}"
    );
    d.stop().await;
}

/// The check and email path, stopped hard at each step and restarted: the warning reaches
/// on-call once. The one exception is the window SMTP leaves (after the server's 250, before
/// the outbox records it): the email goes again with the same Message-ID, which mail clients
/// fold into one.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_and_email_path_killed_at_each_step_alerts_once() {
    let points = [
        "daemon.after_observe",
        "daemon.after_enqueue",
        "daemon.after_save",
        "outbox.after_send",
        "outbox.after_mark",
    ];
    let mut survived = 0;
    for point in points {
        let World {
            sb: _sb,
            sink,
            token: _,
            ws,
        } = World::new("prod", prod_spec().expiring_in(2 * DAY + 600), "").await;
        let run = |fp: Option<&str>| {
            let mut cmd = daemon_command(&ws.config);
            if let Some(fp) = fp {
                cmd.env(tokenwarden::failpoint::ENV, fp);
            }
            cmd.spawn().unwrap()
        };
        let crashed = run(Some(point));
        let out = tokio::task::spawn_blocking(move || crashed.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(!out.status.success(), "{point}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("failpoint {point}")),
            "{point}: {out:?}"
        );
        let second = run(None);
        let audit = state_dir(&ws.config).join("audit.jsonl");
        for _ in 0..100 {
            let sent = std::fs::read_to_string(&audit)
                .map(|a| a.matches("\"email_sent\"").count())
                .unwrap_or(0);
            if sent >= 1 || (point == "outbox.after_mark" && !sink.messages().is_empty()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        signal(second.id(), "TERM");
        let out = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{point}: {out:?}");
        let warnings: Vec<String> = subjects(&sink)
            .into_iter()
            .filter(|s| s.contains("WARNING prod"))
            .collect();
        let ids: std::collections::BTreeSet<String> = sink
            .messages()
            .iter()
            .filter_map(|(_, raw)| {
                raw.lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                    .map(|l| l.to_string())
            })
            .collect();
        if point == "outbox.after_send" {
            assert_eq!(warnings.len(), 2, "{point}: {warnings:?}");
            assert_eq!(ids.len(), 1, "{point}: the same Message-ID twice: {ids:?}");
        } else {
            assert_eq!(warnings.len(), 1, "{point}: {warnings:?}");
        }
        survived += 1;
    }
    println!(
        "{} crash points in check and email, {survived} survived",
        points.len()
    );
}

/// Issue #7: SMTP unreachable for a whole day while the daemon keeps checking. Every email
/// decided meanwhile stays in the outbox (none dropped, no give-up), retries back off but
/// never wait longer than the cap, `/metrics` shows the backlog and its age, and once a real
/// server is back every email arrives exactly once within one cap.
#[tokio::test]
async fn smtp_down_for_a_day_keeps_every_email_and_delivers_each_once_within_the_cap() {
    use std::collections::BTreeMap;
    use tokenwarden::daemon::Clock;
    use tokenwarden::notify::{BACKOFF_CAP, Outbox};

    const HOUR: i64 = 3600;
    const STEP: i64 = 600;
    let sb = sandbox().await;
    let down = SmtpDown::start();
    let smtp_port = down.port;
    let spec = prod_spec;
    // During the day: `a` crosses 3 days left (hour 6.5), `b` 1 day left (hour 18.5), `c` is
    // invalidated by Meta (hour 12). At the start `a` and `b` are already past 7 and 3 days.
    let a = sb.issue_token(spec().expiring_in(3 * DAY + 6 * HOUR + HOUR / 2));
    let b = sb.issue_token(spec().expiring_in(DAY + 18 * HOUR + HOUR / 2));
    let c = sb.issue_token(spec());
    let metrics_port = free_port();
    let meta = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n",
        sections(smtp_port, "")
    );
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("a", &a),
            TokenEntry::new("b", &b),
            TokenEntry::new("c", &c),
        ],
        &meta,
    );
    let outbox = Outbox::open(&state_dir(&ws.config)).unwrap();
    let clock = OffsetClock::default();
    let advance = |secs: i64| {
        sb.advance_clock(secs);
        clock.advance(secs);
    };
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let start = clock.now();

    // The day: a check every hour, the loop's own wake-ups every 10 minutes in between.
    let mut queued: BTreeMap<String, String> = BTreeMap::new(); // id -> subject
    let mut tries: BTreeMap<String, Vec<i64>> = BTreeMap::new(); // id -> when attempts grew
    let mut last_attempts: BTreeMap<String, u32> = BTreeMap::new();
    let mut farthest_retry = 0; // the longest a queued email was told to wait, seconds
    let mut last_error = String::new();
    for step in 1..=(DAY / STEP) {
        advance(STEP);
        if step * STEP == 12 * HOUR {
            sb.invalidate(&c, 460);
        }
        if step % (HOUR / STEP) == 0 {
            d.check_now().await;
        } else {
            d.evaluate().await;
        }
        let now = clock.now();
        let pending = outbox.pending().unwrap();
        for e in &pending {
            queued
                .entry(e.item.id.clone())
                .or_insert_with(|| e.item.subject.clone());
            let before = last_attempts.insert(e.item.id.clone(), e.attempts);
            if before != Some(e.attempts) && e.attempts > 0 {
                tries
                    .entry(e.item.id.clone())
                    .or_default()
                    .push(now.as_second() - start.as_second());
            }
            if let Some(next) = e.next_attempt {
                farthest_retry = farthest_retry.max(next.as_second() - now.as_second());
            }
            if let Some(err) = &e.last_error {
                last_error = err.clone();
            }
        }
        // Nothing ever leaves the outbox while the server is down.
        assert_eq!(
            pending.len(),
            queued.len(),
            "hour {}: an email left the outbox undelivered",
            step * STEP / HOUR
        );
    }
    let subjects_queued: Vec<&String> = queued.values().collect();
    assert!(
        queued.len() >= 5,
        "7-day and 3-day warnings at the start, the 3-day and 1-day crossings, the invalidation: {subjects_queued:#?}"
    );
    for want in ["WARNING a", "WARNING b", "CRITICAL b", "INVALID c"] {
        assert!(
            subjects_queued.iter().any(|s| s.contains(want)),
            "{want}: {subjects_queued:#?}"
        );
    }
    // Backoff, capped: the retry is never further away than the cap, and the first email was
    // not tried at every wake-up (144) but about once an hour after the first doublings.
    assert!(
        farthest_retry <= BACKOFF_CAP.as_secs() as i64,
        "{farthest_retry}s"
    );
    let oldest_id = outbox.pending().unwrap()[0].item.id.clone();
    let first = &tries[&oldest_id];
    let gaps: Vec<i64> = first.windows(2).map(|w| w[1] - w[0]).collect();
    let longest_gap = gaps.iter().copied().max().unwrap_or(0);
    assert!(
        (20..=40).contains(&first.len()),
        "attempts of the oldest email over the day: {first:?}"
    );
    assert!(
        longest_gap <= BACKOFF_CAP.as_secs() as i64 + STEP,
        "gaps {gaps:?}"
    );
    assert!(
        gaps.iter().take(3).all(|g| *g < 1800) && longest_gap >= 2700,
        "short gaps first, then about an hour: {gaps:?}"
    );

    // What on-call sees: the backlog and its age.
    let m = scrape(metrics_port).await;
    assert_eq!(
        sample(&m, "tokenwarden_emails_queued"),
        Some(queued.len() as f64)
    );
    let oldest = sample(&m, "tokenwarden_outbox_oldest_queued_timestamp_seconds")
        .expect("the oldest email's time is exported") as i64;
    let backlog_age = clock.now().as_second() - oldest;
    assert!(backlog_age >= DAY, "{backlog_age}s");
    assert!(
        sample(&m, "tokenwarden_emails_sent_total") == Some(0.0),
        "nothing sent during the outage"
    );

    // SMTP comes back on the same port: every email within one cap, each once.
    let connections = down.stop();
    let sink = SmtpSink::start(&SinkOpts {
        port: Some(smtp_port),
        ..SinkOpts::default()
    });
    let mut waited = 0;
    while sink.messages().len() < queued.len() && waited < BACKOFF_CAP.as_secs() as i64 {
        advance(60);
        waited += 60;
        d.evaluate().await;
    }
    assert_eq!(
        sink.messages().len(),
        queued.len(),
        "all delivered within {waited}s of SMTP's return: {:#?}",
        subjects(&sink)
    );
    // More checks and wake-ups send nothing again.
    for _ in 0..3 {
        advance(HOUR);
        d.check_now().await;
        d.evaluate().await;
    }
    let mut got = subjects(&sink);
    let mut want: Vec<String> = queued.values().cloned().collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each queued email once, nothing else");
    let ids = message_ids(&sink);
    let distinct: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:#?}");
    assert!(outbox.is_empty());
    let m = scrape(metrics_port).await;
    assert_eq!(sample(&m, "tokenwarden_emails_queued"), Some(0.0));
    assert_eq!(
        sample(&m, "tokenwarden_outbox_oldest_queued_timestamp_seconds"),
        None
    );
    assert_eq!(
        sample(&m, "tokenwarden_emails_sent_total"),
        Some(queued.len() as f64)
    );
    println!(
        "SMTP down for {}h: {} emails queued, none dropped; the oldest tried {} times (gaps {}s .. {}s, retry never set further than {}s), {connections} connections to the dead relay; backlog age in /metrics {}h; after SMTP returned all delivered within {waited}s, each once; last error: {last_error}",
        DAY / HOUR,
        queued.len(),
        first.len(),
        gaps.iter().min().unwrap_or(&0),
        longest_gap,
        farthest_retry,
        backlog_age / HOUR,
    );
    d.stop().await;
}
