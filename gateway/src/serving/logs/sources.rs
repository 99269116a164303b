//! Where a service's log lines are read from, and how several sources become one answer.
//!
//! ```text
//! search ─► each LogSource: its newest matching lines in the window (at most limit + 1)
//!        └► merge: by time, the newest `limit`, `truncated` when more matched
//! ```
//!
//! Today one source: [`GatewayFiles`], what the gateway wrote itself (its lifecycle lines,
//! failed calls, the processor's lines). A source reads only what it may: a file another
//! party writes (a container engine's instance stdout/stderr) is read through
//! `crate::confined::Dir` (`open_read`: no link followed, no FIFO), from its end, at most a
//! bounded number of bytes, and each of its lines is matched with the same [`Search`].

use std::ffi::OsStr;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::query::{Budget, Query};
use super::window::Window;
use crate::confined::Dir;

/// One log line as the API shows it and the gateway's files hold it (one JSON object a
/// line, `time` first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// RFC 3339, UTC, fixed width (microseconds).
    pub time: String,
    /// `gateway`, `processor` (later `instance-N` for a container engine's instances).
    pub source: String,
    pub text: String,
}

/// What a search asks each source for.
pub struct Search<'a> {
    pub window: &'a Window,
    pub query: &'a Query,
    pub limit: usize,
}

impl Search<'_> {
    /// Whether `line` is wanted; false once `budget` is spent.
    pub fn wants(&self, line: &Line, budget: &mut Budget) -> bool {
        self.window.contains(&line.time) && self.query.matches(&line.text, budget)
    }
}

/// A search's answer: lines oldest first.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Found {
    pub lines: Vec<Line>,
    /// More lines matched than were given, or the search stopped before it had read
    /// everything (its work budget spent).
    pub truncated: bool,
}

/// A place a service's lines come from.
pub trait LogSource: Send {
    /// The newest lines that `search` wants, at most `search.limit`, oldest first.
    fn search(&self, search: &Search, budget: &mut Budget) -> io::Result<Found>;
}

/// The lines the gateway wrote for a service (`writer.rs`): `gateway.log.1` (older), then
/// `gateway.log`, each line `{"time": …, "source": …, "text": …}`.
pub struct GatewayFiles {
    pub dir: PathBuf,
}

/// The files of [`GatewayFiles`], oldest first.
pub const FILES: [&str; 2] = ["gateway.log.1", "gateway.log"];

impl LogSource for GatewayFiles {
    fn search(&self, search: &Search, budget: &mut Budget) -> io::Result<Found> {
        let dir = match Dir::open(&self.dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Found::default()),
            Err(e) => return Err(e),
        };
        let mut newest_first = Vec::new();
        let mut truncated = false;
        'files: for name in FILES.iter().rev() {
            let text = match tail(&dir, OsStr::new(name), super::writer::MAX_FILE_BYTES * 2) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for raw in text.lines().rev() {
                if budget.spent() {
                    truncated = true;
                    break 'files;
                }
                // The time is first and fixed width: most lines out of the window are
                // passed over without parsing them.
                if let Some(t) = raw
                    .strip_prefix("{\"time\":\"")
                    .and_then(|r| r.get(..TIME_WIDTH))
                    && !search.window.contains(t)
                {
                    continue;
                }
                let Ok(line) = serde_json::from_str::<Line>(raw) else {
                    // A line cut by a crash mid-write.
                    continue;
                };
                if search.wants(&line, budget) {
                    if newest_first.len() == search.limit {
                        truncated = true;
                        break 'files;
                    }
                    newest_first.push(line);
                }
            }
        }
        newest_first.reverse();
        Ok(Found {
            lines: newest_first,
            truncated,
        })
    }
}

/// `2025-03-01T12:00:00.000000Z`
const TIME_WIDTH: usize = 27;

/// The last `max_bytes` of the regular file `name` in `dir` (no link followed), from its
/// first whole line.
fn tail(dir: &Dir, name: &OsStr, max_bytes: u64) -> io::Result<String> {
    let mut f = dir.open_read(name)?;
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max_bytes);
    f.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    f.take(max_bytes).read_to_end(&mut bytes)?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    if start > 0 {
        let cut = text.find('\n').map_or(text.len(), |i| i + 1);
        text.drain(..cut);
    }
    Ok(text)
}

