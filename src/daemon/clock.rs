//! Where "now" comes from: the real clock, or one tests move forward with the sandbox's.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use jiff::Timestamp;

/// Where "now" comes from. The daemon asks on every wake; it never trusts a sleep's length.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// The real clock shifted by an adjustable offset: tests move time forward with it (together
/// with the sandbox's clock) instead of sleeping.
#[derive(Debug, Default, Clone)]
pub struct OffsetClock(Arc<AtomicI64>);

impl OffsetClock {
    /// Moves this clock forward by `secs`.
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> Timestamp {
        let t = Timestamp::now().as_second() + self.0.load(Ordering::SeqCst);
        Timestamp::from_second(t).expect("clock within range")
    }
}
