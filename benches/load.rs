//! `make bench`'s headline table: requests straight to a simulated provider
//! versus the same requests through the gateway (release binary, a separate
//! process), at concurrency 1, 16 and 64, streamed and not; the cache-hit path;
//! the path with the primary's breaker OPEN; the gateway's peak RSS.
//! Prints markdown and writes it to `bench/RESULTS.md`.

mod support;

use serde_json::json;
use std::fmt::Write;
use std::process::Stdio;
use std::time::Duration;
use support::reference::{Nginx, Proxy, Relay};
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
    Relay::serve_if_asked().await;
    let scale: usize = std::env::var("CHAOSAI_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (openai, anthropic) = support::simulators().await;
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
        &support::gateway_env(&config_path, dir.path()),
        Stdio::null(),
    )
    .await;
    // Idle RSS once it has settled: jemalloc hands freed pages back a second after
    // they are freed (`dirty_decay_ms`), so a reading taken the moment the gateway
    // is ready can still hold what loading the model freed; read until the RSS has
    // not fallen for 1.5 s, for at most 6 s.
    let mut after_start = gateway.memory_kib("VmRSS");
    let mut steady_since = tokio::time::Instant::now();
    let settle_deadline = steady_since + Duration::from_secs(6);
    while steady_since.elapsed() < Duration::from_millis(1500)
        && tokio::time::Instant::now() < settle_deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss = gateway.memory_kib("VmRSS");
        if rss < after_start {
            after_start = rss;
            steady_since = tokio::time::Instant::now();
        }
    }
    // The peak reported below is the peak under load, not the model's loading.
    let start_peak = gateway.memory_kib("VmHWM");
    gateway.reset_peak_memory();

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
        support::today()
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
    reference_section(
        &mut out,
        &gateway,
        (&direct_url, &gateway_url),
        &openai.base_url,
        dir.path(),
        question,
    )
    .await;
    wrk_section(
        &mut out,
        &gateway,
        (&direct_url, &gateway_url),
        |stream, model| question(stream, model).to_string(),
    )
    .await;
    let peak = gateway.memory_kib("VmHWM");
    let end = gateway.memory_kib("VmRSS");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let _ = writeln!(
        out,
        "\nGateway memory: {:.0} MiB after start-up (embedding model loaded; {:.0} MiB at the height of loading it), peak RSS under load {:.0} MiB, {:.0} MiB after the last run.",
        mib(after_start),
        mib(start_peak),
        mib(peak),
        mib(end)
    );
    let _ = writeln!(
        out,
        "\nThe rest of `make bench`: `bench/CACHE.md` (embeddings per second by batch size, paraphrase and exact hits over HTTP), `bench/INSTRUCTIONS.md` (instructions per request under callgrind), `bench/CLUSTER.md` (replicas)."
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

/// One path of the reference table: where requests go and whose CPU they cost.
struct Path<'a> {
    name: &'static str,
    url: String,
    model: &'static str,
    headers: &'a [(&'a str, &'a str)],
    /// The process's CPU seconds so far; `None` for the direct path.
    cpu: Option<Box<dyn Fn() -> f64 + 'a>>,
}

