//! The state each instance's store holds: its WASI context (nothing granted by default),
//! the memory limiter, and what the current call gives (parameters, storage grants) and
//! collects (logs, stdout/stderr, metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{log, metrics, parameters, storage, tensors, types};
use crate::limits::LimitKind;
use crate::storage::Grant;
use crate::training::{LogSource, TrainWatch};

/// One log line of a call.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogLine {
    pub level: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct ScalarPoint {
    pub step: u64,
    pub value: f64,
}

/// Metrics a call reported.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Metrics {
    pub scalars: BTreeMap<String, Vec<ScalarPoint>>,
    pub series: BTreeMap<String, Vec<(f64, f64)>>,
}

/// Bytes written to stdout or stderr during the current call, kept up to a cap.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<CaptureBuf>>);

#[derive(Default)]
struct CaptureBuf {
    data: Vec<u8>,
    cap: usize,
    dropped: u64,
    /// A training run's watch, which gets the text line by line as it is written (instead
    /// of `data`), and the line not ended yet.
    tee: Option<(Arc<TrainWatch>, LogSource)>,
    partial: Vec<u8>,
}

/// A line not ended is passed on once this long.
const MAX_PARTIAL: usize = 16 * 1024;

impl Capture {
    pub fn reset(&self, cap: usize) {
        let mut b = crate::locks::lock(&self.0);
        b.data.clear();
        b.cap = cap;
        b.dropped = 0;
        b.tee = None;
        b.partial.clear();
    }
    /// Passes what is written on to `watch`, line by line, until the next reset.
    pub(crate) fn tee(&self, watch: Arc<TrainWatch>, source: LogSource) {
        let mut b = crate::locks::lock(&self.0);
        b.tee = Some((watch, source));
    }
    /// Passes on the line not ended yet, if any.
    pub(crate) fn flush_tee(&self) {
        let mut b = crate::locks::lock(&self.0);
        if let Some((watch, source)) = b.tee.clone()
            && !b.partial.is_empty()
        {
            let line = std::mem::take(&mut b.partial);
            drop(b);
            tee_line(&watch, source, &line);
        }
    }
    /// The text written, with a note of what was dropped past the cap.
    pub fn take(&self) -> String {
        let mut b = crate::locks::lock(&self.0);
        let mut s = String::from_utf8_lossy(&b.data).into_owned();
        if b.dropped > 0 {
            s.push_str(&format!(
                "\n[{} more bytes dropped: the output limit]\n",
                b.dropped
            ));
        }
        b.data.clear();
        b.dropped = 0;
        s
    }
    fn push(&self, bytes: &[u8]) {
        let mut b = crate::locks::lock(&self.0);
        if let Some((watch, source)) = b.tee.clone() {
            let mut lines = Vec::new();
            for &byte in bytes {
                if byte == b'\n' {
                    lines.push(std::mem::take(&mut b.partial));
                } else {
                    b.partial.push(byte);
                    if b.partial.len() >= MAX_PARTIAL {
                        lines.push(std::mem::take(&mut b.partial));
                    }
                }
            }
            drop(b);
            for line in lines {
                tee_line(&watch, source, &line);
            }
            return;
        }
        let room = b.cap.saturating_sub(b.data.len());
        let n = room.min(bytes.len());
        b.data.extend_from_slice(&bytes[..n]);
        b.dropped += (bytes.len() - n) as u64;
    }
}

fn tee_line(watch: &TrainWatch, source: LogSource, line: &[u8]) {
    let line = String::from_utf8_lossy(line);
    let line = line.strip_suffix('\r').unwrap_or(&line);
    let level = if source == LogSource::Stderr {
        "error"
    } else {
        "info"
    };
    watch.log(source, level, line);
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Limits memory and table growth of a store and remembers what was asked for when a
/// limit refused it.
pub struct Limiter {
    pub memory_limit: u64,
    /// Bytes of all linear memories now.
    pub memory_now: u64,
    pub table_limit: usize,
    /// The limit hit and the size asked for, when one was.
    pub hit: Option<(LimitKind, u64)>,
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.memory_now - current as u64 + desired as u64;
        if total > self.memory_limit {
            self.hit = Some((LimitKind::Memory, total));
            // A trap rather than a failed grow: guests (Python, Rust) turn a failed grow into
            // an abort whose message would hide which limit it was.
            return Err(wasmtime::format_err!("memory limit"));
        }
        self.memory_now = total;
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_limit {
            self.hit = Some((LimitKind::Table, desired as u64));
            return Err(wasmtime::format_err!("table limit"));
        }
        Ok(true)
    }
}

