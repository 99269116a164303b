//! The time window of a log search: `since` (default the last 5 minutes) and `until`.
//! Either is an RFC 3339 time or a duration back from now (`5m`, `30m`, `1h`: the seed's
//! windows; any `<n>s|m|h|d`). `since` is in the window, `until` is not.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The window when `since` is not given: the seed's first choice.
pub const DEFAULT_SINCE: time::Duration = time::Duration::minutes(5);
/// The furthest back a duration goes: logs are kept by size, far less than this for a
/// service that logs anything (and no overflow with any `n`).
pub const MAX_BACK: time::Duration = time::Duration::days(366);

/// `[since, until)` as the fixed-width UTC times lines are written with
/// (`crate::store::format_time`), so comparing the texts compares the times.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub since: String,
    pub until: Option<String>,
}

impl Window {
    pub fn parse(
        since: Option<&str>,
        until: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Window, String> {
        let since = match since.map(str::trim).filter(|s| !s.is_empty()) {
            None => now - DEFAULT_SINCE,
            Some(s) => instant("since", s, now)?,
        };
        let until = match until.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(u) => Some(instant("until", u, now)?),
        };
        if let Some(u) = until
            && u <= since
        {
            return Err(format!(
                "since ({}) must be before until ({})",
                crate::store::format_time(since),
                crate::store::format_time(u)
            ));
        }
        Ok(Window {
            since: crate::store::format_time(since),
            until: until.map(crate::store::format_time),
        })
    }

    pub fn contains(&self, time: &str) -> bool {
        time >= self.since.as_str() && self.until.as_deref().is_none_or(|u| time < u)
    }
}

fn instant(field: &str, text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let bad = || {
        format!(
            "{field}: {text:?} is neither an RFC 3339 time (2025-01-31T12:00:00Z) nor a duration back from now (5m, 30m, 1h; <n>s|m|h|d)"
        )
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    if !text.is_char_boundary(split) {
        return Err(bad());
    }
    let (n, unit) = text.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let unit_secs: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(format!(
            "{field}: {text:?}; a duration back from now is positive"
        ));
    }
    if n > MAX_BACK.whole_seconds() / unit_secs {
        return Err(format!(
            "{field}: {text:?} is further back than {} days",
            MAX_BACK.whole_days()
        ));
    }
    Ok(now - time::Duration::seconds(n * unit_secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-03-01 12:00:00 UTC);

    #[test]
    fn windows_are_durations_back_from_now_or_rfc_3339_times() {
        for (since, until, want_since, want_until) in [
            (None, None, "2025-03-01T11:55:00.000000Z", None),
            (Some(""), None, "2025-03-01T11:55:00.000000Z", None),
            (Some("5m"), None, "2025-03-01T11:55:00.000000Z", None),
            (Some("30m"), None, "2025-03-01T11:30:00.000000Z", None),
            (Some("1h"), None, "2025-03-01T11:00:00.000000Z", None),
            (Some("90s"), None, "2025-03-01T11:58:30.000000Z", None),
            (Some("2d"), None, "2025-02-27T12:00:00.000000Z", None),
            (
                Some("2025-03-01T10:00:00Z"),
                Some("2025-03-01T11:00:00.5+01:00"),
                "2025-03-01T10:00:00.000000Z",
                Some("2025-03-01T10:00:00.500000Z"),
            ),
            (
                Some("1h"),
                Some("10m"),
                "2025-03-01T11:00:00.000000Z",
                Some("2025-03-01T11:50:00.000000Z"),
            ),
        ] {
            let w = Window::parse(since, until, NOW).unwrap();
            assert_eq!(w.since, want_since, "{since:?}");
            assert_eq!(w.until.as_deref(), want_until, "{until:?}");
        }
    }

    #[test]
    fn bad_windows_are_refused_naming_the_field() {
        for (since, until, says) in [
            (Some("5"), None, "since: \"5\" is neither"),
            (Some("m"), None, "since: \"m\" is neither"),
            (Some("5x"), None, "neither"),
            (Some("-5m"), None, "positive"),
            (Some("0m"), None, "positive"),
            (Some("400d"), None, "further back than 366 days"),
            (Some("99999999999999999999h"), None, "neither"),
            (Some("9223372036854775807h"), None, "further back"),
            (Some("5é"), None, "neither"),
            (Some("yesterday"), None, "neither"),
            (None, Some("tomorrow"), "until: \"tomorrow\""),
            (Some("5m"), Some("10m"), "must be before until"),
            (
                Some("2025-03-01T10:00:00Z"),
                Some("2025-03-01T10:00:00Z"),
                "must be before",
            ),
        ] {
            let e = Window::parse(since, until, NOW).expect_err(&format!("{since:?}"));
            assert!(e.contains(says), "{since:?} {until:?}: {e}");
        }
    }

    #[test]
    fn since_is_in_the_window_and_until_is_not() {
        let w = Window::parse(
            Some("2025-03-01T10:00:00Z"),
            Some("2025-03-01T11:00:00Z"),
            NOW,
        )
        .unwrap();
        assert!(!w.contains("2025-03-01T09:59:59.999999Z"));
        assert!(w.contains("2025-03-01T10:00:00.000000Z"));
        assert!(w.contains("2025-03-01T10:59:59.999999Z"));
        assert!(!w.contains("2025-03-01T11:00:00.000000Z"));
    }
}
