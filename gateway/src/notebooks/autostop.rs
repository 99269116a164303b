//! Auto-stop: a running notebook's lease (`auto_stop.duration_hours`, seed AS-01..05).
//!
//! ```text
//! → RUNNING          stop_at = now + duration (if auto-stop is on), stored: survives restarts
//! stop_at − warning  StopNotebookLeaseExpired "will automatically stop" (once per deadline)
//! renew              stop_at = max(stop_at, now) + hours (at most 72 h ahead); warning again
//! stop_at            RUNNING → STOPPING with reason lease_expired: event, audit row, stop
//! ```
//!
//! One loop checks every running notebook each second, so a deadline that passed while the
//! gateway was down is acted on right after it starts. Idle stops come next and share the
//! warning and the stop path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::{Lifecycle, RUNNING};
use crate::events::{self, EventKind};
use crate::store::{self, notebooks as rows};

/// How often deadlines are checked.
const TICK: Duration = Duration::from_secs(1);

/// Why the gateway stopped a notebook by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    LeaseExpired,
    Idle,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::LeaseExpired => "lease_expired",
            Reason::Idle => "idle",
        }
    }

    pub fn event(self) -> EventKind {
        match self {
            Reason::LeaseExpired => EventKind::StopNotebookLeaseExpired,
            Reason::Idle => EventKind::StopNotebookResourceIdle,
        }
    }
}

/// Automatic stops since the gateway started, per reason (for `/metrics`).
static STOPS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

pub fn count_stop(reason: Reason) {
    STOPS[reason as usize].fetch_add(1, Ordering::Relaxed);
}

/// `(reason, count)` of the automatic stops since start.
pub fn stop_counts() -> [(&'static str, u64); 2] {
    [Reason::LeaseExpired, Reason::Idle]
        .map(|r| (r.as_str(), STOPS[r as usize].load(Ordering::Relaxed)))
}

/// The deadline `hours` lease hours after `from`.
pub fn deadline(from: OffsetDateTime, hours: i64, lease_hour_secs: u64) -> OffsetDateTime {
    let secs = i64::try_from(lease_hour_secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(hours);
    from.saturating_add(time::Duration::seconds(secs))
}

pub fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

/// Seconds left until `stop_at` (negative once it passed).
pub fn remaining_seconds(stop_at: &str) -> Option<i64> {
    let at = parse_time(stop_at)?;
    Some((at - OffsetDateTime::now_utc()).whole_seconds())
}

/// Checks deadlines every second until `stop` is cancelled.
pub async fn run_loop(lc: Lifecycle, stop: CancellationToken) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = check(&lc).await {
            tracing::warn!(
                error = format!("{e:#}"),
                "checking auto-stop deadlines failed"
            );
        }
    }
}

/// One pass: warn before deadlines, stop at them.
pub async fn check(lc: &Lifecycle) -> anyhow::Result<()> {
    let running = {
        let mut conn = lc.store().pool.acquire().await?;
        rows::in_statuses(&mut conn, &[RUNNING]).await?
    };
    let now = OffsetDateTime::now_utc();
    let warning =
        time::Duration::seconds(i64::try_from(lc.settings().stop_warning_secs).unwrap_or(i64::MAX));
    for row in running {
        if !row.auto_stop_enabled {
            continue;
        }
        let Some(stop_at) = row.stop_at.as_deref().and_then(parse_time) else {
            continue;
        };
        let at = store::format_time(stop_at);
        if now >= stop_at {
            let detail = format!(
                "reason {}: the auto-stop time {at} was reached ({} h lease)",
                Reason::LeaseExpired.as_str(),
                row.auto_stop_hours
            );
            lc.auto_stop(&row, Reason::LeaseExpired, &detail).await?;
        } else if now >= stop_at - warning && row.stop_warned_at.is_none() {
            let mut tx = lc.store().write().await?;
            if rows::mark_stop_warned(&mut tx, &row.id, &store::now()).await? {
                let detail = format!(
                    "will stop at {at} unless renewed (atelier notebook renew {})",
                    row.name
                );
                events::record(
                    &mut tx,
                    &row.id,
                    EventKind::StopNotebookLeaseExpired,
                    Some(&detail),
                )
                .await?;
                tracing::info!(notebook = %row.id, stop_at = %at, "auto-stop warning");
            }
            tx.commit().await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_scale_with_the_lease_hour() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        assert_eq!(deadline(t0, 2, 3600) - t0, time::Duration::hours(2));
        assert_eq!(deadline(t0, 3, 5) - t0, time::Duration::seconds(15));
        // No overflow panics on absurd values.
        let _ = deadline(t0, i64::MAX, u64::MAX);
    }

    #[test]
    fn remaining_time_is_signed() {
        let past = store::format_time(OffsetDateTime::now_utc() - time::Duration::seconds(30));
        assert!(remaining_seconds(&past).unwrap() <= -29);
        let future = store::format_time(OffsetDateTime::now_utc() + time::Duration::seconds(90));
        let left = remaining_seconds(&future).unwrap();
        assert!((1..=90).contains(&left), "{left}");
        assert_eq!(remaining_seconds("not a time"), None);
    }

    #[test]
    fn stops_are_counted_per_reason() {
        let before = stop_counts();
        count_stop(Reason::Idle);
        let after = stop_counts();
        assert_eq!(after[1].0, "idle");
        assert_eq!(after[1].1, before[1].1 + 1);
        assert_eq!(after[0].1, before[0].1);
    }
}
