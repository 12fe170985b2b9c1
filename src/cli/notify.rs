//! `tokenwarden notify test [--channel NAME]`: a clearly marked test alert through every
//! channel (email and each `[[receiver]]`), or one, straight to the receiver (no queue), and
//! per channel the receiver's own answer: what on-call wants to see before trusting a pager.

use std::path::PathBuf;

use super::{Exit, Step, load_config};

/// The name `--channel` gives the `[email]` channel.
pub const EMAIL: &str = "email";

/// Sends the test alert and prints one line per channel; exit 0 when every channel took it,
/// 1 when one did not, 78 for a config problem or an unknown `--channel`.
pub(super) async fn test(flag: Option<PathBuf>, only: Option<String>) -> Step<Exit> {
    let cfg = load_config(flag)?;
    let names: Vec<&str> = cfg
        .email
        .iter()
        .map(|_| EMAIL)
        .chain(cfg.receivers.iter().map(|r| r.name.as_str()))
        .collect();
    if names.is_empty() {
        eprintln!(
            "error: {} has no channel: add [email] or a [[receiver]]",
            cfg.path.display()
        );
        return Err(Exit::Config);
    }
    if let Some(o) = &only
        && !names.contains(&o.as_str())
    {
        eprintln!(
            "error: no channel named `{o}` in {} (channels: {})",
            cfg.path.display(),
            names.join(", ")
        );
        return Err(Exit::Config);
    }
    let now = jiff::Timestamp::now();
    let host = crate::channel::host_name();
    let headline = format!("test alert from tokenwarden on {host}: nothing is wrong");
    let a = crate::alert::HostAlert {
        word: "TEST",
        headline: &headline,
        lead: format!(
            "This is a test alert sent at {now} by `tokenwarden notify test` on {host}, to check that on-call receives tokenwarden's alerts here."
        ),
        facts: vec!["No token is affected.".into()],
        will_do: vec![],
        todo: vec!["Nothing: if you can read this, this channel works.".into()],
    };
    let rendered = crate::alert::render_host(&a);
    let id = format!("test-{}", now.as_second());
    let mut failures = 0;
    if cfg.email.is_some() && only.as_deref().is_none_or(|o| o == EMAIL) {
        let email =
            crate::notify::Email::from_rendered(id.clone(), "tokenwarden", rendered.clone());
        let result = match cfg.email.as_ref().map(crate::notify::Mailer::new) {
            Some(Ok(m)) => m.send(&email).await.map_err(|e| e.to_string()),
            Some(Err(e)) => Err(e.to_string()),
            None => Ok(()),
        };
        failures += usize::from(report(EMAIL, "email", result));
    }
    let channels = match crate::channel::Channels::open(&cfg.state_dir, &cfg.receivers) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: [[receiver]]: {e}");
            return Err(Exit::Config);
        }
    };
    let signal = crate::channel::Signal {
        family: crate::channel::family::TEST,
        severity: crate::channel::Severity::Info,
        status: crate::channel::Status::Firing,
        state: "TEST",
        fingerprint: None,
        resolves: &[],
    };
    let mut alert = crate::channel::Alert::new(&id, "tokenwarden", &rendered.summary, &signal, now);
    alert.test = true;
    let client = crate::target::http_client();
    for (name, kind, result) in channels.test(&client, &alert, only.as_deref(), now).await {
        failures += usize::from(report(&name, kind, result.map_err(|e| e.to_string())));
    }
    Ok(if failures == 0 {
        Exit::Ok
    } else {
        Exit::Failure
    })
}

/// Prints one channel's outcome; returns whether it failed.
fn report(name: &str, kind: &str, result: Result<(), String>) -> bool {
    match result {
        Ok(()) => {
            println!("{name} ({kind}): delivered");
            false
        }
        Err(e) => {
            println!("{name} ({kind}): NOT delivered: {e}");
            true
        }
    }
}
