//! The plugin host benchmark (bench/plugins.sh runs it in release mode; docs/benchmarks.md
//! has the results): instantiation from the pooling allocator, a no-op call, the Python
//! inference example's preprocess + postprocess on 1 KB and 1 MB requests under both
//! instance policies, and the same logic as a CPython HTTP service on loopback.
//!
//! Usage: bench PYTHON_COMPONENT PURE_PYTHON_COMPONENT MODEL_DIR SERVICE_PORT NUMPY_PORT
//!        [ITERATIONS]
//!
//! PYTHON_COMPONENT is the example as shipped (its heavy parts through the host's `tensors`
//! helpers); PURE_PYTHON_COMPONENT does the same work in pure Python
//! (bench/plugins/pure-python-processor). SERVICE_PORT serves the pure-Python logic,
//! NUMPY_PORT the same with numpy (bench/prepost_service.py).

#![allow(clippy::unwrap_used, clippy::disallowed_methods)] // test and bench code

use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;
use atelier_plugins::bindings::types::{Dtype, Tensor};
use atelier_plugins::*;

fn stats(name: &str, mut us: Vec<f64>) {
    us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name:<58} n={:<5} median {:>9.1} us   p99 {:>9.1} us",
        us.len(),
        p(0.5),
        p(0.99)
    );
}

fn body(target: usize) -> String {
    // Rows of 100 numbers until the body is about `target` bytes.
    let row: Vec<String> = (0..100)
        .map(|i| format!("{:.4}", (i as f64) * 0.0123))
        .collect();
    let row = format!("[{}]", row.join(","));
    let rows = (target / (row.len() + 1)).max(1);
    format!(
        "{{\"instances\": [{}], \"top_k\": 2}}",
        vec![row; rows].join(",")
    )
}

fn rows_of(body: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(body).unwrap()["instances"]
        .as_array()
        .unwrap()
        .len()
}

fn request(body: &str) -> inf::Request {
    inf::Request {
        method: "POST".into(),
        path: "/".into(),
        query: vec![],
        headers: vec![("content-type".into(), "application/json".into())],
        content_type: "application/json".into(),
        body: inf::Body::Json(body.to_string()),
    }
}

fn logits(rows: usize) -> inf::ModelData {
    let data: Vec<u8> = [0.1f32, 2.0, 0.3, 0.4]
        .repeat(rows)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    inf::ModelData::Tensors(vec![Tensor {
        name: "logits".into(),
        dtype: Dtype::F32,
        shape: vec![rows as u64, 4],
        data,
    }])
}

