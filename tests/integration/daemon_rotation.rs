//! Scheduled rotation in the daemon: at its time a minted successor takes over and the old
//! token is revoked after the grace; a refused mint emails once a day; a stop during a
//! rotation finishes the step in progress and the next start resumes.

use tokenwarden::daemon::OffsetClock;
use tokenwarden::sandbox::{self};

use crate::util::{
    DAY, Running, SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak, current, expiry_of,
    mint_source, prod_spec, sandbox, sections, state_dir, step_to, subjects,
};

#[tokio::test]
async fn at_its_rotation_time_a_minted_successor_takes_over_and_the_old_token_is_revoked_after_the_grace()
 {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let expires = expiry_of(&sb);
    let old = sb.issue_token(prod_spec());
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&old),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);

    // A 60-day token rotates when a third of its life is left: 20 days before its expiry.
    step_to(&sb, &clock, expires, 20 * DAY + 3600);
    d.check_now().await;
    assert_eq!(sb.stats().minted, 0, "not due yet");
    step_to(&sb, &clock, expires, 20 * DAY - 60);
    d.check_now().await;
    assert_eq!(sb.stats().minted, 1);
    let new = current(&ws, "billbytekot-prod").await;
    assert_ne!(new, old);
    assert_eq!(
        sb.stats().revoked,
        0,
        "the old token lives through the grace period"
    );

    // 24 hours later the next check revokes it.
    sb.advance_clock(DAY + 60);
    clock.advance(DAY + 60);
    d.check_now().await;
    assert_eq!(sb.stats().revoked, 1);
    d.check_now().await;
    assert_eq!(
        (sb.stats().minted, sb.stats().revoked),
        (1, 1),
        "nothing more to do"
    );
    d.stop().await;

    let subjects = subjects(&sink);
    let rotated: Vec<&String> = subjects.iter().filter(|s| s.contains("ROTATED")).collect();
    assert_eq!(rotated.len(), 1, "{subjects:?}");
    assert!(
        subjects
            .iter()
            .all(|s| !s.contains("WARNING") && !s.contains("FAILED")),
        "{subjects:?}"
    );
    let status = std::fs::read_to_string(state_dir(&ws.config).join("state.json")).unwrap();
    let fp = tokenwarden::secret::Secret::new(new.clone())
        .fingerprint()
        .to_string();
    assert!(status.contains(&fp), "the state describes the new token");
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&old, &new, &admin], "rotation email");
    }
}

#[tokio::test]
async fn a_refused_mint_sends_one_failure_email_and_waits_before_trying_again() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let expires = expiry_of(&sb);
    let old = sb.issue_token(prod_spec());
    // The system user does not have the app installed: Meta refuses every mint.
    let dir = tempfile::tempdir().unwrap();
    let (extra, admin) = mint_source(&sb, dir.path(), sandbox::UNINSTALLED_SYSTEM_USER_ID);
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&old),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    step_to(&sb, &clock, expires, 19 * DAY);
    d.check_now().await;
    d.check_now().await;
    let failed: Vec<String> = subjects(&sink)
        .into_iter()
        .filter(|s| s.contains("ROTATION FAILED"))
        .collect();
    assert_eq!(failed.len(), 1, "{:?}", subjects(&sink));
    assert!(failed[0].contains("obtain failed"), "{failed:?}");
    let (_, raw) = sink
        .messages()
        .into_iter()
        .find(|(_, raw)| raw.contains("ROTATION FAILED"))
        .unwrap();
    assert!(raw.contains("App not installed"), "the email says why");
    assert!(
        raw.contains("tokenwarden rotate --token billbytekot-prod"),
        "and what to do"
    );
    assert_no_leak(&raw, &[&old, &admin], "failure email");

    // The next day it tries again, and fails the same way: already told (the token's own
    // warnings go on), so no second email for the same failure.
    let mints = sb
        .stats()
        .requests_for(tokenwarden::sandbox::Endpoint::Mint);
    step_to(&sb, &clock, expires, 18 * DAY - 60);
    d.check_now().await;
    d.stop().await;
    assert_eq!(
        sb.stats()
            .requests_for(tokenwarden::sandbox::Endpoint::Mint),
        mints + 1,
        "tried again"
    );
    let failed = subjects(&sink)
        .into_iter()
        .filter(|s| s.contains("ROTATION FAILED"))
        .count();
    assert_eq!(failed, 1, "{:?}", subjects(&sink));
    assert_eq!(
        current(&ws, "billbytekot-prod").await,
        old,
        "the old token stays current"
    );
}

