//! What the daemon exports: `/metrics` for every token (read with the Prometheus reference
//! parser) and `/healthz`, which fails while the loop is blocked.

use tokenwarden::daemon::{Control, OffsetClock};
use tokenwarden::sandbox::{self, Endpoint, Fault};
use tokio::sync::oneshot;

use crate::util::{
    DAY, Running, SinkOpts, SmtpSink, TokenEntry, Workspace, assert_no_leak, free_port,
    parse_metrics, prod_spec, sandbox, scrape_text, sections,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_every_token_and_healthz_fails_while_the_loop_is_blocked() {
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let soon = sb.issue_token(prod_spec().expiring_in(3 * DAY - 600));
    let later = sb.issue_token(prod_spec());
    let port = free_port();
    let extra = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\nstall_after = \"1s\"\n",
        sections(sink.port, "")
    );
    let ws = Workspace::with_meta(
        &sb,
        &[
            TokenEntry::new("soon", &soon),
            TokenEntry::new("later", &later),
        ],
        &extra,
    );
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let base = format!("http://127.0.0.1:{port}");
    let scrape = scrape_text(port).await;
    let samples = parse_metrics(&scrape);
    let value = |name: &str, labels: &[(&str, &str)]| {
        samples
            .iter()
            .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
            .and_then(|s| s["value"].as_f64())
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{scrape}"))
    };
    for token in ["soon", "later"] {
        assert!(
            value(
                "tokenwarden_token_expiry_timestamp_seconds",
                &[("token", token)]
            ) > 1.7e9
        );
        assert!(
            value(
                "tokenwarden_token_last_success_timestamp_seconds",
                &[("token", token)]
            ) > 1.7e9
        );
        assert_eq!(
            value("tokenwarden_token_check_errors", &[("token", token)]),
            0.0
        );
    }
    assert_eq!(
        value(
            "tokenwarden_token_state",
            &[("token", "soon"), ("state", "warning")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "tokenwarden_token_state",
            &[("token", "later"), ("state", "ok")]
        ),
        1.0
    );
    assert_eq!(value("tokenwarden_emails_sent_total", &[]), 1.0);
    assert_eq!(value("tokenwarden_emails_queued", &[]), 0.0);
    for result in ["completed", "rejected", "failed", "superseded"] {
        assert_eq!(
            value("tokenwarden_rotations_total", &[("result", result)]),
            0.0,
            "staged tokens with nothing staged never rotate"
        );
    }
    assert_no_leak(
        &scrape,
        &[&soon, &later, sandbox::DEMO_APP_SECRET],
        "metrics",
    );
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Block the loop in a slow Graph call: /healthz must notice within stall_after.
    sb.add_fault(Fault::delay(Endpoint::DebugToken, 3000).times(2));
    let ctl = d.ctl.clone();
    let blocked = tokio::spawn(async move {
        let (tx, rx) = oneshot::channel();
        ctl.send(Control::CheckNow(tx)).await.unwrap();
        rx.await.unwrap();
    });
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        503
    );
    blocked.await.unwrap();
    d.evaluate().await;
    assert_eq!(
        reqwest::get(format!("{base}/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    d.stop().await;
}
