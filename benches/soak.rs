//! `make soak`: steady mixed customer traffic while a chaos script injects and
//! heals random faults on every provider (total blackouts and latency storms
//! included). At the end it checks and prints: every request got a 2xx, p99
//! stayed under the overall deadline, the audit holds exactly one row per request
//! sent, no "database is locked", no audit overflow, and RSS at the end within
//! 20% of RSS after warm-up. Exits non-zero when a check fails.
//!
//! `SOAK_SECONDS` (default 300) and `SOAK_RPS` (default 20) set the length and rate.
//! `SOAK_HOSTILE=1` puts a hostile provider second in the cascade: a raw-TCP
//! server that cycles through nonsense `Retry-After`, endless error bodies,
//! endless answers and lines, and pings forever after the first token.

mod support;

#[path = "../tests/support/hostile.rs"]
mod hostile;

use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::json;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{percentiles, Gateway};

const QUESTIONS: &[&str] = &[
    "Where is my order?",
    "How do I reset my password?",
    "Can I get a refund?",
    "How much is shipping?",
    "How do I return an item?",
    "Do you ship to Canada?",
    "My package arrived damaged",
    "My blender makes a strange noise",
    "Can I pause my membership?",
    "Which payment methods do you accept?",
];
const PROVIDERS: &[&str] = &["claude", "gpt", "llama"];
/// The gateway's overall deadline in the shipped config.
const DEADLINE_MS: f64 = 25_000.0;

