//! Every kind of on-call email as a real browser shows it: each is rendered to an HTML file
//! and opened by headless Chromium at 800x600, and the headline (severity, token) and the
//! deadline must both lie on that first screen. The HTML must also stay mail-safe: tables and
//! inline styles only, no script, image, class, stylesheet or external resource.

use std::path::Path;
use std::process::Command;

use jiff::Timestamp;
use tokenwarden::alert::{self, Context, Rendered, RotationEnd, RotationFacts, RotationMail};
use tokenwarden::policy::{Condition, Expires, Notice, Policy, TokenFacts, Verdict, assess};
use tokenwarden::secret::Fingerprint;
use tokenwarden::timefmt;

const DAY: i64 = 86_400;
const NOW: i64 = 1_790_000_000;
/// The first screen: the top 600 px of an 800 px wide window.
const FOLD: f64 = 600.0;

fn facts() -> TokenFacts {
    TokenFacts {
        fingerprint: Fingerprint::of("not-a-real-token"),
        app_id: Some("634974688087057".into()),
        application: Some("BillByteKOT Receipts".into()),
        token_type: Some("SYSTEM_USER".into()),
        expires: Expires::At(Timestamp::from_second(NOW + 7 * DAY).unwrap()),
        data_access_expires_at: None,
        issued_at: Some(Timestamp::from_second(NOW - 53 * DAY).unwrap()),
        scopes: vec![
            "whatsapp_business_management".into(),
            "whatsapp_business_messaging".into(),
        ],
        wabas: vec!["102290129340398".into()],
    }
}

/// A token email for `condition` (`None`: the recovery), as the daemon renders it at `now`.
fn token_mail(verdict: Verdict, condition: Option<Condition>, now: i64) -> Rendered {
    let p = Policy {
        max_age: None,
        ..Policy::default()
    };
    let f = facts();
    let now = Timestamp::from_second(now).unwrap();
    let a = assess(&verdict, Some(&f), None, &p, now);
    let ctx = Context {
        token: "billbytekot-prod",
        kind: tokenwarden::config::Kind::Whatsapp,
        waba_id: Some("102290129340398"),
        phone_number_id: Some("106540352242922"),
        store: "AWS Secrets Manager secret whatsapp/prod",
        store_hint: "`tokenwarden stage --token billbytekot-prod`",
        facts: Some(&f),
        verdict: &verdict,
        state: a.state,
        effective: a.effective,
        policy: &p,
        next_check: Some(now),
        failing_since: None,
        rotation: "Mint a successor from the system user 61550000000001 at its rotation time.",
        rotation_due: Some(Timestamp::from_second(NOW + 2 * DAY).unwrap()),
    };
    let notice = Notice {
        condition,
        key: "k".into(),
        occurrence: 1,
    };
    alert::render(&ctx, &notice, now)
}

fn rotation_mail(end: RotationEnd<'_>, mail: RotationMail) -> Rendered {
    let text = "[meta]\napp_id = \"1\"\napp_secret = { env = \"S\" }\n[[token]]\nname = \"billbytekot-prod\"\n";
    let cfg = tokenwarden::config::parse(Path::new("t.toml"), text).expect("valid config");
    let old = Fingerprint::of("old");
    let new = Fingerprint::of("new");
    let new_facts = TokenFacts {
        fingerprint: new,
        expires: Expires::At(Timestamp::from_second(NOW + 60 * DAY).unwrap()),
        issued_at: Some(Timestamp::from_second(NOW).unwrap()),
        ..facts()
    };
    let r = RotationFacts {
        id: "0123456789abcdef0123456789abcdef",
        source: "mint".into(),
        reason: "the rotation time came",
        started: Timestamp::from_second(NOW).unwrap(),
        old_fingerprint: &old,
        old_version: "v7",
        new_fingerprint: Some(&new),
        new_facts: Some(&new_facts),
        revoke_at: Some(Timestamp::from_second(NOW + DAY).unwrap()),
        last_error: matches!(end, RotationEnd::Failed { .. }).then_some("Meta answered 500"),
        end,
        now: Timestamp::from_second(NOW + 3600).unwrap(),
        new_due: Some(Timestamp::from_second(NOW + 40 * DAY).unwrap()),
    };
    alert::render_rotation(&cfg.tokens[0], &r, "`tokenwarden stage`", mail)
}

