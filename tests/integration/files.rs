//! The state directory and the files tokenwarden writes on a shared host: directory modes
//! under a careless umask, a loose state directory, a corrupt `state.json`, and temp files
//! left behind by a kill.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenwarden::sandbox::{self, Sandbox, Scenario, TokenSpec};

use crate::util::{TokenEntry, Workspace, write_private};

/// A workspace whose state directory is `<workspace>/state` (not created yet), with its
/// tokens in the workspace's store, no scheduled checks, and email written to
/// `<workspace>/mail` (not created yet). Returns the workspace, the state directory and the
/// mail folder.
fn workspace(sb: &Sandbox, token: &str) -> (Workspace, PathBuf, PathBuf) {
    let store_line = "store = { kind = \"file\", path = \"STORE\" }";
    let ws = Workspace::with_meta(
        sb,
        &[TokenEntry {
            name: "prod",
            value: Some(token),
            extra: store_line,
        }],
        "attempts = 1\ntimeout = \"5s\"\n[schedule]\ncron = \"0 0 0 1 1 *\"\n",
    );
    let root = ws.config.parent().unwrap().to_path_buf();
    let state = root.join("state");
    let mail = root.join("mail");
    let text = std::fs::read_to_string(&ws.config).unwrap();
    let text = text
        .replacen(
            &format!("state_dir = \"{}\"", root.display()),
            &format!("state_dir = \"{}\"", state.display()),
            1,
        )
        .replace("STORE", &ws.store.display().to_string());
    let text = format!(
        "{text}\n[email]\nkind = \"folder\"\npath = \"{}\"\nfrom = \"tw@example.com\"\nto = [\"oncall@example.com\"]\n",
        mail.display()
    );
    write_private(&ws.config, &text);
    (ws, state, mail)
}

/// Runs `tokenwarden run` under `sh -c "umask ...; exec ..."` until `ready` holds, then kills it.
fn run_until(config: &Path, umask: &str, ready: impl Fn() -> bool) -> String {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" --config \"$1\" run",))
        .arg(env!("CARGO_BIN_EXE_tokenwarden"))
        .arg(config)
        .env("TOKENWARDEN_LOG", "tokenwarden=info,warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ok = false;
    for _ in 0..200 {
        if ready() {
            ok = true;
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "tokenwarden exited early ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ok, "never ready: {stderr}");
    stderr
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn emails(mail: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(mail) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect()
}

async fn sandbox_and_token() -> (Sandbox, String) {
    let sb = Sandbox::start("127.0.0.1:0".parse().unwrap(), Scenario::demo())
        .await
        .unwrap();
    let token = sb.issue_token(TokenSpec::system_user_60d().wabas(&[sandbox::DEMO_WABA_ID]));
    (sb, token)
}

/// Under umask 000 the state directory, the outbox and the email folder used to be created
/// 0777: any local user could plant files in them.
#[tokio::test(flavor = "multi_thread")]
async fn directories_are_created_0700_under_umask_000() {
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, mail) = workspace(&sb, &token);
    let stderr = tokio::task::block_in_place(|| {
        run_until(&ws.config, "000", || {
            state.join("state.json").exists() && state.join("outbox/sent").exists()
        })
    });
    for d in [
        state.clone(),
        state.join("outbox"),
        state.join("outbox/sent"),
    ] {
        assert_eq!(mode(&d), 0o700, "{}: {stderr}", d.display());
    }
    // groups/ is made when a group is first listed.
    let group_log = tokenwarden::discover::GroupLog::new(&state);
    group_log.save("g", &[]).unwrap();
    assert_eq!(mode(&state.join("groups")), 0o700);
    assert!(!mail.exists(), "no email, so no folder yet");
}

/// A state directory group or others may write is refused before anything is written, by
/// `config check` (the unit's ExecStartPre) and `run`, with exit 78 and the fix.
#[tokio::test(flavor = "multi_thread")]
async fn a_state_directory_others_can_write_is_refused_with_exit_78() {
    use std::os::unix::fs::PermissionsExt;
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, _mail) = workspace(&sb, &token);
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    for args in [&["config", "check"][..], &["run"][..]] {
        let r = tokio::task::block_in_place(|| ws.run(args));
        assert_eq!(r.code, 78, "{args:?}: {r:?}");
        assert!(r.stderr.contains("chmod 700"), "{args:?}: {r:?}");
        assert!(r.stderr.contains("state_dir"), "{args:?}: {r:?}");
    }
    assert!(!state.join("state.json").exists());
}

/// A corrupt `state.json` used to stop the daemon with exit 1 ("move it aside"): under
/// `Restart=on-failure` a restart loop, and no alert. Now it is moved aside, the daemon
/// starts, and one alert says so; the next start sends nothing more.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_state_is_set_aside_with_one_alert_and_the_daemon_runs() {
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, mail) = workspace(&sb, &token);
    std::fs::create_dir(&state).unwrap();
    std::fs::write(
        state.join("state.json"),
        "{\"format\":1,\"tokens\":{\"prod\":",
    )
    .unwrap();
    let reset = |mail: &Path| {
        emails(mail)
            .iter()
            .filter(|e| e.contains("STATE RESET"))
            .count()
    };
    tokio::task::block_in_place(|| {
        run_until(&ws.config, "000", || {
            reset(&mail) == 1 && state.join("state.json").exists()
        })
    });
    // The folder mailer made its directory under umask 000 too.
    assert_eq!(mode(&mail), 0o700);
    let aside: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert!(
        std::fs::read_to_string(aside[0].path())
            .unwrap()
            .starts_with("{\"format\":1")
    );
    // A second start: the state is good now, no second alert.
    let before = emails(&mail).len();
    tokio::task::block_in_place(|| {
        run_until(&ws.config, "077", || {
            std::fs::read_to_string(state.join("audit.jsonl"))
                .is_ok_and(|a| a.matches("\"event\":\"check\"").count() >= 2)
        })
    });
    assert_eq!(reset(&mail), 1, "one alert, not one per start");
    assert!(emails(&mail).len() >= before);
}

