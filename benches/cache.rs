//! Layer-0 figures: embedding one question, HNSW search at 10k and 100k entries,
//! insert rate, cache-hit latency over HTTP at concurrency 1 and 16, and the
//! gateway binary's memory while its model works.
//! Prints markdown tables and writes them to `bench/CACHE.md`.
//! `CHAOSAI_BENCH_INDEX_SIZES=10000` skips the 100k build.

use chaosai::cache::index::VectorIndex;
use chaosai::cache::{BatchSettings, Batcher, Embedder};
use chaosai::config::{Config, EmbedderConfig, SimulateMode};
use leptos::prelude::LeptosOptions;
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;
use support::{percentiles, vectors};

mod support;

// The bench asks the paraphrases, not the near misses.
#[allow(dead_code)]
#[path = "../tests/support/labelled.rs"]
mod labelled;

/// Prints a line and keeps it for `bench/CACHE.md`.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        $out.push_str(&line);
        $out.push('\n');
    }};
}

/// Clients asking different paraphrases at once, as a support queue does.
const CLIENTS: usize = 16;

/// The models timed: the default (int8, as `make models` makes it) and the fp32
/// one it is made from, so the table shows what the quantisation buys.
fn models() -> [(&'static str, EmbedderConfig); 2] {
    let default = EmbedderConfig::default();
    let full = EmbedderConfig {
        model: ".tools/models/all-MiniLM-L6-v2/model.onnx".into(),
        ..default.clone()
    };
    [("int8 (default)", default), ("fp32", full)]
}

async fn embedder_figures(out: &mut String) {
    let questions = [
        "How do I reset my password?",
        "Where is my order?",
        "I was charged twice for the same purchase last week, can you refund one of them?",
        "Do you ship to Canada?",
    ];
    let mut latency =
        String::from("| embedding (1 thread) | model | p50 ms | p99 ms |\n|---|---|---|---|\n");
    // Questions arriving together through the cache's own workers (one per
    // session), all different, so none is spared by the dedupe.
    let mut batches = String::from(
        "| questions arriving together | model | embeddings/s | ms for all |\n|---|---|---|---|\n",
    );
    let mut distinct: Vec<&str> = labelled::SHOULD_HIT
        .iter()
        .flat_map(|(cached, asked)| [*cached, *asked])
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    for (label, config) in models() {
        let embedder = Embedder::load(&config).expect("run `make models` first");
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
        latency += &format!("| short question (7 tokens) | {label} | {s50:.2} | {s99:.2} |\n");
        latency += &format!("| mixed questions (7–25 tokens) | {label} | {m50:.2} | {m99:.2} |\n");
        let batcher = Batcher::start(Arc::new(embedder), BatchSettings::default());
        for size in [1usize, 8, 32] {
            let runs = (600 / size).max(20);
            let t = Instant::now();
            for run in 0..runs {
                let asked =
                    (0..size).map(|i| batcher.embed(distinct[(run * size + i) % distinct.len()]));
                for vector in futures::future::join_all(asked).await {
                    vector.unwrap();
                }
            }
            let elapsed = t.elapsed().as_secs_f64();
            batches += &format!(
                "| {size} | {label} | {:.0} | {:.2} |\n",
                (runs * size) as f64 / elapsed,
                elapsed * 1000.0 / runs as f64
            );
        }
    }
    say!(out, "{latency}");
    say!(out, "{batches}");
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

/// Repeats of every HTTP scenario, the models interleaved; the table shows medians.
const REPEATS: usize = 3;

/// A gateway on simulated providers whose cache embeds with `model`, with the
/// answer to every cached question of the labelled set stored.
async fn gateway_with(
    model: EmbedderConfig,
    dir: &std::path::Path,
) -> (chaosai::server::RunningServer, String) {
    let mut config = Config::from_toml(include_str!("../config/chaosai.toml"), "bench").unwrap();
    config.server.addr = "127.0.0.1:0".parse().unwrap();
    config.database.url = format!("sqlite://{}", dir.join("bench.db").display());
    config.gateway.simulate = SimulateMode::Always;
    config.sim.chunk_delay_min_ms = 0;
    config.sim.chunk_delay_max_ms = 0;
    config.embedder = model;
    let options = LeptosOptions::builder().output_name("chaosai").build();
    let server = chaosai::server::start(config, options).await.unwrap();
    let url = format!("http://{}/v1/chat/completions", server.addr);
    let client = reqwest::Client::new();
    for (cached, _) in labelled::SHOULD_HIT {
        let res = client.post(&url).json(&body(cached)).send().await.unwrap();
        res.bytes().await.unwrap();
    }
    // Answers are stored after the reply, off the request path: wait until the
    // count stops growing.
    let cache = server.gateway.cache().expect("the cache is on");
    let mut stored = usize::MAX;
    while cache.len() != stored {
        stored = cache.len();
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    (server, url)
}

fn body(question: &str) -> serde_json::Value {
    json!({"model": "chaosai", "messages": [{"role": "user", "content": question}]})
}

/// 2,000 cache hits from `concurrency` clients; (p50 ms, p99 ms, req/s).
async fn hits(url: &str, questions: &[&'static str], concurrency: usize) -> (f64, f64, f64) {
    let client = reqwest::Client::new();
    let total = 2_000;
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let (client, url, questions) = (client.clone(), url.to_string(), questions.to_vec());
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for request in 0..total / concurrency {
                // At any moment the clients ask different questions (with as
                // many questions as clients, each client keeps to its own): a
                // client that asked what another was asking would be answered
                // with it by the workers' dedupe, and stay in step with it.
                let question = questions[(worker + request * concurrency) % questions.len()];
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .json(&body(question))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    res.headers()["x-chaosai-served-by"],
                    "cache",
                    "{question:?}"
                );
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
    (p50, p99, rate)
}

/// Cache hits through the whole gateway, one gateway per model, the models
/// interleaved in every repeat.
async fn http_figures(out: &mut String) {
    let dir = tempfile::tempdir().unwrap();
    let mut gateways = Vec::new();
    for (i, (label, model)) in models().into_iter().enumerate() {
        let path = dir.path().join(i.to_string());
        std::fs::create_dir_all(&path).unwrap();
        let (server, url) = gateway_with(model, &path).await;
        gateways.push((label, server, url));
    }
    // The paraphrases that hit with every model, asked once each: one that
    // misses is answered by a provider and stored, and drops out.
    let client = reqwest::Client::new();
    let mut paraphrases: Vec<&'static str> = Vec::new();
    for (_, asked) in labelled::SHOULD_HIT {
        let mut everywhere = true;
        for (_, _, url) in &gateways {
            let res = client.post(url).json(&body(asked)).send().await.unwrap();
            everywhere &= res.headers()["x-chaosai-served-by"] == "cache";
            res.bytes().await.unwrap();
        }
        if everywhere && paraphrases.len() < CLIENTS {
            paraphrases.push(asked);
        }
    }
    assert_eq!(
        paraphrases.len(),
        CLIENTS,
        "paraphrases that hit: {paraphrases:?}"
    );
    let scenarios: [(String, Vec<&'static str>); 3] = [
        (
            "exact repeat (no embedding)".into(),
            vec![labelled::SHOULD_HIT[0].0],
        ),
        (
            "one paraphrase asked by everyone".into(),
            vec![paraphrases[0]],
        ),
        (
            format!("{CLIENTS} different paraphrases"),
            paraphrases.clone(),
        ),
    ];
    say!(out, "| cache hit over HTTP | model | concurrency | p50 ms | p99 ms | throughput req/s |\n|---|---|---|---|---|---|");
    for (name, questions) in &scenarios {
        for concurrency in [1, CLIENTS] {
            let mut runs = vec![Vec::new(); gateways.len()];
            for _ in 0..REPEATS {
                for (runs, (_, _, url)) in runs.iter_mut().zip(&gateways) {
                    runs.push(hits(url, questions, concurrency).await);
                }
            }
            for (runs, (label, _, _)) in runs.iter().zip(&gateways) {
                let median = |f: fn(&(f64, f64, f64)) -> f64| {
                    let mut v: Vec<f64> = runs.iter().map(f).collect();
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2]
                };
                let (p50, p99, rate) = (median(|r| r.0), median(|r| r.1), median(|r| r.2));
                say!(
                    out,
                    "| {name} | {label} | {concurrency} | {p50:.2} | {p99:.2} | {rate:.0} |"
                );
            }
        }
    }
    say!(
        out,
        "\nEach row is the median of {REPEATS} runs of 2,000 requests, the models interleaved.\n"
    );
    for (label, server, _) in gateways {
        if let Some(c) = server
            .gateway
            .cache()
            .and_then(|cache| cache.embedding_counters())
        {
            let (runs, embedded) = (c.model_runs.load(Relaxed), c.embedded.load(Relaxed));
            say!(
                out,
                "With the {label} model, {embedded} questions were embedded in {runs} model runs."
            );
        }
        server.shutdown().await;
    }
}

/// The gateway binary's RSS when idle and at its peak while its model embeds:
/// 16 clients asking paraphrases, then questions of about 250 tokens (as long
/// as the model reads), which miss, are answered and stored: the largest runs
/// the model makes.
async fn memory_figures(out: &mut String) {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("chaosai.toml");
    let config = include_str!("../config/chaosai.toml")
        .replace("chunk_delay_min_ms = 20", "chunk_delay_min_ms = 0")
        .replace("chunk_delay_max_ms = 40", "chunk_delay_max_ms = 0");
    std::fs::write(&config_path, config).unwrap();
    let env = [
        ("CHAOSAI_CONFIG", config_path.display().to_string()),
        (
            "CHAOSAI_DATABASE_URL",
            format!("sqlite://{}", dir.path().join("memory.db").display()),
        ),
    ];
    let gateway = support::Gateway::start(&env, std::process::Stdio::null()).await;
    let url = format!("{}/v1/chat/completions", gateway.base);
    let client = reqwest::Client::new();
    let ask = |question: String| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let res = client
                .post(&url)
                .json(&body(&question))
                .send()
                .await
                .unwrap();
            let by = res.headers()["x-chaosai-served-by"]
                .to_str()
                .unwrap()
                .to_string();
            res.bytes().await.unwrap();
            by
        }
    };
    for (cached, _) in labelled::SHOULD_HIT {
        ask(cached.to_string()).await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle = gateway.memory_kib("VmRSS");
    gateway.reset_peak_memory();
    let mut paraphrases = Vec::new();
    for (_, asked) in labelled::SHOULD_HIT {
        if ask(asked.to_string()).await == "cache" && paraphrases.len() < CLIENTS {
            paraphrases.push(*asked);
        }
    }
    hits(&url, &paraphrases, CLIENTS).await;
    // Distinct long questions, so that none is a repeat or a paraphrase.
    let words = [
        "order", "refund", "parcel", "account", "invoice", "courier", "warranty", "address",
    ];
    let long: Vec<String> = (0..32)
        .map(|i| {
            (0..250)
                .map(|w| words[(i * 7 + w * (i % 5 + 1)) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    for chunk in long.chunks(8) {
        futures::future::join_all(chunk.iter().cloned().map(&ask)).await;
    }
    let peak = gateway.memory_kib("VmHWM");
    let after = gateway.memory_kib("VmRSS");
    let mib = |kib: u64| kib as f64 / 1024.0;
    say!(
        out,
        "Gateway binary with the int8 model: {:.0} MiB idle, peak {:.0} MiB while 16 clients asked paraphrases and then 32 questions of about 250 tokens were asked 8 at a time, {:.0} MiB after.",
        mib(idle),
        mib(peak),
        mib(after)
    );
    gateway.stop();
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
    embedder_figures(&mut out).await;
    index_figures(&mut out);
    http_figures(&mut out).await;
    memory_figures(&mut out).await;
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap();
    std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/CACHE.md"), &out).unwrap();
}
