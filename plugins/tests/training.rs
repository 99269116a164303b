//! Training runs (`Host::train_run`) without a gateway: completion with metrics and
//! checkpoints, resuming from the newest checkpoint, stops the guest obeys or ignores (busy
//! or waiting in a host call), the time limit, heartbeats and logs seen while the guest
//! runs, a log flood kept bounded, the guest's error kinds, traps and the memory limit, and
//! writes outside the output channels refused. The guests are core modules in WAT wrapped
//! into components here.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test code

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atelier_plugins::bindings::training::atelier::plugin::training_types::Channel;
use atelier_plugins::training::MetricPoint;
use atelier_plugins::*;

fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "atelier-train-test-{}",
        uuid::Uuid::new_v4().simple()
    ))
}

fn host(dir: &Path) -> Arc<Host> {
    Host::new(
        dir.join("cache"),
        HostSettings {
            total_instances: 8,
            max_memory_mb: 256,
            default_memory_mb: 64,
            ..Default::default()
        },
    )
    .unwrap()
}

const STARTED: (u32, &str) = (3000, "started");
const STOPPED: (u32, &str) = (3010, "stopped");

/// Logs "started", heartbeats 0.25, then sleeps 20 ms at a time until `should-stop`, and
/// returns `cancelled`.
fn obedient() -> Vec<u8> {
    fixtures::training_algorithm(
        r#"
    (call $log (i32.const 1) (i32.const 3000) (i32.const 7))
    (call $heartbeat (i32.const 1) (f64.const 0.25))
    (block $done
      (loop $wait
        (br_if $done (call $should_stop))
        (call $sleep (i64.const 20000000))
        (br $wait)))
    (call $err (i32.const 4) (i32.const 3010) (i32.const 7))"#,
        &[STARTED, STOPPED],
    )
}

struct Rig {
    dir: PathBuf,
    host: Arc<Host>,
}

impl Rig {
    fn new() -> Rig {
        let dir = temp_dir();
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        Rig {
            host: host(&dir),
            dir,
        }
    }

    fn plugin(&self, key: &str, component: &[u8], spec: LimitsSpec) -> PluginRef {
        let r = self
            .host
            .register(component, Some(World::TrainingAlgorithm))
            .unwrap();
        PluginRef {
            key: key.into(),
            digest: r.digest.clone(),
            world: r.world,
            limits: self.host.settings().resolve(r.world, &spec).unwrap(),
            model_dir: None,
        }
    }

    fn storage(&self) -> PathBuf {
        self.dir.join("storage")
    }

    fn ctx(&self, tenant: &str) -> CallContext {
        CallContext {
            tenant: tenant.into(),
            storage: storage::Grant::new(self.storage(), 1 << 20),
            ..Default::default()
        }
    }

    async fn run(&self, plugin: &PluginRef, run: TrainRun, watch: Arc<TrainWatch>) -> TrainReport {
        self.host
            .train_run(plugin, self.ctx("alice"), run, watch)
            .await
    }
}

impl Rig {
    /// The run on a task of its own, to observe and stop while it runs.
    fn spawn(
        &self,
        plugin: &PluginRef,
        run: TrainRun,
        watch: &Arc<TrainWatch>,
    ) -> tokio::task::JoinHandle<TrainReport> {
        let (h, p, ctx, w) = (
            self.host.clone(),
            plugin.clone(),
            self.ctx("alice"),
            watch.clone(),
        );
        tokio::spawn(async move { h.train_run(&p, ctx, run, w).await })
    }
}