/// Issue 14, point 2: a stop during a rotation finishes the step in progress (here the
/// delivery, a command that takes 2 s) and goes no further: the record says "promote next",
/// the old token is still current, and the next start promotes the delivered candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_during_a_rotation_finishes_the_step_in_progress_and_the_next_start_resumes() {
    let sb = sandbox().await;
    let expires = expiry_of(&sb);
    let old = sb.issue_token(prod_spec());
    let dir = tempfile::tempdir().unwrap();
    let (mint, _admin) = mint_source(&sb, dir.path(), sandbox::DEMO_SYSTEM_USER_ID);
    let (started, done, got) = (
        dir.path().join("started"),
        dir.path().join("done"),
        dir.path().join("got"),
    );
    let extra = format!(
        "{mint}\n[[token.target]]\nname = \"slow\"\nkind = \"exec\"\ntimeout = \"20s\"\ncommand = [\"/bin/sh\", \"-c\", \"touch {}; cat > {}; sleep 2; touch {}\"]\n",
        started.display(),
        got.display(),
        done.display()
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "prod",
            value: Some(&old),
            extra: &extra,
        }],
        "[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let clock = OffsetClock::default();
    // Due at once: the first check starts the rotation.
    step_to(&sb, &clock, expires, 20 * DAY - 60);
    let d = Running::start(&ws.config, &clock);
    let t0 = std::time::Instant::now();
    while !started.exists() {
        assert!(t0.elapsed() < std::time::Duration::from_secs(30));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let asked = std::time::Instant::now();
    d.stop().await;
    let took = asked.elapsed();
    assert!(
        done.exists(),
        "the delivery in progress finished before the exit"
    );
    assert!(took >= std::time::Duration::from_millis(1500), "{took:?}");
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(state_dir(&ws.config).join("rotations/prod.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["step"], "promote", "{record}");
    assert_eq!(
        current(&ws, "prod").await,
        old,
        "not promoted during the stop"
    );
    let delivered = std::fs::read_to_string(&got).unwrap();
    assert_ne!(delivered.trim(), old);

    // The next start resumes at the promotion: the delivered candidate becomes current.
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    d.stop().await;
    assert_eq!(current(&ws, "prod").await, delivered.trim());
    assert_eq!(sb.stats().minted, 1);
}

/// Issue 15, point 8: a rotation that is due with nothing staged is said once per token and
/// state in the log, not at every check (here a check every second for a few seconds).
#[tokio::test]
async fn a_due_rotation_with_nothing_staged_is_logged_once_not_at_every_check() {
    let sb = sandbox().await;
    let token = sb.issue_token(prod_spec().issued_ago(45 * DAY));
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        "attempts = 1\ntimeout = \"5s\"\n[schedule]\ncron = \"* * * * * *\"\n",
    );
    let child = crate::util::daemon_command(&ws.config).spawn().unwrap();
    let audit = state_dir(&ws.config).join("audit.jsonl");
    // At least four checks.
    for _ in 0..200 {
        let checks = std::fs::read_to_string(&audit)
            .map(|a| a.matches("\"check\"").count())
            .unwrap_or(0);
        if checks >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    crate::util::signal(child.id(), "TERM");
    let out = child.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    let checks = std::fs::read_to_string(&audit)
        .unwrap()
        .matches("\"check\"")
        .count();
    assert!(checks >= 4, "{checks} checks: {logs}");
    assert_eq!(
        logs.matches("rotation due but not started").count(),
        1,
        "{checks} checks: {logs}"
    );
    assert!(logs.contains("nothing is staged"), "{logs}");
}
