//! Adaptive slowing of batched checks, fed with Meta's usage headers. Pure: no IO, no clock.
//!
//! Meta reports how much of a rate limit an app has used in `X-App-Usage`
//! (`{"call_count":N,"total_time":N,"total_cputime":N}`, percentages) and, for calls on
//! business assets, `X-Business-Use-Case-Usage` (the same fields per business id). Past 100 %
//! calls fail with a rate-limit error for a while, so a fleet check slows down before that.
//!
//! The rule, applied to the highest percentage of every field of both headers in each answer:
//!
//! - **above 80 %**: in-flight batches drop to `max × (100 − u) / 20` (at least 1: half of
//!   `max` at 90 %, 1 from 96 % with `max` = 8), and a pause of `max_pause × (u − 80) / 20`
//!   separates the starts of two batches (a quarter of `max_pause` at 85 %, all of it at 100 %).
//!   Neither ever loosens while usage stays above 80 %: a lower reading only keeps the current
//!   setting.
//! - **from 50 % to 80 %**: hold.
//! - **below 50 %**: recover gradually: one more batch in flight per answer (up to `max`), and
//!   the pause halves (dropped under 10 ms).
//!
//! A rate-limit error on a whole batch counts as a reading of 100 %.

use std::time::Duration;

use reqwest::header::HeaderMap;

use super::error::loose_i64;

/// Usage (percent) above which the throttle slows down.
pub const SLOW_ABOVE: u32 = 80;
/// Usage (percent) below which it recovers.
pub const RECOVER_BELOW: u32 = 50;
/// The pause between batch starts at 100 % usage, unless set with [`Throttle::with_max_pause`].
pub const DEFAULT_MAX_PAUSE: Duration = Duration::from_secs(5);
/// A pause shorter than this is dropped while recovering.
const NEGLIGIBLE_PAUSE: Duration = Duration::from_millis(10);

/// How many batches may be in flight and how long to wait between two starts, adapted to the
/// usage Meta reports (see the module documentation for the rule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Throttle {
    max: usize,
    allowed: usize,
    pause: Duration,
    max_pause: Duration,
}

impl Throttle {
    /// Starts at full speed: `max_in_flight` batches (at least 1), no pause.
    pub fn new(max_in_flight: usize) -> Throttle {
        let max = max_in_flight.max(1);
        Throttle {
            max,
            allowed: max,
            pause: Duration::ZERO,
            max_pause: DEFAULT_MAX_PAUSE,
        }
    }

    /// Sets the pause at 100 % usage (default [`DEFAULT_MAX_PAUSE`]).
    pub fn with_max_pause(mut self, max_pause: Duration) -> Throttle {
        self.max_pause = max_pause;
        self.pause = self.pause.min(max_pause);
        self
    }

    /// The configured most batches in flight.
    pub fn max_in_flight(&self) -> usize {
        self.max
    }

    /// Batches allowed in flight now.
    pub fn in_flight(&self) -> usize {
        self.allowed
    }

    /// The wait between the starts of two batches now.
    pub fn pause(&self) -> Duration {
        self.pause
    }

    /// Takes one usage reading (percent; above 100 counts as 100).
    pub fn observe(&mut self, usage_percent: u32) {
        let u = usage_percent.min(100);
        if u > SLOW_ABOVE {
            let room = (100 - u) as usize;
            let target = (self.max * room / 20).max(1);
            self.allowed = self.allowed.min(target);
            let pause = self.max_pause * (u - SLOW_ABOVE) / 20;
            self.pause = self.pause.max(pause);
        } else if u < RECOVER_BELOW {
            self.allowed = (self.allowed + 1).min(self.max);
            self.pause /= 2;
            if self.pause < NEGLIGIBLE_PAUSE {
                self.pause = Duration::ZERO;
            }
        }
    }
}

