//! Resilience figures over real HTTP on loopback, the whole server in process
//! with simulated providers answering instantly (pacing off), so what is measured
//! is the gateway and the breaker, not a model.
//!
//! 1. Healthy cascade versus the primary's breaker OPEN: what skipping costs.
//! 2. A latency storm on the primary, with and without breakers.
//!
//! Prints a markdown table. Run with `make bench` (or
//! `cargo bench --features ssr --bench resilience`).

use chaosai::config::{Config, SimulateMode};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::time::Instant;

struct Figures {
    p50: f64,
    p99: f64,
    overhead_p50: f64,
    overhead_p99: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn start(
    edit: impl FnOnce(&mut Config),
) -> (chaosai::server::RunningServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml(include_str!("../config/chaosai.toml"), "bench").unwrap();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.server.admin_token = Some("bench".into());
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.gateway.simulate = SimulateMode::Always;
    config.sim.chunk_delay_min_ms = 0;
    config.sim.chunk_delay_max_ms = 0;
    // Every request must reach the cascade: the same question would otherwise be a cache hit.
    config.cache.enabled = false;
    edit(&mut config);
    let options = LeptosOptions::builder().output_name("chaosai").build();
    (chaosai::server::start(config, options).await.unwrap(), dir)
}

/// Sends `total` non-streamed requests with `concurrency` in flight.
async fn load(base: &str, total: usize, concurrency: usize) -> Figures {
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/chat/completions");
    let body = json!({"model": "chaosai", "messages": [{"role": "user", "content": "Where is my order?"}]});
    let per_worker = total / concurrency;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let started = Instant::now();
                let res = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(res.status(), 200);
                let overhead: f64 = res.headers()["x-chaosai-overhead-ms"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                res.bytes().await.unwrap();
                samples.push((started.elapsed().as_secs_f64() * 1000.0, overhead));
            }
            samples
        }));
    }
    let mut latency = Vec::new();
    let mut overhead = Vec::new();
    for worker in workers {
        for (l, o) in worker.await.unwrap() {
            latency.push(l);
            overhead.push(o);
        }
    }
    latency.sort_by(f64::total_cmp);
    overhead.sort_by(f64::total_cmp);
    Figures {
        p50: percentile(&latency, 0.5),
        p99: percentile(&latency, 0.99),
        overhead_p50: percentile(&overhead, 0.5),
        overhead_p99: percentile(&overhead, 0.99),
    }
}

async fn inject(base: &str, provider: &str, spec: serde_json::Value) {
    let res = reqwest::Client::new()
        .put(format!("{base}/api/chaos/{provider}"))
        .bearer_auth("bench")
        .json(&spec)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

fn row(name: &str, f: &Figures) {
    println!(
        "| {name} | {:.2} | {:.2} | {:.3} | {:.3} |",
        f.p50, f.p99, f.overhead_p50, f.overhead_p99
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes flags such as --bench; this harness takes none.
    let requests: usize = std::env::var("CHAOSAI_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);

    println!("| scenario | p50 ms | p99 ms | gateway overhead p50 ms | overhead p99 ms |");
    println!("|---|---|---|---|---|");

    // 1. Healthy versus primary OPEN (a long cool-down keeps it open throughout).
    let (server, _dir) = start(|c| c.providers[0].open_for_ms = 3_600_000).await;
    let base = format!("http://{}", server.addr);
    load(&base, 200, 4).await; // warm-up
    let healthy = load(&base, requests, 1).await;
    row("healthy, concurrency 1", &healthy);
    inject(&base, "claude", json!({"kind": "outage"})).await;
    load(&base, 3, 1).await; // opens claude's breaker
    let open = load(&base, requests, 1).await;
    row("primary OPEN (skipped), concurrency 1", &open);
    println!(
        "\nSkipping an OPEN primary adds {:+.3} ms at p50 and {:+.3} ms at p99 end to end.\n",
        open.p50 - healthy.p50,
        open.p99 - healthy.p99
    );
    server.shutdown().await;

    // The audit's cost on the request path: the same healthy load with the writer off.
    let (server, _dir) = start(|c| c.audit.enabled = false).await;
    let base = format!("http://{}", server.addr);
    load(&base, 200, 4).await;
    let unaudited = load(&base, requests, 1).await;
    row("healthy, audit writer off, concurrency 1", &unaudited);
    println!(
        "\nThe audit writer adds {:+.3} ms at p50 and {:+.3} ms at p99 end to end.\n",
        healthy.p50 - unaudited.p50,
        healthy.p99 - unaudited.p99
    );
    server.shutdown().await;

    // 2. A latency storm on the primary (5 s delay, 300 ms first-byte limit).
    println!("| latency storm on the primary | p50 ms | p99 ms | gateway overhead p50 ms | overhead p99 ms |");
    println!("|---|---|---|---|---|");
    for (name, threshold) in [
        ("without breaker", u32::MAX),
        ("with breaker (threshold 3)", 3),
    ] {
        let (server, _dir) = start(|c| {
            c.gateway.first_byte_timeout_ms = 300;
            c.providers[0].failure_threshold = threshold;
            c.providers[0].open_for_ms = 3_600_000;
        })
        .await;
        let base = format!("http://{}", server.addr);
        inject(
            &base,
            "claude",
            json!({"kind": "latency", "delay_ms": 5000}),
        )
        .await;
        let figures = load(&base, 200, 8).await;
        row(name, &figures);
        server.shutdown().await;
    }
}
