//! Layer-0 figures: embedding one question, HNSW search at 10k and 100k entries,
//! insert rate, and cache-hit latency over HTTP at concurrency 1 and 16.
//! Prints markdown tables and writes them to `bench/CACHE.md`.
//! `CHAOSAI_BENCH_INDEX_SIZES=10000` skips the 100k build.

use chaosai::cache::index::VectorIndex;
use chaosai::cache::Embedder;
use chaosai::config::{Config, EmbedderConfig, SimulateMode};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::time::Instant;
use support::{percentiles, vectors};

mod support;

/// Prints a line and keeps it for `bench/CACHE.md`.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        $out.push_str(&line);
        $out.push('\n');
    }};
}

fn embedder_figures(out: &mut String) {
    let embedder = Embedder::load(&EmbedderConfig::default()).expect("run `make models` first");
    let questions = [
        "How do I reset my password?",
        "Where is my order?",
        "I was charged twice for the same purchase last week, can you refund one of them?",
        "Do you ship to Canada?",
    ];
    for _ in 0..20 {
        embedder.embed(&[questions[0]]).unwrap();
    }
    let mut short = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        embedder.embed(&[questions[0]]).unwrap();
        short.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut mixed = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        embedder.embed(&[questions[i % questions.len()]]).unwrap();
        mixed.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (s50, s99) = percentiles(short);
    let (m50, m99) = percentiles(mixed);
    say!(
        out,
        "| embedding (1 thread) | p50 ms | p99 ms |\n|---|---|---|"
    );
    say!(out, "| short question (7 tokens) | {s50:.2} | {s99:.2} |");
    say!(
        out,
        "| mixed questions (7–25 tokens) | {m50:.2} | {m99:.2} |\n"
    );
    // Micro-batching's premise: one run of many questions costs far less than
    // as many runs of one.
    say!(
        out,
        "| batch size | embeddings/s | ms per run |\n|---|---|---|"
    );
    for size in [1usize, 8, 32] {
        let batch: Vec<&str> = (0..size).map(|i| questions[i % questions.len()]).collect();
        let runs = (600 / size).max(20);
        let t = Instant::now();
        for _ in 0..runs {
            embedder.embed(&batch).unwrap();
        }
        let elapsed = t.elapsed().as_secs_f64();
        say!(
            out,
            "| {size} | {:.0} | {:.2} |",
            (runs * size) as f64 / elapsed,
            elapsed * 1000.0 / runs as f64
        );
    }
    say!(out, "");
}

fn index_figures(out: &mut String) {
    let sizes: Vec<usize> = std::env::var("CHAOSAI_BENCH_INDEX_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    say!(out, "| HNSW index | insert rate (2 cores) | search p50 ms | search p99 ms | recall@1 |\n|---|---|---|---|---|");
    for n in sizes {
        let data = vectors(n);
        let index = VectorIndex::new(n);
        let items: Vec<(Vec<f32>, usize)> = data
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, v)| (v, i))
            .collect();
        let t = Instant::now();
        index.insert_many(&items);
        let rate = n as f64 / t.elapsed().as_secs_f64();
        let mut samples = Vec::new();
        let mut found = 0;
        let probes = 1_000;
        for i in 0..probes {
            let id = (i * 7919) % n;
            let t = Instant::now();
            let hits = index.search(&data[id], 8);
            samples.push(t.elapsed().as_secs_f64() * 1000.0);
            if hits.first().map(|h| h.0) == Some(id) {
                found += 1;
            }
        }
        let (p50, p99) = percentiles(samples);
        say!(
            out,
            "| {n} entries | {rate:.0} inserts/s | {p50:.3} | {p99:.3} | {:.3} |",
            found as f64 / probes as f64
        );
    }
    say!(out, "");
}

async fn http_figures(out: &mut String) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_toml(include_str!("../config/chaosai.toml"), "bench").unwrap();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.path().join("bench.db").display());
    config.gateway.simulate = SimulateMode::Always;
    config.sim.chunk_delay_min_ms = 0;
    config.sim.chunk_delay_max_ms = 0;
    let options = LeptosOptions::builder().output_name("chaosai").build();
    let server = chaosai::server::start(config, options).await.unwrap();
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let client = reqwest::Client::new();
    let body = |q: &str| json!({"model": "chaosai", "messages": [{"role": "user", "content": q}]});
    client
        .post(&url)
        .json(&body("How do I reset my password?"))
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await; // stored after the reply
    say!(out, "| cache hit over HTTP | concurrency | p50 ms | p99 ms | throughput req/s |\n|---|---|---|---|---|");
    for (name, question) in [
        ("exact repeat (no embedding)", "How do I reset my password?"),
        (
            "paraphrase (embedding + index)",
            "I forgot my password, how can I change it?",
        ),
    ] {
        for concurrency in [1usize, 16] {
            let total = 2_000;
            let started = Instant::now();
            let mut workers = Vec::new();
            for _ in 0..concurrency {
                let (client, url, body) = (client.clone(), url.clone(), body(question));
                workers.push(tokio::spawn(async move {
                    let mut samples = Vec::new();
                    for _ in 0..total / concurrency {
                        let t = Instant::now();
                        let res = client.post(&url).json(&body).send().await.unwrap();
                        assert_eq!(res.headers()["x-chaosai-served-by"], "cache");
                        res.bytes().await.unwrap();
                        samples.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    samples
                }));
            }
            let mut samples = Vec::new();
            for w in workers {
                samples.extend(w.await.unwrap());
            }
            let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
            let (p50, p99) = percentiles(samples);
            say!(
                out,
                "| {name} | {concurrency} | {p50:.2} | {p99:.2} | {rate:.0} |"
            );
        }
    }
    if let Some(cache) = server.gateway.cache() {
        let (runs, embedded) = cache.embedding_counts();
        say!(
            out,
            "\nEmbedding runs: {runs} for {embedded} questions (mean batch {:.2}).",
            embedded as f64 / runs.max(1) as f64
        );
    }
    server.shutdown().await;
}

#[tokio::main]
async fn main() {
    let mut out = String::from("# Cache benchmark\n\n");
    say!(
        out,
        "{} ({}), `make bench`, release build.\n",
        support::machine(),
        support::today()
    );
    embedder_figures(&mut out);
    index_figures(&mut out);
    http_figures(&mut out).await;
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap();
    std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/CACHE.md"), &out).unwrap();
}