/// The shipped configuration with the hostile provider second in the cascade.
fn with_hostile_provider(base_url: &str) -> String {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/chaosai.toml"))
            .expect("the shipped config");
    let hostile = format!(
        "\n[[providers]]\nname = \"hostile\"\nprotocol = \"openai\"\nmodel = \"hostile-model\"\n\
         base_url = \"{base_url}\"\napi_key_env = \"HOSTILE_KEY\"\n"
    );
    // After the first provider's table, before the second's.
    let second = shipped
        .match_indices("[[providers]]")
        .nth(1)
        .map(|(at, _)| at)
        .unwrap_or(shipped.len());
    // A stream the hostile keeps alive with pings ends at the answer budget;
    // within the soak's deadline check, not the shipped two minutes.
    let shipped = format!("{}{hostile}\n{}", &shipped[..second], &shipped[second..]);
    shipped.replacen("[gateway]\n", "[gateway]\nanswer_budget_ms = 20000\n", 1)
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let rps: u64 = std::env::var("SOAK_RPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("soak.db").display());
    let log_path = dir.path().join("gateway.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut env = vec![
        ("CHAOSAI_DATABASE_URL", db.clone()),
        ("CHAOSAI_SIMULATE", "always".to_string()),
        ("CHAOSAI_SIM_CHUNK_DELAY_MS", "5".to_string()),
        ("CHAOSAI_BREAKER_OPEN_FOR_MS", "3000".to_string()),
    ];
    let hostile = if std::env::var("SOAK_HOSTILE").is_ok_and(|v| v == "1") {
        let hostile = hostile::Hostile::start(hostile::Attack::EndlessAnswer).await;
        let config = dir.path().join("hostile.toml");
        std::fs::write(&config, with_hostile_provider(&hostile.base_url)).unwrap();
        env.extend([
            ("CHAOSAI_CONFIG", config.display().to_string()),
            // The hostile provider has a key, so it is "real"; the others have
            // none here (the binary helper clears the real ones) and stay simulated.
            ("CHAOSAI_SIMULATE", "auto".to_string()),
            ("HOSTILE_KEY", "key".to_string()),
        ]);
        Some(hostile)
    } else {
        None
    };
    let gateway = Gateway::start(&env, Stdio::from(log)).await;
    if let Some(hostile) = hostile.clone() {
        // A new attack every few seconds, for the whole soak.
        tokio::spawn(async move {
            let attacks = [
                hostile::Attack::RetryAfter("inf".into()),
                hostile::Attack::EndlessErrorBody,
                hostile::Attack::EndlessAnswer,
                hostile::Attack::EndlessLine,
                hostile::Attack::PingsForever,
                hostile::Attack::RetryAfter("99999999999999999999".into()),
            ];
            for attack in attacks.iter().cycle() {
                hostile.set(attack.clone());
                tokio::time::sleep(Duration::from_secs(7)).await;
            }
        });
    }
    let base = gateway.base.clone();
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    println!("soak: {seconds} s at {rps} requests/s against {base}");

    // Chaos script: every few seconds, a random fault with a random self-heal.
    let chaos = {
        let base = base.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut actions = 0;
            while Instant::now() < until {
                let pause = rand::thread_rng().gen_range(2..6);
                tokio::time::sleep(Duration::from_secs(pause)).await;
                let (targets, spec) = {
                    let mut rng = rand::thread_rng();
                    let heal = rng.gen_range(3..12);
                    let one = vec![*PROVIDERS.choose(&mut rng).unwrap()];
                    match rng.gen_range(0..10) {
                        0 => (
                            PROVIDERS.to_vec(),
                            json!({"kind": "outage", "duration_s": heal}),
                        ),
                        1 => (
                            PROVIDERS.to_vec(),
                            json!({"kind": "latency", "delay_ms": 6000, "jitter_ms": 1000, "duration_s": heal}),
                        ),
                        2 => (one, json!({"kind": "outage", "duration_s": heal})),
                        3 => (
                            one,
                            json!({"kind": "latency", "delay_ms": 5000, "duration_s": heal}),
                        ),
                        4 => (
                            one,
                            json!({"kind": "rate_limit", "retry_after_s": 5, "duration_s": heal}),
                        ),
                        5 => (
                            one,
                            json!({"kind": "flaky", "error_rate": 0.5, "duration_s": heal}),
                        ),
                        6 => (one, json!({"kind": "hang", "duration_s": heal})),
                        7 => (one, json!({"kind": "malformed", "duration_s": heal})),
                        8 => (
                            one,
                            json!({"kind": "reset", "after_bytes": 700, "duration_s": heal}),
                        ),
                        _ => (vec![], json!(null)),
                    }
                };
                if targets.is_empty() {
                    let _ = client
                        .delete(format!("{base}/api/chaos"))
                        .bearer_auth(support::TOKEN)
                        .send()
                        .await;
                }
                for provider in targets {
                    let _ = client
                        .put(format!("{base}/api/chaos/{provider}"))
                        .bearer_auth(support::TOKEN)
                        .json(&spec)
                        .send()
                        .await;
                }
                actions += 1;
            }
            actions
        })
    };

    // Steady open-loop traffic: one request every 1/rps seconds, whatever the latency.
    let results = Arc::new(Mutex::new(Vec::<(u16, f64)>::new()));
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rps.max(1)));
    let mut sent = 0u64;
    let mut in_flight = Vec::new();
    let mut rss_after_warmup = 0;
    while Instant::now() < until {
        tick.tick().await;
        if rss_after_warmup == 0 && started.elapsed() > Duration::from_secs((seconds / 10).max(5)) {
            rss_after_warmup = gateway.memory_kib("VmRSS");
        }
        let (client, results, url) = (
            client.clone(),
            results.clone(),
            format!("{base}/v1/chat/completions"),
        );
        let (question, stream, bypass) = {
            let mut rng = rand::thread_rng();
            // Three in four skip the cache: the soak is about the providers failing.
            (
                *QUESTIONS.choose(&mut rng).unwrap(),
                rng.gen_bool(0.5),
                rng.gen_bool(0.75),
            )
        };
        sent += 1;
        in_flight.push(tokio::spawn(async move {
            let body = json!({"model": "chaosai", "stream": stream, "messages": [{"role": "user", "content": question}]});
            let t = Instant::now();
            let mut request = client.post(&url).json(&body);
            if bypass {
                request = request.header("x-chaosai-cache", "bypass");
            }
            let status = match request.send().await {
                Ok(res) => {
                    let status = res.status().as_u16();
                    let text = res.text().await.unwrap_or_default();
                    // A streamed answer must end with [DONE] or, when it broke and no
                    // provider could continue it, with an explicit error event.
                    let done = text.trim_end().ends_with("data: [DONE]");
                    let flagged = text.contains("\"stream_interrupted\"");
                    match (stream, status, done, flagged) {
                        (true, 200, false, true) => 297,
                        (true, 200, false, false) => 599,
                        _ => status,
                    }
                }
                Err(_) => 598,
            };
            results.lock().unwrap().push((status, t.elapsed().as_secs_f64() * 1000.0));
        }));
    }
    for task in in_flight {
        let _ = task.await;
    }
    let chaos_actions = chaos.await.unwrap_or(0);
    let rss_end = gateway.memory_kib("VmRSS");
    let metrics = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let overflow = metric("chaosai_audit_overflow_total");
    let status = gateway.stop();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM requests")
        .fetch_one(&pool)
        .await
        .unwrap();

    let results = results.lock().unwrap().clone();
    let failures = results
        .iter()
        .filter(|(s, _)| !(200..300).contains(s))
        .count();
    let interrupted = results.iter().filter(|(s, _)| *s == 297).count();
    let silent_cuts = results.iter().filter(|(s, _)| *s == 599).count();
    let (p50, p99) = percentiles(results.iter().map(|(_, l)| *l).collect());
    let by_route: Vec<String> = sqlx::query_as::<_, (String, i64)>(
        "SELECT COALESCE(served_by, 'none'), COUNT(*) FROM requests GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(r, n)| format!("{r} {n}"))
    .collect();
    let checks = [
        (
            "every request got a 2xx",
            failures == 0,
            format!("{failures} of {sent} failed"),
        ),
        (
            "no stream cut silently",
            silent_cuts == 0,
            format!(
                "{interrupted} broken streams ended with an explicit error event (no provider could continue)"
            ),
        ),
        (
            "p99 under the overall deadline",
            p99 < DEADLINE_MS,
            format!("p50 {p50:.0} ms, p99 {p99:.0} ms"),
        ),
        (
            "audit rows equal requests sent",
            rows as u64 == sent,
            format!("{rows} rows, {sent} sent"),
        ),
        (
            "no \"database is locked\"",
            !log.contains("database is locked"),
            String::new(),
        ),
        ("no audit overflow", overflow == 0.0, format!("{overflow}")),
        (
            "RSS at the end within 20% of after warm-up",
            rss_end as f64 <= rss_after_warmup as f64 * 1.2,
            format!("{} MiB → {} MiB", rss_after_warmup / 1024, rss_end / 1024),
        ),
        (
            "gateway exited 0 on SIGTERM",
            status.success(),
            format!("{status:?}"),
        ),
    ];
    println!("| soak check ({seconds} s, {sent} requests, {chaos_actions} chaos actions) | result | detail |");
    println!("|---|---|---|");
    for (name, ok, detail) in &checks {
        println!(
            "| {name} | {} | {detail} |",
            if *ok { "pass" } else { "FAIL" }
        );
    }
    println!("\nRoutes: {}", by_route.join(", "));
    if let Some(hostile) = &hostile {
        println!(
            "Hostile provider: {} requests, {:.0} MiB pushed at the gateway",
            hostile.requests.load(std::sync::atomic::Ordering::Relaxed),
            hostile.sent_mib()
        );
    }
    if checks.iter().any(|(_, ok, _)| !ok) {
        std::process::exit(1);
    }
}
