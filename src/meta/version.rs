//! Graph API versions and the dates Meta retires them (reference section 6).
//!
//! A version works until two years after its successor's release. tokenwarden pins one version
//! and warns when it is within [`WARN_DAYS`] of its end, because an unversioned or retired call
//! silently lands on another version with other behaviour. Pure: no IO, `today` is an argument.

use std::fmt;
use std::str::FromStr;

use jiff::civil::{Date, date};

/// How many days before a version's end tokenwarden starts warning.
pub const WARN_DAYS: i32 = 90;

/// Known end dates. A version newer than the last entry has no announced end yet.
const END_DATES: &[(u32, Date)] = &[
    (20, date(2026, 9, 24)),
    (21, date(2027, 1, 21)),
    (22, date(2027, 5, 20)),
    (23, date(2027, 10, 8)),
    (24, date(2028, 2, 18)),
    (25, date(2028, 7, 29)),
];

/// The newest version this build knows to have been released.
const NEWEST_RELEASED: u32 = 26;

/// A pinned Graph API version such as `v25.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    major: u32,
}

/// The default pinned version: the newest whose end date is known, so the warning works.
pub const DEFAULT_VERSION: ApiVersion = ApiVersion { major: 25 };

impl FromStr for ApiVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected a Graph API version such as \"v25.0\", found {s:?}");
        let rest = s.strip_prefix('v').ok_or_else(bad)?;
        let major = rest.strip_suffix(".0").ok_or_else(bad)?;
        let major: u32 = major.parse().map_err(|_| bad())?;
        Ok(ApiVersion { major })
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.0", self.major)
    }
}

/// Where a version stands on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionStatus {
    /// Supported, with its end date if announced.
    Supported(Option<Date>),
    /// Supported, but ends within [`WARN_DAYS`].
    EndingSoon {
        /// Last day.
        ends: Date,
        /// Days from today.
        days_left: i32,
    },
    /// Past its end: calls are served by another version.
    Ended(Date),
    /// Newer than anything this build knows.
    Unknown,
}

impl ApiVersion {
    /// The status of this version on `today`.
    pub fn status(self, today: Date) -> VersionStatus {
        let end = END_DATES
            .iter()
            .find(|(m, _)| *m == self.major)
            .map(|(_, d)| *d);
        match end {
            Some(ends) if today > ends => VersionStatus::Ended(ends),
            Some(ends) => {
                let days_left = (ends - today).get_days();
                if days_left <= WARN_DAYS {
                    VersionStatus::EndingSoon { ends, days_left }
                } else {
                    VersionStatus::Supported(Some(ends))
                }
            }
            None if self.major < END_DATES[0].0 => VersionStatus::Ended(END_DATES[0].1),
            None if self.major <= NEWEST_RELEASED => VersionStatus::Supported(None),
            None => VersionStatus::Unknown,
        }
    }
}

impl fmt::Display for VersionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionStatus::Supported(Some(d)) => write!(f, "supported until {d}"),
            VersionStatus::Supported(None) => write!(f, "supported; no end date announced yet"),
            VersionStatus::EndingSoon { ends, days_left } => {
                write!(
                    f,
                    "ends on {ends}, in {days_left} days: move `api_version` to a newer version"
                )
            }
            VersionStatus::Ended(d) => write!(
                f,
                "ended on {d}: Meta answers with another version; set a supported `api_version`"
            ),
            VersionStatus::Unknown => write!(f, "not a released version known to this tokenwarden"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_at_boundaries() {
        let v21: ApiVersion = "v21.0".parse().unwrap();
        assert_eq!(
            v21.status(date(2026, 10, 1)),
            VersionStatus::Supported(Some(date(2027, 1, 21)))
        );
        assert_eq!(
            v21.status(date(2026, 10, 23)),
            VersionStatus::EndingSoon {
                ends: date(2027, 1, 21),
                days_left: 90
            }
        );
        assert_eq!(
            v21.status(date(2027, 1, 21)),
            VersionStatus::EndingSoon {
                ends: date(2027, 1, 21),
                days_left: 0
            }
        );
        assert_eq!(
            v21.status(date(2027, 1, 22)),
            VersionStatus::Ended(date(2027, 1, 21))
        );
        assert!(matches!(
            "v19.0"
                .parse::<ApiVersion>()
                .unwrap()
                .status(date(2026, 1, 1)),
            VersionStatus::Ended(_)
        ));
        assert_eq!(
            "v26.0"
                .parse::<ApiVersion>()
                .unwrap()
                .status(date(2026, 11, 26)),
            VersionStatus::Supported(None)
        );
        assert_eq!(
            "v40.0"
                .parse::<ApiVersion>()
                .unwrap()
                .status(date(2026, 11, 26)),
            VersionStatus::Unknown
        );
    }

    #[test]
    fn parse_rejects_other_forms() {
        for bad in ["25.0", "v25", "v25.1", "latest", ""] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad}");
        }
        assert_eq!(DEFAULT_VERSION.to_string(), "v25.0");
    }
}