/// The same requests through processes that only carry them (nginx, and the
/// gateway's own HTTP stack as a bare relay), interleaved with direct calls and
/// the gateway: what one more process on the path costs on this machine, so the
/// gateway's added latency and its streamed-to-unstreamed CPU are read against
/// that floor rather than against zero.
async fn reference_section(
    out: &mut String,
    gateway: &Gateway,
    (direct_url, gateway_url): (&str, &str),
    upstream: &str,
    dir: &std::path::Path,
    question: impl Fn(bool, &str) -> serde_json::Value,
) {
    let origin = upstream
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .map(|host| format!("http://{host}"))
        .expect("an http:// upstream");
    let port: u16 = origin.rsplit(':').next().unwrap().parse().unwrap();
    let has_nginx = std::process::Command::new("nginx")
        .arg("-v")
        .stderr(Stdio::null())
        .status()
        .is_ok();
    let nginx: Option<Proxy> = if has_nginx {
        Some(Nginx::start(dir, &[port]).await)
    } else {
        None
    };
    let relay = Relay::start(&origin).await;
    let bypass = [("x-chaosai-cache", "bypass")];
    let mut paths = vec![Path {
        name: "direct to provider",
        url: direct_url.to_string(),
        model: "gpt-4o-mini",
        headers: &[],
        cpu: None,
    }];
    if let Some(nginx) = &nginx {
        paths.push(Path {
            name: "nginx in front (reference)",
            url: nginx.url_for(direct_url),
            model: "gpt-4o-mini",
            headers: &[],
            cpu: Some(Box::new(|| nginx.cpu_seconds())),
        });
    }
    paths.push(Path {
        name: "bare axum + reqwest relay (reference)",
        url: relay.url_for(direct_url),
        model: "gpt-4o-mini",
        headers: &[],
        cpu: Some(Box::new(|| relay.cpu_seconds())),
    });
    paths.push(Path {
        name: "through the gateway",
        url: gateway_url.to_string(),
        model: "gpt",
        headers: &bypass,
        cpu: Some(Box::new(|| gateway.cpu_seconds())),
    });
    let _ = writeln!(out, "\n### Reference proxies on the same path\n");
    let _ = writeln!(out, "The same requests through processes that only carry them, each interleaved with direct calls and the gateway (median of {REPEATS}): nginx (one process, keep-alive upstream, `proxy_buffering off`) and this bench binary as a bare relay on the gateway's own HTTP stack (axum's server, reqwest's client, the same runtime, nothing parsed). CPU is each process's own.{}\n", if has_nginx { "" } else { " nginx is not installed (`make bench` installs it): its rows are missing." });
    let _ = writeln!(out, "| path | concurrency | req/s | p50 ms | p99 ms | added vs direct p50 / p99 ms | first byte p50 ms | process CPU ms/request | gateway overhead p99 ms |");
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut cpu_of = std::collections::HashMap::new();
    for stream in [false, true] {
        for c in [1usize, 64] {
            let total = if c == 1 { 1_000 } else { 4_000 };
            let mut runs: Vec<Vec<(Run, f64)>> = paths.iter().map(|_| Vec::new()).collect();
            for _ in 0..REPEATS {
                for (path, runs) in paths.iter().zip(runs.iter_mut()) {
                    let before = path.cpu.as_ref().map_or(0.0, |cpu| cpu());
                    let run = load(
                        &path.url,
                        path.headers,
                        question(stream, path.model),
                        total,
                        c,
                    )
                    .await;
                    let after = path.cpu.as_ref().map_or(0.0, |cpu| cpu());
                    runs.push((run, (after - before) * 1000.0 / total as f64));
                }
            }
            let kind = if stream { "streamed" } else { "non-streamed" };
            let mut direct: Option<Run> = None;
            for (path, runs) in paths.iter().zip(runs) {
                let measured = summarise(runs, path.cpu.is_some());
                row(
                    out,
                    &format!("{}, {kind}", path.name),
                    c,
                    &measured,
                    direct.as_ref(),
                );
                if let Some(cpu) = measured.cpu_ms {
                    cpu_of.insert((path.name, stream, c), cpu);
                }
                direct.get_or_insert(measured.run);
            }
        }
    }
    for c in [1usize, 64] {
        let ratios: Vec<String> = paths
            .iter()
            .filter_map(|path| {
                let plain = cpu_of.get(&(path.name, false, c))?;
                let streamed = cpu_of.get(&(path.name, true, c))?;
                Some(format!("{} {:.2}×", path.name, streamed / plain))
            })
            .collect();
        let _ = writeln!(
            out,
            "\nAt concurrency {c}, a streamed answer's CPU against the same answer unstreamed: {}.",
            ratios.join(", ")
        );
    }
}

/// One wrk run: its throughput, latency percentiles (ms) and request count.
struct WrkRun {
    throughput: f64,
    p50: f64,
    p99: f64,
    requests: f64,
}

