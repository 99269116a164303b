//! ONNX Runtime (through `ort`, load-dynamic, the PyPI wheel's library) against tract on the
//! same small models: model load time, the latency of one run (p50/p99, one thread) and
//! throughput on 1 and 16 threads. bench/onnx-engines.sh builds the models and runs this.
//!
//!   onnx-engines-bench LIBONNXRUNTIME MODELS_DIR [ITERATIONS] [SECONDS]
//!
//! ITERATIONS timed runs per contender for the latency, SECONDS per contender and thread count
//! for the throughput; the contenders of one model take turns (see `BLOCK`, `WINDOWS`).
//!
//! Contenders, each on one thread per run (no intra-op threads):
//! - `ort`: a raw `ort::Session` behind a Mutex (its `run` takes `&mut self`), input value made
//!   once and reused, outputs not read: the floor of ONNX Runtime from Rust.
//! - `engine ×1`, `engine ×4`: Atelier's `OnnxModel` with 1 and 4 sessions: the caller's
//!   `Tensor` checked and converted per run, every output converted back.
//! - `tract`: `tract-onnx` optimised for a symbolic batch `N` (one model for every batch size,
//!   as the engine serves), run through `Arc<SimplePlan>` (its `run` takes `&self`); and
//!   `tract fixed`: optimised for the one batch size of the row, tract's best case.

#![allow(clippy::unwrap_used)] // a benchmark: a failure ends it

use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use atelier_inference::onnx::{ModelOptions, OnnxModel, OnnxRuntime};
use atelier_inference::tensor::{DType, Tensor};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::dims;

/// A thing that runs the model once, from any thread.
trait Contender: Send + Sync {
    fn run_once(&self) -> Result<()>;
}

struct Ort {
    session: Mutex<ort::session::Session>,
    input_name: String,
    input: ort::value::DynValue,
}

impl Contender for Ort {
    fn run_once(&self) -> Result<()> {
        let mut session = self.session.lock().unwrap();
        let out = session.run(ort::inputs![self.input_name.as_str() => &self.input])?;
        drop(out);
        Ok(())
    }
}

struct Engine {
    model: OnnxModel,
    input: Tensor,
}

impl Contender for Engine {
    fn run_once(&self) -> Result<()> {
        self.model.run(vec![self.input.clone()])?;
        Ok(())
    }
}

struct Tract {
    plan: Arc<TypedRunnableModel>,
    input: TValue,
}

impl Contender for Tract {
    fn run_once(&self) -> Result<()> {
        self.plan.run(tvec![self.input.clone()])?;
        Ok(())
    }
}

fn input_data(batch: usize, features: usize) -> Vec<f32> {
    (0..batch * features)
        .map(|i| ((i * 7919 % 263) as f32 / 131.5 - 1.0) * 2.0)
        .collect()
}

fn tensor(name: &str, batch: usize, features: usize) -> Tensor {
    Tensor {
        name: name.to_owned(),
        dtype: DType::F32,
        shape: vec![batch as u64, features as u64],
        data: input_data(batch, features)
            .into_iter()
            .flat_map(f32::to_le_bytes)
            .collect(),
    }
}

fn ort_session(env: &ort::environment::Environment, path: &Path) -> Result<ort::session::Session> {
    let mut builder = ort::session::Session::builder(env)?
        .with_intra_threads(1)
        .map_err(ort::Error::<()>::from)?
        .with_inter_threads(1)
        .map_err(ort::Error::<()>::from)?;
    Ok(builder.commit_from_file(path)?)
}

/// tract's model for `features` inputs per row: batch symbolic (`None`) or fixed.
fn tract_plan(
    path: &Path,
    features: usize,
    batch: Option<usize>,
) -> Result<Arc<TypedRunnableModel>> {
    let model = tract_onnx::onnx().model_for_path(path)?;
    let fact: InferenceFact = match batch {
        Some(b) => f32::fact([b, features]).into(),
        None => {
            let n = model.sym("N");
            f32::fact(dims!(n, features)).into()
        }
    };
    model
        .with_input_fact(0, fact)?
        .into_optimized()?
        .into_runnable()
}

