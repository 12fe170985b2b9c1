//! The process's exit codes: the one table of them. The README's "Exit codes" table lists the
//! same numbers (a test compares the two).

/// How a `tokenwarden` command ends. Some numbers mean different things to different commands
/// (1 is `check`'s WARNING and any other command's failure); the variants are named by the
/// general meaning, with the per-command ones as associated constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success; for `doctor`, every check passed; for `check`, every token OK.
    Ok = 0,
    /// A check failed, or a runtime error; for `check`, WARNING; for `rotate`, a target
    /// refused the new token for good.
    Failure = 1,
    /// For `check`, CRITICAL (clap exits 2 on wrong command-line usage as well).
    Critical = 2,
    /// For `check`, UNKNOWN (Graph unreachable, or tokenwarden's own credentials refused).
    Unknown = 3,
    /// `stage`: the value looks wrongly pasted; nothing staged (sysexits' EX_DATAERR).
    DataErr = 65,
    /// `rotate`, `stage`, `rollback`: try again later (sysexits' EX_TEMPFAIL).
    TempFail = 75,
    /// The configuration is invalid or a secret it references cannot be read (sysexits'
    /// EX_CONFIG); systemd's `RestartPreventExitStatus=78` keeps a broken config from
    /// restart-looping.
    Config = 78,
}

impl Exit {
    /// `check`'s WARNING.
    pub const WARNING: Exit = Exit::Failure;
    /// Every exit code, in the README's order.
    pub const ALL: [Exit; 7] = [
        Exit::Ok,
        Exit::Failure,
        Exit::Critical,
        Exit::Unknown,
        Exit::DataErr,
        Exit::TempFail,
        Exit::Config,
    ];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit for a number a library command chose (`check`'s plugin codes, the rotation
    /// commands' `Done::code`). Those numbers are all in the table (a test checks it); one
    /// that is not would be a failure.
    pub fn from_code(code: u8) -> Exit {
        Exit::ALL
            .into_iter()
            .find(|e| e.code() == code)
            .unwrap_or(Exit::Failure)
    }
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        std::process::ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_the_readmes() {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("## Exit codes")
            .nth(1)
            .expect("the README has an exit-code table");
        let section = section.split("\n## ").next().unwrap_or(section);
        let documented: Vec<u8> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| ")?.split(' ').next()?.parse().ok())
            .collect();
        let ours: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(documented, ours);
    }

    #[test]
    fn every_code_the_library_returns_is_in_the_table() {
        for e in Exit::ALL {
            assert_eq!(Exit::from_code(e.code()), e);
        }
        use crate::rotation::command::{EXIT_DATAERR, EXIT_TEMPFAIL};
        assert_eq!(Exit::from_code(EXIT_TEMPFAIL), Exit::TempFail);
        assert_eq!(Exit::from_code(EXIT_DATAERR), Exit::DataErr);
        // `check`'s codes are the plugin codes 0 to 3.
        for (code, exit) in [
            (0, Exit::Ok),
            (1, Exit::WARNING),
            (2, Exit::Critical),
            (3, Exit::Unknown),
        ] {
            assert_eq!(Exit::from_code(code), exit);
        }
        assert_eq!(Exit::from_code(42), Exit::Failure);
    }
}
