//! Per-service logs (spec/inference.md §2.17, SVC-17): what happened to a service, in lines
//! of `{time, source, text}`, searched by `GET /v1/services/{service}/logs`.
//!
//! ```text
//! deploy/start/stop/update outcomes ─┐
//! each failed call (code, message)  ─┼─► ServiceLog::push ─► bounded channel ─► run(): a batch
//! each call's processor lines (capped)┘    (never waits;         at a time on a blocking
//!                                           full: counted)        thread ─► writer.rs
//!                                                                 <data>/services/<id>/logs/
//! GET …/logs?since&until&q&limit ─► window.rs, query.rs ─► sources.rs: each LogSource's
//!                                   newest matching lines ─► merged by time
//! ```
//!
//! Written by the gateway only, under its own data dir (never bound into a notebook, a
//! plugin or an engine); a service's directory is named by its id, always a UUID the
//! gateway made (any other id writes nothing and reads nothing). Bounded everywhere: a
//! call keeps at most [`MAX_LINES_PER_CALL`] processor lines of at most [`MAX_TEXT_BYTES`]
//! each and says how many more it dropped; a service's files rotate at 8 MiB, two kept;
//! lines that come faster than the writer keeps up are dropped and counted, and the count
//! is a line of its own; a search does a bounded amount of matching and at most
//! [`MAX_SEARCHES`] run at once. Request bodies and credentials are never written: a failed
//! call writes its error's code and message only.
//!
//! Adding a source (a container engine's instance stdout/stderr): implement
//! [`sources::LogSource`] reading the engine's file through `crate::confined` (see there)
//! and add it to the list `Services::logs` hands to [`ServiceLog::search`].

pub mod query;
pub mod sources;
pub mod window;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::lifecycle::clock::Clock;
use query::{Budget, Query};
use sources::{Found, GatewayFiles, Line, LogSource, Search};
use window::Window;
use writer::{Removed, Writer};

/// Processor lines one call keeps (its log calls, then its stdout and stderr lines): a
/// page of context for a failure, and a processor that logs in a loop costs one page a
/// call.
pub const MAX_LINES_PER_CALL: usize = 100;
/// The longest text of a line; the rest is cut (a stack trace's head says the most).
pub const MAX_TEXT_BYTES: usize = 4096;
/// Lines waiting for the writer: at most 16 MiB of text held. More are dropped, counted.
const QUEUE: usize = 4096;
/// Lines the writer takes at once.
const BATCH: usize = 512;
/// Searches at once (each reads up to two files of 8 MiB on a blocking thread); more wait.
pub const MAX_SEARCHES: usize = 4;
/// A search's most lines, and its default.
pub const MAX_LIMIT: usize = 10_000;
pub const DEFAULT_LIMIT: usize = 1000;

/// The query string of `GET /v1/services/{service}/logs`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub q: Option<String>,
    pub limit: Option<usize>,
}

/// A checked search: what [`ServiceLog::search`] takes.
pub struct LogRequest {
    pub window: Window,
    pub query: Query,
    pub limit: usize,
}

impl LogParams {
    /// The search, or what is wrong with the parameters (a 400's message).
    pub fn check(&self, now: time::OffsetDateTime) -> Result<LogRequest, String> {
        let window = Window::parse(self.since.as_deref(), self.until.as_deref(), now)?;
        let query = Query::parse(self.q.as_deref().unwrap_or_default())?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!("limit: {limit}; between 1 and {MAX_LIMIT} lines"));
        }
        Ok(LogRequest {
            window,
            query,
            limit,
        })
    }
}

/// Where a line comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// The gateway: a lifecycle step, a failed call, a count of dropped lines.
    Gateway,
    /// The service's processor plugin: its log calls, stdout and stderr.
    Processor,
    /// A container or process engine's instance: what its server printed, copied by the
    /// instance's supervisor (`instances.rs`) as it appears, each line with the instance's
    /// id.
    Engine,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Gateway => "gateway",
            Source::Processor => "processor",
            Source::Engine => "engine",
        }
    }
}

enum Msg {
    Line(Uuid, Line),
    /// The service is removed: its file is closed.
    Forget(Uuid),
}

