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
use support::{load, machine, median, Gateway, Run};

/// Repeats of every scenario, interleaved direct / gateway; the table shows medians.
const REPEATS: usize = 3;

fn row(out: &mut String, name: &str, c: usize, m: &Measured, direct: Option<&Run>) {
    let run = &m.run;
    let added = direct.map_or("—".to_string(), |d| {
        format!("{:+.2} / {:+.2}", run.p50 - d.p50, run.p99 - d.p99)
    });
    let overhead = if run.overhead_p99 > 0.0 {
        format!("{:.3}", run.overhead_p99)
    } else {
        "—".into()
    };
    let cpu = m.cpu_ms.map_or("—".into(), |c| format!("{c:.3}"));
    let _ = writeln!(
        out,
        "| {name} | {c} | {:.0} | {:.2} | {:.2} | {added} | {:.2} | {cpu} | {overhead} |",
        run.throughput, run.p50, run.p99, run.ttfb_p50
    );
}

/// A scenario's median run and, through the gateway, its median CPU per request.
struct Measured {
    run: Run,
    cpu_ms: Option<f64>,
}

/// One run of `total` requests through the gateway, with the gateway process's
/// CPU time (user + system, from `/proc`) per request.
async fn via(
    gateway: &Gateway,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
    total: usize,
    c: usize,
) -> (Run, f64) {
    let before = gateway.cpu_seconds();
    let run = load(url, headers, body.clone(), total, c).await;
    (
        run,
        (gateway.cpu_seconds() - before) * 1000.0 / total as f64,
    )
}

/// [`via`], `REPEATS` times.
async fn measure(
    gateway: &Gateway,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
    total: usize,
    c: usize,
) -> Vec<(Run, f64)> {
    let mut runs = Vec::new();
    for _ in 0..REPEATS {
        runs.push(via(gateway, url, headers, body, total, c).await);
    }
    runs
}

fn summarise(runs: Vec<(Run, f64)>, with_cpu: bool) -> Measured {
    let mut cpu: Vec<f64> = runs.iter().map(|(_, c)| *c).collect();
    cpu.sort_by(f64::total_cmp);
    let cpu_ms = with_cpu.then(|| cpu[cpu.len() / 2]);
    let runs: Vec<Run> = runs.into_iter().map(|(r, _)| r).collect();
    Measured {
        run: median(&runs),
        cpu_ms,
    }
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
    // A long cool-down keeps the OPEN scenario stable.
    let config = support::simulated_config(
        &anthropic.base_url,
        &openai.base_url,
        "open_for_ms = 3600000\nmax_open_for_ms = 3600000",
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
    let _ = writeln!(out, "Each row is the median of {REPEATS} runs, direct and gateway interleaved. Gateway CPU is the gateway process's user + system time (`/proc/<pid>/stat`) divided by the requests of the run; the audit trail, metrics and live events are on.\n");
    let _ = writeln!(out, "| path | concurrency | req/s | p50 ms | p99 ms | added vs direct p50 / p99 ms | first byte p50 ms | gateway CPU ms/request | gateway overhead p99 ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    // Warm up connections and code paths.
    load(&direct_url, &[], question(false, "gpt-4o-mini"), 200, 4).await;
    load(&gateway_url, &bypass, question(false, "gpt"), 200, 4).await;
    let mut cpu_by = std::collections::HashMap::new();
    for stream in [false, true] {
        for c in [1usize, 16, 64] {
            let total = (if c == 1 { 1_000 } else { 4_000 }) * scale;
            let mut direct = Vec::new();
            let mut through = Vec::new();
            for _ in 0..REPEATS {
                direct.push((
                    load(&direct_url, &[], question(stream, "gpt-4o-mini"), total, c).await,
                    0.0,
                ));
                through.push(
                    via(
                        &gateway,
                        &gateway_url,
                        &bypass,
                        &question(stream, "gpt"),
                        total,
                        c,
                    )
                    .await,
                );
            }
            let direct = summarise(direct, false);
            let via = summarise(through, true);
            cpu_by.insert((stream, c), via.cpu_ms.unwrap_or(0.0));
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
                Some(&direct.run),
            );
        }
    }
    // The cache-hit path (the question was answered and stored above).
    for c in [1usize, 16, 64] {
        let hit = summarise(
            measure(
                &gateway,
                &gateway_url,
                &[],
                &question(false, "chaosai"),
                2_000 * scale,
                c,
            )
            .await,
            true,
        );
        row(&mut out, "cache hit (exact repeat)", c, &hit, None);
    }
    // The primary's breaker OPEN: claude is skipped, gpt answers.
    gateway.inject("claude", json!({"kind": "outage"})).await;
    load(&gateway_url, &bypass, question(false, "chaosai"), 3, 1).await;
    let pinned = summarise(
        measure(
            &gateway,
            &gateway_url,
            &bypass,
            &question(false, "gpt"),
            2_000 * scale,
            1,
        )
        .await,
        true,
    );
    let skipped = summarise(
        measure(
            &gateway,
            &gateway_url,
            &bypass,
            &question(false, "chaosai"),
            2_000 * scale,
            1,
        )
        .await,
        true,
    );
    row(
        &mut out,
        "primary OPEN, served by the secondary",
        1,
        &skipped,
        Some(&pinned.run),
    );
    let _ = writeln!(
        out,
        "\nSkipping the OPEN primary costs {:+.3} ms at p50 and {:+.3} ms at p99 compared with asking the secondary directly (pinned).",
        skipped.run.p50 - pinned.run.p50,
        skipped.run.p99 - pinned.run.p99
    );
    for c in [1usize, 16, 64] {
        let plain = cpu_by.get(&(false, c)).copied().unwrap_or(0.0);
        let streamed = cpu_by.get(&(true, c)).copied().unwrap_or(0.0);
        if plain > 0.0 {
            let _ = writeln!(
                out,
                "\nAt concurrency {c} a streamed answer costs {:.2}× the gateway CPU of the same answer not streamed ({streamed:.3} vs {plain:.3} ms).",
                streamed / plain
            );
        }
    }
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
