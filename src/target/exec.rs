//! Running commands: the `exec` target, a dotenv target's `reload` command and command verifies.
//!
//! A command is an argv, run without a shell. The token reaches it on standard input only:
//! never in argv (which any local user can read in `/proc/<pid>/cmdline` or `ps`) and never in
//! a file left behind. Standard input carries exactly the token, with no newline after it, then
//! end of file, so reading to the end gives the token with nothing to trim (`token=$(cat)` in a
//! shell; `read -r token` also gets it, but returns 1 for the missing newline).
//!
//! The child's environment is cleared except `PATH`, `HOME` and `LANG`, plus what the caller
//! passes: tokenwarden's own environment may hold secrets (an app secret referenced as
//! `env = "META_APP_SECRET"`, AWS credentials), and a hook has no business with them.
//!
//! The child runs in a process group of its own. When it exits, times out, or the caller stops
//! waiting (shutdown drops the future), the whole group is killed with SIGKILL, so a shell's
//! background jobs do not outlive it or keep its output pipes open. A command that must start
//! something lasting hands it to a service manager (`systemctl restart app`) rather than
//! leaving it in the group. The group is killed with the `kill` program: the crate forbids
//! `unsafe` code, so `libc::kill` is not an option, and the direct child is killed as well in
//! case `kill` cannot run.
//!
//! The last 4 KiB of standard output and standard error are kept for error messages, with
//! every occurrence of the token replaced by `[token]` first (a careless script that echoes
//! its input must not put the token into an email). Exit status 0 is success.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::TargetError;
use crate::secret::{Fingerprint, Secret};

/// How much of each output stream is kept for error messages.
pub const OUTPUT_TAIL: usize = 4096;

/// Variables of tokenwarden's own environment that a child inherits; everything else is
/// dropped (see the module docs).
pub const INHERITED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// What a command that exited 0 wrote: the tails of its output, token scrubbed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// The last [`OUTPUT_TAIL`] bytes of standard output, with the token replaced by `[token]`.
    pub stdout: String,
    /// The last [`OUTPUT_TAIL`] bytes of standard error, with the token replaced by `[token]`.
    pub stderr: String,
}

/// Runs `argv` (no shell; `argv[0]` is a path or a name looked up in `PATH`), writing `stdin`
/// (exactly the token, no newline) to its standard input, with only the inherited variables
/// and `env` in its environment, and waits up to `timeout`.
///
/// # Errors
/// [`TargetError::Refused`] for an empty argv, a command that cannot be started (not found, not
/// executable: names the path), a non-zero exit (names `argv[0]`, the status and the last line
/// of standard error, scrubbed) or death by a signal; [`TargetError::Transient`] when it did
/// not finish within `timeout` (it and its process group are killed first).
pub async fn run(
    argv: &[String],
    stdin: Option<&Secret>,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<CommandOutput, TargetError> {
    run_hiding(argv, stdin, env, timeout, &[]).await
}

/// [`run`], with `hide` scrubbed from the output as well as the token on standard input: a
/// dotenv `reload` or a `verify_command` gets no token on its input, yet a script that prints
/// the `.env` file prints the token it holds (and, during a rotation, the other side's).
///
/// # Errors
/// As [`run`].
pub async fn run_hiding(
    argv: &[String],
    stdin: Option<&Secret>,
    env: &[(String, String)],
    timeout: Duration,
    hide: &[&Secret],
) -> Result<CommandOutput, TargetError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(TargetError::Refused("the command is empty".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    for name in INHERITED_ENV {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| TargetError::Refused(format!("cannot run {program:?}: {e}")))?;
    // Killed on every way out of this function, a dropped future included.
    let group = GroupKill(child.id());
    let token = stdin.map(Secret::expose);
    let needles: Vec<&str> = token
        .into_iter()
        .chain(hide.iter().map(|s| s.expose()))
        .filter(|t| !t.is_empty())
        .collect();
    let out = tokio::spawn(read_tail(child.stdout.take()));
    let err = tokio::spawn(read_tail(child.stderr.take()));

    let input = child.stdin.take();
    let finished = tokio::time::timeout(timeout, async {
        if let (Some(mut pipe), Some(token)) = (input, token) {
            // A command may exit without reading its input; its exit status says how it went,
            // so a broken pipe here is not an error of its own.
            let _ = pipe.write_all(token.as_bytes()).await;
            let _ = pipe.shutdown().await;
        }
        child.wait().await
    })
    .await;
    group.kill();
    let status = match finished {
        Ok(status) => status,
        Err(_) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(TargetError::Transient(format!(
                "{program:?} did not finish within {}; killed",
                human(timeout)
            )));
        }
    };
    // The group is gone, so the pipes close; a process that left the group (setsid) may still
    // hold them, so the reading is bounded too.
    let stdout = collect(out, &needles).await;
    let stderr = collect(err, &needles).await;
    let status = status
        .map_err(|e| TargetError::Transient(format!("waiting for {program:?} failed: {e}")))?;
    if status.success() {
        return Ok(CommandOutput { stdout, stderr });
    }
    let last = stderr
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| format!(": {}", clip(l)))
        .unwrap_or_else(|| " (nothing on standard error)".into());
    Err(TargetError::Refused(
        match (status.code(), status.signal()) {
            (Some(code), _) => format!("{program:?} exited with status {code}{last}"),
            (None, Some(sig)) => format!("{program:?} was killed by signal {sig}{last}"),
            (None, None) => format!("{program:?} failed: {status}{last}"),
        },
    ))
}

