//! The idle daemon with many tokens: its resident memory and the CPU it uses between checks,
//! against the same daemon managing one token, measured in the same run (see
//! `docs/performance.md`).
//!
//! ```text
//! cargo bench --bench idle -- [--tokens N] [--idle-secs S] [--latency-ms L]
//! ```
//!
//! Each daemon is the real binary (`tokenwarden run`, the one cargo built next to this bench)
//! with one `[[group]]` over a file store of N tokens and a schedule that does not fire during
//! the run; its `READY=1` (systemd's notify protocol, on a socket of this bench's) says when
//! the first check of every token is done. Then it is left
//! alone for S seconds (at least two of the loop's one-minute wakes by default) while this
//! bench reads `/proc/<pid>/stat` and `/proc/<pid>/status`: CPU time used while idle, resident
//! memory at the end, and the peak (which the first check sets). The Graph sandbox runs in this
//! process, adding L ms to every HTTP request.
//!
//! Under `cargo test --all-targets` (no `--bench` flag) it makes a small smoke run instead: 200
//! tokens, 2 s idle, so the harness itself stays tested.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokenwarden::sandbox::{self, Sandbox, Scenario, TokenSpec, UsageModel};
use tokenwarden::store::file::{Entry, StoreFile, Version};

const USAGE: &str =
    "usage: cargo bench --bench idle -- [--tokens N] [--idle-secs S] [--latency-ms L]";

struct Args {
    smoke: bool,
    tokens: usize,
    idle_secs: u64,
    latency_ms: u64,
}

impl Args {
    fn parse() -> Args {
        let smoke = !std::env::args().any(|a| a == "--bench");
        let mut a = if smoke {
            Args {
                smoke,
                tokens: 200,
                idle_secs: 2,
                latency_ms: 0,
            }
        } else {
            Args {
                smoke,
                tokens: 10_000,
                idle_secs: 150,
                latency_ms: 50,
            }
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            if flag == "--bench" || !flag.starts_with("--") {
                continue;
            }
            let Some(v) = it.next().and_then(|v| v.parse::<u64>().ok()) else {
                eprintln!("{flag} needs a number\n{USAGE}");
                std::process::exit(2);
            };
            match flag.as_str() {
                "--tokens" => a.tokens = v.max(1) as usize,
                "--idle-secs" => a.idle_secs = v,
                "--latency-ms" => a.latency_ms = v,
                _ => {
                    eprintln!("unknown option {flag}\n{USAGE}");
                    std::process::exit(2);
                }
            }
        }
        a
    }
}

/// What one daemon measured.
struct Measured {
    first_check: Duration,
    rss_kib: u64,
    peak_kib: u64,
    idle_cpu: Duration,
    state_bytes: u64,
    scraped_kib: u64,
}

fn main() {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(a));
}

async fn run(a: Args) {
    println!(
        "idle daemon: {} tokens against 1, idle {} s each",
        a.tokens, a.idle_secs
    );
    if a.smoke {
        println!("  smoke run (no --bench flag, as under `cargo test`): not a measurement;");
        println!("  run `cargo bench --bench idle` for the figures");
    }
    let mut scenario = Scenario::demo();
    scenario.latency_ms = a.latency_ms;
    scenario.usage = UsageModel {
        window_secs: 3600,
        call_limit: u64::MAX / 200,
        enforce: false,
    };
    let sb = Sandbox::start("127.0.0.1:0".parse().expect("address"), scenario)
        .await
        .expect("sandbox");
    let base = measure(&sb, 1, &a).await;
    let many = measure(&sb, a.tokens, &a).await;
    sb.shutdown().await;

    let mib = |k: u64| k as f64 / 1024.0;
    let row = |what: &str, one: String, n: String, ratio: String| {
        println!("  {what:<44} {one:>12} {n:>12} {ratio:>9}");
    };
    println!();
    row(
        "",
        "1 token".into(),
        format!("{} tokens", a.tokens),
        "ratio".into(),
    );
    row(
        "first check of every token (wall)",
        format!("{:.2} s", base.first_check.as_secs_f64()),
        format!("{:.2} s", many.first_check.as_secs_f64()),
        format!(
            "{:.1}x",
            many.first_check.as_secs_f64() / base.first_check.as_secs_f64()
        ),
    );
    row(
        "resident memory when idle",
        format!("{:.1} MiB", mib(base.rss_kib)),
        format!("{:.1} MiB", mib(many.rss_kib)),
        format!("{:.2}x", many.rss_kib as f64 / base.rss_kib as f64),
    );
    row(
        "peak resident memory (the first check)",
        format!("{:.1} MiB", mib(base.peak_kib)),
        format!("{:.1} MiB", mib(many.peak_kib)),
        format!("{:.2}x", many.peak_kib as f64 / base.peak_kib as f64),
    );
    row(
        "resident memory after one /metrics scrape",
        format!("{:.1} MiB", mib(base.scraped_kib)),
        format!("{:.1} MiB", mib(many.scraped_kib)),
        format!("{:.2}x", many.scraped_kib as f64 / base.scraped_kib as f64),
    );
    row(
        "state.json",
        format!("{:.1} KiB", base.state_bytes as f64 / 1024.0),
        format!("{:.1} MiB", many.state_bytes as f64 / 1048576.0),
        format!("{:.0} B/token", many.state_bytes as f64 / a.tokens as f64),
    );
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / a.idle_secs.max(1) as f64;
    row(
        &format!("CPU while idle for {} s", a.idle_secs),
        format!("{} ms", base.idle_cpu.as_millis()),
        format!("{} ms", many.idle_cpu.as_millis()),
        format!("{:.3}%", pct(many.idle_cpu)),
    );
    println!();
    let goal = 64.0;
    println!(
        "  goal: under {goal} MiB resident with {} tokens: {} ({:.1} MiB; peak {:.1} MiB)",
        a.tokens,
        if mib(many.rss_kib) < goal {
            "met"
        } else {
            "MISSED"
        },
        mib(many.rss_kib),
        mib(many.peak_kib)
    );
    println!(
        "  goal: no CPU between checks: {} ms over {} s ({:.3}% of one core; 1 token: {} ms)",
        many.idle_cpu.as_millis(),
        a.idle_secs,
        pct(many.idle_cpu),
        base.idle_cpu.as_millis()
    );
}

