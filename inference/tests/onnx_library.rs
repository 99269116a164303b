//! Loading ONNX Runtime itself: a file that is not the library, a missing one, then the real
//! one, then another. A test binary of its own, since a process loads the library once.

mod common;

use std::path::Path;

use atelier_inference::onnx::{EngineError, LIBRARY_SETTING, OnnxRuntime};

#[test]
fn the_library_loads_once_and_a_wrong_file_says_which_and_why() {
    let Some(lib) = common::library() else { return };

    let not_a_library = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = OnnxRuntime::load(&not_a_library).unwrap_err();
    assert!(matches!(err, EngineError::Library { .. }), "{err:?}");
    let m = err.to_string();
    assert!(
        m.starts_with(&format!(
            "cannot load ONNX Runtime from {}: ",
            not_a_library.display()
        )),
        "{m}"
    );
    assert!(m.contains(LIBRARY_SETTING), "{m}");

    let missing = Path::new("/nonexistent/libonnxruntime.so.1.32.0");
    let m = OnnxRuntime::load(missing).unwrap_err().to_string();
    assert!(
        m.starts_with("cannot load ONNX Runtime from /nonexistent/libonnxruntime.so.1.32.0: "),
        "{m}"
    );

    let runtime = OnnxRuntime::load(&lib).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runtime.library(), std::fs::canonicalize(&lib).unwrap());
    // The same file again: the same runtime.
    let again = OnnxRuntime::load(&lib).unwrap();
    assert_eq!(again.library(), runtime.library());

    // Another file once one is loaded: refused, naming the one in use.
    let other = lib.with_file_name("libonnxruntime_providers_shared.so");
    if other.is_file() {
        let m = OnnxRuntime::load(&other).unwrap_err().to_string();
        assert!(m.contains("already loaded ONNX Runtime from"), "{m}");
    }
}
