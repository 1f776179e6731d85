//! Shared pieces of the benches: the gateway binary as a child process (the
//! tests' own helper), load loops, percentiles and the machine's description.
#![allow(dead_code)]

use std::time::Instant;

#[path = "../../tests/support/binary.rs"]
mod binary;
pub mod reference;

/// The gateway binary as a child process, shared with the tests (not every
/// bench starts one).
#[allow(unused_imports)]
pub use binary::{free_port, Binary as Gateway, TOKEN};

/// The shipped configuration with every provider pointed at this process's
/// simulators (reached as real providers, with the key `CHAOSAI_BENCH_KEY`
/// names) and `provider_lines` added to each provider.
pub fn simulated_config(anthropic: &str, openai: &str, provider_lines: &str) -> String {
    include_str!("../../config/chaosai.toml")
        .replace("https://api.anthropic.com", anthropic)
        .replace("https://api.openai.com/v1", openai)
        .replace("https://api.groq.com/openai/v1", openai)
        .replace("ANTHROPIC_API_KEY", "CHAOSAI_BENCH_KEY")
        .replace("OPENAI_API_KEY", "CHAOSAI_BENCH_KEY")
        .replace("GROQ_API_KEY", "CHAOSAI_BENCH_KEY")
        .replace(
            "max_tokens = 512",
            &format!("max_tokens = 512\n{provider_lines}"),
        )
}

/// Both simulated providers with pacing off, answering from this process, so
/// "direct" and "through the gateway" reach the very same servers:
/// `(openai, anthropic)`.
pub async fn simulators() -> (chaosai::sim::SimServer, chaosai::sim::SimServer) {
    use chaosai::config::{Protocol, SimConfig};
    let pacing_off = SimConfig {
        chunk_delay_min_ms: 0,
        chunk_delay_max_ms: 0,
    };
    let openai = chaosai::sim::start(Protocol::OpenAi, &pacing_off)
        .await
        .unwrap();
    let anthropic = chaosai::sim::start(Protocol::Anthropic, &pacing_off)
        .await
        .unwrap();
    (openai, anthropic)
}

/// The environment of a gateway binary reading `config` and keeping its SQLite
/// audit in `dir`, its providers the simulators reached as real ones.
pub fn gateway_env(config: &std::path::Path, dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        ("CHAOSAI_CONFIG", config.display().to_string()),
        (
            "CHAOSAI_DATABASE_URL",
            format!("sqlite://{}", dir.join("bench.db").display()),
        ),
        ("CHAOSAI_BENCH_KEY", "sk-bench".into()),
        ("CHAOSAI_SIMULATE", "auto".into()),
    ]
}

/// Now, as `date -u` writes it, to stamp results without a date crate.
pub fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// p50 and p99 of samples.
pub fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// One measured load run.
pub struct Run {
    /// Requests per second.
    pub throughput: f64,
    /// Latency p50 in ms.
    pub p50: f64,
    /// Latency p99 in ms.
    pub p99: f64,
    /// `x-chaosai-overhead-ms` p99, when the responses carry it.
    pub overhead_p99: f64,
    /// Time to the first byte of the body, p50 in ms.
    pub ttfb_p50: f64,
}

/// Sends `total` POSTs of `body` to `url` with `concurrency` in flight, each
/// response read whole.
pub async fn load(
    url: &str,
    headers: &[(&str, &str)],
    body: serde_json::Value,
    total: usize,
    concurrency: usize,
) -> Run {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        let body = body.clone();
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..total / concurrency {
                let t = Instant::now();
                let mut request = client.post(&url).json(&body);
                for (k, v) in &headers {
                    request = request.header(k, v);
                }
                let res = request.send().await.unwrap();
                assert!(res.status().is_success(), "status {}", res.status());
                let overhead = res
                    .headers()
                    .get("x-chaosai-overhead-ms")
                    .and_then(|v| v.to_str().ok()?.parse::<f64>().ok());
                let mut res = res;
                let mut first = None;
                while let Some(_chunk) = res.chunk().await.unwrap() {
                    first.get_or_insert_with(|| t.elapsed().as_secs_f64() * 1000.0);
                }
                let whole = t.elapsed().as_secs_f64() * 1000.0;
                samples.push((whole, overhead, first.unwrap_or(whole)));
            }
            samples
        }));
    }
    let mut latency = Vec::new();
    let mut overhead = Vec::new();
    let mut ttfb = Vec::new();
    for w in workers {
        for (l, o, f) in w.await.unwrap() {
            latency.push(l);
            overhead.extend(o);
            ttfb.push(f);
        }
    }
    let throughput = latency.len() as f64 / started.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(latency);
    Run {
        throughput,
        p50,
        p99,
        overhead_p99: percentiles(overhead).1,
        ttfb_p50: percentiles(ttfb).0,
    }
}

/// The median run of repeats, figure by figure.
pub fn median(runs: &[Run]) -> Run {
    let of = |f: fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    Run {
        throughput: of(|r| r.throughput),
        p50: of(|r| r.p50),
        p99: of(|r| r.p99),
        overhead_p99: of(|r| r.overhead_p99),
        ttfb_p50: of(|r| r.ttfb_p50),
    }
}

/// "CPU model, N cores, M GiB, kernel" for the results header.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

/// Deterministic vectors with the low-rank structure of sentence embeddings:
/// mixtures of a few dozen directions plus noise, normalised.
pub fn vectors(n: usize) -> Vec<Vec<f32>> {
    let mut state: u64 = 0x9e3779b97f4a7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let basis: Vec<Vec<f32>> = (0..48)
        .map(|_| (0..384).map(|_| next()).collect())
        .collect();
    (0..n)
        .map(|_| {
            let mut v = vec![0f32; 384];
            for _ in 0..4 {
                let b = &basis[((next() + 0.5) * 47.99) as usize];
                let w = next();
                v.iter_mut().zip(b).for_each(|(x, y)| *x += w * y);
            }
            v.iter_mut().for_each(|x| *x += 0.05 * next());
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}
