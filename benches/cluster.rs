//! What sharing costs and how fast it is: one replica on PostgreSQL + Redis
//! against the embedded default (SQLite, alone) on the same simulated provider;
//! how long an OPEN found by replica A takes to be OPEN on replica B; two
//! replicas behind nginx against one. Release binaries, real engines on
//! loopback, medians of 3. Prints markdown and writes `bench/CLUSTER.md`.

mod support;

#[path = "../tests/support/engines.rs"]
mod engines;

use engines::{Postgres, Redis};
use futures::StreamExt;
use serde_json::{json, Value};
use std::fmt::Write;
use std::process::Stdio;
use std::time::Duration;
use support::reference::Nginx;
use support::{load, machine, median, percentiles, Gateway, Run, TOKEN};

const REPEATS: usize = 3;

fn question(stream: bool) -> Value {
    json!({"model": "chaosai", "stream": stream,
           "messages": [{"role": "user", "content": "Where is my order?"}]})
}

/// Median run and CPU per request of `total` requests at `c`, `REPEATS` times.
async fn measure(gateway: &Gateway, url: &str, stream: bool, total: usize, c: usize) -> (Run, f64) {
    let mut runs = Vec::new();
    let mut cpu = Vec::new();
    let bypass = [("x-chaosai-cache", "bypass")];
    for _ in 0..REPEATS {
        let before = gateway.cpu_seconds();
        runs.push(load(url, &bypass, question(stream), total, c).await);
        cpu.push((gateway.cpu_seconds() - before) * 1000.0 / total as f64);
    }
    cpu.sort_by(f64::total_cmp);
    (median(&runs), cpu[cpu.len() / 2])
}

async fn websocket(
    base: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("{}/ws/events", base.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    tokio_tungstenite::connect_async(request).await.unwrap().0
}

/// Waits on `ws` for a breaker transition of `provider` to `to` by each of
/// `replicas` (in any order: B may hear of the failures before A's own
/// transition reaches it), returning their `at_ms` in the order asked.
async fn transitions<S>(ws: &mut S, provider: &str, to: &str, replicas: &[&str]) -> Vec<i64>
where
    S: futures::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut seen: Vec<Option<i64>> = vec![None; replicas.len()];
    while seen.iter().any(Option::is_none) {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("{provider} {to} on {replicas:?} within 30 s: {seen:?}"))
            .unwrap()
            .unwrap();
        let Ok(text) = frame.into_text() else {
            continue;
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        if event["type"] != "breaker_transition"
            || event["provider"] != provider
            || event["to"] != to
        {
            continue;
        }
        if let Some(i) = replicas.iter().position(|r| event["replica"] == *r) {
            seen[i].get_or_insert(event["at_ms"].as_i64().unwrap());
        }
    }
    seen.into_iter().flatten().collect()
}

