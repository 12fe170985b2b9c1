//! Token groups against moto's Secrets Manager: members found with `ListSecrets` (paged,
//! filtered by name prefix and tag), listed again on every run, checked through Graph batch
//! requests, spread over the group's window by the daemon, and kept when the listing fails.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokenwarden::sandbox::{self, TokenSpec};

use crate::faults::FaultyProxy;
use crate::util::{AWS_ENV, Workspace, moto_client, sandbox, unique};

async fn create(name: &str, value: &str, tags: &[(&str, &str)]) {
    let mut req = moto_client()
        .await
        .create_secret()
        .name(name)
        .secret_string(value);
    for (k, v) in tags {
        req = req.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    req.send().await.unwrap();
}

async fn delete(name: &str) {
    moto_client()
        .await
        .delete_secret()
        .secret_id(name)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
}

const MANAGED: (&str, &str) = ("tokenwarden", "managed");

/// A daemon that must not outlive a failed test (it would go on checking, and a later test's
/// server could take its ports).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Appends a `[[group]]` over `prefix` (tag `tokenwarden=managed`) to the workspace config.
fn add_group(config: &Path, endpoint: &str, prefix: &str, extra: &str) {
    let mut text = std::fs::read_to_string(config).unwrap();
    text.push_str(&format!(
        "\n[[group]]\nname = \"cust\"\ndiscover = {{ kind = \"aws\", name_prefix = \"{prefix}\", tag_key = \"tokenwarden\", tag_value = \"managed\", region = \"us-east-1\", endpoint = \"{endpoint}\" }}\n{extra}\n"
    ));
    crate::util::write_private(config, &text);
}

async fn check_json(config: &Path) -> (i32, Vec<serde_json::Value>, String) {
    let r = crate::util::tw(config, &["check", "--json"], &AWS_ENV, None).await;
    let lines: Vec<serde_json::Value> =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("check --json: {e}: {r:?}"));
    (r.code, lines, r.stderr)
}

