//! `make bench`'s headline table: requests straight to a simulated provider
//! versus the same requests through the gateway (release binary, a separate
//! process), at concurrency 1, 16 and 64, streamed and not; the cache-hit path;
//! the path with the primary's breaker OPEN; the gateway's peak RSS.
//! Prints markdown and writes it to `bench/RESULTS.md`.

mod support;

use chaosai::config::{Protocol, SimConfig};
use serde_json::json;
use std::fmt::Write;
use std::process::Stdio;
use support::{load, machine, Gateway, Run};

fn row(out: &mut String, name: &str, c: usize, run: &Run, direct: Option<&Run>) {
    let added = direct.map_or("—".to_string(), |d| {
        format!("{:+.2} / {:+.2}", run.p50 - d.p50, run.p99 - d.p99)
    });
    let overhead = if run.overhead_p99 > 0.0 {
        format!("{:.3}", run.overhead_p99)
    } else {
        "—".into()
    };
    let _ = writeln!(
        out,
        "| {name} | {c} | {:.0} | {:.2} | {:.2} | {added} | {overhead} |",
        run.throughput, run.p50, run.p99
    );
}

#[tokio::main]
async fn main() {
    let scale: usize = std::env::var("CHAOSAI_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let pacing_off = SimConfig {
        chunk_delay_min_ms: 0,
        chunk_delay_max_ms: 0,
    };
    // The providers live in this process, so "direct" and "through the gateway"
    // reach the very same servers.
    let openai = chaosai::sim::start(Protocol::OpenAi, &pacing_off)
        .await
        .unwrap();
    let anthropic = chaosai::sim::start(Protocol::Anthropic, &pacing_off)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.toml");
    let config = include_str!("../config/chaosai.toml")
        .replace("https://api.anthropic.com", &anthropic.base_url)
        .replace("https://api.openai.com/v1", &openai.base_url)
        .replace("https://api.groq.com/openai/v1", &openai.base_url)
        .replace("ANTHROPIC_API_KEY", "CHAOSAI_BENCH_KEY")
        .replace("OPENAI_API_KEY", "CHAOSAI_BENCH_KEY")
        .replace("GROQ_API_KEY", "CHAOSAI_BENCH_KEY")
        // A long cool-down keeps the OPEN scenario stable.
        .replace(
            "max_tokens = 512",
            "max_tokens = 512\nopen_for_ms = 3600000\nmax_open_for_ms = 3600000",
        );
    std::fs::write(&config_path, config).unwrap();
    let gateway = Gateway::start(
        &[
            ("CHAOSAI_CONFIG", config_path.display().to_string()),
            (
                "CHAOSAI_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("bench.db").display()),
            ),
            ("CHAOSAI_BENCH_KEY", "sk-bench".into()),
            // The providers are this process's simulators, reached as "real" ones.
            ("CHAOSAI_SIMULATE", "auto".into()),
        ],
        Stdio::null(),
    )
    .await;
    let after_start = gateway.memory_kib("VmRSS");

    let question = |stream: bool, model: &str| json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "Where is my order?"}]});
    let direct_url = format!("{}/chat/completions", openai.base_url);
    let gateway_url = format!("{}/v1/chat/completions", gateway.base);
    let bypass = [("x-chaosai-cache", "bypass")];
    let mut out = String::new();
    let _ = writeln!(out, "# ChaosAI benchmark results\n");
    let _ = writeln!(
        out,
        "Run on {} ({}), `make bench`, release build, loopback, simulated providers with pacing off.\n",
        machine(),
        chrono_free_date()
    );
    let _ = writeln!(out, "| path | concurrency | req/s | p50 ms | p99 ms | added vs direct p50 / p99 ms | gateway overhead p99 ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    // Warm up connections and code paths.
    load(&direct_url, &[], question(false, "gpt-4o-mini"), 200, 4).await;
    load(&gateway_url, &bypass, question(false, "gpt"), 200, 4).await;
    for stream in [false, true] {
        for c in [1usize, 16, 64] {
            let total = (if c == 1 { 1_000 } else { 4_000 }) * scale;
            let direct = load(&direct_url, &[], question(stream, "gpt-4o-mini"), total, c).await;
            let via = load(&gateway_url, &bypass, question(stream, "gpt"), total, c).await;
            let kind = if stream { "streamed" } else { "non-streamed" };
            row(
                &mut out,
                &format!("direct to provider, {kind}"),
                c,
                &direct,
                None,
            );
            row(
                &mut out,
                &format!("through the gateway, {kind}"),
                c,
                &via,
                Some(&direct),
            );
        }
    }
    // The cache-hit path (the question was answered and stored above).
    for c in [1usize, 16, 64] {
        let hit = load(
            &gateway_url,
            &[],
            question(false, "chaosai"),
            2_000 * scale,
            c,
        )
        .await;
        row(&mut out, "cache hit (exact repeat)", c, &hit, None);
    }
    // The primary's breaker OPEN: claude is skipped, gpt answers.
    gateway.inject("claude", json!({"kind": "outage"})).await;
    load(&gateway_url, &bypass, question(false, "chaosai"), 3, 1).await;
    let pinned = load(
        &gateway_url,
        &bypass,
        question(false, "gpt"),
        2_000 * scale,
        1,
    )
    .await;
    let skipped = load(
        &gateway_url,
        &bypass,
        question(false, "chaosai"),
        2_000 * scale,
        1,
    )
    .await;
    row(
        &mut out,
        "primary OPEN, served by the secondary",
        1,
        &skipped,
        Some(&pinned),
    );
    let _ = writeln!(
        out,
        "\nSkipping the OPEN primary costs {:+.3} ms at p50 and {:+.3} ms at p99 compared with asking the secondary directly (pinned).",
        skipped.p50 - pinned.p50,
        skipped.p99 - pinned.p99
    );
    let peak = gateway.memory_kib("VmHWM");
    let _ = writeln!(
        out,
        "\nGateway memory: {:.0} MiB after start-up (embedding model loaded), peak RSS {:.0} MiB.",
        after_start as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let status = gateway.stop();
    assert!(status.success(), "gateway exit {status:?}");
    println!("{out}");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/bench/RESULTS.md"),
        &out,
    )
    .unwrap();
}

/// Today's date from `date`, to stamp the results without a date crate.
fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
