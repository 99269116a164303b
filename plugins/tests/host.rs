//! The host without a gateway: instance policies, recycling, tenants, queueing, the compile
//! cache. Fixtures are the WAT components of tests/plugins/.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test and bench code

use std::path::Path;
use std::sync::Arc;

use atelier_plugins::*;

fn component(case: &str) -> Vec<u8> {
    atelier_plugins::fixtures::training_case(case)
}

fn temp_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "atelier-plugins-test-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn host(dir: &Path, total_instances: u32) -> Arc<Host> {
    host_with(
        dir,
        total_instances,
        HostSettings::default().standby_instances,
    )
}

fn host_with(dir: &Path, total_instances: u32, standby_instances: u32) -> Arc<Host> {
    Host::new(
        dir,
        HostSettings {
            total_instances,
            standby_instances,
            max_memory_mb: 256,
            default_memory_mb: 64,
            ..Default::default()
        },
    )
    .unwrap()
}

fn plugin(host: &Host, key: &str, r: &Registered, spec: LimitsSpec) -> PluginRef {
    PluginRef {
        key: key.into(),
        digest: r.digest.clone(),
        world: r.world,
        limits: host.settings().resolve(r.world, &spec).unwrap(),
        model_dir: None,
    }
}

/// The `describe` fixture as plugin `tiny@1`, default limits: a call that just answers.
fn tiny(h: &Host) -> PluginRef {
    let r = h.register(&component("describe"), None).unwrap();
    plugin(h, "tiny@1", &r, LimitsSpec::default())
}

