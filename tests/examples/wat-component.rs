//! Writes the component of a `component.wat` conformance case to a file, for scripts (the
//! workflow benchmark registers `tests/plugins/workflow-step/noop` this way):
//!
//!     cargo build --workspace --example wat-component
//!     $CARGO_TARGET_DIR/debug/examples/wat-component tests/plugins/workflow-step/noop noop.wasm
//!
//! The world is the case's `world.txt`, else its parent directory's name (see
//! tests/plugins/README.md).

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, case, output] = args.as_slice() else {
        eprintln!("usage: wat-component CASE_DIR OUTPUT.wasm");
        return ExitCode::from(2);
    };
    let case = Path::new(case);
    if !case.join("component.wat").is_file() {
        eprintln!("{}: no component.wat there", case.display());
        return ExitCode::FAILURE;
    }
    let component = atelier_tests::plugins::wat_case(case);
    if let Err(e) = std::fs::write(output, component) {
        eprintln!("{output}: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