/// Every kind of email, each with its name, the words its headline must carry and the words
/// its deadline must carry.
fn every_kind() -> Vec<(&'static str, Rendered, &'static str, String)> {
    let deadline = timefmt::utc(Timestamp::from_second(NOW + 7 * DAY).unwrap());
    let new_deadline = timefmt::utc(Timestamp::from_second(NOW + 60 * DAY).unwrap());
    vec![
        (
            "warning",
            token_mail(
                Verdict::Healthy,
                Some(Condition::Threshold(7 * DAY as u64)),
                NOW,
            ),
            "WARNING",
            deadline.clone(),
        ),
        (
            "critical",
            token_mail(
                Verdict::Healthy,
                Some(Condition::Critical),
                NOW + 6 * DAY + 3600,
            ),
            "CRITICAL",
            deadline.clone(),
        ),
        (
            "expired",
            token_mail(Verdict::Healthy, Some(Condition::Expired), NOW + 8 * DAY),
            "EXPIRED",
            deadline.clone(),
        ),
        (
            "invalid",
            token_mail(
                Verdict::Dead {
                    reason: "the token was invalidated by an API call (revoked)".into(),
                    expired: false,
                },
                Some(Condition::Invalid),
                NOW,
            ),
            "INVALID",
            deadline.clone(),
        ),
        (
            "other-app",
            token_mail(
                Verdict::OtherApp {
                    detail: "code 100 (HTTP 400): (#100) The App_id in the input_token did not match the Viewing App".into(),
                },
                Some(Condition::OtherApp),
                NOW,
            ),
            "CONFIG",
            deadline.clone(),
        ),
        (
            "rotation-failed",
            rotation_mail(
                RotationEnd::Failed {
                    step: "obtain",
                    promoted: false,
                    reason: "Meta answered 500",
                },
                RotationMail::Failed,
            ),
            "ROTATION FAILED",
            "tokenwarden status".into(),
        ),
        (
            "rotated",
            rotation_mail(RotationEnd::Completed, RotationMail::Promoted),
            "ROTATED",
            new_deadline,
        ),
        (
            "drift",
            alert::render_targets(
                "billbytekot-prod",
                Fingerprint::of("current"),
                &[("backend-env".into(), "a5b6c7d8".into())],
                &[],
            ),
            "DRIFT",
            "every target holds the current token".into(),
        ),
        (
            "recovery",
            token_mail(Verdict::Healthy, None, NOW - 20 * DAY),
            "RESOLVED",
            deadline,
        ),
    ]
}

/// Appended to a copy of the email (never to the email itself): writes where the headline
/// and the deadline are, and their text, into the page for `--dump-dom` to print.
const PROBE: &str = r#"<script>
function box(id) {
  var e = document.getElementById(id);
  if (!e) return null;
  var r = e.getBoundingClientRect();
  return {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY, height: r.height, text: e.innerText};
}
var todo = null;
document.querySelectorAll('h3').forEach(function (h) {
  if (!todo && h.innerText.indexOf('What you must do') === 0) {
    var r = h.getBoundingClientRect();
    todo = {top: r.top + window.scrollY, bottom: r.bottom + window.scrollY};
  }
});
var out = {width: window.innerWidth, headline: box('tw-headline'), deadline: box('tw-deadline'), todo: todo};
var pre = document.createElement('pre');
pre.id = 'tw-probe';
pre.textContent = 'PRO' + 'BE' + JSON.stringify(out) + 'EBO' + 'RP';
document.body.appendChild(pre);
</script>"#;

