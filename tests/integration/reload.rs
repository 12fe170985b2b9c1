//! A reload (SIGHUP) rebuilds the running daemon from the new config, so nothing keeps the
//! old config's value: issue 15, point 2, where a changed `state_dir` left `audit.jsonl` and
//! `/metrics` on the old directory while the state moved.

use std::time::Duration;

use tokenwarden::sandbox::{Sandbox, Scenario, TokenSpec};

use crate::util::{TokenEntry, Workspace, free_port};

/// Waits (up to 20 s) until `ok` holds.
async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..200 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[tokio::test]
async fn a_reload_that_moves_the_state_directory_moves_state_audit_and_metrics() {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let token = sb.issue_token(TokenSpec::system_user_60d());
    let port = free_port();
    let store = tempfile::tempdir().unwrap();
    let store_path = store.path().join("tokens.json");
    let ws = Workspace::with_meta(
        &sb,
        &[TokenEntry::new("prod", &token)],
        &format!(
            "attempts = 1\ntimeout = \"5s\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    );
    // The token's store is named, so moving the state directory does not move it.
    std::fs::copy(&ws.store, &store_path).unwrap();
    let text = std::fs::read_to_string(&ws.config).unwrap().replace(
        "name = \"prod\"\n",
        &format!(
            "name = \"prod\"\nstore = {{ kind = \"file\", path = \"{}\" }}\n",
            store_path.display()
        ),
    );
    crate::util::write_private(&ws.config, &text);
    let old_dir = ws.config.parent().unwrap().to_path_buf();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["--config", ws.config.to_str().unwrap(), "run"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let metrics = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let old_audit = old_dir.join("audit.jsonl");
    eventually("the first check", || lines(&old_audit) > 0).await;
    for _ in 0..100 {
        if metrics()
            .await
            .is_some_and(|m| m.contains("state=\"ok\"} 1"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics()
            .await
            .is_some_and(|m| m.contains("tokenwarden_token_state{token=\"prod\",state=\"ok\"} 1")),
        "{:?}",
        metrics().await
    );

    // Move the state directory, and make the token's next check say something new.
    let new_dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(&ws.config).unwrap().replacen(
        &format!("state_dir = \"{}\"", old_dir.display()),
        &format!("state_dir = \"{}\"", new_dir.path().display()),
        1,
    );
    assert!(text.contains(&new_dir.path().display().to_string()));
    crate::util::write_private(&ws.config, &text);
    sb.invalidate(&token, 460);
    let before = lines(&old_audit);
    std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    let new_state = new_dir.path().join("state.json");
    eventually("the state in the new directory", || {
        std::fs::read_to_string(&new_state).is_ok_and(|s| s.contains("dead"))
    })
    .await;
    eventually("the audit log in the new directory", || {
        std::fs::read_to_string(new_dir.path().join("audit.jsonl"))
            .is_ok_and(|a| a.contains("\"check\""))
    })
    .await;
    assert_eq!(
        lines(&old_audit),
        before,
        "nothing more is written to the old directory's audit log"
    );
    let mut scraped = None;
    for _ in 0..100 {
        scraped = metrics().await;
        if scraped
            .as_deref()
            .is_some_and(|m| m.contains("state=\"invalid\"} 1"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let scraped = scraped.unwrap_or_default();
    assert!(
        scraped.contains("tokenwarden_token_state{token=\"prod\",state=\"invalid\"} 1"),
        "/metrics reads the new directory's state: {scraped}"
    );

    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}
