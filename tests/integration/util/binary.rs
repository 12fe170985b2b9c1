//! The real `tokenwarden` binary: one command run to its end, or `run` as a daemon child
//! process, and signals sent to it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// A finished run of the binary.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Both outputs, for leak checks and failure messages.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the real binary with `args` and extra environment.
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_with_stdin(args, env, None)
}

/// As [`run`], writing `stdin` to the child.
pub fn run_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    use std::io::Write;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.args(args)
        .env_remove("TOKENWARDEN_CONFIG")
        .env("TOKENWARDEN_LOG", "tokenwarden=debug,warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tokenwarden");
    {
        let mut sin = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            sin.write_all(s.as_bytes()).unwrap();
        }
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs the binary with `--config config args...` off the async runtime (a sandbox in this
/// process keeps serving meanwhile).
pub async fn tw(config: &Path, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Run {
    let mut all = vec!["--config".to_string(), config.display().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = all.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_with_stdin(&args, &env, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// `tokenwarden --config CONFIG run` with stdout and stderr piped, not started yet: the
/// caller adds its environment (log filter, failpoint, systemd sockets) and spawns it.
pub fn daemon_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tokenwarden"));
    cmd.args(["--config", config.to_str().unwrap(), "run"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Sends signal `sig` (`"TERM"`, `"HUP"`, ...) to process `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) {
    Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .unwrap();
}
