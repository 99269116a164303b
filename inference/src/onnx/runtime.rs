//! ONNX Runtime itself: the shared library, loaded once per process from the file that
//! [`LIBRARY_SETTING`] names (the `libonnxruntime.so.*` that the PyPI `onnxruntime` or
//! `onnxruntime-gpu` wheel ships), and the one environment every session lives in.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::ep::ExecutionProvider;

use super::{EngineError, LIBRARY_SETTING};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    /// A CUDA device by its index, through ONNX Runtime's CUDA execution provider.
    Cuda(u32),
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// The loaded ONNX Runtime. Cheap to clone; every clone is the same process-wide runtime.
#[derive(Clone)]
pub struct OnnxRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    library: PathBuf,
    cuda: bool,
    env: ort::environment::Environment,
}

impl fmt::Debug for OnnxRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxRuntime")
            .field("library", &self.inner.library)
            .field("cuda", &self.inner.cuda)
            .finish_non_exhaustive()
    }
}

/// What this process loaded. ONNX Runtime allows one library and one environment per process,
/// and `ort` keeps the library for the life of the process once it opened it, even when the
/// environment then fails to build.
enum Loaded {
    Nothing,
    /// The library is open but no environment was built on it (that failed).
    Library(PathBuf),
    Runtime(OnnxRuntime),
}

static LOADED: Mutex<Loaded> = Mutex::new(Loaded::Nothing);

impl OnnxRuntime {
    /// Loads ONNX Runtime from `lib_path` (the path to `libonnxruntime.so.<version>`).
    /// Once per process: a later call with the same file returns the same runtime, one with
    /// another file is refused (a process cannot hold two).
    pub fn load(lib_path: &Path) -> Result<OnnxRuntime, EngineError> {
        let fail = |reason: String| EngineError::Library {
            path: lib_path.to_owned(),
            reason,
        };
        let mut loaded = LOADED
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let library = std::fs::canonicalize(lib_path).map_err(|e| fail(e.to_string()))?;
        match &*loaded {
            Loaded::Runtime(runtime) if runtime.inner.library == library => {
                return Ok(runtime.clone());
            }
            Loaded::Runtime(OnnxRuntime { inner }) => {
                return Err(fail(other_library(&inner.library)));
            }
            Loaded::Library(open) if *open != library => return Err(fail(other_library(open))),
            Loaded::Library(_) | Loaded::Nothing => {}
        }
        if !library.is_file() {
            return Err(fail("not a file".to_owned()));
        }
        // `ort` asserts on a few things a wrong library can do (a null API table); a panic
        // here is that library's fault, not a reason to take the gateway down.
        let built = catch_unwind(AssertUnwindSafe(|| -> Result<_, EngineError> {
            let builder = ort::init_from(&library).map_err(|e| fail(dlopen_error(&e)))?;
            *loaded = Loaded::Library(library.clone());
            let env = builder
                .with_name("atelier")
                .with_telemetry(false)
                .build()
                .map_err(|e| fail(e.to_string()))?;
            let cuda = ort::ep::CUDA::is_available().map_err(|e| fail(e.to_string()))?;
            Ok((env, cuda))
        }))
        .map_err(|panic| fail(format!("ort panicked: {}", panic_message(&*panic))))?;
        let (env, cuda) = built?;
        tracing::info!(library = %library.display(), cuda, "ONNX Runtime loaded");
        let runtime = OnnxRuntime {
            inner: Arc::new(Inner { library, cuda, env }),
        };
        *loaded = Loaded::Runtime(runtime.clone());
        Ok(runtime)
    }

    /// The library file, as loaded (symbolic links resolved).
    pub fn library(&self) -> &Path {
        &self.inner.library
    }

    /// Whether this ONNX Runtime build has the CUDA execution provider (the `onnxruntime-gpu`
    /// wheel does, `onnxruntime` does not). Whether a GPU answers shows when a model loads.
    pub fn cuda_available(&self) -> bool {
        self.inner.cuda
    }

    /// The process's `ort` environment, for code that drives `ort` itself beside the engine
    /// (bench/onnx-engines measures a bare `ort::Session` against it): a process has one.
    #[doc(hidden)]
    pub fn ort_environment(&self) -> &ort::environment::Environment {
        &self.inner.env
    }

    /// Checks that `device` can be asked for at all.
    pub(crate) fn check_device(&self, device: Device) -> Result<(), EngineError> {
        match device {
            Device::Cpu => Ok(()),
            Device::Cuda(_) if self.inner.cuda => Ok(()),
            Device::Cuda(_) => Err(EngineError::Device {
                device,
                reason: format!(
                    "the ONNX Runtime at {} has no CUDA execution provider (the PyPI \
                     `onnxruntime` wheel is CPU-only; `onnxruntime-gpu` has CUDA); run the \
                     model on the CPU or point {LIBRARY_SETTING} at a GPU build",
                    self.inner.library.display()
                ),
            }),
        }
    }
}

/// Why the library did not load, with the dynamic loader's own words (`ort` shows only
/// "dlopen failed").
fn dlopen_error(e: &ort::LoadDynamicError) -> String {
    match e {
        ort::LoadDynamicError::Dlopen { error, .. } => {
            let mut message = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(s) = source {
                message = format!("{message}: {s}");
                source = s.source();
            }
            message
        }
        ort::LoadDynamicError::MissingApi { .. } => {
            "it exports no `OrtGetApiBase`, so it is not ONNX Runtime's main library".to_owned()
        }
        other => other.to_string(),
    }
}

fn other_library(open: &Path) -> String {
    format!(
        "this process already loaded ONNX Runtime from {}, and a process can hold only one",
        open.display()
    )
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
