//! A loaded model: its sessions, what it takes and gives, and `run`.
//!
//! `ort`'s `Session::run` takes `&mut self` (some execution providers keep state that is not
//! thread-safe), so one session serves one run at a time. A model holds a small pool of
//! sessions ([`ModelOptions::sessions`]); a run takes a free one, or waits for one, and puts
//! it back even when the run fails. The pool is the model's concurrency: more runs than
//! sessions queue, each session costs one copy of the weights.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};

use ort::ep::{CPU, CUDA};
use ort::session::Session;
use ort::session::builder::SessionBuilder;

use super::EngineError;
use super::check::{self, TensorSpec};
use super::convert::{self, OutputKind};
use super::runtime::{Device, OnnxRuntime, panic_message};
use crate::tensor::Tensor;

/// How a model is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelOptions {
    pub device: Device,
    /// Threads one run may use (ONNX Runtime's intra-op threads). 1 by default: the gateway
    /// runs requests side by side, and small models gain nothing from splitting one run.
    /// 0 lets ONNX Runtime choose (one per physical core).
    pub intra_threads: usize,
    /// Sessions, so runs at the same time: see the module docs. At least 1.
    pub sessions: usize,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            device: Device::Cpu,
            intra_threads: 1,
            sessions: DEFAULT_SESSIONS,
        }
    }
}

/// Sessions per model by default. Four: on the 2-core benchmark VM four sessions gave 16
/// threads 1.1-2.2× the runs/s of one, and sixteen no steady gain over four
/// (docs/benchmarks.md, "ONNX engine"); each session is one more copy of the weights. A
/// machine with more cores and one busy model may want one per core.
pub const DEFAULT_SESSIONS: usize = 4;

/// Where a model comes from.
#[derive(Debug, Clone, Copy)]
pub enum ModelSource<'a> {
    /// An `.onnx` file; external weights are found beside it.
    File(&'a Path),
    /// The bytes of an `.onnx` file (no external weights).
    Bytes(&'a [u8]),
}

impl<'a> From<&'a Path> for ModelSource<'a> {
    fn from(path: &'a Path) -> Self {
        ModelSource::File(path)
    }
}

impl<'a> From<&'a [u8]> for ModelSource<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        ModelSource::Bytes(bytes)
    }
}

impl ModelSource<'_> {
    fn describe(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Bytes(bytes) => format!("{} bytes in memory", bytes.len()),
        }
    }
}