fn names(lines: &[serde_json::Value]) -> Vec<String> {
    let mut n: Vec<String> = lines
        .iter()
        .map(|l| l["token"].as_str().unwrap().to_string())
        .collect();
    n.sort();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_listed_from_secrets_manager_on_every_run() {
    let sb = sandbox().await;
    let prefix = format!("{}/", unique("tw-group"));
    // 105 members: more than one page of ListSecrets (100) and three Graph batches (50).
    let mut tokens = Vec::new();
    for i in 0..105 {
        let token = sb.issue_token(TokenSpec::system_user_60d());
        let name = format!("{prefix}c{i:03}");
        if i == 0 {
            let phone = (
                tokenwarden::discover::TAG_PHONE,
                sandbox::DEMO_PHONE_NUMBER_ID,
            );
            create(&name, &token, &[MANAGED, phone]).await;
        } else {
            create(&name, &token, &[MANAGED]).await;
        }
        tokens.push(token);
    }
    // Not members: untagged, outside the prefix, tagged with another value.
    let stray = sb.issue_token(TokenSpec::system_user_60d());
    create(&format!("{prefix}untagged"), &stray, &[]).await;
    create(
        &format!("{}-other", prefix.trim_end_matches('/')),
        &stray,
        &[MANAGED],
    )
    .await;
    create(
        &format!("{prefix}retired"),
        &stray,
        &[("tokenwarden", "retired")],
    )
    .await;
    // A member whose phone tag is not an id is left out, and said so.
    create(
        &format!("{prefix}badtag"),
        &stray,
        &[MANAGED, ("tokenwarden:phone_number_id", "+1 555 0100")],
    )
    .await;
    sb.invalidate(&tokens[1], 460);

    let proxy = FaultyProxy::start("ListSecrets").await;
    let ws = Workspace::new(&sb, &[]);
    add_group(
        &ws.config,
        &format!("http://127.0.0.1:{}", proxy.port),
        &prefix,
        "spread = \"0s\"",
    );
    let r = crate::util::tw(&ws.config, &["config", "check"], &AWS_ENV, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("group cust: members found on each run"),
        "{r:?}"
    );

    let batches_before = sb.stats().batch_calls;
    let (code, lines, stderr) = check_json(&ws.config).await;
    assert_eq!(lines.len(), 105, "{stderr}");
    assert_eq!(names(&lines)[0], "cust.c000");
    assert_eq!(names(&lines)[104], "cust.c104");
    let state = |name: &str| {
        lines
            .iter()
            .find(|l| l["token"] == name)
            .map(|l| l["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(state("cust.c001"), "invalid");
    assert_eq!(state("cust.c000"), "ok");
    assert_eq!(
        lines.iter().filter(|l| l["state"] == "ok").count(),
        104,
        "{lines:?}"
    );
    assert_eq!(code, 2, "an invalid member makes the check critical");
    assert_eq!(
        sb.stats().batch_calls - batches_before,
        3,
        "105 tokens inspected in three batch requests"
    );
    assert!(
        stderr.contains("badtag") && stderr.contains("expected a numeric Meta id"),
        "{stderr}"
    );
    for t in &tokens {
        assert!(!stderr.contains(t.as_str()), "a token in the output");
    }
    // `check` writes nothing (issue 15, point 7): not even the group's list, which a `sudo
    // tokenwarden check` would leave owned by root where the daemon must write.
    let state_dir = ws.config.parent().unwrap().to_path_buf();
    assert!(
        !state_dir.join("groups").exists(),
        "check wrote the group list"
    );

    // Listed again on the next run: a new member appears, a deleted one is gone.
    let newcomer = sb.issue_token(TokenSpec::system_user_60d());
    create(&format!("{prefix}zz-new"), &newcomer, &[MANAGED]).await;
    delete(&format!("{prefix}c104")).await;
    let (_, lines, _) = check_json(&ws.config).await;
    let n = names(&lines);
    assert_eq!(n.len(), 105);
    assert!(n.contains(&"cust.zz-new".to_string()));
    assert!(!n.contains(&"cust.c104".to_string()));

    // A writing command keeps the last good list (the daemon at every listing; here `rotate`,
    // which finds nothing staged for the invalid member and says so).
    let r = crate::util::tw(
        &ws.config,
        &["rotate", "--token", "cust.c001"],
        &AWS_ENV,
        None,
    )
    .await;
    assert!(r.stdout.contains("nothing is staged"), "{r:?}");
    assert!(state_dir.join("groups").join("cust.json").exists(), "{r:?}");

    // Secrets Manager cannot be listed: `check` reads the last good list, with a warning.
    proxy.budget.store(1000, Ordering::SeqCst);
    let (_, lines, stderr) = check_json(&ws.config).await;
    proxy.budget.store(0, Ordering::SeqCst);
    assert_eq!(names(&lines), n, "the last list is kept: {stderr}");
    assert!(stderr.contains("cannot list the group"), "{stderr}");

    // `status` shows the members without asking the store.
    let r = crate::util::tw(&ws.config, &["status", "--json"], &AWS_ENV, None).await;
    let rows: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rows.len(), 105, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_spreads_a_group_and_delivers_to_templated_targets() {
    let sb = sandbox().await;
    let prefix = format!("{}/", unique("tw-group-d"));
    let mut tokens = Vec::new();
    for i in 0..120 {
        let token = sb.issue_token(TokenSpec::system_user_60d());
        create(&format!("{prefix}shop{i:03}"), &token, &[MANAGED]).await;
        tokens.push(token);
    }
    let ws = Workspace::new(&sb, &[]);
    // Outside the state directory (the workspace), where a target may not point.
    let apps = tempfile::tempdir().unwrap();
    let envs = apps.path().join("envs");
    std::fs::create_dir(&envs).unwrap();
    let port = crate::util::free_port();
    // A check every 5 s, each spread over 3 s in batches of 50: slices at 0, 1 and 2 s.
    let mut text = std::fs::read_to_string(&ws.config).unwrap();
    text = text.replace(
        "[meta]",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n[schedule]\ncron = \"*/5 * * * * *\"\n[meta]"
        ),
    );
    crate::util::write_private(&ws.config, &text);
    add_group(
        &ws.config,
        &crate::util::moto().endpoint,
        &prefix,
        &format!(
            "spread = \"3s\"\n[[group.target]]\nname = \"env\"\nkind = \"dotenv\"\npath = \"{}/{{member}}.env\"\nreload = [\"/bin/true\"]\n",
            envs.display()
        ),
    );
    // The log goes to a file: a pipe nobody reads while the daemon runs could fill and block it.
    let log = ws.config.parent().unwrap().join("daemon.log");
    let mut child = KillOnDrop(
        crate::util::daemon_command(&ws.config)
            .envs(AWS_ENV)
            .env("TOKENWARDEN_LOG", "tokenwarden=info,warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let metrics = |port: u16| async move {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let wait_for = |what: String| {
        let what = what.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(m) = metrics(port).await
                    && m.contains(&what)
                {
                    return m;
                }
                assert!(Instant::now() < deadline, "no `{what}` in /metrics");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let m = wait_for("tokenwarden_group_members{group=\"cust\"} 120".into()).await;
    assert!(m.contains("tokenwarden_group_discovery_success{group=\"cust\"} 1"));
    wait_for(
        "tokenwarden_token_state{token=\"cust.shop119\",kind=\"whatsapp\",state=\"ok\"} 1".into(),
    )
    .await;

    // Every member's env file gets its own token at its first check (a new target is synced).
    let env_of = |i: usize| std::fs::read_to_string(envs.join(format!("shop{i:03}.env")));
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..120).any(|i| env_of(i).is_err()) {
        assert!(Instant::now() < deadline, "env files not all written");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for (i, t) in tokens.iter().enumerate() {
        assert_eq!(env_of(i).unwrap(), format!("WHATSAPP_ACCESS_TOKEN={t}\n"));
    }

    // A member added while the daemon runs is found at the next scheduled check.
    let newcomer = sb.issue_token(TokenSpec::system_user_60d());
    create(&format!("{prefix}shop999"), &newcomer, &[MANAGED]).await;
    wait_for("tokenwarden_group_members{group=\"cust\"} 121".into()).await;
    wait_for(
        "tokenwarden_token_state{token=\"cust.shop999\",kind=\"whatsapp\",state=\"ok\"} 1".into(),
    )
    .await;

    // One scheduled check of the group, from the audit log.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let audit = std::fs::read_to_string(ws.config.parent().unwrap().join("audit.jsonl")).unwrap();
    let checks: Vec<(String, jiff::Timestamp)> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "check")
        .map(|v| {
            let name = v["token"].as_str().unwrap().to_string();
            (name, v["ts"].as_str().unwrap().parse().unwrap())
        })
        .collect();
    // Each firing checks slices of 50 in name order, due at 0, 1 and 2 s (a 3 s spread):
    // shop000 opens the first slice, shop050 the second, shop100 the third. Their checks are
    // recorded as each slice's Graph batch returns, so without the spread all three would
    // come within milliseconds (as they do in the start-up check, which is not spread). Each
    // time is taken when its slice's Graph batch returned, and load can delay the first slice's
    // batch more than a later one's: the bounds leave half a slice's spacing for that.
    let at = |name: &str| -> Vec<jiff::Timestamp> {
        checks
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, t)| *t)
            .collect()
    };
    let third = *at("cust.shop100").last().unwrap();
    let before = |name: &str| *at(name).iter().rev().find(|t| **t <= third).unwrap();
    let (first, second) = (before("cust.shop000"), before("cust.shop050"));
    let ms = |a: jiff::Timestamp, b: jiff::Timestamp| b.duration_since(a).as_millis();
    assert!(
        ms(first, second) >= 500 && ms(first, third) >= 1500,
        "slices started {} ms and {} ms after the first: not spread over the 3 s window",
        ms(first, second),
        ms(first, third)
    );

    crate::util::signal(child.0.id(), "TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success());
    let stderr = std::fs::read_to_string(&log).unwrap();
    for t in tokens.iter().chain([&newcomer]) {
        assert!(!stderr.contains(t.as_str()), "a token in the log");
    }
}

/// A `[[group]]` of a Tech Provider's business tokens, one customer per secret: each member's
/// WABA and client business ids are its secret's tags, the partner token is the group's. Such
/// a group was refused by `config check` (the template had to give `waba_id`, and one
/// `client_business_id` for every customer). A member with both tags is checked and fetched
/// again for its own business; one without the business tag cannot be renewed, and one
/// without the WABA tag cannot be proven: each says which tag is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_business_tokens_takes_each_customers_ids_from_its_tags() {
    use crate::util::moto_current;
    use tokenwarden::discover::{TAG_CLIENT_BUSINESS, TAG_WABA};
    let sb = sandbox().await;
    let partner = sb.issue_token(TokenSpec::system_user_never());
    // Three customers' tokens; the sandbox's demo business hands back the last one issued.
    let untagged = sb.issue_business_token();
    let no_business = sb.issue_business_token();
    let first = sb.issue_business_token();
    let prefix = format!("{}/", unique("tw-biz"));
    let waba = (TAG_WABA, sandbox::DEMO_WABA_ID);
    let business = (TAG_CLIENT_BUSINESS, sandbox::DEMO_CLIENT_BUSINESS_ID);
    let (a, b, c) = (
        format!("{prefix}shop-a"),
        format!("{prefix}shop-b"),
        format!("{prefix}shop-c"),
    );
    create(&a, &first, &[MANAGED, waba, business]).await;
    create(&b, &no_business, &[MANAGED, waba]).await;
    create(&c, &untagged, &[MANAGED]).await;

    let ws = Workspace::new(&sb, &[]);
    let partner_file = ws.config.parent().unwrap().join("partner-token");
    crate::util::write_private(&partner_file, &partner);
    add_group(
        &ws.config,
        &crate::util::moto().endpoint,
        &prefix,
        &format!(
            "kind = \"whatsapp_business\"\nsource = \"refresh\"\nbusiness = {{ partner_token = {{ file = \"{}\" }} }}",
            partner_file.display()
        ),
    );
    let cc = crate::util::tw(&ws.config, &["config", "check"], &AWS_ENV, None).await;
    assert_eq!(cc.code, 0, "{cc:?}");

    let (code, lines, stderr) = check_json(&ws.config).await;
    assert_eq!(
        names(&lines),
        ["cust.shop-a", "cust.shop-b", "cust.shop-c"],
        "{stderr}"
    );
    let line = |name: &str| {
        lines
            .iter()
            .find(|l| l["token"] == name)
            .unwrap()
            .to_string()
    };
    assert!(
        line("cust.shop-a").contains("\"state\":\"ok\""),
        "{lines:?}"
    );
    assert!(
        line("cust.shop-b").contains("\"state\":\"ok\""),
        "{lines:?}"
    );
    let c_line = line("cust.shop-c");
    assert!(c_line.contains("\"state\":\"critical\""), "{c_line}");
    assert!(
        c_line.contains("unusable: no WhatsApp Business Account id")
            && c_line.contains("`tokenwarden:waba_id`"),
        "{c_line}"
    );
    assert_eq!(code, 2, "an unusable member makes the check critical");

    // The customer with both tags: fetched again for its own business with the partner token.
    // Meta hands back the same token first; once that one is killed and made anew, the new
    // one is fetched and promoted into the member's secret.
    let r = crate::util::tw(
        &ws.config,
        &["rotate", "--token", "cust.shop-a"],
        &AWS_ENV,
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(moto_current(&a).await, first);
    sb.invalidate(&first, 460);
    let second = sb.issue_business_token();
    let r2 = crate::util::tw(
        &ws.config,
        &["rotate", "--token", "cust.shop-a"],
        &AWS_ENV,
        None,
    )
    .await;
    assert_eq!(r2.code, 0, "{r2:?}");
    assert_eq!(moto_current(&a).await, second, "{r2:?}");

    // Without the business tag nothing is fetched (never for an empty id, never another
    // customer's): the failure names the tag, and the secret keeps its token.
    let mut outs = vec![cc.all(), stderr, r.all(), r2.all()];
    for (name, secret, value) in [
        ("cust.shop-b", &b, &no_business),
        ("cust.shop-c", &c, &untagged),
    ] {
        let r = crate::util::tw(&ws.config, &["rotate", "--token", name], &AWS_ENV, None).await;
        assert_ne!(r.code, 0, "{r:?}");
        assert!(
            r.all().contains("`tokenwarden:client_business_id`"),
            "{r:?}"
        );
        assert_eq!(&moto_current(secret).await, value);
        // The plan says so too, and nothing about trading it for a 60-day token.
        let dry = crate::util::tw(
            &ws.config,
            &["rotate", "--dry-run", "--token", name],
            &AWS_ENV,
            None,
        )
        .await;
        assert_eq!(dry.code, 1, "{dry:?}");
        assert!(
            dry.stdout
                .contains("refused: no client business id: tag the token's secret `tokenwarden:client_business_id`")
                && !dry.stdout.contains("60-day"),
            "{dry:?}"
        );
        outs.extend([r.all(), dry.all()]);
    }
    let dry = crate::util::tw(
        &ws.config,
        &["rotate", "--dry-run", "--token", "cust.shop-a"],
        &AWS_ENV,
        None,
    )
    .await;
    assert_eq!(dry.code, 0, "{dry:?}");
    assert!(
        dry.stdout.contains(&format!(
            "fetch the customer's business token again for business {}",
            sandbox::DEMO_CLIENT_BUSINESS_ID
        )),
        "{dry:?}"
    );
    outs.push(dry.all());
    let d = crate::util::tw(&ws.config, &["doctor"], &AWS_ENV, None).await;
    assert!(d.stdout.contains("`tokenwarden:waba_id`"), "{d:?}");
    // Both members without the business tag are told their renewal cannot work, before it is
    // needed; the member with it is not.
    let renewal = "cannot be fetched again: no client business id";
    assert_eq!(d.stdout.matches(renewal).count(), 2, "{d:?}");
    assert!(
        d.stdout
            .contains("tag the token's secret `tokenwarden:client_business_id`"),
        "{d:?}"
    );
    let shop_a = &d.stdout[..d.stdout.find("cust.shop-b").unwrap()];
    assert!(!shop_a.contains(renewal), "{d:?}");
    outs.push(d.all());
    outs.extend(lines.iter().map(|l| l.to_string()));
    for out in outs {
        crate::util::assert_no_leak(
            &out,
            &[&first, &second, &no_business, &untagged, &partner],
            "output",
        );
    }
}
