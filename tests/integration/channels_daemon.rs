//! The on-call receivers beside email, driven by the daemon: each alert once per receiver by
//! its severity filter, resolved by the same key, through an hour's outage, a receiver that
//! keeps failing told on the others, a crash between queueing and delivery, a real
//! Alertmanager HA pair, `notify test`, and no token or secret in any payload, queue or log.

use std::path::Path;
use std::time::Duration;

use tokenwarden::daemon::OffsetClock;

use crate::util::receivers::{ROUTING_KEY, Receiver};
use crate::util::{
    DAY, Running, World, assert_no_leak, daemon_command, expiry_of, free_port, parse_metrics,
    prod_spec, scrape_text, signal, state_dir, step_to, subjects,
};

const WAIT: Duration = Duration::from_secs(10);

/// Appends `text` to the config file.
fn append(config: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(config)
        .unwrap();
    writeln!(f, "\n{text}").unwrap();
}

/// Writes `value` as a secret file beside the config (0600) and returns its path.
fn secret_file(config: &Path, name: &str, value: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = config.parent().unwrap().join(name);
    std::fs::write(&p, value).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

/// The `[[receiver]]` tables for a PagerDuty (critical and error only), a Slack and a Teams
/// stand-in, with `extra` added to each.
fn receivers(config: &Path, pd: &Receiver, slack: &Receiver, teams: &Receiver, extra: &str) {
    let key = secret_file(config, "pd-key", ROUTING_KEY);
    let slack_url = secret_file(config, "slack-url", &slack.url());
    let teams_url = secret_file(config, "teams-url", &teams.url());
    append(
        config,
        &format!(
            "[[receiver]]\nname = \"pager\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = {{ file = \"{key}\" }}\nseverities = [\"critical\", \"error\"]\nruntbook_placeholder\n{extra}\n\
             [[receiver]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = {{ file = \"{slack_url}\" }}\n{extra}\n\
             [[receiver]]\nname = \"teams\"\nkind = \"teams\"\nwebhook_url = {{ file = \"{teams_url}\" }}\n{extra}\n",
            pd.url()
        )
        .replace(
            "runtbook_placeholder",
            "runbook = \"https://wiki.example.com/tokenwarden\"",
        ),
    );
}

/// A PagerDuty, a Slack and a Teams stand-in.
async fn stand_ins() -> (Receiver, Receiver, Receiver) {
    (
        Receiver::pagerduty().await,
        Receiver::slack().await,
        Receiver::teams().await,
    )
}

/// What the Slack stand-in got: each message's fallback text.
fn slack_texts(r: &Receiver) -> Vec<String> {
    r.accepted()
        .iter()
        .map(|m| m["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// PagerDuty's events: (action, dedup_key, severity).
fn pd_events(r: &Receiver) -> Vec<(String, String, String)> {
    r.accepted()
        .iter()
        .map(|e| {
            (
                e["event_action"].as_str().unwrap_or_default().to_string(),
                e["dedup_key"].as_str().unwrap_or_default().to_string(),
                e["payload"]["severity"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

/// Puts a fresh token in place (a person's fix): the next check recovers.
fn replace_token(w: &World) {
    let fresh = w.sb.issue_token(prod_spec());
    tokenwarden::store::file::FileStore::new(w.ws.store.clone(), "prod".into())
        .import_current(
            &tokenwarden::secret::Secret::new(fresh),
            jiff::Timestamp::now(),
        )
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_gets_each_alert_once_by_its_filter_and_pagerduty_resolves_by_the_same_key() {
    let w = World::new("prod", prod_spec(), "").await;
    let (pd, slack, teams) = stand_ins().await;
    receivers(&w.ws.config, &pd, &slack, &teams, "");
    let expires = expiry_of(&w.sb);
    let clock = OffsetClock::default();
    let d = Running::start(&w.ws.config, &clock);

    // A warning: chat and email, not the pager (critical and error only).
    step_to(&w.sb, &clock, expires, 7 * DAY);
    d.check_now().await;
    d.check_now().await;
    slack.wait_accepted(1, WAIT).await;
    teams.wait_accepted(1, WAIT).await;
    assert!(pd.received().is_empty(), "{:#?}", pd.received());
    let texts = slack_texts(&slack);
    assert!(texts[0].starts_with("WARNING prod:"), "{texts:#?}");

    // Critical: the pager too, once, with the token and condition as its key.
    step_to(&w.sb, &clock, expires, DAY);
    d.check_now().await;
    d.check_now().await;
    pd.wait_accepted(1, WAIT).await;
    let events = pd_events(&pd);
    assert_eq!(
        events,
        vec![(
            "trigger".into(),
            "tokenwarden/prod/expiry".into(),
            "critical".into()
        )]
    );
    let trigger = &pd.accepted()[0];
    assert_eq!(
        trigger["links"][0]["href"],
        "https://wiki.example.com/tokenwarden"
    );
    assert_eq!(trigger["payload"]["component"], "prod");

    // A person fixes it: PagerDuty resolves the same key; chat says RESOLVED once.
    replace_token(&w);
    d.check_now().await;
    d.check_now().await;
    pd.wait_accepted(2, WAIT).await;
    slack.wait_accepted(3, WAIT).await;
    teams.wait_accepted(3, WAIT).await;
    d.check_now().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = pd_events(&pd);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(events[1].0, "resolve");
    assert_eq!(events[1].1, "tokenwarden/prod/expiry");
    let texts = slack_texts(&slack);
    assert_eq!(texts.len(), 3, "{texts:#?}");
    assert!(texts[1].starts_with("CRITICAL prod:"), "{texts:#?}");
    assert!(texts[2].starts_with("RESOLVED prod:"), "{texts:#?}");
    assert_eq!(teams.accepted().len(), 3);
    // Email is unchanged beside them: the same three.
    let mails = subjects(&w.sink);
    assert_eq!(mails.len(), 3, "{mails:#?}");
    // The audit log says where each alert went.
    let audit = std::fs::read_to_string(state_dir(&w.ws.config).join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"alert_queued\"") && audit.contains("\"alert_sent\""));
    d.stop().await;
}

/// Each receiver in turn is down while three alerts are decided (a week, three days and a day
/// before expiry), through an hour of the daemon's clock and a restart of the daemon: when it
/// returns it gets every alert it takes once, and the others got theirs meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_an_hour_gets_every_alert_once_and_delays_no_other() {
    for down in ["slack", "teams", "pagerduty"] {
        let w = World::new("prod", prod_spec(), "").await;
        let (mut pd, mut slack, mut teams) = stand_ins().await;
        receivers(
            &w.ws.config,
            &pd,
            &slack,
            &teams,
            "timeout = \"1s\"\nfailing_after = \"30d\"",
        );
        let expires = expiry_of(&w.sb);
        let clock = OffsetClock::default();
        let d = Running::start(&w.ws.config, &clock);
        let (receiver, queue, takes) = match down {
            "slack" => (&mut slack, "chat", 3),
            "teams" => (&mut teams, "teams", 3),
            _ => (&mut pd, "pager", 1),
        };
        receiver.stop().await;
        for left in [7 * DAY, 3 * DAY, DAY] {
            step_to(&w.sb, &clock, expires, left);
            d.check_now().await;
        }
        let queued = std::fs::read_dir(
            state_dir(&w.ws.config)
                .join("channels")
                .join(queue)
                .join("queue"),
        )
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
        assert_eq!(queued, takes, "{down}: every alert it takes waits");
        // An hour down, with the daemon restarted meanwhile.
        for _ in 0..6 {
            clock.advance(600);
            w.sb.advance_clock(600);
            d.evaluate().await;
        }
        d.stop().await;
        let d = Running::start(&w.ws.config, &clock);
        receiver.restart().await;
        clock.advance(3600);
        w.sb.advance_clock(3600);
        d.evaluate().await;
        d.evaluate().await;
        // Everyone has what it takes, each once.
        slack.wait_accepted(3, WAIT).await;
        teams.wait_accepted(3, WAIT).await;
        pd.wait_accepted(1, WAIT).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        d.evaluate().await;
        let texts = slack_texts(&slack);
        assert_eq!(texts.len(), 3, "{down}: {texts:#?}");
        assert!(
            texts[0].contains("7 days") || texts[0].contains("6 days"),
            "{texts:#?}"
        );
        assert!(texts[2].starts_with("CRITICAL"), "{texts:#?}");
        assert_eq!(teams.accepted().len(), 3, "{down}");
        assert_eq!(pd_events(&pd).len(), 1, "{down}");
        d.stop().await;
    }
}

/// Alertmanager down when the alert is decided (nothing listens on its port), up an hour
/// later: the alert is delivered from the queue and held active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_down_for_an_hour_gets_the_alert_when_it_returns() {
    let w = World::new("prod", prod_spec().expiring_in(7 * DAY - 600), "").await;
    let port = free_port();
    append(
        &w.ws.config,
        &format!(
            "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://127.0.0.1:{port}\"]\ntimeout = \"1s\"\n"
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&w.ws.config, &clock);
    d.check_now().await;
    let queue = state_dir(&w.ws.config).join("channels/am/queue");
    let waiting = || {
        std::fs::read_dir(&queue)
            .unwrap()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .count()
    };
    assert_eq!(waiting(), 1);
    let am = crate::util::alertmanager::Alertmanager::start_at(port).await;
    // The backoff has not run out: nothing is sent before its time.
    d.evaluate().await;
    assert!(am.alerts().await.is_empty());
    clock.advance(3600);
    d.evaluate().await;
    am.wait_alert(&[("token", "prod"), ("severity", "warning")])
        .await;
    assert_eq!(waiting(), 0);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_keeps_failing_is_told_on_the_other_channels_and_in_metrics() {
    let w = World::new("prod", prod_spec(), "").await;
    let (pd, slack, teams) = stand_ins().await;
    let port = free_port();
    append(
        &w.ws.config,
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\nstall_after = \"1m\""),
    );
    // Slack refuses the webhook (revoked): 403, every time.
    slack.answer_next(1000, 403, "action_prohibited");
    receivers(&w.ws.config, &pd, &slack, &teams, "failing_after = \"2h\"");
    let expires = expiry_of(&w.sb);
    let clock = OffsetClock::default();
    let d = Running::start(&w.ws.config, &clock);
    step_to(&w.sb, &clock, expires, 7 * DAY);
    d.check_now().await;
    teams.wait_accepted(1, WAIT).await;
    assert_eq!(subjects(&w.sink).len(), 1);
    // Three hours of hourly retries: past failing_after, the others hear of it, once.
    for _ in 0..3 {
        clock.advance(3600);
        w.sb.advance_clock(3600);
        d.evaluate().await;
    }
    d.evaluate().await;
    let mails = subjects(&w.sink);
    let failing: Vec<&String> = mails
        .iter()
        .filter(|s| s.contains("CHANNEL FAILING"))
        .collect();
    assert_eq!(failing.len(), 1, "{mails:#?}");
    assert!(failing[0].contains("chat (slack)"), "{mails:#?}");
    let teams_texts: Vec<String> = teams.accepted().iter().map(|m| m.to_string()).collect();
    assert!(
        teams_texts.iter().any(|t| t.contains("CHANNEL FAILING")),
        "{teams_texts:#?}"
    );
    assert!(
        slack.accepted().is_empty(),
        "the failing channel is not the one told"
    );
    // On the pager it is a condition of its own (error), with its own key.
    assert_eq!(
        pd_events(&pd),
        vec![(
            "trigger".into(),
            "tokenwarden/tokenwarden/channel-chat".into(),
            "error".into()
        )]
    );
    // /metrics has each receiver's share.
    let samples = parse_metrics(&scrape_text(port).await);
    let value = |name: &str, receiver: &str| {
        samples
            .iter()
            .find(|s| s["name"] == name && s["labels"]["receiver"] == receiver)
            .and_then(|s| s["value"].as_f64())
    };
    assert_eq!(value("tokenwarden_alerts_queued", "chat"), Some(1.0));
    assert!(value("tokenwarden_alerts_failed_total", "chat").unwrap() >= 3.0);
    assert!(value("tokenwarden_alerts_sent_total", "teams").unwrap() >= 2.0);
    assert!(
        value(
            "tokenwarden_receiver_failing_since_timestamp_seconds",
            "chat"
        )
        .is_some()
    );
    assert!(value("tokenwarden_alerts_oldest_queued_timestamp_seconds", "chat").is_some());
    assert!(
        value(
            "tokenwarden_receiver_failing_since_timestamp_seconds",
            "teams"
        )
        .is_none()
    );
    d.stop().await;
}

/// The daemon killed right after queueing an alert (before any delivery), after saving its
/// state, after a receiver accepted one (before the queue recorded it) and after the marker:
/// restarted, each receiver has the critical alert once, or, when the kill falls while a
/// receiver is between its acceptance and the marker (the window the email path documents),
/// at most twice with the same id. Alertmanager, which folds a repeat of the same labels into
/// the alert it holds, notifies its receiver once whatever happened.
#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_queueing_and_delivery_repeats_nothing() {
    for (point, at_most) in [
        ("daemon.after_enqueue", 1),
        ("daemon.after_save", 1),
        // Receivers are flushed side by side: a kill at one queue's point can find another
        // receiver inside that same window (accepted, not yet marked).
        ("outbox.after_mark", 2),
        ("outbox.after_send", 2),
    ] {
        let w = World::new("prod", prod_spec().expiring_in(DAY - 600), "").await;
        let (pd, slack, teams) = stand_ins().await;
        let am = crate::util::alertmanager::Alertmanager::start().await;
        receivers(&w.ws.config, &pd, &slack, &teams, "");
        append(
            &w.ws.config,
            &format!(
                "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"{}\"]\n",
                am.url
            ),
        );
        let run = |fp: Option<&str>| {
            let mut cmd = daemon_command(&w.ws.config);
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
        let second = run(None);
        for r in [&slack, &teams, &pd] {
            r.wait_accepted(1, WAIT).await;
        }
        let critical = [("token", "prod"), ("severity", "critical")];
        am.wait_notified("firing", &critical).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        signal(second.id(), "TERM");
        let out = tokio::task::spawn_blocking(move || second.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{point}: {out:?}");
        for (name, r) in [("slack", &slack), ("teams", &teams), ("pagerduty", &pd)] {
            let got = r.accepted();
            assert!(
                (1..=at_most).contains(&got.len()),
                "{point}: {name} got {}",
                got.len()
            );
            if got.len() == 2 {
                assert_eq!(got[0], got[1], "{point}: {name}: the same alert");
            }
        }
        assert_eq!(pd_events(&pd)[0].1, "tokenwarden/prod/expiry", "{point}");
        let firing = am
            .notified()
            .iter()
            .filter(|n| n["status"] == "firing")
            .count();
        assert_eq!(firing, 1, "{point}: {:#?}", am.notified());
    }
}

/// Alertmanager compares `startsAt` and `endsAt` with its own clock, so this test moves no
/// clock: the token starts a week from expiry (a warning) and a person then replaces it. (The
/// escalation that ends one label set as it fires the next is `channel::hub`'s unit test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alertmanager_pair_holds_the_alert_with_its_labels_and_resolves_it_after_recovery() {
    let w = World::new("prod", prod_spec().expiring_in(7 * DAY - 600), "").await;
    let (am1, am2) = (
        crate::util::alertmanager::Alertmanager::start().await,
        crate::util::alertmanager::Alertmanager::start().await,
    );
    append(
        &w.ws.config,
        &format!(
            "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"{}\", \"{}\"]\nresend = \"1m\"\nrunbook = \"https://wiki.example.com/tokenwarden\"\n",
            am1.url, am2.url
        ),
    );
    let clock = OffsetClock::default();
    let d = Running::start(&w.ws.config, &clock);
    d.check_now().await;
    let labels = [
        ("alertname", "TokenwardenTokenExpiry"),
        ("token", "prod"),
        ("severity", "warning"),
        ("state", "WARNING"),
    ];
    for am in [&am1, &am2] {
        let a = am.wait_alert(&labels).await;
        assert_eq!(a["status"]["state"], "active", "{a:#}");
        assert!(
            a["annotations"]["summary"]
                .as_str()
                .unwrap()
                .starts_with("WARNING prod:"),
            "{a:#}"
        );
        assert_eq!(
            a["annotations"]["runbook_url"],
            "https://wiki.example.com/tokenwarden"
        );
        // Active for four re-send intervals unless sent again.
        let ends: jiff::Timestamp = a["endsAt"].as_str().unwrap().parse().unwrap();
        let ahead = ends.as_second() - jiff::Timestamp::now().as_second();
        assert!((180..=245).contains(&ahead), "endsAt {ahead}s ahead");
        am.wait_notified("firing", &labels).await;
    }
    // Recovery: resolved in both, and no longer active.
    replace_token(&w);
    d.check_now().await;
    d.check_now().await;
    for am in [&am1, &am2] {
        am.wait_notified("resolved", &labels).await;
        let active: Vec<serde_json::Value> = am
            .alerts()
            .await
            .into_iter()
            .filter(|a| a["status"]["state"] == "active")
            .collect();
        assert!(active.is_empty(), "{active:#?}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_reports_each_channel_and_names_the_refusal() {
    let w = World::new("prod", prod_spec(), "").await;
    let (pd, slack, teams) = stand_ins().await;
    receivers(&w.ws.config, &pd, &slack, &teams, "");
    teams.answer_next(
        1,
        401,
        "{\"error\":{\"code\":\"DirectApiAuthorizationRequired\",\"message\":\"no\"}}",
    );
    let config = w.ws.config.display().to_string();
    let c = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::run(&["--config", &c, "notify", "test"], &[])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("email (email): delivered"), "{out:?}");
    assert!(
        out.stdout.contains("pager (pagerduty): delivered"),
        "{out:?}"
    );
    assert!(out.stdout.contains("chat (slack): delivered"), "{out:?}");
    assert!(
        out.stdout.contains("teams (teams): NOT delivered") && out.stdout.contains("401"),
        "{out:?}"
    );
    // PagerDuty: a test trigger, then its resolve, so no incident stays open.
    let events = pd_events(&pd);
    assert_eq!(events.len(), 2, "{events:#?}");
    assert_eq!(
        (events[0].0.as_str(), events[1].0.as_str()),
        ("trigger", "resolve")
    );
    assert!(
        pd.accepted()[0]["payload"]["summary"]
            .as_str()
            .unwrap()
            .starts_with("[TEST]")
    );
    assert!(slack_texts(&slack)[0].starts_with("[TEST]"));
    assert!(subjects(&w.sink).iter().any(|s| s.contains("TEST")));
    // One channel only; an unknown one is a config error naming the channels.
    let c = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::run(
            &["--config", &c, "notify", "test", "--channel", "chat"],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.lines().count(), 1, "{out:?}");
    assert_eq!(slack.accepted().len(), 2);
    let c = config.clone();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::run(
            &["--config", &c, "notify", "test", "--channel", "pagr"],
            &[],
        )
    })
    .await
    .unwrap();
    assert_eq!(out.code, 78, "{out:?}");
    assert!(out.stderr.contains("pager, chat, teams"), "{out:?}");
    assert_no_leak(&out.all(), &[ROUTING_KEY], "notify test output");
}

#[tokio::test]
async fn config_check_names_each_receiver_problem_with_its_line() {
    let w = World::new("prod", prod_spec(), "").await;
    append(
        &w.ws.config,
        "[[receiver]]\nname = \"pager\"\nkind = \"pagerduty\"\nseverities = [\"critical\"]\n\
         [[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://10.1.2.3:9093\"]\n\
         [[receiver]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = { env = \"TW_TEST_NO_SUCH_VAR\" }\n",
    );
    let config = w.ws.config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::run(&["--config", &config, "config", "check"], &[])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 78, "{out:?}");
    for want in [
        ":29:1: `receiver[0].routing_key`: is required for kind = \"pagerduty\"",
        ":33:1: `receiver[1].urls[0]`: \"http://10.1.2.3:9093\" must be https://",
    ] {
        assert!(out.stderr.contains(want), "{want}: {out:?}");
    }
    // Once the shapes are right, each secret reference is read: the missing one is named.
    let text = std::fs::read_to_string(&w.ws.config)
        .unwrap()
        .replace(
            "severities = [\"critical\"]",
            "routing_key = { env = \"HOME\" }",
        )
        .replace("http://10.1.2.3:9093", "http://127.0.0.1:9093");
    std::fs::write(&w.ws.config, text).unwrap();
    let config = w.ws.config.display().to_string();
    let out = tokio::task::spawn_blocking(move || {
        crate::util::run(&["--config", &config, "config", "check"], &[])
    })
    .await
    .unwrap();
    assert_eq!(out.code, 78, "{out:?}");
    assert!(
        out.stderr.contains("receiver[2].webhook_url")
            && out.stderr.contains("TW_TEST_NO_SUCH_VAR"),
        "{out:?}"
    );
}

/// Canaries in the token, the routing key and the webhook URLs: none of them in any payload
/// a receiver got, any queue or state file of the receivers, the audit log or the daemon's
/// debug log, through a refusal that echoes the request back and the deliveries after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_or_receiver_secret_in_any_payload_queue_or_log() {
    let w = World::new("prod", prod_spec().expiring_in(DAY - 600), "").await;
    let (pd, slack, teams) = stand_ins().await;
    let slack_canary = "CanarySlackWebhook7Q3x";
    let teams_canary = "CanaryTeamsSig9Z2w";
    let key = secret_file(&w.ws.config, "pd-key", ROUTING_KEY);
    let s = secret_file(&w.ws.config, "slack-url", &slack.webhook_url(slack_canary));
    let t = secret_file(&w.ws.config, "teams-url", &teams.webhook_url(teams_canary));
    append(
        &w.ws.config,
        &format!(
            "[[receiver]]\nname = \"pager\"\nkind = \"pagerduty\"\nurl = \"{}\"\nrouting_key = {{ file = \"{key}\" }}\n\
             [[receiver]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = {{ file = \"{s}\" }}\n\
             [[receiver]]\nname = \"teams\"\nkind = \"teams\"\nwebhook_url = {{ file = \"{t}\" }}\n",
            pd.url()
        ),
    );
    // Alertmanager's payloads too, captured by a listener on its API path.
    let am_bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let am_addr = listener.local_addr().unwrap();
    let seen = am_bodies.clone();
    let app = axum::Router::new().route(
        "/api/v2/alerts",
        axum::routing::post(move |body: String| async move {
            seen.lock().unwrap().push(body);
            "{}"
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    append(
        &w.ws.config,
        &format!(
            "[[receiver]]\nname = \"am\"\nkind = \"alertmanager\"\nurls = [\"http://{am_addr}\"]\n"
        ),
    );
    // Each receiver first echoes the whole request back in a refusal (a 400: set aside), then
    // takes the next alert.
    slack.echo_next(1, 400);
    teams.echo_next(1, 400);
    pd.echo_next(1, 400);
    let mut cmd = daemon_command(&w.ws.config);
    cmd.env("TOKENWARDEN_LOG", "debug");
    let child = cmd.spawn().unwrap();
    // The critical alert is refused (echoed) by each; `notify test` then goes through.
    for _ in 0..100 {
        if !slack.received().is_empty() && !teams.received().is_empty() && !pd.received().is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let config = w.ws.config.display().to_string();
    let test = tokio::task::spawn_blocking(move || {
        crate::util::run(
            &["--config", &config, "notify", "test"],
            &[("TOKENWARDEN_LOG", "debug")],
        )
    })
    .await
    .unwrap();
    assert_eq!(test.code, 0, "{test:?}");
    signal(child.id(), "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let log = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        test.all()
    );
    assert!(
        log.contains("refused as malformed"),
        "the echo was seen: {log}"
    );
    let secrets = [w.token.as_str(), slack_canary, teams_canary, ROUTING_KEY];
    assert_no_leak(&log, &secrets, "the daemon's and notify test's logs");
    for (name, r) in [("pagerduty", &pd), ("slack", &slack), ("teams", &teams)] {
        assert!(r.received().len() >= 2, "{name}");
        for req in r.received() {
            // PagerDuty's routing key belongs in its body; nothing else does.
            let allowed: &[&str] = if name == "pagerduty" {
                &secrets[..3]
            } else {
                &secrets
            };
            assert_no_leak(&req.body, allowed, &format!("a {name} payload"));
        }
    }
    let am_bodies = am_bodies.lock().unwrap().clone();
    assert!(!am_bodies.is_empty(), "Alertmanager got the alert");
    for b in &am_bodies {
        assert_no_leak(b, &secrets, "an Alertmanager payload");
    }
    // Every file of the receivers' queues and records, sent or set aside.
    let dir = state_dir(&w.ws.config);
    let files = walk(&dir.join("channels"));
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().contains("rejected")),
        "{files:#?}"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        assert_no_leak(&text, &secrets, &f.display().to_string());
    }
    let audit = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert_no_leak(&audit, &secrets, "the audit log");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A target that cannot take the current token is a condition on the pager (error), resolved
/// by the same key once the target holds the token again; the repaired run queues nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_target_pages_and_is_resolved_when_it_holds_the_token_again() {
    let sb = crate::util::sandbox().await;
    let sink = crate::util::SmtpSink::start(&crate::util::SinkOpts::default());
    let token = sb.issue_token(prod_spec());
    // The target's directory does not exist yet (a deploy that has not run): every push
    // fails until it does.
    let apps = tempfile::tempdir().unwrap();
    let dir = apps.path().join("backend");
    let env = dir.join(".env");
    let extra = format!(
        "[[token.target]]\nname = \"backend-env\"\nkind = \"dotenv\"\npath = \"{}\"\n",
        env.display()
    );
    let ws = crate::util::Workspace::with_meta(
        &sb,
        &[crate::util::TokenEntry {
            name: "prod",
            value: Some(&token),
            extra: &extra,
        }],
        &crate::util::sections(sink.port, ""),
    );
    let (pd, slack, teams) = stand_ins().await;
    receivers(&ws.config, &pd, &slack, &teams, "");
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    pd.wait_accepted(1, WAIT).await;
    // (A repeated trigger with the same key is folded into one incident by PagerDuty.)
    let triggers = pd_events(&pd);
    assert!(
        triggers.iter().all(|e| e
            == &(
                "trigger".to_string(),
                "tokenwarden/prod/targets".to_string(),
                "error".to_string()
            )),
        "{triggers:#?}"
    );
    std::fs::create_dir(&dir).unwrap();
    crate::util::write_private(&env, "WHATSAPP_ACCESS_TOKEN=EAAGold\n");
    d.check_now().await;
    pd.wait_accepted(triggers.len() + 1, WAIT).await;
    let resolve = &pd_events(&pd)[triggers.len()];
    assert_eq!(
        (resolve.0.as_str(), resolve.1.as_str()),
        ("resolve", "tokenwarden/prod/targets")
    );
    d.check_now().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pd.accepted().len(),
        triggers.len() + 1,
        "nothing after the resolve: {:#?}",
        pd_events(&pd)
    );
    let texts = slack_texts(&slack);
    assert!(texts[0].starts_with("TARGET FAILING prod"), "{texts:#?}");
    assert!(
        texts.last().unwrap().starts_with("RESOLVED prod"),
        "{texts:#?}"
    );
    d.stop().await;
}
