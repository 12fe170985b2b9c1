//! Delivery benchmark: one rollout to 50 webhook targets that each take 100 ms to answer,
//! against one target's time measured in the same run (the goal: within 1.5x), and a
//! one-at-a-time baseline.
//!
//! `cargo bench --bench delivery -- [--targets N] [--latency-ms L] [--rounds R]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokenwarden::config::{SecretRef, TargetConfig, TargetKind};
use tokenwarden::delivery::{Rollout, roll_out};
use tokenwarden::secret::Secret;
use tokenwarden::target::{Configured, PushContext};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A loopback receiver that answers every POST after `latency`.
async fn receiver(latency: Duration) -> u16 {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(latency).await;
        axum::http::StatusCode::OK
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn targets(n: usize, port: u16, secret: &std::path::Path) -> Vec<Arc<Configured>> {
    let mut out = Vec::new();
    for i in 0..n {
        let cfg = TargetConfig {
            name: format!("hook-{i}"),
            wave: 0,
            timeout: Duration::from_secs(10),
            verify: None,
            kind: TargetKind::Webhook {
                url: format!("http://127.0.0.1:{port}/t{i}").parse().unwrap(),
                secret: SecretRef::File(secret.to_path_buf()),
                header: "X-Tokenwarden-Signature".into(),
            },
        };
        out.push(Arc::new(Configured::open(&cfg).await.unwrap()));
    }
    out
}

/// The median of `rounds` rollouts.
async fn time(t: &[Arc<Configured>], parallelism: usize, rounds: u64) -> Duration {
    let token = Secret::new("EAAGbenchmarktoken0123456789");
    let http = reqwest::Client::new();
    let mut times = Vec::new();
    for r in 0..rounds {
        let ctx = PushContext {
            token_name: "bench".into(),
            expires_at: None,
            event: tokenwarden::target::PushEvent::Rotation,
            request_id: format!("bench-{r}"),
            now: jiff::Timestamp::now(),
            reloads: None,
            hide: Vec::new(),
        };
        let started = Instant::now();
        let out = roll_out(t, &token, None, &ctx, &http, parallelism).await;
        times.push(started.elapsed());
        assert!(matches!(out, Rollout::Delivered(_)), "{out:?}");
    }
    times.sort();
    times[times.len() / 2]
}

#[tokio::main]
async fn main() {
    let n = arg("--targets", 50) as usize;
    let latency = Duration::from_millis(arg("--latency-ms", 100));
    let rounds = arg("--rounds", 5);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hook-secret");
    std::fs::write(&secret, "whsec_benchmark").unwrap();
    let port = receiver(latency).await;
    let one = targets(1, port, &secret).await;
    let all = targets(n, port, &secret).await;
    // Warm the connection pool and the code paths once.
    time(&all, n, 1).await;
    let t1 = time(&one, 1, rounds).await;
    let tn = time(&all, n, rounds).await;
    let seq = time(&all[..n.min(10)], 1, 1).await;
    let seq_n = seq.mul_f64(n as f64 / n.min(10) as f64);
    println!(
        "delivery benchmark: {n} webhook targets, {} ms each, median of {rounds}",
        latency.as_millis()
    );
    println!(
        "  one target                      {:>8.1} ms",
        t1.as_secs_f64() * 1e3
    );
    println!(
        "  {n} targets, parallelism {n:<3}      {:>8.1} ms   ratio to one target: {:.2} (goal <= 1.5)",
        tn.as_secs_f64() * 1e3,
        tn.as_secs_f64() / t1.as_secs_f64()
    );
    println!(
        "  {n} targets one at a time (from {}) {:>8.1} ms   speedup of the parallel rollout: {:.1}x",
        n.min(10),
        seq_n.as_secs_f64() * 1e3,
        seq_n.as_secs_f64() / tn.as_secs_f64()
    );
}