/// What the current call gives the guest and collects from it.
#[derive(Default)]
pub struct CallState {
    pub logs: Vec<LogLine>,
    pub log_bytes: usize,
    pub logs_dropped: u64,
    pub metrics: Metrics,
    pub parameters: Vec<types::Parameter>,
    pub grant: Grant,
    pub output_cap: usize,
    pub stop: Arc<AtomicBool>,
    pub heartbeat: Option<f64>,
    /// Checkpoints go under this prefix (training).
    pub checkpoint_prefix: Option<String>,
    /// A training run's watch: logs, metrics and heartbeats go there as they come, not into
    /// this call's report.
    pub train: Option<Arc<TrainWatch>>,
    /// The caller's deadline ([`crate::CallContext::deadline`]): no export of the call is armed
    /// past it.
    pub deadline: Option<std::time::Instant>,
}

pub struct State {
    /// When the running call (or instantiation) must end: the epoch deadline's twin for the
    /// host calls a guest can wait in (see [`crate::waits`]). Before anything armed it, it is
    /// the store's creation time, so no wait can outlive a deadline that was never set.
    pub deadline: std::time::Instant,
    pub wasi: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
    pub stdout: Capture,
    pub stderr: Capture,
    pub call: CallState,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl State {
    pub fn begin_call(&mut self, call: CallState) {
        let cap = call.output_cap;
        self.call = call;
        self.stdout.reset(cap);
        self.stderr.reset(cap);
        self.limiter.hit = None;
    }

    /// Makes the current call a training run observed by `watch`: its logs, metrics,
    /// heartbeats, stdout and stderr go there as they come.
    pub(crate) fn watch_training(&mut self, watch: Arc<TrainWatch>) {
        self.stdout.tee(watch.clone(), LogSource::Stdout);
        self.stderr.tee(watch.clone(), LogSource::Stderr);
        self.call.train = Some(watch);
    }
}

impl types::Host for State {}

impl log::Host for State {
    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warning => "warning",
            log::Level::Error => "error",
        };
        if let Some(watch) = &self.call.train {
            watch.log(LogSource::Log, level, &message);
            return;
        }
        if self.call.log_bytes + message.len() > self.call.output_cap {
            self.call.logs_dropped += 1;
            return;
        }
        self.call.log_bytes += message.len();
        self.call.logs.push(LogLine { level, message });
    }
}

impl metrics::Host for State {
    fn scalar(&mut self, name: String, value: f64, step: Option<u64>) {
        if let Some(watch) = &self.call.train {
            watch.metric(name, value, step);
            return;
        }
        let points = self.call.metrics.scalars.entry(name).or_default();
        let step = step.unwrap_or(points.len() as u64);
        if points.len() < 100_000 {
            points.push(ScalarPoint { step, value });
        }
    }
    fn series(&mut self, name: String, points: Vec<(f64, f64)>) {
        // Bounded by names too: a training run lasts hours.
        if !self.call.metrics.series.contains_key(&name) && self.call.metrics.series.len() >= 1024 {
            return;
        }
        let mut points = points;
        points.truncate(100_000);
        self.call.metrics.series.insert(name, points);
    }
}

impl tensors::Host for State {
    fn from_json(
        &mut self,
        name: String,
        json: String,
        pointer: String,
        dtype: types::Dtype,
    ) -> Result<types::Tensor, types::Error> {
        crate::tensors::from_json(&name, &json, &pointer, dtype)
    }
    fn json_get(&mut self, json: String, pointer: String) -> Result<Option<String>, types::Error> {
        crate::tensors::json_get(&json, &pointer)
    }
    fn to_json(&mut self, t: types::Tensor) -> Result<String, types::Error> {
        crate::tensors::to_json(&t)
    }
    fn top_k(
        &mut self,
        t: types::Tensor,
        k: u32,
        softmax: bool,
    ) -> Result<Vec<Vec<tensors::Scored>>, types::Error> {
        crate::tensors::top_k(&t, k, softmax)
    }
}

impl parameters::Host for State {
    fn get(&mut self, name: String) -> Option<types::Value> {
        self.call
            .parameters
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.value.clone())
    }
    fn all(&mut self) -> Vec<types::Parameter> {
        self.call.parameters.clone()
    }
}