/// The highest percentage in `X-App-Usage` and `X-Business-Use-Case-Usage`, if either is
/// present and readable. Numbers may come as JSON numbers or strings; negative ones count as 0.
pub(crate) fn usage_percent(headers: &HeaderMap) -> Option<u32> {
    const FIELDS: [&str; 3] = ["call_count", "total_time", "total_cputime"];
    let read = |name: &str| -> Option<serde_json::Value> {
        serde_json::from_str(headers.get(name)?.to_str().ok()?).ok()
    };
    let of_object = |v: &serde_json::Value| -> Option<i64> {
        FIELDS
            .iter()
            .filter_map(|f| v.get(*f).and_then(loose_i64))
            .max()
    };
    let app = read("x-app-usage").as_ref().and_then(of_object);
    let buc = read("x-business-use-case-usage").and_then(|v| {
        v.as_object()?
            .values()
            .filter_map(|entries| entries.as_array())
            .flatten()
            .filter_map(of_object)
            .max()
    });
    let max = app.into_iter().chain(buc).max()?;
    Some(max.clamp(0, i64::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A throttle of 8 with a 1-second pause at 100 %, after each reading in turn: the
    /// resulting (in flight, pause in ms).
    #[test]
    fn readings_move_concurrency_and_pause_by_the_rule() {
        type Case = (&'static str, &'static [u32], &'static [(usize, u64)]);
        let cases: &[Case] = &[
            (
                "quiet stays at full speed",
                &[0, 30, 49],
                &[(8, 0), (8, 0), (8, 0)],
            ),
            ("50 to 80 holds", &[50, 80], &[(8, 0), (8, 0)]),
            ("81 trims a little", &[81], &[(7, 50)]),
            ("90 halves", &[90], &[(4, 500)]),
            ("95 leaves a quarter", &[95], &[(2, 750)]),
            ("100 and above: one", &[100, 250], &[(1, 1000), (1, 1000)]),
            (
                "a lower reading above 80 never loosens",
                &[99, 85, 81],
                &[(1, 950), (1, 950), (1, 950)],
            ),
            (
                "the hold band keeps the slow setting",
                &[90, 70, 50],
                &[(4, 500), (4, 500), (4, 500)],
            ),
            (
                "below 50 recovers one batch and half the pause per reading",
                &[100, 40, 40, 40, 10, 10, 10, 10, 10, 10, 10],
                &[
                    (1, 1000),
                    (2, 500),
                    (3, 250),
                    (4, 125),
                    (5, 62),
                    (6, 31),
                    (7, 15),
                    (8, 0),
                    (8, 0),
                    (8, 0),
                    (8, 0),
                ],
            ),
            (
                "rising again after a partial recovery",
                &[100, 0, 0, 88],
                &[(1, 1000), (2, 500), (3, 250), (3, 400)],
            ),
        ];
        for (name, readings, want) in cases {
            let mut t = Throttle::new(8).with_max_pause(Duration::from_secs(1));
            for (i, (u, (flight, pause_ms))) in readings.iter().zip(want.iter()).enumerate() {
                t.observe(*u);
                assert_eq!(t.in_flight(), *flight, "{name}: reading {i} ({u} %)");
                let pause = t.pause().as_millis() as u64;
                assert!(
                    pause.abs_diff(*pause_ms) <= 1,
                    "{name}: reading {i} ({u} %): pause {pause} ms, want {pause_ms}"
                );
            }
        }
    }

    #[test]
    fn one_in_flight_is_the_floor_and_zero_means_one() {
        let mut t = Throttle::new(0);
        assert_eq!((t.max_in_flight(), t.in_flight()), (1, 1));
        t.observe(100);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.pause(), DEFAULT_MAX_PAUSE);
        t.observe(0);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.pause(), DEFAULT_MAX_PAUSE / 2);
        let mut big = Throttle::new(20).with_max_pause(100 * MS);
        big.observe(99);
        assert_eq!(big.in_flight(), 1);
        assert_eq!(big.pause(), 95 * MS);
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn usage_is_the_highest_field_of_either_header() {
        assert_eq!(usage_percent(&HeaderMap::new()), None);
        assert_eq!(
            usage_percent(&headers(&[(
                "x-app-usage",
                r#"{"call_count":12,"total_time":40,"total_cputime":3}"#
            )])),
            Some(40)
        );
        let buc = r#"{"102290129340398":[{"type":"whatsapp_business_management","call_count":"91","total_cputime":28,"total_time":36,"estimated_time_to_regain_access":0}],"5":[{"type":"x","call_count":7}]}"#;
        assert_eq!(
            usage_percent(&headers(&[
                ("x-app-usage", r#"{"call_count":12}"#),
                ("x-business-use-case-usage", buc),
            ])),
            Some(91)
        );
        assert_eq!(
            usage_percent(&headers(&[("x-business-use-case-usage", buc)])),
            Some(91)
        );
        for junk in ["", "nope", "[1,2]", r#"{"call_count":"lots"}"#, "{}"] {
            assert_eq!(
                usage_percent(&headers(&[("x-app-usage", junk)])),
                None,
                "{junk:?}"
            );
        }
        assert_eq!(
            usage_percent(&headers(&[("x-app-usage", r#"{"call_count":-5}"#)])),
            Some(0)
        );
    }
}
