//! The PagerDuty, Slack and Teams channels against strict loopback stand-ins of each vendor
//! (`util::receivers`): every status accepted as documented, long alerts within the limits,
//! each kind of refusal read as what the queue does next, hangs and outages retried, and no
//! routing key or webhook URL in any payload or error, even when the receiver echoes the
//! request back.

use std::time::{Duration, Instant};

use tokenwarden::channel::pagerduty::PagerDuty;
use tokenwarden::channel::slack::Slack;
use tokenwarden::channel::teams::Teams;
use tokenwarden::channel::{Alert, ChannelError, Severity, Status};
use tokenwarden::secret::Secret;

use crate::util::assert_no_leak;
use crate::util::receivers::{self, Receiver, Vendor};

const TIMEOUT: Duration = Duration::from_secs(5);

/// The client the daemon gives the channels: no redirects, no proxy from the environment.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// An alert with every field set, as the daemon makes them.
fn alert(status: Status, severity: Severity) -> Alert {
    Alert {
        id: "tokenwarden-prod-expiry-7d".into(),
        key: "tokenwarden/prod/expiry".into(),
        token: "prod".into(),
        condition: "expiry".into(),
        alertname: "TokenwardenTokenExpiring".into(),
        severity,
        status,
        state: "CRITICAL".into(),
        word: if status == Status::Resolved {
            "RESOLVED".into()
        } else {
            "CRITICAL".into()
        },
        headline: "the token expires in 2 days".into(),
        left: Some("2 days 3 hours".into()),
        deadline: Some("Sun 29 Nov 2026 19:00 UTC".into()),
        deadline_at: Some("2026-11-29T19:00:00Z".parse().unwrap()),
        todo: vec![
            "Stage a new token: tokenwarden stage prod".into(),
            "Check the rotation ran: tokenwarden status".into(),
        ],
        facts: vec![
            "token fingerprint 1a2b3c4d".into(),
            "app 1234, WABA 5678".into(),
        ],
        fingerprint: Some("1a2b3c4d".into()),
        runbook: Some("https://runbooks.example/tokenwarden#expiry".into()),
        started_at: "2026-11-27T16:00:00Z".parse().unwrap(),
        test: false,
    }
}

/// An alert at every limit at once: a headline of 5000 characters, 200 to-do items and 200
/// facts, long names, and markup characters.
fn huge() -> Alert {
    let mut a = alert(Status::Firing, Severity::Critical);
    a.token = format!("prod-{}", "t".repeat(300));
    a.headline = format!("<b>&{}", "h".repeat(5000));
    a.left = Some("l".repeat(4000));
    a.deadline = Some("d".repeat(4000));
    a.todo = (0..200)
        .map(|i| format!("step {i}: {}", "s".repeat(300)))
        .collect();
    a.facts = (0..200)
        .map(|i| format!("fact {i}: {}", "f".repeat(300)))
        .collect();
    a.key = format!("tokenwarden/{}/expiry", "k".repeat(400));
    a
}

/// One channel of each kind behind one interface, so each behaviour is checked for all.
enum Channel {
    PagerDuty(PagerDuty),
    Slack(Slack),
    Teams(Teams),
}

impl Channel {
    /// The channel for `rx`, with `secret` as its routing key (PagerDuty) or the secret
    /// part of its webhook URL (Slack, Teams).
    fn for_receiver(rx: &Receiver, vendor: Vendor, secret: &str, timeout: Duration) -> Channel {
        match vendor {
            Vendor::PagerDuty => Channel::PagerDuty(
                PagerDuty::new(Secret::new(secret), timeout)
                    .with_url(rx.url())
                    .with_source("host-1".into()),
            ),
            Vendor::Slack => {
                Channel::Slack(Slack::new(Secret::new(rx.webhook_url(secret)), timeout))
            }
            Vendor::Teams => {
                Channel::Teams(Teams::new(Secret::new(rx.webhook_url(secret)), timeout))
            }
        }
    }

    fn payload(&self, a: &Alert) -> Option<serde_json::Value> {
        match self {
            Channel::PagerDuty(c) => c.payload(a),
            Channel::Slack(c) => c.payload(a),
            Channel::Teams(c) => c.payload(a),
        }
    }