/// The `exec` target: a command that receives the token on standard input, and its name and
/// fingerprint in `TOKENWARDEN_TOKEN_NAME` and `TOKENWARDEN_FINGERPRINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    command: Vec<String>,
    timeout: Duration,
}

impl ExecTarget {
    /// A target running `command` (an argv, no shell) for at most `timeout`.
    pub fn new(command: Vec<String>, timeout: Duration) -> ExecTarget {
        ExecTarget { command, timeout }
    }

    /// The argv, as configured.
    pub fn command(&self) -> &[String] {
        &self.command
    }

    /// Runs the command with `token` on its standard input; exit 0 is success.
    ///
    /// # Errors
    /// As [`run`].
    pub async fn push(
        &self,
        token: &Secret,
        token_name: &str,
        fingerprint: Fingerprint,
    ) -> Result<(), TargetError> {
        let env = [
            ("TOKENWARDEN_TOKEN_NAME".to_string(), token_name.to_string()),
            (
                "TOKENWARDEN_FINGERPRINT".to_string(),
                fingerprint.to_string(),
            ),
        ];
        run(&self.command, Some(token), &env, self.timeout)
            .await
            .map(drop)
    }
}

/// Kills a process group with SIGKILL through the `kill` program (see the module docs).
struct GroupKill(Option<u32>);

impl GroupKill {
    /// Idempotent: a group that is gone makes `kill` fail quietly. Waiting for `kill` blocks
    /// for a millisecond or two, once per command, which is not worth a task of its own (and a
    /// `Drop` cannot await).
    fn kill(&self) {
        let Some(pgid) = self.0 else { return };
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A stream's tail: the last bytes kept, and whether anything before them was dropped.
struct Tail {
    bytes: Vec<u8>,
    trimmed: bool,
}

/// Reads a stream to its end, keeping the last `OUTPUT_TAIL` bytes plus a margin (see
/// [`scrub_tail`]).
async fn read_tail(stream: Option<impl AsyncRead + Unpin>) -> Tail {
    // The margin keeps any token that reaches into the kept tail whole, so it can be scrubbed.
    const KEEP: usize = 2 * OUTPUT_TAIL;
    let mut tail = Tail {
        bytes: Vec::new(),
        trimmed: false,
    };
    let Some(mut stream) = stream else {
        return tail;
    };
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return tail,
            Ok(n) => {
                tail.bytes.extend_from_slice(&chunk[..n]);
                if tail.bytes.len() > KEEP {
                    let excess = tail.bytes.len() - KEEP;
                    tail.bytes.drain(..excess);
                    tail.trimmed = true;
                }
            }
        }
    }
}

/// Waits briefly for a reader and scrubs what it kept.
async fn collect(reader: tokio::task::JoinHandle<Tail>, secrets: &[&str]) -> String {
    let abort = reader.abort_handle();
    match tokio::time::timeout(Duration::from_secs(1), reader).await {
        Ok(Ok(tail)) => {
            let text = scrub_tail(&tail.bytes, tail.trimmed, secrets);
            // Their encoded forms too (a command that prints one base64 or URL-encoded).
            let mut scrubber = crate::scrub::Scrubber::new();
            for s in secrets {
                scrubber.add(s);
            }
            scrubber.scrub(&text)
        }
        Ok(Err(_)) => String::new(),
        Err(_) => {
            abort.abort();
            "(output not collected: a process outside the command's group holds it open)".into()
        }
    }
}

