//! The time the lifecycle reads: the system's, or, in tests, one they move by hand, so a
//! deadline case (a lease that runs out, an idle timeout) needs no sleep.

use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// Now, as the lifecycle sees it.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that moves only when told to: starts at the system's now (a whole second, as the
/// store writes times), then [`ManualClock::advance`]s.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<OffsetDateTime>>);

impl ManualClock {
    pub fn new() -> Self {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_nanosecond(0).unwrap_or(now);
        ManualClock(Arc::new(Mutex::new(now)))
    }

    pub fn advance(&self, by: time::Duration) {
        let mut now = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let c = ManualClock::new();
        let t0 = c.now();
        assert_eq!(c.now(), t0);
        c.advance(time::Duration::hours(3));
        assert_eq!(c.now() - t0, time::Duration::hours(3));
        let shared = c.clone();
        shared.advance(time::Duration::seconds(1));
        assert_eq!(c.now() - t0, time::Duration::seconds(3 * 3600 + 1));
    }
}
