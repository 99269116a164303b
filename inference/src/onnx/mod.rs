//! The built-in ONNX engine: a model runs inside the gateway's process, on ONNX Runtime.
//!
//! ```text
//!   OnnxRuntime::load(lib)            once per process: dlopen libonnxruntime.so, one environment
//!        │
//!   OnnxModel::load(source, options)  parse + optimise, once per session of the pool;
//!        │                            inputs()/outputs() as TensorSpec
//!        ▼
//!   run(Vec<Tensor>) ─ check ─────────── names, dtypes, shapes, data lengths, strings
//!        │                            (an InputError: the caller's fault, nothing ran)
//!        ├─ convert::to_ort ──────────── little-endian bytes → ONNX Runtime values
//!        ├─ pool.take → Session::run ─ one session per concurrent run
//!        └─ convert::from_ort ────────── every output → Tensor (ZipMap maps → [rows, classes])
//! ```
//!
//! Why ONNX Runtime, through `ort` with `load-dynamic`, rather than `tract`: see
//! `docs/benchmarks.md` ("ONNX engine"). The library is the one the PyPI `onnxruntime` wheel
//! ships (`scripts/lib.sh`: `onnxruntime_lib`); nothing is downloaded at build time. The GPU
//! build (`onnxruntime-gpu`) brings the CUDA execution provider, used when a model asks for
//! [`Device::Cuda`].
//!
//! scikit-learn classifiers exported with skl2onnx's defaults end in a ZipMap, whose output
//! is a sequence of maps `{class: probability}`; the engine returns it as a tensor
//! `[rows, classes]` with the classes in ascending order (the order of `classes_`). Exporting
//! with `options={"zipmap": False}` gives that tensor directly and saves the maps.

mod check;
mod convert;
mod model;
mod runtime;

use std::path::PathBuf;

pub use check::{InputError, TensorSpec, dtype_name};
pub use model::{DEFAULT_SESSIONS, ModelOptions, ModelSource, OnnxModel};
pub use runtime::{Device, OnnxRuntime};

/// The setting that names the ONNX Runtime library file, quoted in errors.
pub const LIBRARY_SETTING: &str = "ATELIER_ONNXRUNTIME_LIB";

/// What went wrong in the engine. [`EngineError::Input`] is the caller's fault (a 4xx, the
/// message names the input and what is wrong); every other variant is the model's, the
/// library's or the machine's.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(
        "cannot load ONNX Runtime from {}: {reason} (the library is the file \
         {LIBRARY_SETTING} names: the libonnxruntime.so.* of the onnxruntime wheel, \
         `onnxruntime/capi/` in its site-packages)",
        path.display()
    )]
    Library { path: PathBuf, reason: String },
    #[error("cannot run on {device}: {reason}")]
    Device { device: Device, reason: String },
    #[error("cannot load the model ({source_desc}): {reason}")]
    Model { source_desc: String, reason: String },
    /// ONNX Runtime refused or failed the run. The inputs passed every check the model's
    /// declared types allow, so this is the model's side, though some graphs fail on values
    /// (an index out of range, two inputs whose open dimensions disagree); the reason is
    /// ONNX Runtime's.
    #[error("the model failed to run: {reason}")]
    Run { reason: String },
    #[error("output `{name}`: {reason}")]
    Output { name: String, reason: String },
}

impl EngineError {
    /// Whether the caller's inputs were at fault (nothing ran; retrying the same call fails
    /// the same way).
    pub fn is_caller_fault(&self) -> bool {
        matches!(self, EngineError::Input(_))
    }
}