/// The last [`OUTPUT_TAIL`] bytes of `bytes` as text, each occurrence of any of `secrets`
/// replaced by `[token]`.
///
/// `bytes` is a stream's tail; when `trimmed`, its start was cut, possibly through a token.
/// The kept part then starts at least the longest secret's length in, so a cut piece of a
/// token (shorter than the token, at offset 0) is always dropped, and a token that reaches
/// into the kept part is whole in `bytes` and scrubbed.
fn scrub_tail(bytes: &[u8], trimmed: bool, secrets: &[&str]) -> String {
    let mut secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|s| s.as_bytes())
        .filter(|t| !t.is_empty())
        .collect();
    // Longest first, so a token that contains another is replaced whole.
    secrets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    let mut start = bytes.len().saturating_sub(OUTPUT_TAIL);
    if trimmed {
        start = start.max(secrets.first().map_or(0, |t| t.len()));
    }
    let mut out = Vec::with_capacity(bytes.len().saturating_sub(start));
    let mut i = 0;
    while i < bytes.len() {
        if let Some(t) = secrets.iter().find(|t| bytes[i..].starts_with(t)) {
            if i + t.len() > start {
                out.extend_from_slice(b"[token]");
            }
            i += t.len();
            continue;
        }
        if i >= start {
            out.push(bytes[i]);
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A line short enough for an error message (a script may print a whole document on one line).
fn clip(line: &str) -> String {
    const MAX: usize = 300;
    match line.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_string(),
    }
}

/// A duration as configs write it: `500ms`, `30s`, `2m`.
pub(crate) fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_every_token_and_keeps_the_tail() {
        let t: &[&str] = &["EAAGsecret"];
        assert_eq!(
            scrub_tail(b"got EAAGsecret and EAAGsecret\n", false, t),
            "got [token] and [token]\n"
        );
        assert_eq!(scrub_tail(b"plain", false, &[]), "plain");
        assert_eq!(scrub_tail(b"plain", false, &[""]), "plain");
        // Several secrets (a rotation's two tokens), one inside the other.
        assert_eq!(
            scrub_tail(
                b"OLD=EAAGold NEW=EAAGoldXYZ\n",
                false,
                &["EAAGold", "EAAGoldXYZ"]
            ),
            "OLD=[token] NEW=[token]\n"
        );

        // A long stream: only the last OUTPUT_TAIL bytes remain, the token scrubbed even where
        // it straddles the cut.
        let mut long = vec![b'a'; OUTPUT_TAIL];
        long.extend_from_slice(b"EAAGsecret");
        long.extend(std::iter::repeat_n(b'b', OUTPUT_TAIL - 3));
        let s = scrub_tail(&long, true, t);
        assert!(!s.contains("EAAG") && !s.contains("secret"), "{s}");
        assert!(s.starts_with("[token]bbb"), "{}", &s[..20]);
        assert_eq!(s.len(), OUTPUT_TAIL - 3 + "[token]".len());
    }

    #[test]
    fn scrub_drops_a_cut_token_at_a_trimmed_start() {
        // The reader cut the stream inside a token: the fragment "secret" must not survive.
        let s = scrub_tail(b"secret, then the rest\n", true, &["EAAGsecret"]);
        assert_eq!(s, "en the rest\n");
        // Untrimmed, a piece of a token is output the command wrote itself: kept as written.
        assert_eq!(scrub_tail(b"secret", false, &["EAAGsecret"]), "secret");
    }

    #[test]
    fn durations_read_like_config_and_lines_are_clipped() {
        assert_eq!(human(Duration::from_millis(500)), "500ms");
        assert_eq!(human(Duration::from_secs(30)), "30s");
        assert_eq!(human(Duration::from_secs(120)), "2m");
        assert_eq!(human(Duration::from_millis(1500)), "1500ms");
        assert_eq!(human(Duration::ZERO), "0s");
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(400);
        assert_eq!(clip(&long), format!("{}…", "é".repeat(300)));
    }
}