/// Every source's newest wanted lines, merged by time: the newest `search.limit`, oldest
/// first. A source that cannot be read is left out and said in a line of its own.
pub fn merge(sources: &[Box<dyn LogSource>], search: &Search, budget: &mut Budget) -> Found {
    let mut all: Vec<Line> = Vec::new();
    let mut truncated = false;
    for (i, s) in sources.iter().enumerate() {
        match s.search(search, budget) {
            Ok(found) => {
                truncated |= found.truncated;
                all.extend(found.lines);
            }
            Err(e) => {
                tracing::warn!(source = i, error = %e, "reading a service's log failed");
                all.push(Line {
                    time: crate::store::format_time(time::OffsetDateTime::now_utc()),
                    source: "gateway".into(),
                    text: "a log source could not be read; its lines are missing here".into(),
                });
            }
        }
    }
    // Stable: lines of one time keep their source's order.
    all.sort_by(|a, b| a.time.cmp(&b.time));
    if all.len() > search.limit {
        truncated = true;
        all.drain(..all.len() - search.limit);
    }
    Found {
        lines: all,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source of fixed lines (oldest first), as an engine's instance output would be.
    struct Fixed(Vec<Line>);

    impl LogSource for Fixed {
        fn search(&self, search: &Search, budget: &mut Budget) -> io::Result<Found> {
            let mut wanted: Vec<Line> = self
                .0
                .iter()
                .filter(|l| search.wants(l, budget))
                .cloned()
                .collect();
            let truncated = wanted.len() > search.limit;
            wanted.drain(..wanted.len().saturating_sub(search.limit));
            Ok(Found {
                lines: wanted,
                truncated,
            })
        }
    }

    struct Broken;

    impl LogSource for Broken {
        fn search(&self, _: &Search, _: &mut Budget) -> io::Result<Found> {
            Err(io::Error::other("gone"))
        }
    }

    fn line(sec: u32, source: &str, text: &str) -> Line {
        Line {
            time: format!("2025-03-01T12:00:{sec:02}.000000Z"),
            source: source.into(),
            text: text.into(),
        }
    }

    fn window(since: &str) -> Window {
        Window {
            since: since.into(),
            until: None,
        }
    }

    #[test]
    fn sources_are_merged_by_time_and_the_newest_kept() {
        let gateway = Fixed(vec![
            line(1, "gateway", "deploying"),
            line(4, "gateway", "call failed: error"),
            line(6, "gateway", "stopped"),
        ]);
        let instance = Fixed(vec![
            line(2, "instance-0", "listening"),
            line(4, "instance-0", "an error"),
            line(5, "instance-0", "request"),
        ]);
        let sources: Vec<Box<dyn LogSource>> = vec![Box::new(gateway), Box::new(instance)];
        let all = Query::default();
        let w = window("2025-03-01T00:00:00.000000Z");
        let mut budget = Budget::new(Budget::SEARCH);
        let search = Search {
            window: &w,
            query: &all,
            limit: 10,
        };
        let found = merge(&sources, &search, &mut budget);
        let texts: Vec<&str> = found.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "deploying",
                "listening",
                "call failed: error",
                "an error",
                "request",
                "stopped"
            ]
        );
        assert!(!found.truncated);

        // The newest 2 matching "error" from both: all there is.
        let q = Query::parse("error").unwrap();
        let search = Search {
            window: &w,
            query: &q,
            limit: 2,
        };
        let found = merge(&sources, &search, &mut budget);
        assert_eq!(found.lines.len(), 2);
        assert!(!found.truncated);
        // The newest 3 of everything: cut, and said.
        let search = Search {
            window: &w,
            query: &all,
            limit: 3,
        };
        let found = merge(&sources, &search, &mut budget);
        let texts: Vec<&str> = found.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["an error", "request", "stopped"]);
        assert!(found.truncated);
        // The window applies to every source.
        let late = window("2025-03-01T12:00:04.000000Z");
        let search = Search {
            window: &late,
            query: &all,
            limit: 10,
        };
        let found = merge(&sources, &search, &mut budget);
        assert_eq!(found.lines.len(), 4);
    }

    #[test]
    fn a_source_that_cannot_be_read_is_said_and_the_others_answer() {
        let sources: Vec<Box<dyn LogSource>> = vec![
            Box::new(Broken),
            Box::new(Fixed(vec![line(1, "gateway", "deploying")])),
        ];
        let w = window("2025-03-01T00:00:00.000000Z");
        let q = Query::default();
        let found = merge(
            &sources,
            &Search {
                window: &w,
                query: &q,
                limit: 10,
            },
            &mut Budget::new(Budget::SEARCH),
        );
        assert_eq!(found.lines.len(), 2);
        assert!(
            found
                .lines
                .iter()
                .any(|l| l.text.contains("could not be read"))
        );
    }
}