/// One keep-alive HTTP/1.1 request on `conn`; returns the response body.
fn http_post(conn: &mut BufReader<std::net::TcpStream>, body: &str) -> Vec<u8> {
    let head = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut request = head.into_bytes();
    request.extend_from_slice(body.as_bytes());
    conn.get_mut().write_all(&request).unwrap();
    let mut len = 0;
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut out = vec![0; len];
    conn.read_exact(&mut out).unwrap();
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let python = std::fs::read(&args[1])?;
    let pure_python = std::fs::read(&args[2])?;
    let model_dir = std::path::PathBuf::from(&args[3]);
    let port: u16 = args[4].parse()?;
    let numpy_port: u16 = args[5].parse()?;
    let n: usize = args.get(6).map_or(2000, |s| s.parse().unwrap());
    let dir = std::env::temp_dir().join(format!("atelier-plugin-bench-{}", std::process::id()));
    // No standby instances here: "instantiate" is what making an instance costs. The last
    // section measures the call path with them.
    let no_standby = HostSettings {
        standby_instances: 0,
        ..Default::default()
    };
    let host = Host::new(&dir, no_standby)?;

    let register = |bytes: Vec<u8>| {
        let h = host.clone();
        async move {
            tokio::task::spawn_blocking(move || h.register(&bytes, None))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let tiny = register(atelier_plugins::fixtures::training_case("describe")).await;
    let spin = register(atelier_plugins::fixtures::training_case("infinite-loop")).await;
    let py = register(python).await;
    let pure = register(pure_python).await;
    println!(
        "python component: {:.1} MB, compiled in {:.0} ms",
        py.size as f64 / 1e6,
        py.compile_ms
    );

    let plugin = |key: &str, r: &Registered, policy: InstancePolicy, model: bool| {
        let spec = LimitsSpec {
            instance_policy: Some(policy),
            concurrency: Some(8),
            ..Default::default()
        };
        PluginRef {
            key: key.into(),
            digest: r.digest.clone(),
            world: r.world,
            limits: host.settings().resolve(r.world, &spec).unwrap(),
            model_dir: model.then(|| model_dir.clone()),
        }
    };
    let ctx = || CallContext {
        tenant: "bench".into(),
        ..Default::default()
    };

    // Instantiation (fresh instances; the pooling allocator's slots are warm after the first).
    let tiny_fresh = plugin("tiny@1", &tiny, InstancePolicy::Fresh, false);
    let mut inst = Vec::new();
    let mut fresh_total = Vec::new();
    for i in 0..n + 50 {
        let t = Instant::now();
        let r = host.describe(&tiny_fresh, ctx()).await;
        assert!(r.error.is_none(), "{:?}", r.error);
        if i >= 50 {
            inst.push(r.timings.instantiate_us as f64);
            fresh_total.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    stats("instantiate: small component (WAT), fresh", inst);
    stats(
        "no-op call end to end: small component, fresh instance",
        fresh_total,
    );

    let tiny_warm = plugin("tiny-warm@1", &tiny, InstancePolicy::Warm, false);
    let (mut call, mut total) = (Vec::new(), Vec::new());
    for i in 0..n + 50 {
        let t = Instant::now();
        let r = host.describe(&tiny_warm, ctx()).await;
        if i >= 50 {
            call.push(r.timings.calls[0].1 as f64);
            total.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    stats("no-op call (in the guest): small component, warm", call);
    stats(
        "no-op call end to end: small component, warm instance",
        total.clone(),
    );

    // The same while a looping plugin burns a core until its deadline.
    let spin_ref = {
        let spec = LimitsSpec {
            timeout_ms: Some(10_000),
            ..Default::default()
        };
        PluginRef {
            key: "spin@1".into(),
            digest: spin.digest.clone(),
            world: spin.world,
            limits: host.settings().resolve(spin.world, &spec).unwrap(),
            model_dir: None,
        }
    };
    let spinning = {
        let h = host.clone();
        tokio::spawn(async move { h.describe(&spin_ref, CallContext::default()).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut beside = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let r = host.describe(&tiny_warm, ctx()).await;
        assert!(r.error.is_none());
        beside.push(t.elapsed().as_secs_f64() * 1e6);
    }
    assert!(
        !spinning.is_finished(),
        "the looping plugin stopped before the measurement ended"
    );
    stats(
        "no-op call end to end, warm, beside a looping plugin",
        beside,
    );
    let spun = spinning.await?;
    assert!(matches!(
        spun.error,
        Some(CallError::Limit {
            kind: LimitKind::Timeout,
            ..
        })
    ));

    // Python: instantiate (fresh) and pre+post.
    let py_fresh = plugin("py@1", &py, InstancePolicy::Fresh, true);
    let py_warm = plugin("py-warm@1", &py, InstancePolicy::Warm, true);
    let pure_fresh = plugin("pure@1", &pure, InstancePolicy::Fresh, true);
    let pure_warm = plugin("pure-warm@1", &pure, InstancePolicy::Warm, true);
    let small = body(1024);
    let large = body(1024 * 1024);
    println!(
        "request bodies: {} B ({} rows), {} B ({} rows)",
        small.len(),
        rows_of(&small),
        large.len(),
        rows_of(&large)
    );
    let m = (n / 4).max(50);
    let (mut inst, mut init) = (Vec::new(), Vec::new());
    for i in 0..m + 10 {
        let r = host
            .prepost(
                &py_fresh,
                ctx(),
                request(&small),
                Some(logits(rows_of(&small))),
            )
            .await;
        assert!(r.error.is_none(), "{:?}", r.error);
        if i >= 10 {
            inst.push(r.timings.instantiate_us as f64);
            init.push(r.timings.init_us as f64);
        }
    }
    stats("instantiate: Python example (componentize-py), fresh", inst);
    stats("init (labels file) on a fresh Python instance", init);

    for (label, b, count) in [("1 KB", &small, n), ("1 MB", &large, (n / 20).max(30))] {
        let rows = rows_of(b);
        // Fresh instances: each call instantiates and runs `init` first.
        for (variant, p) in [
            ("Python + tensors helpers", &py_fresh),
            ("pure Python", &pure_fresh),
        ] {
            let mut us = Vec::new();
            for i in 0..count + 5 {
                let t = Instant::now();
                let r = host.prepost(p, ctx(), request(b), Some(logits(rows))).await;
                let e = t.elapsed().as_secs_f64() * 1e6;
                assert!(r.error.is_none(), "{:?}", r.error);
                if i >= 5 {
                    us.push(e);
                }
            }
            stats(&format!("{variant}, {label}, fresh instance"), us);
        }
        // Warm instances against the transformer hop (the same logic in a CPython HTTP
        // service, one keep-alive connection each; pure Python, and numpy). Each gets its
        // calls in blocks, the blocks taking turns, so that the machine's noise falls on all
        // of them alike while each block runs with its own caches warm (the first calls of a
        // block are not counted).
        let mut conns = Vec::new();
        for port in [port, numpy_port] {
            let conn = BufReader::new(std::net::TcpStream::connect(("127.0.0.1", port))?);
            conn.get_ref().set_nodelay(true)?;
            conns.push(conn);
        }
        let block = (count / 10).max(10);
        let mut us: [Vec<f64>; 4] = Default::default();
        while us[3].len() < count {
            for (k, samples) in us.iter_mut().enumerate() {
                for i in 0..block + 3 {
                    let t = Instant::now();
                    if k < 2 {
                        let p = if k == 0 { &py_warm } else { &pure_warm };
                        let r = host.prepost(p, ctx(), request(b), Some(logits(rows))).await;
                        assert!(r.error.is_none(), "{:?}", r.error);
                    } else {
                        let out = http_post(&mut conns[k - 2], b);
                        assert!(
                            out.starts_with(b"{\"predictions\""),
                            "{}",
                            String::from_utf8_lossy(&out)
                        );
                    }
                    if i >= 3 {
                        samples.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                }
            }
        }
        let [helpers, pure, http, http_numpy] = us;
        stats(
            &format!("Python + tensors helpers, {label}, warm instance"),
            helpers,
        );
        stats(&format!("pure Python, {label}, warm instance"), pure);
        stats(
            &format!("CPython HTTP service (pure Python), {label}"),
            http,
        );
        stats(
            &format!("CPython HTTP service (numpy), {label}"),
            http_numpy,
        );
    }
    drop(host);

    // Fresh calls of the Python example with a standby instance (the default): the time until
    // the call has its instance (queued + instantiate), back to back and with 10 ms between
    // calls, and how many calls found the standby ready.
    let host = Host::new(&dir, HostSettings::default())?;
    let py_fresh = PluginRef {
        key: "py@1".into(),
        digest: py.digest.clone(),
        world: py.world,
        limits: host
            .settings()
            .resolve(
                py.world,
                &LimitsSpec {
                    instance_policy: Some(InstancePolicy::Fresh),
                    ..Default::default()
                },
            )
            .unwrap(),
        model_dir: Some(model_dir.clone()),
    };
    for pause in [0u64, 10] {
        let (mut ready, mut total, mut hits) = (Vec::new(), Vec::new(), 0);
        for i in 0..m + 10 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let t = Instant::now();
            let r = host
                .prepost(
                    &py_fresh,
                    ctx(),
                    request(&small),
                    Some(logits(rows_of(&small))),
                )
                .await;
            let e = t.elapsed().as_secs_f64() * 1e6;
            assert!(r.error.is_none(), "{:?}", r.error);
            if i >= 10 {
                ready.push((r.timings.queued_us + r.timings.instantiate_us) as f64);
                total.push(e);
                hits += usize::from(r.instance == InstanceUse::FreshStandby);
            }
        }
        println!("standby hits, {pause} ms between calls: {hits} of {m}");
        stats(
            &format!("instance on the call path: Python, fresh + standby, {pause} ms apart"),
            ready,
        );
        stats(
            &format!("Python + tensors helpers, 1 KB, fresh + standby, {pause} ms apart"),
            total,
        );
    }
    drop(host);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
