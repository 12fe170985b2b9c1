//! Times as people read them: UTC, Meta's Pacific time, and "in 7 days".
//!
//! Meta's own expiry messages quote Pacific time (`Saturday, 29-Jun-24 09:00:00 PDT`), so
//! tokenwarden gives both, letting on-call match its mail to what they see from Meta. The time
//! zone database is bundled, so this works on hosts without tzdata.

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `2027-01-25 10:00 UTC`.
pub fn utc(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

/// `Monday, 25-Jan-27 02:00:00 PST`, the form of Meta's messages.
pub fn pacific(ts: Timestamp) -> String {
    match TimeZone::get("America/Los_Angeles") {
        Ok(tz) => ts
            .to_zoned_datetime(tz)
            .strftime("%A, %d-%b-%y %H:%M:%S %Z")
            .to_string(),
        Err(_) => utc(ts),
    }
}

/// A span in the largest sensible unit: `59 days`, `5 hours`, `12 minutes`, `40 seconds`.
pub fn span(secs: i64) -> String {
    let s = secs.unsigned_abs();
    let (n, unit) = if s >= 2 * 86_400 {
        (s / 86_400, "day")
    } else if s >= 2 * 3600 {
        (s / 3600, "hour")
    } else if s >= 120 {
        (s / 60, "minute")
    } else {
        (s, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_meta_and_humans() {
        // 2024-06-29 16:00 UTC is 09:00 PDT, the example in Meta's 463 message.
        let ts = Timestamp::from_second(1_719_676_800).unwrap();
        assert_eq!(utc(ts), "2024-06-29 16:00 UTC");
        assert_eq!(pacific(ts), "Saturday, 29-Jun-24 09:00:00 PDT");
        let winter = Timestamp::from_second(1_668_613_551).unwrap();
        assert!(pacific(winter).ends_with("PST"), "{}", pacific(winter));
        assert_eq!(span(59 * 86_400 + 5), "59 days");
        assert_eq!(span(86_400), "24 hours");
        assert_eq!(span(3600), "60 minutes");
        assert_eq!(span(1), "1 second");
        assert_eq!(span(-7200), "2 hours");
    }
}