/// A wrk latency like `812.00us`, `7.95ms` or `1.02s`, in ms.
fn wrk_ms(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// Runs wrk (one thread, `connections` connections, `seconds`) POSTing `body`
/// to `url` with `headers`; `None` when wrk is not installed.
async fn wrk(
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
    connections: usize,
    seconds: u64,
) -> Option<WrkRun> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("post.lua");
    let mut lua = String::from(
        "wrk.method = \"POST\"\nwrk.headers[\"content-type\"] = \"application/json\"\n",
    );
    for (name, value) in headers {
        let _ = writeln!(lua, "wrk.headers[\"{name}\"] = \"{value}\"");
    }
    let _ = writeln!(lua, "wrk.body = [[{body}]]");
    std::fs::write(&script, lua).unwrap();
    let args = [
        "-t1".to_string(),
        format!("-c{connections}"),
        format!("-d{seconds}s"),
        "--latency".into(),
        "-s".into(),
        script.display().to_string(),
        url.to_string(),
    ];
    // wrk blocks; the simulated provider answers on this process's runtime.
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new("wrk").args(args).output())
            .await
            .unwrap()
            .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw failed responses:\n{text}"
    );
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(str::trim)
    };
    Some(WrkRun {
        throughput: after("Requests/sec:")?.parse().ok()?,
        p50: wrk_ms(after("50%")?)?,
        p99: wrk_ms(after("99%")?)?,
        requests: text
            .lines()
            .find(|l| l.contains("requests in"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?,
    })
}

/// Throughput at concurrency 64 with wrk as the load generator: the loop above
/// is a reqwest client in this process and takes a core's worth of CPU that
/// the gateway and the simulated provider then cannot use. wrk, a C program,
/// needs a fraction of it, so these rows are what the gateway can do when the
/// load generator, the provider and the gateway share the two cores.
async fn wrk_section(
    out: &mut String,
    gateway: &Gateway,
    (direct_url, gateway_url): (&str, &str),
    question: impl Fn(bool, &str) -> String,
) {
    const SECONDS: u64 = 5;
    const CONNECTIONS: usize = 64;
    if wrk(direct_url, &question(false, "gpt-4o-mini"), &[], 1, 1)
        .await
        .is_none()
    {
        let _ = writeln!(
            out,
            "\nwrk is not installed (`make bench` installs it): the wrk rows are not measured."
        );
        return;
    }
    let _ = writeln!(out, "\n### Concurrency 64 with wrk as the load generator\n");
    let _ = writeln!(out, "wrk (one thread, {CONNECTIONS} connections, {SECONDS} s per run, median of {REPEATS} interleaved runs), the same simulated provider and gateway as above.\n");
    let _ = writeln!(
        out,
        "| path | req/s | p50 ms | p99 ms | gateway CPU ms/request |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    let bypass = [("x-chaosai-cache", "bypass")];
    let mut cpu = [0.0f64; 2];
    for stream in [false, true] {
        let mut direct = Vec::new();
        let mut through = Vec::new();
        for _ in 0..REPEATS {
            let d = wrk(
                direct_url,
                &question(stream, "gpt-4o-mini"),
                &[],
                CONNECTIONS,
                SECONDS,
            )
            .await
            .expect("wrk ran a moment ago");
            direct.push(d);
            let before = gateway.cpu_seconds();
            let g = wrk(
                gateway_url,
                &question(stream, "gpt"),
                &bypass,
                CONNECTIONS,
                SECONDS,
            )
            .await
            .expect("wrk ran a moment ago");
            let per_request = (gateway.cpu_seconds() - before) * 1000.0 / g.requests;
            through.push((g, per_request));
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let kind = if stream { "streamed" } else { "non-streamed" };
        let _ = writeln!(
            out,
            "| direct to provider, {kind} | {:.0} | {:.2} | {:.2} | — |",
            median(direct.iter().map(|r| r.throughput).collect()),
            median(direct.iter().map(|r| r.p50).collect()),
            median(direct.iter().map(|r| r.p99).collect()),
        );
        let per_request = median(through.iter().map(|(_, c)| *c).collect());
        cpu[usize::from(stream)] = per_request;
        let _ = writeln!(
            out,
            "| through the gateway, {kind} | {:.0} | {:.2} | {:.2} | {per_request:.3} |",
            median(through.iter().map(|(r, _)| r.throughput).collect()),
            median(through.iter().map(|(r, _)| r.p50).collect()),
            median(through.iter().map(|(r, _)| r.p99).collect()),
        );
    }
    if cpu[0] > 0.0 {
        let _ = writeln!(
            out,
            "\nWith wrk at concurrency {CONNECTIONS} a streamed answer costs {:.2}× the gateway CPU of the same answer not streamed ({:.3} vs {:.3} ms).",
            cpu[1] / cpu[0],
            cpu[1],
            cpu[0]
        );
    }
}