/// A model loaded into ONNX Runtime, ready to run from many threads at once.
pub struct OnnxModel {
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    kinds: Vec<OutputKind>,
    device: Device,
    pool: Pool,
    /// Keeps the runtime (and its environment) for as long as the sessions.
    _runtime: OnnxRuntime,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .field("device", &self.device)
            .field("sessions", &self.pool.size)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads a model: parses and optimises it once per session, and checks that every input
    /// and output is something the engine can feed or return.
    pub fn load<'a>(
        runtime: &OnnxRuntime,
        source: impl Into<ModelSource<'a>>,
        options: &ModelOptions,
    ) -> Result<OnnxModel, EngineError> {
        let source = source.into();
        runtime.check_device(options.device)?;
        let fail = |reason: String| EngineError::Model {
            source_desc: source.describe(),
            reason,
        };
        if options.sessions == 0 {
            return Err(fail(
                "options.sessions is 0; a model needs at least one session".into(),
            ));
        }
        let new_session = || {
            // A hostile model must not take the process down: `ort` has asserts on what
            // ONNX Runtime reports about a model's types.
            catch_unwind(AssertUnwindSafe(|| session(runtime, source, options)))
                .map_err(|panic| fail(format!("ort panicked: {}", panic_message(&*panic))))?
                .map_err(|e| match options.device {
                    Device::Cuda(_) if is_ep_failure(&e) => EngineError::Device {
                        device: options.device,
                        reason: e.to_string(),
                    },
                    _ => fail(e.to_string()),
                })
        };
        // One session first: a model the engine cannot feed or read fails before the others
        // are built.
        let first = new_session()?;
        let inputs = first
            .inputs()
            .iter()
            .map(|i| {
                convert::input_spec(i.name(), i.dtype())
                    .map_err(|why| fail(format!("input `{}` is {why}", i.name())))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (outputs, kinds) = first
            .outputs()
            .iter()
            .map(|o| {
                convert::output_spec(o.name(), o.dtype())
                    .map_err(|why| fail(format!("output `{}` is {why}", o.name())))
            })
            .collect::<Result<(Vec<_>, Vec<_>), _>>()?;
        let mut sessions = Vec::with_capacity(options.sessions);
        sessions.push(first);
        for _ in 1..options.sessions {
            sessions.push(new_session()?);
        }
        Ok(OnnxModel {
            inputs,
            outputs,
            kinds,
            device: options.device,
            pool: Pool::new(sessions),
            _runtime: runtime.clone(),
        })
    }

    /// What the model takes, in its order.
    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }

    /// What [`run`](Self::run) returns, in this order. A sequence-of-maps output (ZipMap) is
    /// listed as the tensor it becomes: `[rows, classes]` of its value type.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on `inputs` (each of its inputs once, any order) and returns every
    /// output. The inputs are checked first, so a caller's mistake is an
    /// [`EngineError::Input`] and nothing ran. Blocks the calling thread for the run (and
    /// while every session is busy): call it from a blocking thread, not an async task.
    pub fn run(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, EngineError> {
        let checked = check::inputs(&self.inputs, inputs)?;
        let run_fault = |reason: String| EngineError::Run { reason };
        catch_unwind(AssertUnwindSafe(|| {
            let values = checked
                .into_iter()
                .map(convert::to_ort)
                .collect::<ort::Result<Vec<_>>>()
                .map_err(|e| run_fault(e.to_string()))?;
            // The session only for the run itself: the outputs are values of their own (they
            // keep what they need of the session alive), converted after it is back.
            let produced: Vec<(String, ort::value::DynValue)> = {
                let mut session = self.pool.take();
                let outputs = session.run(values).map_err(|e| run_fault(e.to_string()))?;
                outputs
                    .into_iter()
                    .map(|(name, value)| (name.to_owned(), value))
                    .collect()
            };
            self.outputs
                .iter()
                .zip(&self.kinds)
                .map(|(spec, &kind)| {
                    let value = produced
                        .iter()
                        .find(|(name, _)| *name == spec.name)
                        .map(|(_, value)| value)
                        .ok_or_else(|| EngineError::Output {
                            name: spec.name.clone(),
                            reason: "ONNX Runtime returned no value for it".into(),
                        })?;
                    convert::from_ort(spec, kind, value)
                })
                .collect()
        }))
        .map_err(|panic| run_fault(format!("ort panicked: {}", panic_message(&*panic))))?
    }
}

fn session(
    runtime: &OnnxRuntime,
    source: ModelSource<'_>,
    options: &ModelOptions,
) -> ort::Result<Session> {
    let mut builder: SessionBuilder = Session::builder(runtime.ort_environment())?
        .with_intra_threads(options.intra_threads)?
        // One graph, one thread driving it: parallel nodes only pay off for wide graphs
        // on idle machines, and the gateway is neither.
        .with_inter_threads(1)?;
    builder = match options.device {
        Device::Cpu => builder.with_execution_providers([CPU::default().build()])?,
        Device::Cuda(index) => {
            let index = i32::try_from(index).map_err(|_| {
                ort::Error::new(format!("CUDA device index {index} is out of range"))
            })?;
            builder.with_execution_providers([CUDA::default()
                .with_device_id(index)
                .build()
                // Not the silent fallback to the CPU that `ort` does by default: asked for a GPU,
                // the caller learns that there is none.
                .error_on_failure()])?
        }
    };
    match source {
        ModelSource::File(path) => builder.commit_from_file(path),
        ModelSource::Bytes(bytes) => builder.commit_from_memory(bytes),
    }
}

/// Whether a session error comes from registering an execution provider (no GPU, no CUDA
/// libraries) rather than from the model.
fn is_ep_failure(e: &ort::Error) -> bool {
    let m = e.message();
    m.contains("CUDA") || m.contains("cuda") || m.contains("execution provider")
}

/// The model's sessions, each behind its own lock. A run takes the first one free, starting
/// after the one the previous run started at, and waits for one only when all are busy.
/// (Plain mutexes rather than a free list with a condition variable: under contention a
/// mutex lets the thread that just finished go on without a wake-up per run: one session
/// at 16 threads on 2 cores ran about twice the runs/s of the free list in back-to-back runs.)
struct Pool {
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
    size: usize,
}

impl Pool {
    fn new(sessions: Vec<Session>) -> Pool {
        Pool {
            size: sessions.len(),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A free session; waits while all are in use.
    fn take(&self) -> MutexGuard<'_, Session> {
        let start = self.next.fetch_add(1, Ordering::Relaxed) % self.size;
        for i in 0..self.size {
            match self.sessions[(start + i) % self.size].try_lock() {
                Ok(session) => return session,
                // A run that panicked leaves its session as it was: ONNX Runtime's state is
                // not touched by the Rust code that panicked (conversion, checks).
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[start]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}