fn ctx(tenant: &str) -> CallContext {
    CallContext {
        tenant: tenant.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_instances_are_reused_per_tenant_and_recycled() {
    let dir = temp_dir();
    // No standby instances: every fresh call instantiates.
    let h = host_with(&dir, 16, 0);
    let r = h
        .register(&component("describe"), Some(World::TrainingAlgorithm))
        .unwrap();
    let warm = plugin(
        &h,
        "tiny@1",
        &r,
        LimitsSpec {
            instance_policy: Some(InstancePolicy::Warm),
            recycle_after_calls: Some(3),
            ..Default::default()
        },
    );
    let uses = |h: Arc<Host>, p: PluginRef, t: &'static str| async move {
        let r = h.describe(&p, ctx(t)).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.output.unwrap().name, "tiny");
        r.instance
    };
    assert_eq!(
        uses(h.clone(), warm.clone(), "a").await,
        InstanceUse::WarmNew
    );
    assert_eq!(
        uses(h.clone(), warm.clone(), "a").await,
        InstanceUse::WarmReused
    );
    // Another tenant never gets a's instance.
    assert_eq!(
        uses(h.clone(), warm.clone(), "b").await,
        InstanceUse::WarmNew
    );
    assert_eq!(
        uses(h.clone(), warm.clone(), "a").await,
        InstanceUse::WarmReused
    );
    // a's instance has served 3 calls: recycled.
    assert_eq!(
        uses(h.clone(), warm.clone(), "a").await,
        InstanceUse::WarmNew
    );

    // A trap discards the instance: `train` of this fixture is `unreachable`.
    let ctx_train = training_context();
    let t = h.train(&warm, ctx("b"), ctx_train).await;
    assert!(
        matches!(t.error, Some(CallError::Trap { .. })),
        "{:?}",
        t.error
    );
    assert_eq!(t.instance, InstanceUse::WarmReused);
    assert_eq!(
        uses(h.clone(), warm.clone(), "b").await,
        InstanceUse::WarmNew
    );

    // Fresh: a new instance every time.
    let fresh = plugin(&h, "tiny-fresh@1", &r, LimitsSpec::default());
    assert_eq!(
        uses(h.clone(), fresh.clone(), "a").await,
        InstanceUse::Fresh
    );
    assert_eq!(
        uses(h.clone(), fresh.clone(), "a").await,
        InstanceUse::Fresh
    );
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Waits (bounded) until the host has a standby instance of `key` ready.
/// Whether the standby instance appears. It is made on a blocking thread after the call,
/// which on a loaded 2-core CI machine (a debug build beside other tests) can take seconds:
/// the deadline only catches a standby that never comes, so it is minutes, not seconds.
/// Whether a standby instance is ready once the refill the last call started has ended.
async fn standby_ready(h: &Host, key: &str) -> bool {
    h.standby_settled(key).await > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_plugins_keep_a_never_called_instance_ready_after_their_first_call() {
    let dir = temp_dir();
    let h = host_with(&dir, 2, 1);
    let r = h
        .register(&component("describe"), Some(World::TrainingAlgorithm))
        .unwrap();
    let fresh = plugin(&h, "tiny@1", &r, LimitsSpec::default());
    // Nothing is made ahead of a plugin's first call.
    assert_eq!(h.standby_ready("tiny@1"), 0);
    let first = h.describe(&fresh, ctx("a")).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    assert_eq!(first.instance, InstanceUse::Fresh);
    assert!(first.timings.instantiate_us > 0);

    assert!(
        standby_ready(&h, "tiny@1").await,
        "no standby instance came up"
    );
    let second = h.describe(&fresh, ctx("b")).await;
    assert!(second.error.is_none(), "{:?}", second.error);
    assert_eq!(second.instance, InstanceUse::FreshStandby);
    assert_eq!(second.timings.instantiate_us, 0);
    assert_eq!(second.output.unwrap().name, "tiny");

    // New limits under the same name make the standby stale: the call instantiates.
    assert!(standby_ready(&h, "tiny@1").await);
    let changed = plugin(
        &h,
        "tiny@1",
        &r,
        LimitsSpec {
            memory_mb: Some(32),
            ..Default::default()
        },
    );
    let third = h.describe(&changed, ctx("a")).await;
    assert!(third.error.is_none(), "{:?}", third.error);
    assert_eq!(third.instance, InstanceUse::Fresh);

    // A call that finds the pool full takes the standby's slot: two slots, one held by the
    // standby, one by a looping call; a third call still runs.
    assert!(standby_ready(&h, "tiny@1").await);
    let spin_r = h.register(&component("infinite-loop"), None).unwrap();
    let spin = plugin(
        &h,
        "spin@1",
        &spin_r,
        LimitsSpec {
            timeout_ms: Some(300),
            ..Default::default()
        },
    );
    let spinning = {
        let (h, p) = (h.clone(), spin.clone());
        tokio::spawn(async move { h.describe(&p, ctx("a")).await })
    };
    // The looping call holds the second slot (the standby holds the first).
    h.until(|h| h.instances_in_use() == 2).await;
    let other = plugin(
        &h,
        "tiny-warm@1",
        &r,
        LimitsSpec {
            instance_policy: Some(InstancePolicy::Warm),
            ..Default::default()
        },
    );
    let beside = h.describe(&other, ctx("a")).await;
    assert!(beside.error.is_none(), "{:?}", beside.error);
    assert_eq!(h.standby_ready("tiny@1"), 0, "the standby kept its slot");
    assert!(matches!(
        spinning.await.unwrap().error,
        Some(CallError::Limit {
            kind: LimitKind::Timeout,
            ..
        })
    ));

    // Forgetting the plugin drops its standby.
    h.describe(&fresh, ctx("a")).await;
    assert!(standby_ready(&h, "tiny@1").await);
    h.forget(&fresh, false);
    assert_eq!(h.standby_ready("tiny@1"), 0);
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

fn training_context()
-> atelier_plugins::bindings::training::atelier::plugin::training_types::TrainContext {
    atelier_plugins::bindings::training::atelier::plugin::training_types::TrainContext {
        job_name: "j".into(),
        attempt: 0,
        inputs: vec![],
        outputs: vec![],
        resume_from: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_instance_pool_queue_rather_than_fail() {
    let dir = temp_dir();
    // Two pool slots, concurrency 8: six looping calls must wait for slots, not fail.
    let h = host(&dir, 2);
    let r = h.register(&component("infinite-loop"), None).unwrap();
    let spin = plugin(
        &h,
        "spin@1",
        &r,
        LimitsSpec {
            timeout_ms: Some(200),
            concurrency: Some(8),
            ..Default::default()
        },
    );
    let mut calls = Vec::new();
    for _ in 0..6 {
        let (h, p) = (h.clone(), spin.clone());
        calls.push(tokio::spawn(async move { h.describe(&p, ctx("a")).await }));
    }
    let mut queued = 0;
    for c in calls {
        let r = c.await.unwrap();
        match r.error {
            Some(CallError::Limit {
                kind: LimitKind::Timeout,
                limit: 200,
                ..
            }) => {}
            other => panic!("expected the timeout, got {other:?}"),
        }
        if r.timings.queued_us > 150_000 {
            queued += 1;
        }
    }
    // With two slots and six calls of at least 200 ms, some calls waited for a slot.
    assert!(queued >= 2, "{queued} calls waited");
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_host_on_the_same_dir_compiles_nothing() {
    let dir = temp_dir();
    let bytes = component("describe");
    let first = {
        let h = host(&dir, 4);
        let r = h.register(&bytes, None).unwrap();
        assert!(r.compiled);
        assert_eq!(h.compilations(), 1);
        assert!(
            !h.register(&bytes, None).unwrap().compiled,
            "registering again compiled"
        );
        r
    };
    let h = host(&dir, 4);
    assert_eq!(
        h.preload(&first.digest, first.world).unwrap(),
        LoadSource::Disk
    );
    let again = h.register(&bytes, None).unwrap();
    assert!(!again.compiled);
    assert_eq!(again.digest, first.digest);
    let p = plugin(&h, "tiny@1", &again, LimitsSpec::default());
    let r = h.describe(&p, ctx("a")).await;
    assert!(r.error.is_none());
    assert_eq!(h.compilations(), 0);
    // Limits out of bounds name the bound.
    let e = h
        .settings()
        .resolve(
            World::TrainingAlgorithm,
            &LimitsSpec {
                memory_mb: Some(100_000),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.contains("ATELIER_PLUGIN_MAX_MEMORY_MB"), "{e}");
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_for_another_world_is_a_typed_error_and_takes_no_instance() {
    let dir = temp_dir();
    let h = host_with(&dir, 4, 0);
    let tiny = tiny(&h);
    let step = |h: Arc<Host>, p: PluginRef| async move {
        let context =
            atelier_plugins::bindings::workflow::atelier::plugin::step_types::StepContext {
                workflow_name: "w".into(),
                execution_id: "e".into(),
                step_name: "s".into(),
                attempt: 0,
                deadline_unix_ms: 0,
            };
        h.run_step(&p, ctx("a"), context, vec![], vec![]).await
    };
    // A training plugin called as a workflow step: refused before anything runs.
    let report = step(h.clone(), tiny.clone()).await;
    match &report.error {
        Some(CallError::BadInput { message }) => assert_eq!(
            message,
            "the plugin is a training-algorithm plugin, not a workflow-step"
        ),
        other => panic!("expected a bad input, got {other:?}"),
    }
    assert_eq!(h.instances_in_use(), 0);
    // A reference that names the wrong world for its code: the host's error, not a panic.
    let wrong = PluginRef {
        world: World::WorkflowStep,
        ..tiny.clone()
    };
    let report = step(h.clone(), wrong).await;
    match &report.error {
        Some(CallError::Host { message }) => assert!(
            message.contains(
                "the plugin's code is a training-algorithm component, not a workflow-step"
            ),
            "{message}"
        ),
        other => panic!("expected the host's error, got {other:?}"),
    }
    assert!(instances_in_use(&h, 0).await, "the slot was not given back");
    // The plugin still answers as what it is.
    let r = h.describe(&tiny, ctx("a")).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Waits (bounded) until `n` pool slots are taken.
async fn instances_in_use(h: &Host, n: usize) -> bool {
    for _ in 0..2000 {
        if h.instances_in_use() == n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// Catches a hang: a call that never returns fails the test instead of stalling it. Generous
/// (a debug build on a loaded CI machine); the deadlines under test are far shorter.
async fn or_hang<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(120), f)
        .await
        .unwrap_or_else(|_| {
            panic!("{what} hung: a guest blocked in a host call outlived its deadline")
        })
}

fn assert_timeout(error: &Option<CallError>, limit_ms: u64) {
    match error {
        Some(CallError::Limit {
            kind: LimitKind::Timeout,
            limit,
            observed,
            unit,
            hint,
        }) => {
            assert_eq!(*limit, limit_ms);
            assert!(*observed >= limit_ms, "observed {observed} < {limit_ms}");
            assert_eq!(unit, "ms");
            assert!(hint.contains("limits.timeout_ms"), "{hint}");
            assert!(hint.contains("ATELIER_PLUGIN_MAX_TIMEOUT_MS"), "{hint}");
        }
        other => panic!("expected the timeout limit, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_blocked_in_a_host_call_ends_at_its_deadline_and_frees_its_slot() {
    let dir = temp_dir();
    // One pool slot, no standby instances: a blocked call that kept its slot would stall
    // every call after it.
    let h = host_with(&dir, 1, 0);
    let tiny = tiny(&h);
    // poll on a one-hour clock subscription; block on a subscription that never fires.
    for case in ["blocked-in-poll", "blocked-in-block"] {
        let r = h.register(&component(case), None).unwrap();
        assert!(
            r.imports.iter().any(|i| i.starts_with("wasi:io/poll@0.2")),
            "{:?}",
            r.imports
        );
        for policy in [InstancePolicy::Fresh, InstancePolicy::Warm] {
            let sleeper = plugin(
                &h,
                &format!("{case}-{policy:?}@1"),
                &r,
                LimitsSpec {
                    timeout_ms: Some(300),
                    instance_policy: Some(policy),
                    ..Default::default()
                },
            );
            let report = or_hang(case, h.describe(&sleeper, ctx("mallory"))).await;
            assert_timeout(&report.error, 300);
            // The instance is discarded: a warm plugin's next call gets a new one, and the
            // slot is free for anyone.
            let again = or_hang(case, h.describe(&sleeper, ctx("mallory"))).await;
            assert_timeout(&again.error, 300);
            if policy == InstancePolicy::Warm {
                assert_eq!(again.instance, InstanceUse::WarmNew);
            }
            let other = or_hang("a call after it", h.describe(&tiny, ctx("alice"))).await;
            assert!(other.error.is_none(), "{:?}", other.error);
            assert_eq!(h.instances_in_use(), 0);
        }
    }
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_tenants_calls_go_on_while_a_plugin_is_blocked_in_a_host_call() {
    let dir = temp_dir();
    // Two pool slots: the blocked call holds one, the other tenant's calls use the other.
    let h = host_with(&dir, 2, 0);
    let tiny = tiny(&h);
    let r = h.register(&component("blocked-in-poll"), None).unwrap();
    // Long enough that the other tenant's few calls (milliseconds each) finish well before
    // it, even on a loaded CI machine; the call is still bounded.
    let sleeper = plugin(
        &h,
        "sleeper@1",
        &r,
        LimitsSpec {
            timeout_ms: Some(15_000),
            ..Default::default()
        },
    );
    let blocked = {
        let (h, p) = (h.clone(), sleeper.clone());
        tokio::spawn(async move { h.describe(&p, ctx("mallory")).await })
    };
    assert!(
        instances_in_use(&h, 1).await,
        "the blocked call never took its slot"
    );
    for _ in 0..5 {
        let r = or_hang("another tenant's call", h.describe(&tiny, ctx("alice"))).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.output.unwrap().name, "tiny");
    }
    assert!(
        !blocked.is_finished(),
        "the blocked call ended before the other tenant's calls were answered"
    );
    let report = or_hang("the blocked call", blocked).await.unwrap();
    assert_timeout(&report.error, 15_000);
    assert_eq!(h.instances_in_use(), 0);

    // As many blocked calls as the pool has slots, and more queued: every one ends at its
    // deadline, and the other tenant's call gets a slot after them instead of never.
    let short = plugin(
        &h,
        "short-sleeper@1",
        &r,
        LimitsSpec {
            timeout_ms: Some(300),
            concurrency: Some(8),
            ..Default::default()
        },
    );
    let mut calls = Vec::new();
    for _ in 0..4 {
        let (h, p) = (h.clone(), short.clone());
        calls.push(tokio::spawn(
            async move { h.describe(&p, ctx("mallory")).await },
        ));
    }
    assert!(instances_in_use(&h, 2).await, "the pool never filled");
    let r = or_hang("a call behind a full pool", h.describe(&tiny, ctx("alice"))).await;
    assert!(r.error.is_none(), "{:?}", r.error);
    for c in calls {
        let r = or_hang("a blocked call", c).await.unwrap();
        assert_timeout(&r.error, 300);
    }
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_locks_serialize_one_key_and_are_dropped_with_their_last_user() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let dir = temp_dir();
    let h = host_with(&dir, 1, 0);
    let a = h.lock_key("tiny@1").await;
    // The same key waits for the holder; another key does not.
    let mut b = Box::pin(h.lock_key("tiny@1"));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(b.as_mut().poll(&mut cx), Poll::Pending));
    let other = h.lock_key("tiny@2").await;
    assert!(matches!(b.as_mut().poll(&mut cx), Poll::Pending));
    drop(other);
    assert_eq!(h.locked_keys(), 1);
    drop(a);
    let b = b.await;
    assert_eq!(h.locked_keys(), 1);
    drop(b);
    assert_eq!(h.locked_keys(), 0);
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

/// The infinite-loop fixture with `describe` answering its first call and looping from the
/// second on: a warm instance that a later call finds healthy, then hangs in.
fn loops_after_first_call() -> Vec<u8> {
    let path = atelier_plugins::fixtures::wit_dir()
        .parent()
        .unwrap()
        .join("tests/plugins/training-algorithm/infinite-loop/component.wat");
    let wat = std::fs::read_to_string(path).unwrap();
    let looping = "(loop $forever (br $forever))";
    assert!(wat.contains(looping));
    let wat = wat
        .replace(
            looping,
            "(if (global.get $called) (then (loop $forever (br $forever)))) \
             (global.set $called (i32.const 1))",
        )
        .replacen(
            "(global $heap",
            "(global $called (mut i32) (i32.const 0))\n  (global $heap",
            1,
        );
    atelier_plugins::fixtures::wat_component(&[], "training-algorithm", &wat).unwrap()
}

/// `spec` with the warm instance policy.
fn warm(spec: LimitsSpec) -> LimitsSpec {
    LimitsSpec {
        instance_policy: Some(InstancePolicy::Warm),
        ..spec
    }
}

fn assert_timed_out<O>(report: &CallReport<O>) {
    assert!(
        matches!(
            report.error,
            Some(CallError::Limit {
                kind: LimitKind::Timeout,
                ..
            })
        ),
        "expected the timeout, got {:?}",
        report.error
    );
}

/// A caller's deadline (an inference service's call timeout) ends a call long before the
/// plugin's own one-hour limit: a guest looping in wasm, one waiting in a host call, and one
/// looping on a warm instance run in place on the worker (`inline`). Each ends with the
/// timeout and gives its pool slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_ends_at_its_callers_deadline_before_its_own_timeout() {
    let dir = temp_dir();
    // One pool slot: a call still running past its deadline would stall the next one.
    let h = host_with(&dir, 1, 0);
    let tiny = tiny(&h);
    let an_hour = LimitsSpec {
        timeout_ms: Some(3_600_000),
        ..Default::default()
    };
    let soon = |inline| CallContext {
        tenant: "mallory".into(),
        deadline: Some(std::time::Instant::now() + std::time::Duration::from_millis(300)),
        inline,
        ..Default::default()
    };
    for case in ["infinite-loop", "blocked-in-poll"] {
        let r = h.register(&component(case), None).unwrap();
        let slow = plugin(&h, &format!("{case}@1"), &r, an_hour.clone());
        let report = or_hang(case, h.describe(&slow, soon(true))).await;
        assert_timed_out(&report);
        assert_eq!(h.instances_in_use(), 0);
        let other = or_hang("a call after it", h.describe(&tiny, ctx("alice"))).await;
        assert!(other.error.is_none(), "{:?}", other.error);
    }

    let r = h.register(&loops_after_first_call(), None).unwrap();
    let warm = plugin(&h, "warm-loop@1", &r, warm(an_hour));
    let first = or_hang("the first call", h.describe(&warm, soon(true))).await;
    assert!(first.error.is_none(), "{:?}", first.error);
    assert_eq!(first.instance, InstanceUse::WarmNew);
    let second = or_hang("the warm call", h.describe(&warm, soon(true))).await;
    assert_eq!(second.instance, InstanceUse::WarmReused);
    assert_timed_out(&second);
    // The hung instance is discarded, its slot free for anyone.
    assert_eq!(h.instances_in_use(), 0);
    let other = or_hang("a call after it", h.describe(&tiny, ctx("alice"))).await;
    assert!(other.error.is_none(), "{:?}", other.error);
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `inline` on a current-thread runtime (where `block_in_place` cannot run) takes the
/// blocking pool, warm instances included.
#[tokio::test]
async fn inline_calls_on_a_current_thread_runtime_take_the_blocking_pool() {
    let dir = temp_dir();
    let h = host_with(&dir, 1, 0);
    let r = h.register(&component("describe"), None).unwrap();
    let warm = plugin(&h, "tiny@1", &r, warm(LimitsSpec::default()));
    let inline = || CallContext {
        tenant: "alice".into(),
        inline: true,
        ..Default::default()
    };
    for expected in [InstanceUse::WarmNew, InstanceUse::WarmReused] {
        let report = h.describe(&warm, inline()).await;
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!(report.instance, expected);
    }
    drop(h);
    std::fs::remove_dir_all(dir).unwrap();
}