impl storage::Host for State {
    fn grants(&mut self) -> Vec<storage::Grant> {
        self.call.grant.grants()
    }
    fn read(&mut self, path: String) -> Result<Vec<u8>, storage::StorageError> {
        self.call.grant.read(&path, 0, None)
    }
    fn read_range(
        &mut self,
        path: String,
        offset: u64,
        length: u64,
    ) -> Result<Vec<u8>, storage::StorageError> {
        self.call.grant.read(&path, offset, Some(length))
    }
    fn write(&mut self, path: String, data: Vec<u8>) -> Result<(), storage::StorageError> {
        self.call.grant.write(&path, &data)
    }
    fn list_objects(
        &mut self,
        prefix: String,
    ) -> Result<Vec<storage::ObjectInfo>, storage::StorageError> {
        self.call.grant.list(&prefix)
    }
    fn delete(&mut self, path: String) -> Result<(), storage::StorageError> {
        self.call.grant.delete(&path)
    }
}

impl crate::bindings::training::atelier::plugin::control::Host for State {
    fn should_stop(&mut self) -> bool {
        if let Some(watch) = &self.call.train {
            // The run's time limit counts as a stop.
            return watch.stopping().is_some();
        }
        self.call.stop.load(Ordering::Relaxed)
    }
    fn heartbeat(&mut self, progress: Option<f64>) {
        if let Some(watch) = &self.call.train {
            watch.heartbeat(progress);
        }
        self.call.heartbeat = progress;
    }
}

impl crate::bindings::training::atelier::plugin::training_types::Host for State {}

impl crate::bindings::training::atelier::plugin::checkpoints::Host for State {
    fn save(
        &mut self,
        step: u64,
        data: Vec<u8>,
    ) -> Result<
        crate::bindings::training::atelier::plugin::training_types::CheckpointInfo,
        storage::StorageError,
    > {
        let Some(prefix) = self.call.checkpoint_prefix.clone() else {
            return Err(storage::StorageError::Denied(
                "this call has no output channel to hold checkpoints".into(),
            ));
        };
        let path = format!("{prefix}step-{step:012}");
        let size = data.len() as u64;
        self.call.grant.write(&path, &data)?;
        crate::storage::prune_checkpoints(
            &self.call.grant,
            &prefix,
            crate::storage::KEEP_CHECKPOINTS,
            &path,
        )?;
        Ok(
            crate::bindings::training::atelier::plugin::training_types::CheckpointInfo {
                step,
                path,
                size,
            },
        )
    }
    fn latest(
        &mut self,
    ) -> Option<crate::bindings::training::atelier::plugin::training_types::CheckpointInfo> {
        let prefix = self.call.checkpoint_prefix.clone()?;
        crate::storage::latest_checkpoint(&self.call.grant, &prefix)
    }
    fn load(&mut self, step: u64) -> Result<Vec<u8>, storage::StorageError> {
        let Some(prefix) = self.call.checkpoint_prefix.clone() else {
            return Err(storage::StorageError::NotFound(
                "this call has no checkpoints".into(),
            ));
        };
        let path = crate::storage::checkpoint_path(&self.call.grant, &prefix, step);
        self.call.grant.read(&path, 0, None)
    }
}

impl crate::bindings::inference::atelier::plugin::inference_types::Host for State {}
impl crate::bindings::workflow::atelier::plugin::step_types::Host for State {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::{TrainWatch, WatchLimits};

    #[test]
    fn a_training_runs_stdout_reaches_its_watch_line_by_line() {
        let watch = TrainWatch::new(WatchLimits::default());
        let out = Capture::default();
        out.reset(1024);
        out.tee(watch.clone(), LogSource::Stdout);
        out.push(b"epoch 1\r\nepo");
        assert_eq!(watch.snapshot().logs_queued, 1);
        out.push(b"ch 2\npartial");
        out.flush_tee();
        let lines: Vec<(LogSource, &str, String)> = watch
            .drain()
            .logs
            .into_iter()
            .map(|l| (l.source, l.level, l.message))
            .collect();
        assert_eq!(
            lines,
            [
                (LogSource::Stdout, "info", "epoch 1".to_string()),
                (LogSource::Stdout, "info", "epoch 2".to_string()),
                (LogSource::Stdout, "info", "partial".to_string()),
            ]
        );
        // Nothing kept in the capture itself, and a line never ended is cut into pieces.
        assert_eq!(out.take(), "");
        out.push(&vec![b'x'; MAX_PARTIAL * 2 + 1]);
        assert_eq!(watch.drain().logs.len(), 2);
        // After a reset (the next call), nothing goes to the watch.
        out.reset(1024);
        out.push(b"plain\n");
        assert_eq!(watch.snapshot().logs_queued, 0);
        assert_eq!(out.take(), "plain\n");
    }
}