    async fn send(&self, a: &Alert) -> Result<(), ChannelError> {
        let client = client();
        match self {
            Channel::PagerDuty(c) => c.send(&client, a).await,
            Channel::Slack(c) => c.send(&client, a).await,
            Channel::Teams(c) => c.send(&client, a).await,
        }
    }
}

const VENDORS: [Vendor; 3] = [Vendor::PagerDuty, Vendor::Slack, Vendor::Teams];

/// A receiver for `vendor` and a channel to it with the receiver's own secret.
async fn pair(vendor: Vendor, timeout: Duration) -> (Receiver, Channel) {
    let rx = Receiver::start(vendor).await;
    let secret = match vendor {
        Vendor::PagerDuty => rx.routing_key(),
        _ => receivers::WEBHOOK_TOKEN.to_string(),
    };
    let ch = Channel::for_receiver(&rx, vendor, &secret, timeout);
    (rx, ch)
}

#[tokio::test]
async fn pagerduty_triggers_then_resolves_by_the_same_key_and_skips_notices() {
    let (pd, ch) = pair(Vendor::PagerDuty, TIMEOUT).await;
    ch.send(&alert(Status::Firing, Severity::Critical))
        .await
        .unwrap();
    ch.send(&alert(Status::Resolved, Severity::Critical))
        .await
        .unwrap();
    ch.send(&alert(Status::Notice, Severity::Info))
        .await
        .unwrap();
    let got = pd.accepted();
    assert_eq!(got.len(), 2, "a notice is not sent: {:?}", pd.received());
    assert_eq!(pd.received().len(), 2);
    let (trigger, resolve) = (&got[0], &got[1]);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], receivers::ROUTING_KEY);
    assert_eq!(trigger["dedup_key"], "tokenwarden/prod/expiry");
    assert_eq!(trigger["payload"]["severity"], "critical");
    assert_eq!(trigger["payload"]["source"], "host-1");
    assert_eq!(trigger["payload"]["component"], "prod");
    assert_eq!(
        trigger["payload"]["custom_details"]["fingerprint"],
        "1a2b3c4d"
    );
    assert_eq!(trigger["links"][0]["text"], "Runbook");
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"]);
    assert_eq!(
        resolve.as_object().unwrap().len(),
        3,
        "a resolve carries only routing_key, event_action, dedup_key: {resolve}"
    );
    let req = &pd.received()[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v2/enqueue");
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn slack_and_teams_take_every_status_and_show_what_it_is() {
    for vendor in [Vendor::Slack, Vendor::Teams] {
        let (rx, ch) = pair(vendor, TIMEOUT).await;
        let mut test = alert(Status::Notice, Severity::Info);
        test.test = true;
        for a in [
            alert(Status::Firing, Severity::Critical),
            alert(Status::Resolved, Severity::Critical),
            alert(Status::Notice, Severity::Info),
            test,
        ] {
            ch.send(&a)
                .await
                .unwrap_or_else(|e| panic!("{vendor:?}: {e}"));
        }
        let got = rx.accepted();
        assert_eq!(got.len(), 4, "{vendor:?}: {:?}", rx.received());
        let shown: Vec<String> = got.iter().map(|m| m.to_string()).collect();
        assert!(shown[0].contains("CRITICAL prod"), "{}", shown[0]);
        assert!(shown[0].contains("2 days 3 hours") && shown[0].contains("Sun 29 Nov 2026"));
        assert!(shown[1].contains("RESOLVED prod"), "{}", shown[1]);
        assert!(shown[3].contains("[TEST]") && shown[3].contains("nothing is wrong"));
        if vendor == Vendor::Slack {
            assert_eq!(got[0]["text"], "CRITICAL prod: the token expires in 2 days");
            assert_eq!(rx.received()[0].status, Some(200));
        } else {
            assert_eq!(rx.received()[0].status, Some(202));
        }
    }
}

#[tokio::test]
async fn a_huge_alert_stays_within_every_documented_limit() {
    for vendor in VENDORS {
        let (rx, ch) = pair(vendor, TIMEOUT).await;
        ch.send(&huge())
            .await
            .unwrap_or_else(|e| panic!("{vendor:?} refused a huge alert: {e}"));
        let got = rx.accepted();
        assert_eq!(got.len(), 1, "{vendor:?}: {:?}", rx.received());
        let shown = got[0].to_string();
        // Cut, not dropped: the start of the to-do list is there.
        assert!(shown.contains("step 0"), "{vendor:?}");
        match vendor {
            Vendor::PagerDuty => {
                let summary = got[0]["payload"]["summary"].as_str().unwrap();
                assert_eq!(summary.chars().count(), receivers::pagerduty::MAX_SUMMARY);
                assert_eq!(
                    got[0]["dedup_key"].as_str().unwrap().chars().count(),
                    receivers::pagerduty::MAX_DEDUP_KEY
                );
            }
            _ => assert!(shown.contains("the email has them all"), "{vendor:?}"),
        }
    }
}

#[tokio::test]
async fn the_receivers_refuse_what_the_vendors_refuse() {
    // The checks the payload tests rely on can fail: hand-made payloads one step over a
    // limit are refused with the vendor's words.
    let client = client();
    let post = |url: String, body: serde_json::Value| {
        let client = client.clone();
        async move {
            let r = client.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let pd = Receiver::pagerduty().await;
    let event = |summary: String| {
        serde_json::json!({
            "routing_key": receivers::ROUTING_KEY, "event_action": "trigger",
            "payload": {"summary": summary, "source": "h", "severity": "critical"},
        })
    };
    assert_eq!(post(pd.url(), event("s".repeat(1024))).await.0, 202);
    let (s, body) = post(pd.url(), event("s".repeat(1025))).await;
    assert_eq!(s, 400);
    assert!(body.contains("payload.summary"), "{body}");
    let mut bad = event("s".into());
    bad["payload"]["severity"] = "high".into();
    assert!(post(pd.url(), bad).await.1.contains("payload.severity"));
    let mut bad = event("s".into());
    bad["routing_key"] = "short".into();
    assert!(post(pd.url(), bad).await.1.contains("routing_key"));
    let resolve =
        serde_json::json!({"routing_key": receivers::ROUTING_KEY, "event_action": "resolve"});
    assert!(post(pd.url(), resolve).await.1.contains("dedup_key"));

    let slack = Receiver::slack().await;
    let header = |n: usize| {
        serde_json::json!({"text": "t", "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": "h".repeat(n)}}
        ]})
    };
    assert_eq!(post(slack.url(), header(150)).await, (200, "ok".into()));
    assert_eq!(
        post(slack.url(), header(151)).await,
        (400, "invalid_blocks".into())
    );
    let fields = |n: usize| {
        let f: Vec<_> = (0..n)
            .map(|_| serde_json::json!({"type": "mrkdwn", "text": "x"}))
            .collect();
        serde_json::json!({"text": "t", "blocks": [{"type": "section", "fields": f}]})
    };
    assert_eq!(post(slack.url(), fields(10)).await.0, 200);
    assert_eq!(post(slack.url(), fields(11)).await.1, "invalid_blocks");
    assert_eq!(post(slack.url(), serde_json::json!({})).await.1, "no_text");

    let teams = Receiver::teams().await;
    let card = |text: String| {
        serde_json::json!({"type": "message", "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null,
            "content": {"type": "AdaptiveCard", "version": "1.4",
                        "body": [{"type": "TextBlock", "text": text, "color": "Attention"}]}}]})
    };
    assert_eq!(post(teams.url(), card("x".into())).await.0, 202);
    let (s, body) = post(teams.url(), card("x".repeat(15_000))).await;
    assert_eq!(s, 413, "28 KB counted in UTF-16: {body}");
    let mut bad = card("x".into());
    bad["attachments"][0]["content"]["body"][0]["colour"] = "red".into();
    let (s, body) = post(teams.url(), bad).await;
    assert_eq!(s, 400);
    assert!(
        body.contains("TriggerInputSchemaMismatch") && body.contains("body[0]"),
        "{body}"
    );
}

