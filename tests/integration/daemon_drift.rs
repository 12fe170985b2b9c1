//! Targets kept in step by the scheduled check: a new target is synced silently, one changed
//! behind tokenwarden's back is repaired and reported as drift.

use tokenwarden::daemon::OffsetClock;

use crate::util::{
    Running, SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak, free_port, parse_metrics,
    prod_spec, sandbox, scrape_text, sections, state_dir, subjects, write_private,
};

#[tokio::test]
async fn the_scheduled_check_syncs_a_new_target_and_repairs_one_changed_behind_its_back() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    let apps = tempfile::tempdir().unwrap();
    let env = apps.path().join(".env");
    let original = "# backend\nWHATSAPP_ACCESS_TOKEN=EAAGrestoredfrombackup\nPORT=8080\n";
    write_private(&env, original);
    let extra = format!(
        "[[token.target]]\nname = \"backend-env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
        env.display()
    );
    let port = free_port();
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &extra,
        }],
        &format!(
            "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            sections(sink.port, "")
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    // The first check brings the new target up to the current token: a sync, no email.
    d.check_now().await;
    let synced = original.replace("EAAGrestoredfrombackup", &token);
    assert_eq!(std::fs::read_to_string(&env).unwrap(), synced);
    let scrape = scrape_text(port).await;
    let samples = parse_metrics(&scrape);
    let pushed = samples.iter().find(|s| {
        s["name"] == "tokenwarden_target_last_push_success"
            && s["labels"]["target"] == "backend-env"
    });
    assert_eq!(
        pushed.and_then(|s| s["value"].as_f64()),
        Some(1.0),
        "{scrape}"
    );
    assert!(
        samples.iter().any(
            |s| s["name"] == "tokenwarden_target_last_push_timestamp_seconds"
                && s["value"].as_f64().unwrap_or(0.0) > 1.7e9
        ),
        "{scrape}"
    );
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
    // Someone restores an old backup: the next check repairs it and tells on-call.
    write_private(&env, original);
    d.check_now().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), synced);
    d.check_now().await;
    d.stop().await;
    let subjects = subjects(&sink);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains("DRIFT billbytekot-prod"),
        "{subjects:?}"
    );
    let audit = std::fs::read_to_string(state_dir(&ws.config).join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"drifted\":[[\"backend-env\""), "{audit}");
    // The drift email is queued like every other one, audit record included (issue 15,
    // point 3: the drift path used to skip it).
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"email_queued\"") && l.contains("DRIFT billbytekot-prod")),
        "{audit}"
    );
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&token], "drift email");
    }
    assert_no_leak(&audit, &[&token], "audit");
}

/// Issue 14, point 28: a target that already held the current token when the daemon first
/// checked it (nothing to push, so no record was written) and was then restored from an old
/// backup was "synced" with only an INFO line. A first sync may be silent; a change after a
/// check that found the target current is drift, and gets its email.
#[tokio::test]
async fn drift_after_a_check_that_found_the_target_current_is_emailed() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    let dir = tempfile::tempdir().unwrap();
    let env = dir.path().join(".env");
    let current = format!("# backend\nWHATSAPP_ACCESS_TOKEN={token}\nPORT=8080\n");
    write_private(&env, &current);
    let extra = format!(
        "[[token.target]]\nname = \"backend-env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
        env.display()
    );
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry {
            name: "billbytekot-prod",
            value: Some(&token),
            extra: &extra,
        }],
        &sections(sink.port, ""),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), current);
    assert!(subjects(&sink).is_empty(), "{:?}", subjects(&sink));
    // Someone restores an old backup.
    write_private(
        &env,
        "# backend\nWHATSAPP_ACCESS_TOKEN=EAAGrestoredfrombackup\nPORT=8080\n",
    );
    d.check_now().await;
    d.stop().await;
    assert_eq!(std::fs::read_to_string(&env).unwrap(), current, "repaired");
    let subjects = subjects(&sink);
    assert_eq!(subjects.len(), 1, "{subjects:?}");
    assert!(
        subjects[0].contains("DRIFT billbytekot-prod"),
        "{subjects:?}"
    );
    for (_, raw) in sink.messages() {
        assert_no_leak(&raw, &[&token], "drift email");
    }
}