/// The median of `n` timed calls of `f`, in milliseconds.
fn load_ms<T>(n: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let x = f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        drop(x);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[n / 2])
}

/// One line of the table: a contender on one model and batch size.
struct Row {
    model: String,
    batch: usize,
    contender: &'static str,
    load_ms: f64,
    run: Box<dyn Contender>,
    /// One run's latency (µs), every timed run.
    latencies: Vec<f64>,
    /// runs/s of each window, per thread count.
    per_s: Vec<Vec<f64>>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Timed runs per turn: the contenders of a model take turns in blocks this long, so that the
/// machine's drift (a shared VM's speed changes by tens of % from second to second) falls on
/// all of them alike.
const BLOCK: usize = 200;
/// Throughput windows per contender and thread count, taken in turns like the blocks.
const WINDOWS: usize = 10;

/// runs/s of `c` on `n` threads for `seconds`.
fn throughput(c: &dyn Contender, n: usize, seconds: f64) -> Result<f64> {
    let barrier = Barrier::new(n + 1);
    let (runs, elapsed) = std::thread::scope(|s| -> Result<(u64, f64)> {
        let handles: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| -> Result<u64> {
                    barrier.wait();
                    let end = Instant::now() + Duration::from_secs_f64(seconds);
                    let mut count = 0u64;
                    while Instant::now() < end {
                        c.run_once()?;
                        count += 1;
                    }
                    Ok(count)
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let mut total = 0;
        for h in handles {
            total += h.join().map_err(|_| anyhow!("a thread panicked"))??;
        }
        Ok((total, start.elapsed().as_secs_f64()))
    })?;
    Ok(runs as f64 / elapsed)
}

/// Measures the contenders of one model and batch size in turns.
fn measure(group: &mut [Row], iterations: usize, seconds: f64, threads: &[usize]) -> Result<()> {
    for row in group.iter() {
        for _ in 0..1000 {
            row.run.run_once()?;
        }
    }
    for _ in 0..iterations.div_ceil(BLOCK) {
        for row in group.iter_mut() {
            for _ in 0..3 {
                row.run.run_once()?;
            }
            for _ in 0..BLOCK {
                let t = Instant::now();
                row.run.run_once()?;
                row.latencies.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    for (i, &n) in threads.iter().enumerate() {
        for _ in 0..WINDOWS {
            for row in group.iter_mut() {
                let x = throughput(row.run.as_ref(), n, seconds / WINDOWS as f64)?;
                row.per_s.resize(threads.len(), Vec::new());
                row.per_s[i].push(x);
            }
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let lib = PathBuf::from(
        args.get(1)
            .context("usage: LIB MODELS_DIR [ITERATIONS] [SECONDS]")?,
    );
    let dir = PathBuf::from(
        args.get(2)
            .context("usage: LIB MODELS_DIR [ITERATIONS] [SECONDS]")?,
    );
    let iterations: usize = args.get(3).map_or(Ok(20_000), |s| s.parse())?;
    let seconds: f64 = args.get(4).map_or(Ok(2.0), |s| s.parse())?;
    let threads = [1, 16];

    let runtime = OnnxRuntime::load(&lib)?;
    // The engine's environment is ort's process-wide one; the raw sessions use it too.
    let env = runtime.ort_environment().clone();

    // (file, what, batches)
    let models: &[(&str, &str, &[usize])] = &[
        ("dense.onnx", "MLP 64→128→10, standard ops", &[1, 2]),
        ("mlp.onnx", "sklearn MLPClassifier, zipmap=False", &[1, 2]),
        (
            "logreg_int.onnx",
            "sklearn LogisticRegression (iris), int classes, zipmap=False",
            &[1],
        ),
        (
            "logreg_plain.onnx",
            "sklearn LogisticRegression (iris), string classes, zipmap=False",
            &[1],
        ),
        (
            "logreg.onnx",
            "sklearn LogisticRegression (iris), string classes, ZipMap",
            &[1],
        ),
        ("mlp_zipmap.onnx", "sklearn MLPClassifier, ZipMap", &[]),
    ];

    println!("## tract: does it load the models?\n");
    let mut tract_ok = Vec::new();
    for (file, what, _) in models {
        let path = dir.join(file);
        let features = OnnxModel::load(&runtime, path.as_path(), &ModelOptions::default())?.inputs()
            [0]
        .shape[1] as usize;
        match tract_plan(&path, features, None) {
            Ok(_) => {
                println!("- `{file}` ({what}): loads");
                tract_ok.push(*file);
            }
            Err(e) => println!(
                "- `{file}` ({what}): **fails**: {}",
                format!("{e:#}").replace('\n', " ")
            ),
        }
    }
    println!();

    let mut rows: Vec<Row> = Vec::new();
    for (file, what, batches) in models {
        let path = dir.join(file);
        let one = ModelOptions {
            sessions: 1,
            ..ModelOptions::default()
        };
        let four = ModelOptions {
            sessions: 4,
            ..ModelOptions::default()
        };
        let probe = OnnxModel::load(&runtime, path.as_path(), &one)?;
        let name = probe.inputs()[0].name.clone();
        let features = probe.inputs()[0].shape[1] as usize;
        for &batch in *batches {
            let model = format!("{what} (`{file}`)");
            let mut add = |contender, load_ms, run: Box<dyn Contender>| {
                rows.push(Row {
                    model: model.clone(),
                    batch,
                    contender,
                    load_ms,
                    run,
                    latencies: Vec::new(),
                    per_s: Vec::new(),
                });
            };

            let load = load_ms(5, || ort_session(&env, &path))?;
            let value = ort::value::Tensor::from_array((
                vec![batch as i64, features as i64],
                input_data(batch, features),
            ))?
            .into_dyn();
            add(
                "ort",
                load,
                Box::new(Ort {
                    session: Mutex::new(ort_session(&env, &path)?),
                    input_name: name.clone(),
                    input: value,
                }),
            );

            let sixteen = ModelOptions {
                sessions: 16,
                ..ModelOptions::default()
            };
            for (contender, options) in [
                ("engine ×1", &one),
                ("engine ×4", &four),
                ("engine ×16", &sixteen),
            ] {
                let load = load_ms(5, || {
                    Ok(OnnxModel::load(&runtime, path.as_path(), options)?)
                })?;
                let model = OnnxModel::load(&runtime, path.as_path(), options)?;
                add(
                    contender,
                    load,
                    Box::new(Engine {
                        model,
                        input: tensor(&name, batch, features),
                    }),
                );
            }

            if tract_ok.contains(file) {
                let input: TValue = tract_onnx::prelude::Tensor::from_shape(
                    &[batch, features],
                    &input_data(batch, features),
                )?
                .into_tvalue();
                for (contender, fixed) in [("tract", None), ("tract fixed", Some(batch))] {
                    let load = load_ms(5, || tract_plan(&path, features, fixed))?;
                    add(
                        contender,
                        load,
                        Box::new(Tract {
                            plan: tract_plan(&path, features, fixed)?,
                            input: input.clone(),
                        }),
                    );
                }
            }
        }
    }

    let mut start = 0;
    while start < rows.len() {
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| r.model == rows[start].model && r.batch == rows[start].batch)
                .count();
        eprintln!(
            "measuring {} batch {}",
            rows[start].model, rows[start].batch
        );
        measure(&mut rows[start..end], iterations, seconds, &threads)?;
        start = end;
    }

    println!(
        "## Results ({iterations} timed runs per engine for the latency, in turns of {BLOCK}; \
         {seconds} s per throughput figure, in turns of {WINDOWS} windows, median window)\n"
    );
    println!(
        "| Model | Batch | Engine | Load (ms) | p50 (µs) | p99 (µs) | runs/s, 1 thread | runs/s, 16 threads |"
    );
    println!("|---|--:|---|--:|--:|--:|--:|--:|");
    for r in &mut rows {
        r.latencies.sort_by(f64::total_cmp);
        let n = r.latencies.len();
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.model,
            r.batch,
            r.contender,
            r.load_ms,
            r.latencies[n / 2],
            r.latencies[n * 99 / 100],
            median(r.per_s[0].clone()),
            median(r.per_s[1].clone()),
        );
    }
    Ok(())
}
