//! `/metrics` for the tests: one scrape, read with the Prometheus reference parser
//! (`prometheus_client` in the venv, via `tests/support/parse_metrics.py`).

use std::process::Stdio;

use super::support_script;

/// Parses a scrape with the Prometheus reference parser; panics if it is not valid text.
pub fn parse_metrics(text: &str) -> Vec<serde_json::Value> {
    use std::io::Write;
    let mut child = support_script("parse_metrics.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not valid Prometheus text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The text of one scrape of `/metrics` on loopback `port`.
pub async fn scrape_text(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// One scrape of `/metrics`, parsed with the reference parser.
pub async fn scrape(port: u16) -> Vec<serde_json::Value> {
    parse_metrics(&scrape_text(port).await)
}

/// The value of the first sample named `name`, if any.
pub fn sample(samples: &[serde_json::Value], name: &str) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name)
        .and_then(|s| s["value"].as_f64())
}