fn terminated(reason: StopReason, interrupted: bool) -> TrainOutcome {
    TrainOutcome::Terminated {
        reason,
        interrupted,
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn channel(name: &str, path: &str) -> Channel {
    Channel {
        name: name.into(),
        path: path.into(),
    }
}

fn train_run(attempt: u32) -> TrainRun {
    TrainRun {
        job_name: "job-1".into(),
        attempt,
        inputs: vec![channel("data_url", "in")],
        outputs: vec![channel("train_url", "out/")],
        resume_from: None,
        hyperparameters: Vec::new(),
        time_limit: Duration::from_secs(3600),
        grace: Duration::from_secs(30),
    }
}

fn watch() -> Arc<TrainWatch> {
    TrainWatch::new(WatchLimits::default())
}

fn metric(points: &[MetricPoint], name: &str) -> Option<f64> {
    points
        .iter()
        .rev()
        .find(|p| p.name == name)
        .map(|p| p.value)
}

/// Waits (without polling) until `done` holds for the watch's snapshot.
async fn until(w: &TrainWatch, done: impl Fn(&Liveness) -> bool) {
    let mut changes = w.changed();
    while !done(&w.snapshot()) {
        changes.changed().await.unwrap();
    }
}

/// Reports its progress, saves a checkpoint (step attempt + 1) and writes to its output, to
/// its input and outside its channels, each result a metric; completes.
fn diligent() -> Vec<u8> {
    fixtures::training_algorithm(
        r#"
    (call $log (i32.const 1) (i32.const 3000) (i32.const 7))
    (call $heartbeat (i32.const 1) (f64.const 0.5))
    (call $scalar (i32.const 2100) (i32.const 4) (f64.const 0.25) (i32.const 1) (i64.const 1))
    ;; resume: the step resumed from, or -1
    (call $metric (i32.const 3100) (i32.const 6)
      (if (result f64) (local.get 7)
        (then (f64.convert_i64_u (local.get 8)))
        (else (f64.const -1))))
    ;; saved: 0 when checkpoints.save(attempt + 1, "ckpt") succeeded
    (call $save (i64.extend_i32_u (i32.add (local.get 2) (i32.const 1))) (i32.const 3120) (i32.const 4) (i32.const 5000))
    (call $metric (i32.const 3130) (i32.const 5) (f64.convert_i32_u (i32.load8_u (i32.const 5000))))
    ;; write_* = 10 * (error?) + the storage error's case (1: denied)
    (call $write (i32.const 3200) (i32.const 13) (i32.const 3120) (i32.const 4) (i32.const 5120))
    (call $metric (i32.const 3300) (i32.const 12)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5120)) (i32.const 10)) (i32.load8_u (i32.const 5128)))))
    (call $write (i32.const 3220) (i32.const 7) (i32.const 3120) (i32.const 4) (i32.const 5200))
    (call $metric (i32.const 3320) (i32.const 11)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5200)) (i32.const 10)) (i32.load8_u (i32.const 5208)))))
    (call $write (i32.const 3240) (i32.const 11) (i32.const 3120) (i32.const 4) (i32.const 5280))
    (call $metric (i32.const 3340) (i32.const 13)
      (f64.convert_i32_u (i32.add (i32.mul (i32.load8_u (i32.const 5280)) (i32.const 10)) (i32.load8_u (i32.const 5288)))))
    (call $ok)"#,
        &[
            STARTED,
            (3100, "resume"),
            (3120, "ckpt"),
            (3130, "saved"),
            (3200, "out/model.bin"),
            (3220, "in/evil"),
            (3240, "elsewhere/x"),
            (3300, "write_output"),
            (3320, "write_input"),
            (3340, "write_outside"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_completes_with_its_metrics_and_checkpoint_and_only_its_output_written() {
    let rig = Rig::new();
    let p = rig.plugin("diligent@1", &diligent(), LimitsSpec::default());
    let w = watch();
    let report = rig.run(&p, train_run(0), w.clone()).await;
    assert_eq!(
        report.outcome,
        TrainOutcome::Completed {
            final_metrics: vec![("loss".into(), 0.25)]
        }
    );
    assert_eq!(report.instance, InstanceUse::Fresh);
    assert_eq!(report.resumed_from, None);
    let live = w.snapshot();
    assert_eq!(live.progress, Some(0.5));
    assert!(live.heartbeat_at.is_some() && live.started_at.is_some());
    assert_eq!(live.latest_metrics["loss"], (0.25, 1));
    let drained = w.drain();
    assert_eq!(drained.logs.len(), 1);
    assert_eq!(drained.logs[0].message, "started");
    assert_eq!(drained.logs[0].level, "info");
    let m = &drained.metrics;
    assert_eq!(
        metric(m, "resume"),
        Some(-1.0),
        "a first run resumes nothing"
    );
    assert_eq!(metric(m, "saved"), Some(0.0));
    assert_eq!(metric(m, "write_output"), Some(0.0));
    // AC-50: the input channel is read-only, the rest of the storage not granted: both
    // writes are denied, and the run goes on to complete.
    assert_eq!(metric(m, "write_input"), Some(11.0));
    assert_eq!(metric(m, "write_outside"), Some(11.0));
    let storage = rig.storage();
    assert_eq!(
        std::fs::read(storage.join("out/model.bin")).unwrap(),
        b"ckpt"
    );
    assert_eq!(
        std::fs::read(storage.join("out/checkpoints/step-000000000001")).unwrap(),
        b"ckpt"
    );
    assert!(!storage.join("in/evil").exists() && !storage.join("elsewhere").exists());
    // The drained queue is empty until the next report.
    assert_eq!(w.drain(), Drained::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_newest_checkpoint_in_step_order() {
    let rig = Rig::new();
    let p = rig.plugin("diligent@1", &diligent(), LimitsSpec::default());
    // An earlier attempt left steps 9 and 10 (named so that text order would pick 9).
    let ckpts = rig.storage().join("out/checkpoints");
    std::fs::create_dir_all(&ckpts).unwrap();
    std::fs::write(ckpts.join("step-9"), b"nine").unwrap();
    std::fs::write(ckpts.join("step-10"), b"ten!").unwrap();
    for step in 3..=8 {
        std::fs::write(ckpts.join(format!("step-{step}")), b"old").unwrap();
    }

    let w = watch();
    let report = rig.run(&p, train_run(1), w.clone()).await;
    assert!(
        matches!(report.outcome, TrainOutcome::Completed { .. }),
        "{:?}",
        report.outcome
    );
    let resumed = report.resumed_from.unwrap();
    assert_eq!(
        (resumed.step, resumed.path.as_str(), resumed.size),
        (10, "out/checkpoints/step-10", 4)
    );
    assert_eq!(metric(&w.drain().metrics, "resume"), Some(10.0));
    // Its save (step 2) kept the 5 newest and itself; the older ones are gone.
    let mut left: Vec<String> = std::fs::read_dir(&ckpts)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "step-000000000002",
            "step-10",
            "step-6",
            "step-7",
            "step-8",
            "step-9"
        ]
    );

    // A first run resumes only from what it is given.
    let w = watch();
    let report = rig.run(&p, train_run(0), w.clone()).await;
    assert_eq!(report.resumed_from, None);
    assert_eq!(metric(&w.drain().metrics, "resume"), Some(-1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_heartbeats_are_seen_while_the_guest_runs_and_a_stop_it_obeys_terminates_it() {
    let rig = Rig::new();
    // The plugin's call timeout is short: a run is bounded by its own time limit instead.
    let p = rig.plugin(
        "obedient@1",
        &obedient(),
        LimitsSpec {
            timeout_ms: Some(100),
            ..Default::default()
        },
    );
    let w = watch();
    let running = rig.spawn(&p, train_run(0), &w);
    until(&w, |l| l.heartbeat_at.is_some() && l.last_log_at.is_some()).await;
    let live = w.snapshot();
    assert_eq!(live.progress, Some(0.25));
    assert_eq!(live.stop, None);
    assert_eq!(w.drain().logs[0].message, "started");
    // Still running: past the plugin's 100 ms call timeout.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!running.is_finished());
    w.stop();
    let report = running.await.unwrap();
    assert_eq!(report.outcome, terminated(StopReason::Stopped, false));
    assert_eq!(w.snapshot().stop, Some(StopReason::Stopped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_time_limit_stops_the_run() {
    let rig = Rig::new();
    let p = rig.plugin("obedient@1", &obedient(), LimitsSpec::default());
    let mut run = train_run(0);
    run.time_limit = Duration::from_millis(200);
    let report = rig.run(&p, run, watch()).await;
    assert_eq!(report.outcome, terminated(StopReason::TimeLimit, false));
}

/// A guest ignoring the stop is interrupted once the grace is over, busy or waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_ignoring_the_stop_is_interrupted_after_the_grace() {
    let rig = Rig::new();
    let spinning = fixtures::training_algorithm(
        r#"
    (call $log (i32.const 1) (i32.const 3000) (i32.const 7))
    (loop $forever (br $forever))
    (call $ok)"#,
        &[STARTED],
    );
    let sleeping = fixtures::training_algorithm(
        r#"
    (call $log (i32.const 1) (i32.const 3000) (i32.const 7))
    (call $sleep (i64.const 3600000000000))
    (call $ok)"#,
        &[STARTED],
    );
    for (key, component) in [("spin@1", spinning), ("sleep@1", sleeping)] {
        let p = rig.plugin(key, &component, LimitsSpec::default());
        let w = watch();
        let mut run = train_run(0);
        run.grace = Duration::from_millis(200);
        let running = rig.spawn(&p, run, &w);
        until(&w, |l| l.last_log_at.is_some()).await;
        w.stop();
        let report = running.await.unwrap();
        assert_eq!(
            report.outcome,
            terminated(StopReason::Stopped, true),
            "{key}"
        );
    }
    // The instances are gone: no pool slot is held but standby ones.
    assert!(rig.host.instances_in_use() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_before_the_run_starts_runs_nothing() {
    let rig = Rig::new();
    let p = rig.plugin("diligent@1", &diligent(), LimitsSpec::default());
    let w = watch();
    w.stop();
    let report = rig.run(&p, train_run(0), w.clone()).await;
    assert_eq!(report.outcome, terminated(StopReason::Stopped, false));
    assert!(!rig.storage().join("out").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_kept_bounded_and_counted() {
    let rig = Rig::new();
    let line = "x".repeat(1000);
    let flood = fixtures::training_algorithm(
        r#"
    (block $done
      (loop $more
        (br_if $done (call $should_stop))
        (call $log (i32.const 1) (i32.const 6000) (i32.const 1000))
        (br $more)))
    (call $err (i32.const 4) (i32.const 3010) (i32.const 7))"#,
        &[STOPPED, (6000, &line)],
    );
    let p = rig.plugin("flood@1", &flood, LimitsSpec::default());
    let w = TrainWatch::new(WatchLimits {
        log_bytes: 64 * 1000,
        metric_points: 100,
    });
    let running = rig.spawn(&p, train_run(0), &w);
    until(&w, |l| l.logs_dropped > 1000).await;
    let drained = w.drain();
    assert_eq!(
        drained.logs.len(),
        64,
        "the queue holds 64 lines of 1000 bytes"
    );
    assert!(drained.logs_dropped > 1000);
    // Drained: lines are queued again.
    until(&w, |l| l.logs_queued > 0).await;
    w.stop();
    let report = running.await.unwrap();
    assert!(
        matches!(report.outcome, TrainOutcome::Terminated { .. }),
        "{:?}",
        report.outcome
    );
    assert!(w.snapshot().log_bytes_queued <= 64 * 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guests_errors_traps_and_limits_become_outcomes_a_runner_can_restart_from() {
    let rig = Rig::new();
    // error-kind: invalid-input 0, unsupported 1, not-ready 2, failed 3, cancelled 4.
    for (kind, expected, restartable) in [
        (0, "invalid-input", false),
        (1, "unsupported", false),
        (2, "not-ready", true),
        (3, "failed", false),
        (4, "cancelled", false),
    ] {
        let c = fixtures::training_algorithm(
            "\n    (call $err (i32.const KIND) (i32.const 3000) (i32.const 4))"
                .replace("KIND", &kind.to_string())
                .as_str(),
            &[(3000, "boom")],
        );
        let p = rig.plugin(&format!("fails-{kind}@1"), &c, LimitsSpec::default());
        let report = rig.run(&p, train_run(0), watch()).await;
        let TrainOutcome::Failed {
            kind: failure,
            message,
            guest_kind,
        } = report.outcome
        else {
            panic!("{expected}: {:?}", report.outcome);
        };
        assert_eq!(guest_kind.as_deref(), Some(expected));
        assert_eq!(failure.restartable(), restartable, "{expected}");
        assert!(message.contains("boom"), "{message}");
    }

    let trap = fixtures::training_algorithm("\n    unreachable", &[]);
    let p = rig.plugin("trap@1", &trap, LimitsSpec::default());
    let report = rig.run(&p, train_run(0), watch()).await;
    let TrainOutcome::Failed { kind, message, .. } = report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(kind, FailureKind::Trap);
    assert!(message.contains("unreachable"), "{message}");
    assert!(!kind.restartable());

    let p = rig.plugin(
        "bomb@1",
        &fixtures::training_memory_bomb(),
        LimitsSpec {
            memory_mb: Some(32),
            ..Default::default()
        },
    );
    let report = rig.run(&p, train_run(0), watch()).await;
    let TrainOutcome::Failed { kind, message, .. } = report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(kind, FailureKind::Limit);
    assert!(message.starts_with("memory limit"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_that_would_widen_the_grant_are_refused_before_anything_runs() {
    let rig = Rig::new();
    let p = rig.plugin("diligent@1", &diligent(), LimitsSpec::default());
    // (input prefix, output prefix, what the refusal names)
    let cases = [
        ("data/", "data/out", "overlap"),
        ("data/in/", "data", "overlap"),
        ("in", "", "whole storage"),
        ("", "out", "whole storage"),
        ("../x", "out", ".."),
    ];
    for (input, output, expected) in cases {
        let mut run = train_run(0);
        run.inputs = vec![channel("d", input)];
        run.outputs = vec![channel("o", output)];
        let report = rig.run(&p, run, watch()).await;
        let TrainOutcome::Failed { kind, message, .. } = report.outcome else {
            panic!("{expected}: {:?}", report.outcome);
        };
        assert_eq!(kind, FailureKind::UserError);
        assert!(message.contains(expected), "{message}");
    }
    assert!(std::fs::read_dir(rig.storage()).unwrap().next().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_queued_for_the_plugin_ends_the_run_there() {
    let rig = Rig::new();
    // One run of the plugin at a time: the second waits for the first.
    let p = rig.plugin(
        "obedient@1",
        &obedient(),
        LimitsSpec {
            concurrency: Some(1),
            ..Default::default()
        },
    );
    let (first, second) = (watch(), watch());
    let running = rig.spawn(&p, train_run(0), &first);
    until(&first, |l| l.heartbeat_at.is_some()).await;
    let queued = rig.spawn(&p, train_run(0), &second);
    second.stop();
    assert_eq!(
        queued.await.unwrap().outcome,
        terminated(StopReason::Stopped, false)
    );
    assert_eq!(second.snapshot().started_at, None, "never started");
    assert!(!running.is_finished());
    first.stop();
    assert_eq!(
        running.await.unwrap().outcome,
        terminated(StopReason::Stopped, false)
    );
}
