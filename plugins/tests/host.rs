//! The host without a gateway: instance policies, recycling, tenants, queueing, the compile
//! cache. Fixtures are the WAT components of tests/plugins/.

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
async fn standby_ready(h: &Host, key: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while std::time::Instant::now() < deadline {
        if h.standby_ready(key) > 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
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
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
