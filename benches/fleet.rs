//! Fleet benchmarks against the in-process Graph sandbox, each compared with a baseline
//! measured in the same run (see `docs/performance.md`).
//!
//! ```text
//! cargo bench --bench fleet -- [--tokens N] [--latency-ms L] [--in-flight K]
//!                              [--sample S] [--runs R] [--check-runs C]
//! ```
//!
//! 1. `GraphClient::debug_tokens` over N tokens, K batches in flight, the sandbox adding L ms
//!    to every HTTP request: wall time against the lower bound `ceil(ceil(N / 50) / K) × L`,
//!    and against checking one token per request, one after the other (measured on S tokens
//!    and extrapolated to N, because 10,000 × 50 ms is over eight minutes).
//! 2. `tokenwarden check --token NAME` as a whole process (the binary cargo built next to this
//!    bench, `CARGO_BIN_EXE_tokenwarden`), against the Graph round trips it makes, measured
//!    with a plain HTTP client in the same run.
//!
//! The sandbox runs in this process and shares its cores with the client, as on the 2-core
//! machine the figures in `docs/performance.md` come from.
//!
//! Under `cargo test --all-targets` (which runs bench binaries without `--bench`) it makes a
//! small smoke run instead: 120 tokens, 5 ms, so the harness itself stays tested.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokenwarden::config::{MetaConfig, SecretRef};
use tokenwarden::graph::version::DEFAULT_VERSION;
use tokenwarden::graph::{BATCH_SIZE, GranularScope, GraphClient, GraphError, TokenInfo};
use tokenwarden::sandbox::{self, Endpoint, Sandbox, Scenario, TokenSpec, UsageModel};
use tokenwarden::secret::{Secret, appsecret_proof};
use tokenwarden::store::file::FileStore;

const USAGE: &str = "usage: cargo bench --bench fleet -- [--tokens N] [--latency-ms L] [--in-flight K] [--sample S] [--runs R] [--check-runs C]";

struct Args {
    /// Started by `cargo test` (no `--bench` flag): a quick run that only proves the harness works.
    smoke: bool,
    tokens: usize,
    latency_ms: u64,
    in_flight: usize,
    sample: usize,
    runs: usize,
    check_runs: usize,
}

impl Args {
    fn parse() -> Args {
        // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it.
        let smoke = !std::env::args().any(|a| a == "--bench");
        let mut a = if smoke {
            Args {
                smoke,
                tokens: 120,
                latency_ms: 5,
                in_flight: 2,
                sample: 10,
                runs: 1,
                check_runs: 1,
            }
        } else {
            Args {
                smoke,
                tokens: 10_000,
                latency_ms: 50,
                in_flight: 8,
                sample: 200,
                runs: 3,
                check_runs: 15,
            }
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            // cargo passes `--bench` to every bench binary; libtest-style filters are ignored.
            if flag == "--bench" || !flag.starts_with("--") {
                continue;
            }
            let value = it.next().and_then(|v| v.parse::<u64>().ok());
            let Some(v) = value else {
                eprintln!("{flag} needs a number\n{USAGE}");
                std::process::exit(2);
            };
            match flag.as_str() {
                "--tokens" => a.tokens = v.max(1) as usize,
                "--latency-ms" => a.latency_ms = v,
                "--in-flight" => a.in_flight = v.max(1) as usize,
                "--sample" => a.sample = v.max(1) as usize,
                "--runs" => a.runs = v.max(1) as usize,
                "--check-runs" => a.check_runs = v.max(1) as usize,
                _ => {
                    eprintln!("unknown option {flag}\n{USAGE}");
                    std::process::exit(2);
                }
            }
        }
        a.sample = a.sample.min(a.tokens);
        a
    }
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run(args));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// This process's resident memory, from `/proc/self/status` (KiB), if readable.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time used by this process so far (all threads, user + system), from `/proc/self/stat`
/// in USER_HZ ticks (100 per second on Linux).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

