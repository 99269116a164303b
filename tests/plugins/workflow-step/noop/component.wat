(module
  ;; A workflow step that does nothing: `run` returns ok with an empty step-result (no
  ;; outputs, no variables) and imports nothing. The workflow benchmark (bench/workflows.sh)
  ;; runs DAGs of it to measure the engine's own hand-off between steps.
  (memory (export "cm32p2_memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  ;; A bump allocator for the host's copies of the arguments (align, grow when needed).
  (func (export "cm32p2_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  ;; run(context: workflow-name 0 1, execution-id 2 3, step-name 4 5, attempt 6,
  ;; deadline 7; inputs 8 9; outputs 10 11) -> the address of its result<step-result, error>.
  ;; At 1024 the memory stays zero: tag 0 (ok), outputs (0, 0), variables (0, 0).
  (func (export "cm32p2|atelier:plugin/step@0.1|run")
    (param i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i32 i32) (result i32)
    ;; The arguments are not read: the next call's copies reuse their space.
    (global.set $heap (i32.const 16384))
    (i32.const 1024))
)