/// A dotenv target on tokenwarden's own files (the store, `state.json`, a secret file, the
/// config) used to be accepted and corrupted the token store on the first check; two targets
/// on one file and key fought over it. `config check` refuses each, naming the field and line.
#[tokio::test(flavor = "multi_thread")]
async fn targets_on_tokenwardens_own_files_or_twice_on_one_key_are_refused() {
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, _mail) = workspace(&sb, &token);
    let root = ws.config.parent().unwrap().to_path_buf();
    let base = std::fs::read_to_string(&ws.config).unwrap();
    let apps = tempfile::tempdir().unwrap();
    let app_env = apps.path().join(".env");
    // A second name for the store, through a symlinked directory.
    let alias = apps.path().join("alias");
    std::os::unix::fs::symlink(&root, &alias).unwrap();
    let target = |path: &Path, key: &str| {
        format!(
            "[[token.target]]\nname = \"t{}\"\nkind = \"dotenv\"\npath = \"{}\"\nkey = \"{key}\"\nreload = [\"/bin/true\"]\n",
            crate::util::unique("x"),
            path.display()
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            target(&state.join("state.json"), "K"),
            "inside the state directory",
        ),
        (target(&ws.store, "K"), "is the token store of `token[0]`"),
        (
            target(&alias.join("tokens.json"), "K"),
            "is the token store of `token[0]`",
        ),
        (
            target(&root.join("app-secret"), "K"),
            "the secret file of `meta.app_secret`",
        ),
        (target(&ws.config, "K"), "this config file"),
        (
            format!("{}{}", target(&app_env, "K"), target(&app_env, "K")),
            "already the target of `token[0].target[0].path`",
        ),
    ];
    for (extra, want) in cases {
        // Targets belong to the `[[token]]`, which is the last table before `[email]`.
        let text = base.replacen("\n[email]", &format!("\n{extra}\n[email]"), 1);
        write_private(&ws.config, &text);
        let r = tokio::task::block_in_place(|| ws.run(&["config", "check"]));
        assert_eq!(r.code, 78, "{want}: {r:?}");
        assert!(r.stderr.contains(want), "{want}: {r:?}");
        assert!(r.stderr.contains(".path"), "names the field: {r:?}");
        // The offending value is the last target path before `[email]` (whose folder also
        // has a `path`).
        let email_at = text.lines().position(|l| l == "[email]").unwrap();
        let lines: Vec<&str> = text.lines().take(email_at).collect();
        let line = lines
            .iter()
            .rposition(|l| l.starts_with("path = "))
            .unwrap()
            + 1;
        assert!(
            r.stderr.contains(&format!(":{line}:")),
            "names line {line}: {r:?}"
        );
    }
    // Two keys in one file, and the same key in two files, are fine.
    let other_env = apps.path().join("other.env");
    let text = base.replacen(
        "\n[email]",
        &format!(
            "\n{}{}{}\n[email]",
            target(&app_env, "A"),
            target(&app_env, "B"),
            target(&other_env, "A")
        ),
        1,
    );
    write_private(&ws.config, &text);
    let r = tokio::task::block_in_place(|| ws.run(&["config", "check"]));
    assert_eq!(r.code, 0, "{r:?}");
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A full disk on the state directory held back every alert, the one saying so included. The
/// daemon keeps a reserve file there; when a write finds the disk full it frees it, and the
/// "disk full" alert goes out (once per episode); with room again the reserve comes back.
/// Runs on a small tmpfs, which needs `mount` (root); without it the test says so and stops.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_disk_frees_the_reserve_and_the_disk_full_alert_goes_out() {
    use std::io::Write;
    use tokenwarden::daemon::{self, Control, OffsetClock};
    use tokio::sync::{mpsc, oneshot};
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, mail) = workspace(&sb, &token);
    std::fs::create_dir(&state).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m,mode=0700", "tokenwarden-test"])
        .arg(&state)
        .stderr(std::process::Stdio::null())
        .status();
    if !mounted.is_ok_and(|s| s.success()) {
        eprintln!("cannot mount a tmpfs here: full-disk case not exercised");
        return;
    }
    let _guard = Mounted(state.clone());
    let reserve = state.join(".tokenwarden-reserve");
    let disk_full = |mail: &Path| {
        emails(mail)
            .iter()
            .filter(|e| e.contains("DISK FULL"))
            .count()
    };

    let clock = OffsetClock::default();
    let (ctl, rx) = mpsc::channel(8);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(daemon::run(
        ws.config.clone(),
        std::sync::Arc::new(clock.clone()),
        rx,
        async move {
            let _ = stopped.await;
        },
    ));
    let check_now = || async {
        let (tx, rx) = oneshot::channel();
        ctl.send(Control::CheckNow(tx)).await.unwrap();
        rx.await.unwrap();
    };
    check_now().await;
    assert!(reserve.exists(), "the reserve is made at start");
    assert_eq!(disk_full(&mail), 0);

    // Fill the disk.
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while f.write_all(&chunk).is_ok() {}
    drop(f);
    clock.advance(60);
    check_now().await;
    assert_eq!(disk_full(&mail), 1, "the disk-full alert went out");
    assert!(!reserve.exists(), "freed for it");
    // Still full: no second alert for the same episode.
    clock.advance(60);
    check_now().await;
    assert_eq!(disk_full(&mail), 1);

    // Room again: the reserve comes back, and the state is saved.
    std::fs::remove_file(&filler).unwrap();
    clock.advance(60);
    check_now().await;
    assert!(reserve.exists(), "made again");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// Temp files a kill left behind were never cleaned, one holding the new token in the