/// The services' logs: the handle the service code writes through and searches with.
#[derive(Clone)]
pub struct ServiceLog {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<data dir>/services`.
    root: PathBuf,
    clock: Arc<dyn Clock>,
    max_file_bytes: u64,
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
    /// Lines dropped because the queue was full, per service, until the writer says so.
    dropped: Mutex<HashMap<Uuid, u64>>,
    removed: Removed,
    searches: tokio::sync::Semaphore,
}

impl ServiceLog {
    pub fn new(data_dir: &Path, clock: Arc<dyn Clock>) -> ServiceLog {
        Self::with_limits(
            data_dir.join("services"),
            clock,
            QUEUE,
            writer::MAX_FILE_BYTES,
        )
    }

    fn with_limits(
        root: PathBuf,
        clock: Arc<dyn Clock>,
        queue: usize,
        max_file_bytes: u64,
    ) -> ServiceLog {
        let (tx, rx) = mpsc::channel(queue);
        ServiceLog {
            inner: Arc::new(Inner {
                root,
                clock,
                max_file_bytes,
                tx,
                rx: Mutex::new(Some(rx)),
                dropped: Mutex::new(HashMap::new()),
                removed: Removed::default(),
                searches: tokio::sync::Semaphore::new(MAX_SEARCHES),
            }),
        }
    }

    fn now(&self) -> String {
        crate::store::format_time(self.inner.clock.now())
    }

    /// Queues a line for `service_id`'s log; never waits. A full queue drops it (counted).
    pub fn push(&self, service_id: &str, source: Source, text: &str) {
        let Some(id) = own_id(service_id) else {
            return;
        };
        let line = Line {
            time: self.now(),
            source: source.name().into(),
            text: clean(text),
        };
        if self.inner.tx.try_send(Msg::Line(id, line)).is_err()
            && let Ok(mut d) = self.inner.dropped.lock()
        {
            *d.entry(id).or_default() += 1;
        }
    }

    /// A gateway line: a lifecycle step and its outcome.
    pub fn gateway(&self, service_id: &str, text: &str) {
        self.push(service_id, Source::Gateway, text);
    }

    /// A call that failed: its error's code and message (never the request).
    pub fn call_failed(&self, service_id: &str, code: &str, message: &str, model: Option<&str>) {
        let at = model.map(|m| format!(" (model {m})")).unwrap_or_default();
        self.push(
            service_id,
            Source::Gateway,
            &format!("call failed{at}: {code}: {message}"),
        );
    }

    /// One call's processor output: its log lines (`[level] message`), then its stdout
    /// and stderr lines, at most [`MAX_LINES_PER_CALL`]; `host_dropped` more that the plugin
    /// host did not keep.
    pub fn processor(
        &self,
        service_id: &str,
        logs: &[atelier_plugins::state::LogLine],
        host_dropped: u64,
        stdout: &str,
        stderr: &str,
    ) {
        let lines = logs
            .iter()
            .map(|l| format!("[{}] {}", l.level, l.message))
            .chain(stdout.lines().map(|l| format!("[stdout] {l}")))
            .chain(stderr.lines().map(|l| format!("[stderr] {l}")));
        let mut over = host_dropped;
        for (i, text) in lines.enumerate() {
            if i < MAX_LINES_PER_CALL {
                self.push(service_id, Source::Processor, &text);
            } else {
                over += 1;
            }
        }
        if over > 0 {
            self.gateway(
                service_id,
                &format!(
                    "{over} more processor lines of this call were dropped (at most {MAX_LINES_PER_CALL} a call are kept)"
                ),
            );
        }
    }

    /// Deletes `service_id`'s logs for good (its service is deleted).
    pub async fn remove(&self, service_id: &str) -> anyhow::Result<()> {
        let Some(id) = own_id(service_id) else {
            return Ok(());
        };
        let (root, removed) = (self.inner.root.clone(), self.inner.removed.clone());
        tokio::task::spawn_blocking(move || writer::remove(&root, &removed, id)).await??;
        // Best effort: a writer that missed it finds the id removed when it opens again.
        let _ = self.inner.tx.try_send(Msg::Forget(id));
        if let Ok(mut d) = self.inner.dropped.lock() {
            d.remove(&id);
        }
        Ok(())
    }

    /// The gateway's own lines of `service_id` as a source.
    pub fn own_source(&self, service_id: &str) -> Option<Box<dyn LogSource>> {
        let id = own_id(service_id)?;
        Some(Box::new(GatewayFiles {
            dir: writer::dir_of(&self.inner.root, id),
        }))
    }

    pub fn now_time(&self) -> time::OffsetDateTime {
        self.inner.clock.now()
    }

    /// The newest lines of `sources` that `req` wants, merged by time.
    pub async fn search(
        &self,
        sources: Vec<Box<dyn LogSource>>,
        req: LogRequest,
    ) -> anyhow::Result<Found> {
        let _permit = self.inner.searches.acquire().await?;
        let found = tokio::task::spawn_blocking(move || {
            let mut budget = Budget::new(Budget::SEARCH);
            let search = Search {
                window: &req.window,
                query: &req.query,
                limit: req.limit,
            };
            sources::merge(&sources, &search, &mut budget)
        })
        .await?;
        Ok(found)
    }

    /// The writer: until `stop`, then what is queued, flushed. Lines that come after it
    /// ended are dropped.
    pub async fn run(self, stop: CancellationToken) {
        let Some(mut rx) = self.inner.rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let mut writer = Writer::new(
            self.inner.root.clone(),
            self.inner.max_file_bytes,
            self.inner.removed.clone(),
        );
        let mut batch: Vec<Msg> = Vec::with_capacity(BATCH);
        loop {
            let go_on = tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n > 0,
                _ = stop.cancelled() => false,
            };
            if !go_on {
                rx.close();
                while let Ok(m) = rx.try_recv() {
                    batch.push(m);
                }
            }
            let dropped = self
                .inner
                .dropped
                .lock()
                .map(|mut d| std::mem::take(&mut *d))
                .unwrap_or_default();
            let now = self.now();
            let written = tokio::task::spawn_blocking(move || {
                write_batch(&mut writer, &mut batch, dropped, &now);
                (writer, batch)
            })
            .await;
            match written {
                Ok((w, b)) => (writer, batch) = (w, b),
                Err(e) => {
                    tracing::error!(error = %e, "the services' log writer failed");
                    return;
                }
            }
            if !go_on {
                return;
            }
        }
    }
}

#[cfg(test)]
impl ServiceLog {
    /// What is queued, written now (the writer's work without its task).
    fn write_queued(&self) {
        let mut batch = Vec::new();
        if let Some(rx) = self.inner.rx.lock().unwrap().as_mut() {
            while let Ok(m) = rx.try_recv() {
                batch.push(m);
            }
        }
        let dropped = std::mem::take(&mut *self.inner.dropped.lock().unwrap());
        let mut w = Writer::new(
            self.inner.root.clone(),
            self.inner.max_file_bytes,
            self.inner.removed.clone(),
        );
        write_batch(&mut w, &mut batch, dropped, &self.now());
    }
}

fn write_batch(writer: &mut Writer, batch: &mut Vec<Msg>, dropped: HashMap<Uuid, u64>, now: &str) {
    for (id, n) in dropped {
        let line = Line {
            time: now.to_string(),
            source: Source::Gateway.name().into(),
            text: format!(
                "{n} log lines were dropped: they came faster than the gateway could write them"
            ),
        };
        write_one(writer, id, &line);
    }
    for m in batch.drain(..) {
        match m {
            Msg::Line(id, line) => write_one(writer, id, &line),
            Msg::Forget(id) => writer.forget(id),
        }
    }
    writer.flush();
}

fn write_one(writer: &mut Writer, id: Uuid, line: &Line) {
    if let Err(e) = writer.write(id, line) {
        tracing::warn!(service = %id, error = %e, "writing a service's log failed");
        writer.forget(id);
    }
}

/// `service_id` as the UUID the gateway made, or nothing: no other text names a directory.
fn own_id(service_id: &str) -> Option<Uuid> {
    let id = Uuid::try_parse(service_id).ok()?;
    (id.hyphenated().to_string() == service_id).then_some(id)
}

/// `text` with control characters (terminal escapes) shown as U+FFFD, newlines and tabs
/// kept, cut at [`MAX_TEXT_BYTES`].
fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_TEXT_BYTES + 8));
    for c in text.chars() {
        if out.len() + c.len_utf8() > MAX_TEXT_BYTES {
            out.push('…');
            break;
        }
        out.push(if c.is_control() && c != '\n' && c != '\t' {
            '\u{FFFD}'
        } else {
            c
        });
    }
    out
}

#[cfg(test)]
pub(crate) struct TempRoot(pub PathBuf);

#[cfg(test)]
impl TempRoot {
    pub fn new() -> TempRoot {
        let p = std::env::temp_dir().join(format!("atelier-svclogs-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        TempRoot(p)
    }
}

#[cfg(test)]
impl Drop for TempRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::clock::ManualClock;
    use atelier_plugins::state::LogLine;

    fn log(root: &Path, queue: usize) -> (ServiceLog, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new());
        let log = ServiceLog::with_limits(root.join("services"), clock.clone(), queue, 1024 * 1024);
        (log, clock)
    }

    async fn written(log: &ServiceLog, id: &str, params: LogParams) -> Found {
        let req = params.check(log.now_time()).unwrap();
        let sources = log.own_source(id).into_iter().collect();
        log.search(sources, req).await.unwrap()
    }

    /// Runs the writer once: what is queued is written, and it ends.
    async fn drain(log: &ServiceLog) {
        let stop = CancellationToken::new();
        stop.cancel();
        log.clone().run(stop).await;
    }

    fn texts(found: &Found) -> Vec<&str> {
        found.lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[tokio::test]
    async fn lines_are_written_searched_and_windowed() {
        let root = TempRoot::new();
        let (log, clock) = log(&root.0, 1000);
        let id = Uuid::new_v4().to_string();
        log.gateway(&id, "deploying: model iris 0.0.1");
        clock.advance(time::Duration::minutes(10));
        log.call_failed(&id, "failed", "the model said no", Some("iris 0.0.1"));
        log.processor(
            &id,
            &[LogLine {
                level: "error",
                message: "an error in preprocess".into(),
            }],
            0,
            "hello\nworld\n",
            "",
        );
        drain(&log).await;
        let all = written(
            &log,
            &id,
            LogParams {
                since: Some("1h".into()),
                ..LogParams::default()
            },
        )
        .await;
        assert_eq!(
            texts(&all),
            [
                "deploying: model iris 0.0.1",
                "call failed (model iris 0.0.1): failed: the model said no",
                "[error] an error in preprocess",
                "[stdout] hello",
                "[stdout] world"
            ]
        );
        assert_eq!(all.lines[0].source, "gateway");
        assert_eq!(all.lines[2].source, "processor");
        assert_eq!(all.lines[0].time.len(), 27);
        assert!(all.lines[0].time < all.lines[1].time);
        // The default window is the last 5 minutes.
        let recent = written(&log, &id, LogParams::default()).await;
        assert_eq!(recent.lines.len(), 4);
        let q = written(
            &log,
            &id,
            LogParams {
                since: Some("1h".into()),
                q: Some("er?or".into()),
                ..LogParams::default()
            },
        )
        .await;
        assert_eq!(texts(&q), ["[error] an error in preprocess"]);
        let newest = written(
            &log,
            &id,
            LogParams {
                since: Some("1h".into()),
                limit: Some(2),
                ..LogParams::default()
            },
        )
        .await;
        assert_eq!(texts(&newest), ["[stdout] hello", "[stdout] world"]);
        assert!(newest.truncated);
    }

    #[tokio::test]
    async fn a_flooding_processor_is_capped_per_call_and_says_so() {
        let root = TempRoot::new();
        let (log, _) = log(&root.0, 10_000);
        let id = Uuid::new_v4().to_string();
        let flood: Vec<LogLine> = (0..500)
            .map(|i| LogLine {
                level: "info",
                message: format!("line {i} {}", "y".repeat(10_000)),
            })
            .collect();
        log.processor(&id, &flood, 7, "", "");
        log.write_queued();
        let found = written(&log, &id, LogParams::default()).await;
        assert_eq!(found.lines.len(), MAX_LINES_PER_CALL + 1);
        assert!(
            found.lines[..MAX_LINES_PER_CALL]
                .iter()
                .all(|l| l.text.len() <= MAX_TEXT_BYTES + '…'.len_utf8() && l.text.ends_with('…'))
        );
        assert_eq!(
            found.lines[MAX_LINES_PER_CALL].text,
            "407 more processor lines of this call were dropped (at most 100 a call are kept)"
        );
    }

    #[tokio::test]
    async fn a_full_queue_drops_lines_and_the_log_counts_them() {
        let root = TempRoot::new();
        let (log, _) = log(&root.0, 10);
        let id = Uuid::new_v4().to_string();
        for i in 0..25 {
            log.gateway(&id, &format!("line {i}"));
        }
        drain(&log).await;
        let found = written(&log, &id, LogParams::default()).await;
        assert_eq!(found.lines.len(), 11);
        assert!(
            found.lines.iter().any(|l| l.text
                == "15 log lines were dropped: they came faster than the gateway could write them"),
            "{:?}",
            texts(&found)
        );
        // After the writer ended, lines go nowhere (and nothing waits).
        log.gateway(&id, "late");
    }

    #[tokio::test]
    async fn only_the_gateways_own_ids_name_a_directory() {
        let root = TempRoot::new();
        let (log, _) = log(&root.0, 10);
        for bad in [
            "../../etc",
            "..",
            "",
            "name",
            "6F9619FF-8B86-D011-B42D-00C04FC964FF",
            "6f9619ff8b86d011b42d00c04fc964ff",
            "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
            "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
        ] {
            log.gateway(bad, "x");
            assert!(log.own_source(bad).is_none(), "{bad}");
            log.remove(bad).await.unwrap();
        }
        log.write_queued();
        assert!(!root.0.join("services").exists());
        assert!(own_id("6f9619ff-8b86-d011-b42d-00c04fc964ff").is_some());
    }

    #[tokio::test]
    async fn a_removed_service_has_no_logs_and_gets_none_back() {
        let root = TempRoot::new();
        let (log, _) = log(&root.0, 100);
        let id = Uuid::new_v4().to_string();
        log.gateway(&id, "deploying");
        log.write_queued();
        assert!(root.0.join("services").join(&id).exists());
        log.remove(&id).await.unwrap();
        assert!(!root.0.join("services").join(&id).exists());
        // A call that ended after the delete.
        log.gateway(&id, "call failed");
        log.write_queued();
        assert!(!root.0.join("services").join(&id).exists());
        let found = written(&log, &id, LogParams::default()).await;
        assert!(found.lines.is_empty());
    }

    #[tokio::test]
    async fn a_search_reads_across_the_rotated_file_newest_last() {
        let root = TempRoot::new();
        let (_, clock) = log(&root.0, 10);
        let log = ServiceLog::with_limits(root.0.join("services"), clock.clone(), 2000, 4096);
        let id = Uuid::new_v4().to_string();
        for i in 0..1000 {
            log.gateway(&id, &format!("line {i}"));
            clock.advance(time::Duration::milliseconds(1));
        }
        log.write_queued();
        let dir = root.0.join("services").join(&id).join("logs");
        assert!(dir.join("gateway.log.1").is_file() && dir.join("gateway.log").is_file());
        let all = written(&log, &id, LogParams::default()).await;
        let n = all.lines.len();
        assert!(n > 60 && n < 200, "{n}");
        assert!(!all.truncated);
        let want: Vec<String> = (1000 - n..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(texts(&all), want);
        // The newest 3 of those matching, across the two files.
        let q = written(
            &log,
            &id,
            LogParams {
                q: Some("line 9?0".into()),
                limit: Some(3),
                ..LogParams::default()
            },
        )
        .await;
        assert_eq!(texts(&q), ["line 970", "line 980", "line 990"]);
        assert!(q.truncated);
    }

    #[test]
    fn text_is_cleaned_of_control_characters_and_cut() {
        assert_eq!(
            clean("a\u{1b}[31mred\r\nb\tc"),
            "a\u{FFFD}[31mred\u{FFFD}\nb\tc"
        );
        let long = "é".repeat(MAX_TEXT_BYTES);
        let c = clean(&long);
        assert!(c.len() <= MAX_TEXT_BYTES + 3 && c.ends_with('…'));
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_field() {
        let now = time::macros::datetime!(2025-03-01 12:00 UTC);
        for (p, says) in [
            (
                LogParams {
                    limit: Some(0),
                    ..LogParams::default()
                },
                "limit: 0",
            ),
            (
                LogParams {
                    limit: Some(MAX_LIMIT + 1),
                    ..LogParams::default()
                },
                "between 1 and 10000",
            ),
            (
                LogParams {
                    q: Some("a;b".into()),
                    ..LogParams::default()
                },
                "';'",
            ),
            (
                LogParams {
                    since: Some("soon".into()),
                    ..LogParams::default()
                },
                "since:",
            ),
        ] {
            let e = p.check(now).err().unwrap();
            assert!(e.contains(says), "{e}");
        }
    }
}