/// Starts a daemon managing `n` sandbox tokens, waits for its first check, leaves it idle.
async fn measure(sb: &Sandbox, n: usize, a: &Args) -> Measured {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = StoreFile {
        format: 1,
        secrets: (0..n)
            .map(|i| {
                let token = sb.issue_token(TokenSpec::system_user_60d());
                let entry = Entry {
                    versions: vec![Version {
                        id: format!("v-{i}"),
                        value: token,
                        stages: vec!["AWSCURRENT".into()],
                        created_at: jiff::Timestamp::now().to_string(),
                        request_token: None,
                    }],
                };
                (format!("c-{i:05}"), entry)
            })
            .collect(),
    };
    write_private(
        &dir.path().join("tokens.json"),
        &serde_json::to_vec(&store).expect("json"),
    );
    let secret = dir.path().join("app-secret");
    write_private(&secret, sandbox::DEMO_APP_SECRET.as_bytes());
    let port = free_port();
    let config = dir.path().join("tokenwarden.toml");
    write_private(
        &config,
        format!(
            "state_dir = \"{dir}\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [schedule]\ncron = \"0 0 0 1 1 *\"\n\
             [meta]\napp_id = \"{app}\"\napp_secret = {{ file = \"{secret}\" }}\nbase_url = \"{base}\"\ntimeout = \"30s\"\n\
             [[group]]\nname = \"c\"\ndiscover = {{ kind = \"file\", key_prefix = \"c-\" }}\nspread = \"0s\"\n",
            dir = dir.path().display(),
            app = sandbox::DEMO_APP_ID,
            secret = secret.display(),
            base = sb.base_url(),
        )
        .as_bytes(),
    );
    // READY=1 comes once every token was checked (as systemd sees it): waiting on it, rather
    // than polling /metrics, keeps scrapes out of the measurement.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_tokenwarden"))
        .args(["--config", config.to_str().expect("utf-8"), "run"])
        .env("TOKENWARDEN_LOG", "warn")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log")).expect("log"))
        .spawn()
        .expect("start the daemon");
    let pid = child.id();
    let mut child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut buf = [0u8; 512];
    loop {
        if let Ok(n) = notify.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
        {
            break;
        }
        assert!(
            Instant::now() < deadline && child.0.try_wait().expect("wait").is_none(),
            "the daemon did not get ready with {n} tokens: {}",
            std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default()
        );
    }
    let first_check = started.elapsed();
    // Let the allocator settle after the check before the idle window starts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu0 = cpu(pid);
    tokio::time::sleep(Duration::from_secs(a.idle_secs)).await;
    let idle_cpu = cpu(pid).saturating_sub(cpu0);
    let rss_kib = status(pid, "VmRSS:");
    // Every token is in the metrics: the first check really covered them all.
    let m = metrics(port).await.expect("metrics");
    assert_eq!(
        m.matches("tokenwarden_token_last_success_timestamp_seconds{")
            .count(),
        n,
        "not every token was checked"
    );
    let scraped_kib = status(pid, "VmRSS:");
    let state_bytes = std::fs::metadata(dir.path().join("state.json")).map_or(0, |m| m.len());
    let peak_kib = status(pid, "VmHWM:");
    stop(&mut child.0);
    Measured {
        first_check,
        rss_kib,
        peak_kib,
        idle_cpu,
        state_bytes,
        scraped_kib,
    }
}

/// A daemon that must not outlive a failed run.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("wait");
    assert!(status.success(), "the daemon stopped with {status}");
}

async fn metrics(port: u16) -> Option<String> {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// User plus system CPU time of `pid`, from `/proc/<pid>/stat` (in clock ticks of 10 ms).
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn status(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field")
}

fn write_private(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .expect("write");
    f.write_all(bytes).expect("write");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