/// application's directory. At start the daemon removes its own stale ones there and in the
/// state directory (the env file already holds the token, so no write does it instead), and
/// leaves a person's files alone.
#[tokio::test(flavor = "multi_thread")]
async fn stale_temp_files_are_removed_at_start() {
    let (sb, token) = sandbox_and_token().await;
    let apps = tempfile::tempdir().unwrap();
    let env = apps.path().join(".env");
    write_private(&env, &format!("WHATSAPP_ACCESS_TOKEN={token}\n"));
    let (ws, state, _mail) = workspace(&sb, &token);
    let text = std::fs::read_to_string(&ws.config).unwrap().replacen(
        "\n[email]",
        &format!(
            "\n[[token.target]]\nname = \"env\"\nkind = \"dotenv\"\npath = \"{}\"\nreload = [\"/bin/true\"]\n\n[email]",
            env.display()
        ),
        1,
    );
    write_private(&ws.config, &text);
    std::fs::create_dir(&state).unwrap();
    let old = |p: &Path| {
        let f = std::fs::File::options().write(true).open(p).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
    };
    let left_in_app = apps.path().join("..env.tokenwarden-0123456789ab.tmp");
    let left_in_state = state.join(".state.json.tokenwarden-0123456789ab.tmp");
    let persons = apps.path().join(".env.tmp");
    for p in [&left_in_app, &left_in_state, &persons] {
        write_private(p, "WHATSAPP_ACCESS_TOKEN=EAAGleftover\n");
        old(p);
    }
    tokio::task::block_in_place(|| {
        run_until(&ws.config, "077", || state.join("state.json").exists())
    });
    assert!(!left_in_app.exists(), "the app directory's leftover");
    assert!(!left_in_state.exists(), "the state directory's leftover");
    assert!(persons.exists(), "not tokenwarden's");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        format!("WHATSAPP_ACCESS_TOKEN={token}\n")
    );
}

/// `groups/` (a group's last good member list) is made by the daemon the first time it lists
/// a group; under umask 000 it, like every directory of the state directory, is 0700 and its
/// list 0600: every record file goes through the one record store.
#[tokio::test(flavor = "multi_thread")]
async fn the_groups_directory_is_created_0700_under_umask_000() {
    let (sb, token) = sandbox_and_token().await;
    let (ws, state, _mail) = workspace(&sb, &token);
    let text = std::fs::read_to_string(&ws.config).unwrap();
    write_private(
        &ws.config,
        &format!(
            "{text}\n[[group]]\nname = \"cust\"\ndiscover = {{ kind = \"file\", path = \"{}\", key_prefix = \"cust/\" }}\n",
            ws.store.display()
        ),
    );
    let list = state.join("groups/cust.json");
    let stderr = tokio::task::block_in_place(|| {
        run_until(&ws.config, "000", || {
            list.exists() && state.join("state.json").exists()
        })
    });
    assert_eq!(mode(&state.join("groups")), 0o700, "{stderr}");
    assert_eq!(mode(&list), 0o600, "{stderr}");
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "[]");
}
