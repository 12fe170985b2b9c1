//! Crash points for the crash tests: compiled in only with the `failpoints` cargo feature.
//!
//! `hit("rotation.after_promote")` aborts the process at once when the environment variable
//! `TOKENWARDEN_FAILPOINT` names that point, as a power cut or `kill -9` would stop it there.
//! Without the feature, `hit` is an empty inline function and the variable is never read, so
//! a production binary cannot be stopped this way.

/// The environment variable naming the point to crash at.
pub const ENV: &str = "TOKENWARDEN_FAILPOINT";

/// Aborts the process if `TOKENWARDEN_FAILPOINT` is `point`.
#[cfg(feature = "failpoints")]
pub fn hit(point: &str) {
    if std::env::var(ENV).is_ok_and(|p| p == point) {
        eprintln!("failpoint {point}: aborting");
        std::process::abort();
    }
}

/// Does nothing: failpoints are compiled out.
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_point: &str) {}
