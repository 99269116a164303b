//! Test fixtures (feature `fixtures`): a core module in WAT wrapped into a component of a
//! world of `wit/`, as the conformance cases, the host tests and the benchmark need.

use std::path::Path;

/// The contracts (`wit/` of the repository).
pub fn wit_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("plugins/ has a parent")
        .join("wit")
}

/// A component for `world` from a core module in WAT whose exports follow the canonical ABI.
/// `extra` are more WIT packages (in order); the world is looked up in the last one given.
pub fn wat_component(extra: &[&str], world: &str, wat: &str) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let (mut pkg, _) = resolve.push_dir(wit_dir())?;
    for (i, src) in extra.iter().enumerate() {
        pkg = resolve.push_str(format!("extra-{i}.wit"), src)?;
    }
    let world = resolve.select_world(&[pkg], Some(world))?;
    let mut module = wat::parse_str(wat)?;
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
        false,
    )?;
    wit_component::ComponentEncoder::default()
        .validate(true)
        .module(&module)?
        .encode()
}

/// A training-algorithm component from one of the WAT cases in tests/plugins/training-algorithm
/// (with the case's `extra.wit` and `world.txt` when it has them).
pub fn training_case(case: &str) -> Vec<u8> {
    let dir = wit_dir()
        .parent()
        .expect("the wit dir has a parent: the repository")
        .join("tests/plugins/training-algorithm")
        .join(case);
    let path = dir.join("component.wat");
    let wat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let world = std::fs::read_to_string(dir.join("world.txt"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "training-algorithm".into());
    let extra = std::fs::read_to_string(dir.join("extra.wit")).ok();
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    wat_component(&extra, &world, &wat).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
}

/// The WASI slice a guest needs to sleep (a monotonic-clock subscription and a poll).
fn sleepy_wit() -> String {
    std::fs::read_to_string(
        wit_dir().join("../tests/plugins/training-algorithm/blocked-in-poll/extra.wit"),
    )
    .expect("tests/plugins/training-algorithm/blocked-in-poll/extra.wit")
}

/// A training algorithm whose `train` is `body` (a WAT function body returning the address
/// of its result), with imports of log, metrics, control, storage (read, write), checkpoints
/// (save) and a `$sleep`; `$metric`, `$ok` and `$err` help.
///
/// Memory: the spec at 1024, strings from 3000 (`data`: (address, text) pairs), `train`'s
/// result at 4096 (ok: `$ok` writes the final metrics list at 4200), host call results
/// from 5000 (8-aligned), the allocator's heap from 16384.
pub fn training_algorithm(body: &str, data: &[(u32, &str)]) -> Vec<u8> {
    let data: String = data
        .iter()
        .map(|(at, s)| format!("  (data (i32.const {at}) \"{s}\")\n"))
        .collect();
    let wat = format!(
        r#"(module
  (import "cm32p2|atelier:plugin/log@0.1" "log" (func $log (param i32 i32 i32)))
  (import "cm32p2|atelier:plugin/control@0.1" "should-stop" (func $should_stop (result i32)))
  (import "cm32p2|atelier:plugin/control@0.1" "heartbeat" (func $heartbeat (param i32 f64)))
  (import "cm32p2|atelier:plugin/metrics@0.1" "scalar" (func $scalar (param i32 i32 f64 i32 i64)))
  (import "cm32p2|atelier:plugin/storage@0.1" "write" (func $write (param i32 i32 i32 i32 i32)))
  (import "cm32p2|atelier:plugin/storage@0.1" "read" (func $read (param i32 i32 i32)))
  (import "cm32p2|atelier:plugin/checkpoints@0.1" "save" (func $save (param i64 i32 i32 i32)))
  (import "cm32p2|wasi:clocks/monotonic-clock@0.2" "subscribe-duration" (func $subscribe (param i64) (result i32)))
  (import "cm32p2|wasi:io/poll@0.2" "poll" (func $poll (param i32 i32 i32)))
  (memory (export "cm32p2_memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  (func (export "cm32p2_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  (func (export "cm32p2_initialize"))
  (data (i32.const 1024) "\00\08\00\00\04\00\00\00\08\08\00\00\05\00\00\00")
  (data (i32.const 2048) "tiny")
  (data (i32.const 2056) "0.1.0")
  (data (i32.const 2100) "loss")
{data}
  (func (export "cm32p2|atelier:plugin/algorithm@0.1|describe") (result i32)
    (i32.const 1024))
  ;; Sleeps `ns` nanoseconds (a monotonic-clock pollable, polled; the handle is leaked).
  (func $sleep (param $ns i64)
    (i32.store (i32.const 512) (call $subscribe (local.get $ns)))
    (call $poll (i32.const 512) (i32.const 1) (i32.const 600)))
  ;; A scalar metric `name` (at `ptr`, `len` bytes) without a step.
  (func $metric (param $ptr i32) (param $len i32) (param $v f64)
    (call $scalar (local.get $ptr) (local.get $len) (local.get $v) (i32.const 0) (i64.const 0)))
  ;; ok: final metrics [("loss", 0.25)].
  (func $ok (result i32)
    (i32.store8 (i32.const 4096) (i32.const 0))
    (i32.store (i32.const 4100) (i32.const 4200))
    (i32.store (i32.const 4104) (i32.const 1))
    (i32.store (i32.const 4200) (i32.const 2100))
    (i32.store (i32.const 4204) (i32.const 4))
    (f64.store (i32.const 4208) (f64.const 0.25))
    (i32.const 4096))
  ;; error of `kind` with the message at `ptr` (`len` bytes).
  (func $err (param $kind i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store8 (i32.const 4096) (i32.const 1))
    (i32.store8 (i32.const 4100) (local.get $kind))
    (i32.store (i32.const 4104) (local.get $ptr))
    (i32.store (i32.const 4108) (local.get $len))
    (i32.const 4096))
  ;; job-name 0 1, attempt 2, inputs 3 4, outputs 5 6, resume-from 7 (some?) 8 (step) 9 10 11.
  (func (export "cm32p2|atelier:plugin/algorithm@0.1|train")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i64) (result i32)
{body})
)"#
    );
    wat_component(&[&sleepy_wit()], "sleepy", &wat).expect("the WAT of a training algorithm")
}

/// A training algorithm whose `train` grows its memory by 1 MiB at a time, forever.
pub fn training_memory_bomb() -> Vec<u8> {
    training_algorithm(
        r#"
    (loop $more
      (drop (memory.grow (i32.const 16)))
      (br $more))
    (call $ok)"#,
        &[],
    )
}