fn client(sb: &Sandbox) -> GraphClient {
    let meta = MetaConfig {
        app_id: sandbox::DEMO_APP_ID.into(),
        app_secret: SecretRef::Env("UNUSED".into()),
        api_version: DEFAULT_VERSION,
        base_url: sb.base_url().parse().expect("sandbox URL"),
        timeout: Duration::from_secs(60),
        attempts: 4,
        retry_delay: Duration::from_millis(200),
        proxy: None,
    };
    GraphClient::new(&meta, Secret::new(sandbox::DEMO_APP_SECRET)).expect("client")
}

async fn run(a: Args) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("tokenwarden fleet benchmark");
    if a.smoke {
        println!("  smoke run (no --bench flag, as under `cargo test`): not a measurement;");
        println!("  run `cargo bench --bench fleet` for the figures");
    }
    println!(
        "  {} tokens, {} ms injected latency per HTTP request, {} batches in flight, {} cores",
        a.tokens, a.latency_ms, a.in_flight, cores
    );
    println!("  sandbox in this process; usage limit raised so the throttle stays at full speed");

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
    let started = Instant::now();
    let tokens: Vec<Secret> = (0..a.tokens)
        .map(|_| Secret::new(sb.issue_token(TokenSpec::system_user_60d())))
        .collect();
    println!(
        "  issued {} tokens in {:.0} ms",
        a.tokens,
        ms(started.elapsed())
    );
    let c = client(&sb);

    // Warm-up: open the connections a pass keeps using.
    let warm = (BATCH_SIZE * a.in_flight).min(tokens.len());
    let _ = c.debug_tokens(&tokens[..warm], a.in_flight).await;

    // 1a. Batched.
    let rss_before = rss_kib();
    let cpu_before = cpu_time();
    let mut runs = Vec::new();
    let mut requests = 0;
    let mut kept = Vec::new();
    for _ in 0..a.runs {
        let before = sb.stats().requests_for(Endpoint::Batch);
        let t = Instant::now();
        let results = c.debug_tokens(&tokens, a.in_flight).await;
        runs.push(t.elapsed());
        requests = sb.stats().requests_for(Endpoint::Batch) - before;
        let bad = results
            .iter()
            .filter(|r| !r.as_ref().is_ok_and(|i| i.valid()))
            .count();
        assert_eq!(bad, 0, "every token is valid in the sandbox");
        kept = results;
    }
    let rss_after = rss_kib();
    let cpu_per_pass = cpu_before
        .zip(cpu_time())
        .map(|(b, a2)| (a2.saturating_sub(b)) / a.runs as u32);
    let batched = median(runs.clone());
    let best = *runs.iter().min().expect("one run");
    let latency = Duration::from_millis(a.latency_ms);
    let batches = a.tokens.div_ceil(BATCH_SIZE);
    let rounds = batches.div_ceil(a.in_flight);
    let lower = latency * rounds as u32;

    // 1b. Sequential, one request per token, on a sample.
    let t = Instant::now();
    for tok in &tokens[..a.sample] {
        let info = c.debug_token(tok).await.expect("debug_token");
        assert!(info.valid());
    }
    let sample_time = t.elapsed();
    let sequential = sample_time.mul_f64(a.tokens as f64 / a.sample as f64);

    println!();
    println!("batched debug_token ({} runs)", a.runs);
    println!("  | {:<48} | {:>12} |", "measure", "value");
    println!("  |{}|{}|", "-".repeat(50), "-".repeat(14));
    let row = |name: &str, value: String| println!("  | {name:<48} | {value:>12} |");
    row(
        "HTTP requests per pass (ceil(N/50) = batches)",
        format!("{requests} ({batches})"),
    );
    row(
        "batched wall time, median",
        format!("{:.0} ms", ms(batched)),
    );
    row("batched wall time, best", format!("{:.0} ms", ms(best)));
    row(
        &format!(
            "lower bound ceil({batches}/{})x{} ms",
            a.in_flight, a.latency_ms
        ),
        format!("{:.0} ms", ms(lower)),
    );
    row(
        "ratio batched / lower bound (goal <= 1.3)",
        if lower.is_zero() {
            "n/a".into()
        } else {
            format!("{:.2}", batched.as_secs_f64() / lower.as_secs_f64())
        },
    );
    if let Some(cpu) = cpu_per_pass {
        row(
            "CPU per pass, client + sandbox, all threads",
            format!("{:.0} ms", ms(cpu)),
        );
    }
    row(
        &format!("sequential, measured on {} tokens", a.sample),
        format!("{:.0} ms", ms(sample_time)),
    );
    row(
        &format!("sequential, extrapolated to {}", a.tokens),
        format!("{:.0} ms", ms(sequential)),
    );
    row(
        "speedup sequential / batched",
        format!("{:.0}x", sequential.as_secs_f64() / batched.as_secs_f64()),
    );
    let held: usize = kept.iter().map(result_bytes).sum();
    row(
        "one pass's answers, heap + inline, per token",
        format!("{} B", held / a.tokens),
    );
    if let (Some(b), Some(a2)) = (rss_before, rss_after) {
        row(
            "process RSS growth over the passes, per token",
            format!("{} B", a2.saturating_sub(b) * 1024 / a.tokens as u64),
        );
    }
    drop(kept);

    // 2. One `tokenwarden check` as a whole process.
    check_process(&sb, &tokens[0], &a).await;
    sb.shutdown().await;
}

