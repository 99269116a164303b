//! The connect-back tunnel against a direct loopback TCP connection, in one run
//! (`bash bench/tunnel.sh`): a hub and a runtime's node in this process, on 127.0.0.1,
//! in front of the same local servers.
//!
//! - `rtt`: 64-byte request, 64-byte answer, on one open connection (as the proxy keeps its
//!   upstream connections), direct and tunnelled interleaved round by round: p50 and p99,
//!   and the added latency.
//! - `connect+rtt`: a new connection (a new tunnel stream) for each request.
//! - `bulk`: `BULK_MIB` (default 256) MiB written one way to a sink that answers how many
//!   bytes it read, direct and tunnelled, `ROUNDS` times each, interleaved: MiB/s.
//!
//! Prints a markdown table on stdout.

// A benchmark: it panics on what it cannot do, and spawns on its own runtime.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use atelier_tunnel::Target;
use atelier_tunnel::hub::{HubSettings, TunnelHub};
use atelier_tunnel::node::{self, Local, Locals};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Answers every 64 bytes with 64 bytes.
async fn echo64(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while tcp.read_exact(&mut buf).await.is_ok() {
                if tcp.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads to the end, then answers the count (8 bytes).
async fn sink(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = vec![0u8; 256 * 1024];
            let mut n: u64 = 0;
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k as u64,
                }
            }
            let _ = tcp.write_all(&n.to_be_bytes()).await;
            let _ = tcp.shutdown().await;
        });
    }
}

async fn rtt(s: &mut (impl AsyncRead + AsyncWrite + Unpin)) -> Duration {
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    let t = Instant::now();
    s.write_all(&msg).await.unwrap();
    s.read_exact(&mut back).await.unwrap();
    t.elapsed()
}

async fn bulk(mut s: impl AsyncRead + AsyncWrite + Unpin, bytes: usize) -> Duration {
    let chunk = vec![1u8; 256 * 1024];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    s.shutdown().await.unwrap();
    let mut count = [0u8; 8];
    s.read_exact(&mut count).await.unwrap();
    assert_eq!(u64::from_be_bytes(count), bytes as u64);
    t.elapsed()
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

#[tokio::main]
async fn main() {
    let rounds = knob("RTT_ROUNDS", 20_000);
    let connects = knob("CONNECT_ROUNDS", 2_000);
    let bulk_mib = knob("BULK_MIB", 256);
    let bulk_rounds = knob("ROUNDS", 3);

    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(echo64(echo));
    let sinker = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sinker.local_addr().unwrap();
    tokio::spawn(sink(sinker));

    let state = std::env::temp_dir().join(format!("atelier-tunnel-bench-{}", std::process::id()));
    let hub = TunnelHub::start(HubSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        state.clone(),
    ))
    .await
    .unwrap();
    let reg = hub.register("bench").unwrap();
    let locals = Locals {
        jupyter: Some(Local::Tcp(echo_addr)),
        engine: Some(Local::Tcp(sink_addr)),
        agent: None,
    };
    let stop = CancellationToken::new();
    let log: node::Log = Arc::new(|m| eprintln!("runtime: {m}"));
    tokio::spawn(node::run(
        reg.connect_back.validate().unwrap(),
        locals,
        log,
        stop.clone(),
    ));
    assert!(hub.wait_connected("bench", Duration::from_secs(60)).await);

    // One open connection each, requests interleaved.
    let mut direct = TcpStream::connect(echo_addr).await.unwrap();
    direct.set_nodelay(true).unwrap();
    let mut tunnel = hub.dial("bench", Target::Jupyter).await.unwrap();
    for _ in 0..1000 {
        rtt(&mut direct).await;
        rtt(&mut tunnel).await;
    }
    let (mut d, mut t) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for _ in 0..rounds {
        d.push(rtt(&mut direct).await);
        t.push(rtt(&mut tunnel).await);
    }

    // A new connection per request.
    let (mut dc, mut tc) = (Vec::with_capacity(connects), Vec::with_capacity(connects));
    for _ in 0..connects {
        let start = Instant::now();
        let mut s = TcpStream::connect(echo_addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        rtt(&mut s).await;
        dc.push(start.elapsed());
        let start = Instant::now();
        let mut s = hub.dial("bench", Target::Jupyter).await.unwrap();
        rtt(&mut s).await;
        tc.push(start.elapsed());
    }

    // Bulk, one way.
    let bytes = bulk_mib * 1024 * 1024;
    let (mut bd, mut bt) = (Vec::new(), Vec::new());
    for _ in 0..bulk_rounds {
        let s = TcpStream::connect(sink_addr).await.unwrap();
        bd.push(bulk(s, bytes).await);
        let s = hub.dial("bench", Target::Engine).await.unwrap();
        bt.push(bulk(s, bytes).await);
    }
    let mibs = |v: &[Duration]| {
        let mut r: Vec<f64> = v
            .iter()
            .map(|d| bulk_mib as f64 / d.as_secs_f64())
            .collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };

    let (d50, d99, t50, t99) = (
        pct(&mut d, 0.5),
        pct(&mut d, 0.99),
        pct(&mut t, 0.5),
        pct(&mut t, 0.99),
    );
    let (dc50, dc99, tc50, tc99) = (
        pct(&mut dc, 0.5),
        pct(&mut dc, 0.99),
        pct(&mut tc, 0.5),
        pct(&mut tc, 0.99),
    );
    let (bdm, btm) = (mibs(&bd), mibs(&bt));
    println!("| measure | direct loopback TCP | through the tunnel | tunnel − direct (or ratio) |");
    println!("|---|---|---|---|");
    println!(
        "| rtt p50, open connection ({rounds} requests, 64 B each way) | {d50:.1} µs | {t50:.1} µs | {:+.1} µs |",
        t50 - d50
    );
    println!(
        "| rtt p99, open connection | {d99:.1} µs | {t99:.1} µs | {:+.1} µs |",
        t99 - d99
    );
    println!(
        "| connect + rtt p50 ({connects} connections / streams) | {dc50:.1} µs | {tc50:.1} µs | {:+.1} µs |",
        tc50 - dc50
    );
    println!(
        "| connect + rtt p99 | {dc99:.1} µs | {tc99:.1} µs | {:+.1} µs |",
        tc99 - dc99
    );
    println!(
        "| bulk {bulk_mib} MiB one way, median of {bulk_rounds} | {bdm:.0} MiB/s | {btm:.0} MiB/s | {:.2}× |",
        btm / bdm
    );
    stop.cancel();
    hub.shutdown().await;
    let _ = std::fs::remove_dir_all(&state);
}
