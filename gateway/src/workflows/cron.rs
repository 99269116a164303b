//! A schedule's times (`PUT /v1/workflows/{wf}/schedule`): a standard 5-field cron pattern
//! (`minute hour day-of-month month day-of-week`, `croner`'s Vixie-cron reading: names such
//! as `MON` and `JAN`, ranges, steps, lists, `@daily` and the like) read in an IANA time zone
//! (`jiff`, with its own copy of the tz database). Pure: the caller gives the instant to
//! count from.
//!
//! Daylight saving time, as `croner` does it (the Open Cron Pattern Specification): a time
//! that a clock skips (02:30 on the night the clocks go forward) fires once at the first
//! instant after the jump; a time that happens twice (02:30 on the night they go back) fires
//! once, at the first of the two, for a pattern with a fixed hour; a pattern that runs
//! every hour (`0 * * * *`) fires on both.
//!
//! A gateway started with `cron_seconds` (env `ATELIER_CRON_SECONDS`, tests and demos only)
//! also takes a 6-field pattern whose first field is the second, so a test need not wait
//! for minutes.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::DefinitionError;

/// The names of a pattern's fields, in order (without the test-only seconds field).
const FIELDS: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];

/// A pattern longer than this is refused before it is parsed (the longest useful one, every
/// minute listed, is under 200 characters).
const MAX_PATTERN: usize = 256;

/// A checked pattern in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

/// The time zone by its IANA name (`Europe/Paris`, `UTC`).
pub fn time_zone(name: &str) -> Result<TimeZone, DefinitionError> {
    let bad = || {
        DefinitionError::new(
            "timezone",
            format!(
                "{:?} is not a time zone; give an IANA name such as Europe/Paris, America/New_York or UTC",
                name.chars().take(80).collect::<String>()
            ),
        )
    };
    if name.is_empty() || name.len() > 64 {
        return Err(bad());
    }
    TimeZone::get(name).map_err(|_| bad())
}

fn parser(seconds: bool) -> CronParser {
    CronParser::builder()
        .seconds(if seconds {
            Seconds::Optional
        } else {
            Seconds::Disallowed
        })
        .year(Year::Disallowed)
        .build()
}

/// Parses `pattern` (5 fields; 6 with a leading seconds field when `seconds`), naming the
/// field that is wrong.
pub fn parse_pattern(pattern: &str, seconds: bool) -> Result<Cron, DefinitionError> {
    let err = |m: String| DefinitionError::new("cron", m);
    let pattern = pattern.trim();
    if pattern.is_empty() {
        return Err(err(
            "empty; give 5 fields: minute hour day-of-month month day-of-week (\"0 3 * * *\": every day at 03:00)".into(),
        ));
    }
    if pattern.len() > MAX_PATTERN {
        return Err(err(format!(
            "{} characters, at most {MAX_PATTERN}",
            pattern.len()
        )));
    }
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let nickname = pattern.starts_with('@');
    let names: Vec<&str> = match (nickname, fields.len(), seconds) {
        (true, 1, _) => Vec::new(),
        (false, 5, _) => FIELDS.to_vec(),
        (false, 6, true) => std::iter::once("second").chain(FIELDS).collect(),
        (true, _, _) => {
            return Err(err(format!(
                "{pattern:?}: a nickname (@hourly, @daily, @weekly, @monthly, @yearly) stands alone"
            )));
        }
        (false, n, _) => {
            return Err(err(format!(
                "{n} fields; give 5: minute hour day-of-month month day-of-week (\"0 3 * * *\": every day at 03:00)"
            )));
        }
    };
    let p = parser(seconds);
    match p.parse(pattern) {
        Ok(c) => Ok(c),
        Err(e) => {
            // Which field: each one alone, the others `*`.
            for (i, name) in names.iter().enumerate() {
                let alone: Vec<&str> = (0..names.len())
                    .map(|j| if j == i { fields[j] } else { "*" })
                    .collect();
                if let Err(e) = p.parse(&alone.join(" ")) {
                    return Err(err(format!(
                        "the {name} field {:?}: {}",
                        fields[i],
                        describe(&e)
                    )));
                }
            }
            Err(err(format!("{pattern:?}: {}", describe(&e))))
        }
    }
}

/// What a refusal of `croner`'s means, without its type names.
fn describe(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
        E::TimeSearchLimitExceeded => "it never matches a real date".into(),
        other => other.to_string(),
    }
}

impl Schedule {
    pub fn new(pattern: &str, timezone: &str, seconds: bool) -> Result<Schedule, DefinitionError> {
        let cron = parse_pattern(pattern, seconds)?;
        let tz = time_zone(timezone)?;
        let s = Schedule { cron, tz };
        // A pattern that never matches (`0 0 30 2 *`) is refused now, not found out later.
        s.next_after(Timestamp::UNIX_EPOCH)
            .map_err(|m| DefinitionError::new("cron", m))?;
        Ok(s)
    }

    /// The first time the schedule fires strictly after `after`.
    pub fn next_after(&self, after: Timestamp) -> Result<Timestamp, String> {
        let z = after.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&z, false)
            .map(|z| z.timestamp())
            .map_err(|e| describe(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(pattern: &str, tz: &str, after: &str) -> String {
        Schedule::new(pattern, tz, false)
            .unwrap()
            .next_after(ts(after))
            .unwrap()
            .to_string()
    }

    /// The next `n` firings after `after`, in UTC.
    fn series(pattern: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::new(pattern, tz, false).unwrap();
        let mut t = ts(after);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t).unwrap();
            out.push(t.to_string());
        }
        out
    }