#[tokio::main]
async fn main() {
    let scale: usize = std::env::var("CHAOSAI_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let (openai, anthropic) = support::simulators().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.toml");
    // Short cool-downs, never doubled past 600 ms: twenty openings in seconds.
    let config = support::simulated_config(
        &anthropic.base_url,
        &openai.base_url,
        "max_open_for_ms = 600",
    );
    std::fs::write(&config_path, config).unwrap();
    let (pg, redis) = (Postgres::start().await, Redis::start().await);
    let env = |replica: &str, shared: bool| {
        let mut env = vec![
            ("CHAOSAI_CONFIG", config_path.display().to_string()),
            ("CHAOSAI_BENCH_KEY", "sk-bench".to_string()),
            ("CHAOSAI_SIMULATE", "auto".to_string()),
            ("CHAOSAI_CACHE", "off".to_string()),
            ("CHAOSAI_BREAKER_OPEN_FOR_MS", "300".to_string()),
        ];
        if shared {
            env.push(("CHAOSAI_DATABASE_URL", pg.url.clone()));
            env.push(("CHAOSAI_REDIS_URL", redis.url.clone()));
            env.push(("CHAOSAI_REPLICA", replica.to_string()));
        } else {
            let db = dir.path().join(format!("{replica}.db"));
            env.push(("CHAOSAI_DATABASE_URL", format!("sqlite://{}", db.display())));
        }
        env
    };
    let mut out = String::new();
    let _ = writeln!(out, "# Cluster benchmark\n\n{}\n", machine());

    // 1. The cost of sharing on the hot path.
    let alone = Gateway::start(&env("alone", false), Stdio::null()).await;
    let shared = Gateway::start(&env("a", true), Stdio::null()).await;
    let _ = writeln!(
        out,
        "## One replica: shared (PostgreSQL + Redis) vs embedded (SQLite, alone)\n\n\
         | scenario | c | embedded rps | shared rps | embedded p50 ms | shared p50 ms | added p50 ms | embedded CPU ms/req | shared CPU ms/req |\n\
         |---|---|---|---|---|---|---|---|---|"
    );
    for (name, stream) in [("non-streamed", false), ("streamed", true)] {
        for c in [1usize, 64] {
            let total = if c == 1 { 400 } else { 3_000 } * scale;
            let (e, e_cpu) = measure(
                &alone,
                &format!("{}/v1/chat/completions", alone.base),
                stream,
                total,
                c,
            )
            .await;
            let (s, s_cpu) = measure(
                &shared,
                &format!("{}/v1/chat/completions", shared.base),
                stream,
                total,
                c,
            )
            .await;
            let _ = writeln!(
                out,
                "| {name} | {c} | {:.0} | {:.0} | {:.2} | {:.2} | {:+.2} | {e_cpu:.3} | {s_cpu:.3} |",
                e.throughput,
                s.throughput,
                e.p50,
                s.p50,
                s.p50 - e.p50
            );
        }
    }
    drop(alone);
    let redis_calls = redis_commands(&redis).await;

    // 2. An OPEN found through A, OPEN on B.
    let b = Gateway::start(&env("b", true), Stdio::null()).await;
    let mut ws = websocket(&b.base).await;
    let client = reqwest::Client::new();
    let mut lags = Vec::new();
    for _ in 0..20 * scale {
        shared.inject("claude", json!({"kind": "outage"})).await;
        // Only A's customers meet the outage; B hears of it.
        for _ in 0..3 {
            let _ = client
                .post(format!("{}/v1/chat/completions", shared.base))
                .header("x-chaosai-cache", "bypass")
                .json(&question(false))
                .send()
                .await
                .unwrap()
                .bytes()
                .await;
        }
        let opened = transitions(&mut ws, "claude", "open", &["a", "b"]).await;
        lags.push((opened[1] - opened[0]) as f64);
        shared.heal_all().await;
        // The next round starts with both breakers CLOSED again.
        for gateway in [&shared, &b] {
            closed(&client, gateway, "claude").await;
        }
    }
    let (lag_p50, lag_p99) = percentiles(lags.clone());
    let _ = writeln!(
        out,
        "\n## OPEN on A to OPEN on B\n\n{} openings: p50 {lag_p50:.0} ms, p99 {lag_p99:.0} ms, max {:.0} ms \
         (B's transition time minus A's, 1 ms resolution; 0 or less when B opened from the \
         shared failure count before A's own transition reached it).\n",
        lags.len(),
        lags.iter().cloned().fold(0.0, f64::max)
    );
    let _ = writeln!(
        out,
        "Redis commands during the hot-path runs above (all providers CLOSED and healthy): {redis_calls}.\n"
    );

    // 3. Two replicas behind nginx against one.
    let one = Nginx::start(dir.path(), &[shared.port]).await;
    let two = Nginx::start(dir.path(), &[shared.port, b.port]).await;
    let _ = writeln!(
        out,
        "## Behind nginx: two replicas against one (non-streamed, c=64)\n\n| replicas | rps | p50 ms | p99 ms |\n|---|---|---|---|"
    );
    for (n, nginx) in [(1, &one), (2, &two)] {
        let url = format!("http://127.0.0.1:{}/v1/chat/completions", nginx.port);
        let mut runs = Vec::new();
        for _ in 0..REPEATS {
            runs.push(
                load(
                    &url,
                    &[("x-chaosai-cache", "bypass")],
                    question(false),
                    3_000 * scale,
                    64,
                )
                .await,
            );
        }
        let run = median(&runs);
        let _ = writeln!(
            out,
            "| {n} | {:.0} | {:.2} | {:.2} |",
            run.throughput, run.p50, run.p99
        );
    }
    let _ = writeln!(
        out,
        "\nOn 2 cores the load generator, the simulated provider, PostgreSQL, Redis, nginx and \
         the replicas share the same CPUs: a second replica adds capacity only where one \
         replica left a core idle."
    );
    drop((one, two));
    println!("{out}");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/bench/CLUSTER.md"),
        out,
    )
    .unwrap();
}

/// Waits until `gateway` shows `provider`'s breaker CLOSED.
async fn closed(client: &reqwest::Client, gateway: &Gateway, provider: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let providers: Value = client
            .get(format!("{}/api/providers", gateway.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = providers
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == provider))
            .map(|p| p["state"].clone());
        if state == Some(json!("closed")) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{provider} never closed: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis's count of commands processed, minus the ones pub/sub delivery and
/// our own INFO use, since the server started.
async fn redis_commands(redis: &Redis) -> String {
    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut connection)
        .await
        .unwrap();
    let counts: Vec<String> = info
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let calls = rest.split(',').next()?.strip_prefix("calls=")?;
            Some(format!("{name} {calls}"))
        })
        .collect();
    if counts.is_empty() {
        "none".into()
    } else {
        counts.join(", ")
    }
}