#[tokio::test]
async fn a_refused_payload_is_rejected_naming_the_vendors_field_or_word() {
    // PagerDuty's own check: a routing key of the wrong length.
    let pd = Receiver::pagerduty().await;
    let ch = Channel::for_receiver(&pd, Vendor::PagerDuty, "tooShortKey123", TIMEOUT);
    match ch.send(&alert(Status::Firing, Severity::Critical)).await {
        Err(ChannelError::Rejected(m)) => assert!(m.contains("'routing_key'"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The vendors' usual 400 bodies.
    for (vendor, named) in [
        (Vendor::PagerDuty, "payload.summary"),
        (Vendor::Slack, "invalid_blocks"),
        (Vendor::Teams, "TriggerInputSchemaMismatch"),
    ] {
        let (rx, ch) = pair(vendor, TIMEOUT).await;
        rx.fail_next(1, 400, None);
        match ch.send(&alert(Status::Firing, Severity::Warning)).await {
            Err(ChannelError::Rejected(m)) => assert!(m.contains(named), "{vendor:?}: {m}"),
            other => panic!("{vendor:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refused_key_or_webhook_or_a_redirect_is_a_config_problem() {
    for (vendor, statuses) in [
        (Vendor::PagerDuty, &[401, 403, 404, 308][..]),
        (Vendor::Slack, &[403, 404, 410, 301][..]),
        (Vendor::Teams, &[401, 403, 404, 302][..]),
    ] {
        let (rx, ch) = pair(vendor, TIMEOUT).await;
        for &s in statuses {
            rx.fail_next(1, s, None);
            match ch.send(&alert(Status::Firing, Severity::Critical)).await {
                Err(ChannelError::Config(m)) => assert!(m.contains(&s.to_string()), "{m}"),
                other => panic!("{vendor:?} {s}: {other:?}"),
            }
        }
    }
    // Slack's words for a webhook that is gone are config whatever the status says.
    let slack = Receiver::slack().await;
    let bad = Slack::new(
        Secret::new(slack.url().replace("/services/", "/nothing/")),
        TIMEOUT,
    );
    match bad
        .send(&client(), &alert(Status::Firing, Severity::Critical))
        .await
    {
        Err(ChannelError::Config(m)) => assert!(m.contains("no_service"), "{m}"),
        other => panic!("{other:?}"),
    }
    let ch = Channel::for_receiver(&slack, Vendor::Slack, receivers::WEBHOOK_TOKEN, TIMEOUT);
    slack.answer_next(1, 400, "posting_to_general_channel_denied");
    match ch.send(&alert(Status::Firing, Severity::Critical)).await {
        Err(ChannelError::Config(m)) => {
            assert!(m.contains("400 posting_to_general_channel_denied"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_with_the_vendors_wait() {
    for vendor in VENDORS {
        let (rx, ch) = pair(vendor, TIMEOUT).await;
        rx.fail_next(1, 429, Some(7));
        rx.fail_next(1, 503, None);
        let a = alert(Status::Firing, Severity::Critical);
        match ch.send(&a).await {
            Err(ChannelError::Retry { after, reason }) => {
                assert_eq!(after, Some(Duration::from_secs(7)), "{vendor:?}: {reason}");
                assert!(reason.contains("429"), "{reason}");
            }
            other => panic!("{vendor:?}: {other:?}"),
        }
        match ch.send(&a).await {
            Err(ChannelError::Retry {
                after: None,
                reason,
            }) => assert!(reason.contains("503")),
            other => panic!("{vendor:?}: {other:?}"),
        }
        ch.send(&a).await.unwrap();
        assert_eq!(rx.accepted().len(), 1);
    }
}

#[tokio::test]
async fn a_hanging_or_stopped_receiver_is_retried_within_the_timeout() {
    for vendor in VENDORS {
        let (mut rx, ch) = pair(vendor, Duration::from_secs(1)).await;
        rx.hang_next(1);
        let a = alert(Status::Firing, Severity::Critical);
        let start = Instant::now();
        match ch.send(&a).await {
            Err(ChannelError::Retry { reason, .. }) => {
                assert!(reason.contains("did not answer"), "{reason}")
            }
            other => panic!("{vendor:?}: {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        rx.stop().await;
        match ch.send(&a).await {
            Err(ChannelError::Retry { reason, .. }) => {
                assert!(reason.contains("cannot reach 127.0.0.1"), "{reason}")
            }
            other => panic!("{vendor:?} while stopped: {other:?}"),
        }
        rx.restart().await;
        ch.send(&a).await.unwrap();
        assert_eq!(rx.wait_accepted(1, TIMEOUT).await.len(), 1, "{vendor:?}");
        assert_eq!(
            rx.received().len(),
            2,
            "{vendor:?}: nothing arrived while stopped"
        );
    }
}

#[tokio::test]
async fn no_routing_key_or_webhook_url_reaches_a_payload_or_an_error() {
    const MARKER: &str = "CANARYchan7q";
    for vendor in VENDORS {
        let rx = Receiver::start(vendor).await;
        // A routing key of the right length, a webhook token, both holding the marker.
        let secret = match vendor {
            Vendor::PagerDuty => format!("{MARKER}{}", "0".repeat(32 - MARKER.len())),
            _ => format!("{MARKER}0123456789abcdef"),
        };
        let ch = Channel::for_receiver(&rx, vendor, &secret, Duration::from_secs(1));
        let mut texts = Vec::new();
        let a = alert(Status::Firing, Severity::Critical);
        let mut t = alert(Status::Notice, Severity::Info);
        t.test = true;
        for x in [
            &a,
            &alert(Status::Resolved, Severity::Critical),
            &t,
            &huge(),
        ] {
            if let Some(p) = ch.payload(x) {
                texts.push(p.to_string());
            }
        }
        ch.send(&a).await.unwrap();
        for status in [400, 401, 404, 429, 500] {
            rx.echo_next(1, status);
            let e = ch.send(&a).await.unwrap_err();
            texts.push(format!("{e} {e:?}"));
            rx.fail_next(1, status, Some(1));
            let e = ch.send(&a).await.unwrap_err();
            texts.push(format!("{e} {e:?}"));
        }
        rx.hang_next(1);
        let e = ch.send(&a).await.unwrap_err();
        texts.push(format!("{e} {e:?}"));
        texts.push(debug(&ch));
        // The echoes really carried the secret back: the scrubbing is what kept it out.
        let echoed = rx
            .received()
            .iter()
            .filter(|r| r.body.contains(MARKER) || r.path.contains(MARKER))
            .count();
        assert!(
            echoed >= 11,
            "{vendor:?}: the secret was sent {echoed} times"
        );
        if vendor != Vendor::PagerDuty {
            for r in rx.received() {
                assert_no_leak(&r.body, &[MARKER], "a webhook's request body");
            }
        }
        for t in &texts {
            assert_no_leak(
                t,
                &[MARKER, &secret],
                &format!("a {vendor:?} payload or error"),
            );
        }
    }
}

/// A channel's `Debug`, which a log line could print.
fn debug(ch: &Channel) -> String {
    match ch {
        Channel::PagerDuty(c) => format!("{c:?}"),
        Channel::Slack(c) => format!("{c:?}"),
        Channel::Teams(c) => format!("{c:?}"),
    }
}

#[tokio::test]
async fn a_plain_http_endpoint_off_loopback_is_refused_before_anything_is_sent() {
    // Nothing listens there and nothing is tried: the URL is refused as config first.
    let token = "CANARYplain0123456789abcdef";
    let a = alert(Status::Firing, Severity::Critical);
    let pd = PagerDuty::new(Secret::new(receivers::ROUTING_KEY), TIMEOUT)
        .with_url("http://events.pagerduty.invalid/v2/enqueue".into());
    let slack = Slack::new(
        Secret::new(format!("http://hooks.slack.invalid/services/T1/B1/{token}")),
        TIMEOUT,
    );
    let teams = Teams::new(
        Secret::new(format!(
            "http://flow.invalid/workflows/0123456789abcdef/triggers/manual/paths/invoke?api-version=1&sig={token}"
        )),
        TIMEOUT,
    );
    let client = client();
    for result in [
        pd.send(&client, &a).await,
        slack.send(&client, &a).await,
        teams.send(&client, &a).await,
    ] {
        match result {
            Err(ChannelError::Config(m)) => {
                assert!(m.contains("must be https://"), "{m}");
                assert_no_leak(&m, &[token, receivers::ROUTING_KEY], "a URL refusal");
            }
            other => panic!("{other:?}"),
        }
    }
}
