//! `tokenwarden import`: a token from standard input stored as the current version of its
//! file store, unless it looks wrongly pasted.

use std::path::PathBuf;

use super::{Exit, Step, failed, failed_with, load_config, read_token_from_stdin};
use crate::store::{self, SecretStore};

/// Stores the value read from standard input for `--token NAME`.
pub(super) async fn run(flag: Option<PathBuf>, name: &str) -> Step<Exit> {
    let cfg = load_config(flag)?;
    let Some(t) = cfg.token(name) else {
        eprintln!("error: no token named `{name}` in {}", cfg.path.display());
        return Err(Exit::Config);
    };
    let opened = store::Store::open(&t.store, &t.name, &cfg.state_dir)
        .await
        .map_err(|e| failed(&e))?;
    let store::Store::File(file) = opened else {
        return Err(failed_with(format!(
            "token `{name}` lives in AWS Secrets Manager: put it there with `aws secretsmanager put-secret-value`"
        )));
    };
    let value = read_token_from_stdin()?;
    let findings = crate::lint::check_value(value.expose());
    if !findings.is_empty() {
        for f in findings {
            eprintln!("error: {}", f.explain());
        }
        return Err(failed_with(format!(
            "refusing to store this value for `{name}`"
        )));
    }
    file.import_current(&value, jiff::Timestamp::now())
        .map_err(|e| failed(&e))?;
    println!(
        "stored token `{name}` (fingerprint {}) in {}; check it with `tokenwarden doctor --token {name}`",
        value.fingerprint(),
        file.describe()
    );
    Ok(Exit::Ok)
}
