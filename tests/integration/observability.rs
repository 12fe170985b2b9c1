//! `deploy/`'s monitoring against the real tools: the Prometheus rules pass `promtool check
//! rules` and their unit tests (`promtool test rules`, every rule firing and quiet), and the
//! Grafana dashboard is importable JSON whose queries use only names a real daemon's
//! `/metrics` serves.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokenwarden::daemon::OffsetClock;

use crate::util::{
    Running, SinkOpts, SmtpSink, TokenEntry, Workspace, free_port, parse_metrics, prod_spec,
    sandbox, scrape_text, sections,
};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// Runs promtool (Debian's `prometheus` package; `tests/run.sh` installs it when missing).
fn promtool(args: &[&str], file: &Path) -> Output {
    Command::new("promtool")
        .args(args)
        .arg(file)
        .output()
        .expect("promtool (tests/run.sh installs Debian's prometheus package, which has it)")
}

/// promtool's stdout and stderr together, for the failure message.
fn said(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `alert:` names of a rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_unit_tests() {
    let rules = deploy("prometheus-rules.yml");
    let tests = deploy("prometheus-rules.test.yml");
    let check = promtool(&["check", "rules"], &rules);
    assert!(
        check.status.success(),
        "promtool check rules:\n{}",
        said(&check)
    );
    let test = promtool(&["test", "rules"], &tests);
    assert!(
        test.status.success(),
        "promtool test rules:\n{}",
        said(&test)
    );

    // Every rule has a case where it fires and one where it stays quiet: `exp_alerts: []`
    // is the quiet one, a list of alerts the firing one.
    let names = alert_names(&std::fs::read_to_string(&rules).unwrap());
    assert!(names.len() >= 8, "{names:?}");
    let text = std::fs::read_to_string(&tests).unwrap();
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("alertname:") {
            current = Some(n.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts after its alertname");
            if rest.trim() == "[]" {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    for n in &names {
        assert!(
            firing.contains(n),
            "no case where {n} fires in {}",
            tests.display()
        );
        assert!(
            quiet.contains(n),
            "no case where {n} stays quiet in {}",
            tests.display()
        );
    }

    // The input series are shaped like /metrics: each name and label is one `src/metrics.rs`
    // writes (`up`, `job` and `instance` are Prometheus's own, added by the scrape).
    let exporter =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/metrics.rs"))
            .unwrap();
    let mut series = 0;
    for line in text.lines().map(str::trim) {
        let Some(sel) = line.strip_prefix("- series: '") else {
            continue;
        };
        series += 1;
        let (name, labels) = sel.split_once('{').expect("a series with labels");
        if name != "up" {
            assert!(
                exporter.contains(&format!("\"{name}")),
                "{name} in {} is not a metric /metrics writes",
                tests.display()
            );
        }
        for pair in labels.trim_end_matches("}'").split(',') {
            let key = pair.split_once('=').expect("label=value").0;
            assert!(
                ["job", "instance"].contains(&key) || exporter.contains(&format!("{key}=\\\"")),
                "label {key} of {name} in {} is not one /metrics writes",
                tests.display()
            );
        }
    }
    assert!(series >= 10, "{series} input series");
}

/// The unit tests can fail: a copy of the rules with the 3-day warning cut to 1 day fails them,
/// naming the alert.
#[test]
fn promtool_unit_tests_fail_on_a_wrong_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(deploy("prometheus-rules.yml")).unwrap();
    let broken = rules.replace(
        "tokenwarden_token_expiry_timestamp_seconds - time() < 3 * 86400",
        "tokenwarden_token_expiry_timestamp_seconds - time() < 1 * 86400",
    );
    assert_ne!(
        broken, rules,
        "the 3-day rule is no longer written that way"
    );
    std::fs::write(dir.path().join("prometheus-rules.yml"), broken).unwrap();
    let tests = dir.path().join("prometheus-rules.test.yml");
    std::fs::copy(deploy("prometheus-rules.test.yml"), &tests).unwrap();
    let out = promtool(&["test", "rules"], &tests);
    assert!(!out.status.success(), "{}", said(&out));
    assert!(
        said(&out).contains("WhatsAppTokenExpiresSoon"),
        "{}",
        said(&out)
    );
}

/// PromQL words that are not metric names.
const KEYWORDS: [&str; 14] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
];

/// PromQL's aggregation operators: `sum by (x) (...)` puts a clause between one and its `(`.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names an expression reads: identifiers outside label matchers (`{...}`), range
/// selectors (`[...]`), strings and grouping clauses, that are not functions (followed by `(`),
/// aggregations, keywords, or Grafana variables (`$name`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' | '[' | '"' => {
                let close = match c {
                    '{' => '}',
                    '[' => ']',
                    _ => '"',
                };
                i += 1;
                while i < chars.len() && chars[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let call = j < chars.len() && chars[j] == '(';
                let lower = word.to_ascii_lowercase();
                if KEYWORDS.contains(&lower.as_str()) && call {
                    // A grouping clause: skip its label list.
                    while i < chars.len() && chars[i] != ')' {
                        i += 1;
                    }
                } else if !call
                    && !KEYWORDS.contains(&lower.as_str())
                    && !AGGREGATIONS.contains(&lower.as_str())
                {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration such as 1h: its letters are no name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql_as_prometheus_would() {
    let got = metric_names(
        r#"sum by (result) (increase(tokenwarden_rotations_total{job=~"$job",result="a b"}[$__range])) / on(job) group_left(token) up - 2 * 1h + x:y offset 5m"#,
    );
    let want: BTreeSet<String> = ["tokenwarden_rotations_total", "up", "x:y"]
        .map(String::from)
        .into();
    assert_eq!(got, want);
}

/// Every `expr` of every panel, and the templating queries, with where each comes from.
fn dashboard_queries(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let title = p["title"].as_str().expect("a panel title");
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("{title}: a target without expr"));
            assert_eq!(
                t["datasource"]["uid"], "${DS_PROMETHEUS}",
                "{title}: a target not on the imported datasource"
            );
            out.push((title.to_string(), expr.to_string()));
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        let q = v["query"]["query"].as_str().expect("a variable query");
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(',').map(|(m, _)| m))
            .unwrap_or(q);
        out.push((format!("variable {}", v["name"]), inner.to_string()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_imports_and_queries_only_what_metrics_serves() {
    let text = std::fs::read_to_string(deploy("grafana-dashboard.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    // What Grafana's import needs: a schema version, panels, and the datasource asked for on
    // import (`__inputs`), which every query then uses.
    assert!(dash["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    assert!(dash["title"].as_str().is_some_and(|t| !t.is_empty()));
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let queries = dashboard_queries(&dash);

    // A real daemon's scrape, one token checked: the names it declares (`# TYPE`, which
    // includes a gauge absent while it has no value, such as the outbox's oldest email) and
    // the samples the reference parser reads.
    let sb = sandbox().await;
    let sink = SmtpSink::start(&SinkOpts::default());
    let tok = sb.issue_token(prod_spec());
    let port = free_port();
    // A receiver beside email, so its per-channel families are served too.
    let chat = crate::util::receivers::Receiver::slack().await;
    let extra = format!(
        "{}[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
        sections(sink.port, "")
    );
    let ws = Workspace::with_meta(&sb, &[TokenEntry::new("main", &tok)], &extra);
    let url_file = ws.config.parent().unwrap().join("chat-url");
    std::fs::write(&url_file, chat.url()).unwrap();
    let mut text = std::fs::read_to_string(&ws.config).unwrap();
    text.push_str(&format!(
        "\n[[receiver]]\nname = \"chat\"\nkind = \"slack\"\nwebhook_url = {{ file = \"{}\" }}\n",
        url_file.display()
    ));
    std::fs::write(&ws.config, text).unwrap();
    let clock = OffsetClock::default();
    let d = Running::start(&ws.config, &clock);
    d.check_now().await;
    let scrape = scrape_text(port).await;
    let mut served: BTreeSet<String> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let samples = parse_metrics(&scrape);
    assert!(
        samples
            .iter()
            .any(|s| s["name"] == "tokenwarden_token_expiry_timestamp_seconds"),
        "{scrape}"
    );
    served.extend(
        samples
            .iter()
            .filter_map(|s| s["name"].as_str().map(String::from)),
    );

    let mut used = BTreeSet::new();
    for (whence, expr) in &queries {
        for name in metric_names(expr) {
            assert!(
                served.contains(&name),
                "{whence}: `{name}` in `{expr}` is not served by /metrics:\n{scrape}"
            );
            used.insert(name);
        }
    }
    // What the dashboard is for: each token's deadline, state and last check, the backlog of
    // each channel (the email outbox and each receiver's queue), the rotations.
    for needed in [
        "tokenwarden_token_expiry_timestamp_seconds",
        "tokenwarden_token_state",
        "tokenwarden_token_last_success_timestamp_seconds",
        "tokenwarden_emails_queued",
        "tokenwarden_outbox_oldest_queued_timestamp_seconds",
        "tokenwarden_alerts_queued",
        "tokenwarden_alerts_oldest_queued_timestamp_seconds",
        "tokenwarden_alerts_sent_total",
        "tokenwarden_rotations_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}: {used:?}");
    }
    d.stop().await;
}