    #[test]
    fn next_due_in_utc_and_in_a_time_zone() {
        let cases = [
            // pattern, tz, after, next (UTC)
            (
                "0 3 * * *",
                "UTC",
                "2026-12-07T20:00:00Z",
                "2026-12-08T03:00:00Z",
            ),
            (
                "0 3 * * *",
                "UTC",
                "2026-12-08T02:59:59.999Z",
                "2026-12-08T03:00:00Z",
            ),
            // Strictly after: the due instant itself gives the next day's.
            (
                "0 3 * * *",
                "UTC",
                "2026-12-08T03:00:00Z",
                "2026-12-09T03:00:00Z",
            ),
            (
                "0 3 * * *",
                "UTC",
                "2026-12-08T03:00:00.5Z",
                "2026-12-09T03:00:00Z",
            ),
            // Paris is UTC+1 in winter, UTC+2 in summer.
            (
                "0 3 * * *",
                "Europe/Paris",
                "2026-12-07T20:00:00Z",
                "2026-12-08T02:00:00Z",
            ),
            (
                "0 3 * * *",
                "Europe/Paris",
                "2026-07-01T00:00:00Z",
                "2026-07-01T01:00:00Z",
            ),
            (
                "*/15 * * * *",
                "UTC",
                "2026-12-07T20:07:00Z",
                "2026-12-07T20:15:00Z",
            ),
            (
                "30 9 * * MON-FRI",
                "America/New_York",
                "2026-12-05T00:00:00Z",
                "2026-12-07T14:30:00Z",
            ),
            (
                "0 0 1 JAN *",
                "Asia/Tokyo",
                "2026-06-01T00:00:00Z",
                "2026-12-31T15:00:00Z",
            ),
            (
                "@daily",
                "UTC",
                "2026-12-07T20:00:00Z",
                "2026-12-08T00:00:00Z",
            ),
            // Day-of-month or day-of-week (Vixie cron): the 13th, and every Friday.
            (
                "0 0 13 * FRI",
                "UTC",
                "2026-12-07T00:00:00Z",
                "2026-12-11T00:00:00Z",
            ),
        ];
        for (pattern, tz, after, want) in cases {
            assert_eq!(
                next(pattern, tz, after),
                want,
                "{pattern} in {tz} after {after}"
            );
        }
    }

    #[test]
    fn a_time_the_clock_skips_fires_once_just_after_the_jump() {
        // Paris, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC); 02:30 never happens.
        assert_eq!(
            series("30 2 * * *", "Europe/Paris", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the first instant after the gap
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            series("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"]
        );
    }

    #[test]
    fn a_time_that_happens_twice_fires_once_for_a_fixed_hour() {
        // Paris, 2026-10-25: 03:00 CEST goes back to 02:00 CET; 02:30 happens twice.
        assert_eq!(
            series("30 2 * * *", "Europe/Paris", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        // Every hour: both 02:00s fire, one hour apart in real time.
        assert_eq!(
            series("0 * * * *", "Europe/Paris", "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T00:00:00Z", // 02:00 CEST
                "2026-10-25T01:00:00Z", // 02:00 CET
                "2026-10-25T02:00:00Z", // 03:00 CET
                "2026-10-25T03:00:00Z",
            ]
        );
    }

    #[test]
    fn a_refused_pattern_names_its_field() {
        let cases = [
            ("", "cron: empty"),
            ("0 3 * *", "cron: 4 fields; give 5"),
            ("0 0 3 * * *", "cron: 6 fields; give 5"),
            ("61 3 * * *", "the minute field \"61\""),
            ("0 25 * * *", "the hour field \"25\""),
            ("0 3 32 * *", "the day-of-month field \"32\""),
            ("0 3 * 13 *", "the month field \"13\""),
            ("0 3 * * 9", "the day-of-week field \"9\""),
            ("0 3 * * FUNDAY", "the day-of-week field \"FUNDAY\""),
            ("x 3 * * *", "the minute field \"x\""),
            ("@often", "cron:"),
            ("@daily 3", "stands alone"),
            ("0 0 30 2 *", "never matches"),
        ];
        for (pattern, want) in cases {
            let e = Schedule::new(pattern, "UTC", false)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{pattern:?}: {e}");
            assert!(e.starts_with("cron"), "{pattern:?}: {e}");
        }
        let long = "1,".repeat(200) + "1 * * * *";
        assert!(
            Schedule::new(&long, "UTC", false)
                .unwrap_err()
                .to_string()
                .contains("at most 256")
        );
        for tz in ["Europe/Pariss", "", "../../etc/passwd", "+01:00"] {
            let e = Schedule::new("0 3 * * *", tz, false).unwrap_err();
            assert_eq!(e.field, "timezone", "{tz:?}: {e}");
        }
    }

    #[test]
    fn a_seconds_field_only_where_the_test_setting_allows_it() {
        assert!(Schedule::new("*/2 * * * * *", "UTC", false).is_err());
        let s = Schedule::new("*/2 * * * * *", "UTC", true).unwrap();
        assert_eq!(
            s.next_after(ts("2026-12-07T20:00:00.3Z"))
                .unwrap()
                .to_string(),
            "2026-12-07T20:00:02Z"
        );
        // 5 fields still read as minutes.
        let s = Schedule::new("0 3 * * *", "UTC", true).unwrap();
        assert_eq!(
            s.next_after(ts("2026-12-07T20:00:00Z"))
                .unwrap()
                .to_string(),
            "2026-12-08T03:00:00Z"
        );
        let e = Schedule::new("70 0 3 * * *", "UTC", true).unwrap_err();
        assert!(e.to_string().contains("the second field \"70\""), "{e}");
    }
}
