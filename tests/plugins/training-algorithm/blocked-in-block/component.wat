(module
  ;; A training algorithm in raw WebAssembly (canonical ABI, wrapped with wit-component)
  ;; whose describe waits in a host call far beyond its deadline.
  (import "cm32p2|wasi:clocks/monotonic-clock@0.2" "subscribe-duration" (func $subscribe (param i64) (result i32)))
  (import "cm32p2|wasi:io/poll@0.2" "[method]pollable.block" (func $block (param i32)))
  (memory (export "cm32p2_memory") 1)
  (global $heap (mut i32) (i32.const 16384))
  (func (export "cm32p2_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    ;; A bump allocator: align, then grow the memory when needed.
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  (func (export "cm32p2_initialize"))
  ;; algorithm-spec at 1024: name "tiny" (at 2048), version "0.1.0" (at 2056), the rest empty.
  (data (i32.const 1024) "\00\08\00\00\04\00\00\00\08\08\00\00\05\00\00\00")
  (data (i32.const 2048) "tiny")
  (data (i32.const 2056) "0.1.0")
  (func (export "cm32p2|atelier:plugin/algorithm@0.1|train")
    (param i32 i32 i32 i32 i32 i32 i32 i32 i64 i32 i32 i64) (result i32)
    unreachable)
  ;; describe: subscribes to the monotonic clock as far ahead as it goes (u64::MAX ns: the
  ;; host's deadline "never") and blocks on it (wasi:io/poll.[method]pollable.block).
  (func (export "cm32p2|atelier:plugin/algorithm@0.1|describe") (result i32)
    (call $block (call $subscribe (i64.const -1)))
    (i32.const 1024))
)