/// The memory one answer holds: the value itself and the heap behind its strings and lists.
fn result_bytes(r: &Result<TokenInfo, GraphError>) -> usize {
    let s = |v: &Option<String>| v.as_ref().map_or(0, String::capacity);
    let list = |v: &Vec<String>| {
        v.capacity() * std::mem::size_of::<String>() + v.iter().map(String::capacity).sum::<usize>()
    };
    std::mem::size_of::<Result<TokenInfo, GraphError>>()
        + match r {
            Ok(i) => {
                s(&i.app_id)
                    + s(&i.token_type)
                    + s(&i.application)
                    + s(&i.user_id)
                    + list(&i.scopes)
                    + i.granular_scopes.capacity() * std::mem::size_of::<GranularScope>()
                    + i.granular_scopes
                        .iter()
                        .map(|g| g.scope.capacity() + list(&g.target_ids))
                        .sum::<usize>()
                    + i.error.as_ref().map_or(0, |e| e.message.capacity())
            }
            Err(_) => 0,
        }
}

/// Medians of `runs` plain requests: the network round trip with nothing of tokenwarden's.
async fn raw_round_trips(sb: &Sandbox, token: &Secret, runs: usize) -> (Duration, Duration) {
    let http = reqwest::Client::new();
    let app_token = format!("{}|{}", sandbox::DEMO_APP_ID, sandbox::DEMO_APP_SECRET);
    let secret = Secret::new(sandbox::DEMO_APP_SECRET);
    let app_proof = appsecret_proof(&secret, &app_token);
    let token_proof = appsecret_proof(&secret, token.expose());
    let base = format!("{}/{}", sb.base_url(), DEFAULT_VERSION);
    let (mut debug, mut phone) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let r = http
            .get(format!("{base}/debug_token"))
            .bearer_auth(&app_token)
            .query(&[
                ("input_token", token.expose()),
                ("appsecret_proof", &app_proof),
            ])
            .send()
            .await
            .expect("debug_token");
        assert!(r.status().is_success());
        r.bytes().await.expect("body");
        debug.push(t.elapsed());

        let t = Instant::now();
        let r = http
            .get(format!("{base}/{}", sandbox::DEMO_PHONE_NUMBER_ID))
            .bearer_auth(token.expose())
            .query(&[
                ("fields", "id,display_phone_number,verified_name,quality_rating,code_verification_status,name_status"),
                ("appsecret_proof", &token_proof),
            ])
            .send()
            .await
            .expect("phone read");
        assert!(r.status().is_success());
        r.bytes().await.expect("body");
        phone.push(t.elapsed());
    }
    (median(debug), median(phone))
}