fn chromium(profile: &Path, args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=800,600",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("chromium (Debian's `chromium` package; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_email_shows_its_headline_and_deadline_on_the_first_screen_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    for (name, mail, word, deadline) in every_kind() {
        let html = &mail.html;
        // Mail-safe: what Gmail, Outlook and Apple Mail drop or block is not used at all.
        for banned in [
            "<script", "<img", "<style", "<link", "class=", "src=", "url(", "http://", "https://",
        ] {
            assert!(
                !html.to_ascii_lowercase().contains(banned),
                "{name}: {banned} in the email's HTML"
            );
        }
        assert!(html.contains("<table"), "{name}: laid out with tables");
        std::fs::write(dir.path().join(format!("{name}.html")), html).unwrap();
        let probe = dir.path().join(format!("{name}-probe.html"));
        std::fs::write(&probe, html.replace("</body>", &format!("{PROBE}</body>"))).unwrap();

        let profile = tempfile::tempdir().unwrap();
        let dom = chromium(
            profile.path(),
            &["--dump-dom", &format!("file://{}", probe.display())],
        );
        let json = dom
            .split("PROBE")
            .nth(1)
            .and_then(|s| s.split("EBORP").next())
            .unwrap_or_else(|| panic!("{name}: no probe result in the DOM:\n{dom}"));
        // `--dump-dom` prints the DOM as HTML: the JSON's quotes come back as entities.
        let json = json.replace("&quot;", "\"").replace("&amp;", "&");
        let v: serde_json::Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("{name}: probe output {json}: {e}"));
        assert_eq!(v["width"].as_f64(), Some(800.0), "{name}: viewport {v}");
        for (id, want) in [("headline", word.to_string()), ("deadline", deadline)] {
            let b = &v[id];
            assert!(b.is_object(), "{name}: no element for the {id}: {v}");
            let (top, bottom, height) = (
                b["top"].as_f64().unwrap(),
                b["bottom"].as_f64().unwrap(),
                b["height"].as_f64().unwrap(),
            );
            assert!(
                height > 0.0 && top >= 0.0 && bottom <= FOLD,
                "{name}: the {id} lies at {top}..{bottom} px, not within the first {FOLD} px: {v}"
            );
            let text = b["text"].as_str().unwrap();
            assert!(
                text.contains(&want),
                "{name}: the {id} shows {text:?}, without {want:?}"
            );
        }
        // Then what to do: its heading starts on the first screen too, before the facts.
        let todo = v["todo"]["bottom"]
            .as_f64()
            .unwrap_or_else(|| panic!("{name}: no \"What you must do\" heading: {v}"));
        assert!(
            todo <= FOLD,
            "{name}: \"What you must do\" ends at {todo} px: {v}"
        );
        let headline = v["headline"]["text"].as_str().unwrap();
        assert!(
            headline.contains("billbytekot-prod"),
            "{name}: the token is not in the headline: {headline:?}"
        );
    }
    // A rotation that put a new token in place pictures the new token's life (issued, now,
    // its own rotation, its deadline), in both parts; one that failed has no new token to show.
    for (name, mail, _, _) in every_kind() {
        let pictured = mail.text.contains("The token's life");
        match name {
            "rotated" => {
                assert!(pictured, "{name}: {}", mail.text);
                let due = timefmt::utc(Timestamp::from_second(NOW + 40 * DAY).unwrap());
                assert!(mail.text.contains(&due), "{name}: {}", mail.text);
                assert!(
                    mail.html.contains(&due),
                    "{name}: rotation due in the HTML picture"
                );
            }
            "rotation-failed" => assert!(!pictured, "{name}: {}", mail.text),
            _ => {}
        }
    }
    // For a person who wants to look at what the test saw: every email and a screenshot of
    // its first screen, kept in the directory named (nothing is kept otherwise).
    if let Ok(keep) = std::env::var("TOKENWARDEN_EMAIL_KEEP") {
        let keep = Path::new(&keep);
        std::fs::create_dir_all(keep).unwrap();
        for (name, mail, _, _) in every_kind() {
            let page = keep.join(format!("{name}.html"));
            std::fs::write(&page, &mail.html).unwrap();
            let shot = keep.join(format!("{name}.png"));
            let profile = tempfile::tempdir().unwrap();
            chromium(
                profile.path(),
                &[
                    &format!("--screenshot={}", shot.display()),
                    &format!("file://{}", page.display()),
                ],
            );
            assert!(shot.exists(), "{name}: no screenshot");
        }
    }
}
