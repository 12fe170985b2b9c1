//! A bounded soak: the real daemon on a one-second schedule against the sandbox, with faults
//! injected at random, a token rotated and its targets drifting meanwhile. Memory and open
//! file descriptors must stay flat, and the state must end correct.

use std::time::{Duration, Instant};

use tokenwarden::sandbox::{Endpoint, Fault};

use crate::util::{TokenEntry, Workspace, assert_no_leak, prod_spec, sandbox};

/// How long the soak runs (`TOKENWARDEN_SOAK_SECS` overrides it for a longer local run).
fn soak_secs() -> u64 {
    std::env::var("TOKENWARDEN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(45)
}

fn proc_status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// A tiny xorshift: the faults differ run to run only by the seed printed with the result.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_flat_under_random_faults() {
    let sb = sandbox().await;
    let apps = tempfile::tempdir().unwrap();
    let mut entries = Vec::new();
    let mut tokens = Vec::new();
    for i in 0..5 {
        tokens.push(sb.issue_token(prod_spec()));
        let env = apps.path().join(format!("app{i}.env"));
        crate::util::write_private(&env, "WHATSAPP_ACCESS_TOKEN=unset\n");
        entries.push(format!(
            "[[token.target]]\nname = \"env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n",
            env.display()
        ));
    }
    let names: Vec<String> = (0..5).map(|i| format!("shop-{i}")).collect();
    let token_entries: Vec<TokenEntry> = (0..5)
        .map(|i| TokenEntry {
            name: &names[i],
            value: Some(&tokens[i]),
            extra: &entries[i],
        })
        .collect();
    let outbox = apps.path().join("mail");
    let ws = Workspace::with_meta(
        &sb,
        &token_entries,
        &format!(
            "attempts = 2\nretry_delay = \"10ms\"\ntimeout = \"2s\"\n[schedule]\ncron = \"* * * * * *\"\n[email]\nkind = \"folder\"\npath = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n",
            outbox.display()
        ),
    );
    let mut child = crate::util::daemon_command(&ws.config)
        .env("TOKENWARDEN_LOG", "tokenwarden=info,warn")
        .spawn()
        .unwrap();
    let pid = child.id();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = Rng(seed);
    let endpoints = [Endpoint::DebugToken, Endpoint::Phone];
    let started = Instant::now();
    let total = Duration::from_secs(soak_secs());
    let mut samples: Vec<(u64, usize)> = Vec::new();
    let mut injected = 0;
    while started.elapsed() < total {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = endpoints[(rng.next() % 2) as usize];
        let fault = match rng.next() % 5 {
            0 => Fault::server_error(e, 500, 1),
            1 => Fault::html(e),
            2 => Fault::truncated(e),
            3 => Fault::RateLimit {
                endpoint: e,
                count: 1,
                code: 4,
                retry_after_secs: 1,
                // Seconds as a gateway would add them; Meta itself sends only minutes.
                retry_after_header: true,
            },
            _ => Fault::delay(e, 300),
        };
        sb.add_fault(fault.times(1 + (rng.next() % 3) as u32));
        injected += 1;
        // Now and then something rewrites an env file behind tokenwarden's back.
        if rng.next().is_multiple_of(10) {
            let i = rng.next() % 5;
            crate::util::write_private(
                &apps.path().join(format!("app{i}.env")),
                "WHATSAPP_ACCESS_TOKEN=restored-from-backup\n",
            );
        }
        if started.elapsed() > Duration::from_secs(10) {
            samples.push((proc_status(pid, "VmRSS:"), open_fds(pid)));
        }
        assert!(child.try_wait().unwrap().is_none(), "the daemon exited");
    }
    sb.clear_faults();
    // Let it settle on a clean Graph, then stop it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end = (proc_status(pid, "VmRSS:"), open_fds(pid));
    crate::util::signal(pid, "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "clean stop: {out:?}");

    // Flat: after warm-up, memory within 20% (+4 MiB) of the early level, descriptors within 8.
    let (rss0, fd0) = samples[samples.len() / 4];
    let rss_max = samples.iter().map(|s| s.0).max().unwrap();
    let fd_max = samples.iter().map(|s| s.1).max().unwrap();
    println!(
        "soak: {}s, seed {seed}, {injected} faults injected, RSS {rss0} -> {} KiB (max {rss_max}), fds {fd0} -> {} (max {fd_max})",
        total.as_secs(),
        end.0,
        end.1
    );
    assert!(
        end.0 <= rss0 + rss0 / 5 + 4096,
        "RSS grew: {samples:?} -> {end:?}"
    );
    assert!(
        fd_max <= fd0 + 8 && end.1 <= fd0 + 8,
        "fds grew: {samples:?} -> {end:?}"
    );

    // Correct: every token healthy on a clean Graph, every env file on its token.
    let status = std::fs::read_to_string(ws.config.parent().unwrap().join("state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&status).unwrap();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            state["tokens"][name]["verdict"]["verdict"], "healthy",
            "{name}: {status}"
        );
        let env = std::fs::read_to_string(apps.path().join(format!("app{i}.env"))).unwrap();
        assert_eq!(
            env,
            format!("WHATSAPP_ACCESS_TOKEN={}\n", tokens[i]),
            "{name}"
        );
    }
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert_no_leak(&logs, &refs, "daemon logs");
    assert_no_leak(&status, &refs, "state");
}