/// Writes a config for one token in a file store; `with_phone` adds the phone read.
fn write_config(dir: &Path, sb: &Sandbox, token: &Secret, with_phone: bool) -> std::path::PathBuf {
    let secret_file = dir.join("app-secret");
    std::fs::write(&secret_file, sandbox::DEMO_APP_SECRET).expect("write secret");
    let store = dir.join("tokens.json");
    FileStore::new(store, "bench".to_string())
        .import_current(token, jiff::Timestamp::now())
        .expect("store the token");
    let phone = if with_phone {
        format!("phone_number_id = \"{}\"\n", sandbox::DEMO_PHONE_NUMBER_ID)
    } else {
        String::new()
    };
    let text = format!(
        "state_dir = \"{}\"\n[meta]\napp_id = \"{}\"\napp_secret = {{ file = \"{}\" }}\nbase_url = \"{}\"\n\n[[token]]\nname = \"bench\"\nwaba_id = \"{}\"\n{phone}",
        dir.display(),
        sandbox::DEMO_APP_ID,
        secret_file.display(),
        sb.base_url(),
        sandbox::DEMO_WABA_ID,
    );
    let config = dir.join("tokenwarden.toml");
    std::fs::write(&config, text).expect("write config");
    use std::os::unix::fs::PermissionsExt;
    for f in [&config, &secret_file] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    config
}

/// Runs `tokenwarden --config CONFIG check --token bench` `runs` times; the median wall time.
async fn time_check(config: &Path, runs: usize) -> (Duration, Option<i32>) {
    let exe = env!("CARGO_BIN_EXE_tokenwarden");
    let config = config.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut times = Vec::new();
        let mut code = None;
        for _ in 0..runs {
            let t = Instant::now();
            let status = Command::new(exe)
                .args(["--config"])
                .arg(&config)
                .args(["check", "--token", "bench"])
                .env_remove("TOKENWARDEN_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run tokenwarden");
            times.push(t.elapsed());
            code = status.code();
        }
        (median(times), code)
    })
    .await
    .expect("check runs")
}

async fn check_process(sb: &Sandbox, token: &Secret, a: &Args) {
    let exe = env!("CARGO_BIN_EXE_tokenwarden");
    let (debug_rtt, phone_rtt) = raw_round_trips(sb, token, a.check_runs).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let both_dir = dir.path().join("with-phone");
    let one_dir = dir.path().join("inspect-only");
    std::fs::create_dir_all(&both_dir).expect("mkdir");
    std::fs::create_dir_all(&one_dir).expect("mkdir");
    let with_phone = write_config(&both_dir, sb, token, true);
    let inspect_only = write_config(&one_dir, sb, token, false);
    // One run each first, so the binary's pages are in the cache.
    let _ = time_check(&with_phone, 1).await;
    let _ = time_check(&inspect_only, 1).await;
    let (full, full_code) = time_check(&with_phone, a.check_runs).await;
    let (one, one_code) = time_check(&inspect_only, a.check_runs).await;

    println!();
    println!(
        "one `tokenwarden check --token NAME`, whole process ({} runs, medians)",
        a.check_runs
    );
    // Relative to the project: a figure names the command that made it, not a machine's path.
    let shown = std::path::Path::new(&exe)
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "the tokenwarden binary of this build".into());
    println!("  binary: {shown} (cargo bench --bench fleet)");
    println!("  | {:<48} | {:>12} |", "measure", "value");
    println!("  |{}|{}|", "-".repeat(50), "-".repeat(14));
    let row = |name: &str, value: String| println!("  | {name:<48} | {value:>12} |");
    row(
        "raw debug_token round trip",
        format!("{:.1} ms", ms(debug_rtt)),
    );
    row(
        "raw phone-number read round trip",
        format!("{:.1} ms", ms(phone_rtt)),
    );
    row(
        "check, debug_token only (exit code)",
        format!("{:.1} ms ({})", ms(one), code_str(one_code)),
    );
    row(
        "  overhead over its 1 round trip (goal <= 20)",
        format!("{:+.1} ms", ms(one) - ms(debug_rtt)),
    );
    row(
        "check, debug_token + phone read (exit code)",
        format!("{:.1} ms ({})", ms(full), code_str(full_code)),
    );
    row(
        "  overhead over its 2 round trips (goal <= 20)",
        format!("{:+.1} ms", ms(full) - ms(debug_rtt) - ms(phone_rtt)),
    );
}

fn code_str(code: Option<i32>) -> String {
    code.map_or("signal".into(), |c| c.to_string())
}
