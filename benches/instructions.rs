//! Instructions per request, counted by valgrind's callgrind: the gateway's
//! CPU cost in a figure that does not move with the machine's noise (the same
//! binary and inputs give the same count whatever else runs), so a change to the
//! request path can be judged by a difference of a few percent.
//!
//! The release binary runs under callgrind with the audit trail, metrics and live
//! events on (the cache off: every request reaches the provider, and ONNX under
//! valgrind would only slow start-up); the simulated OpenAI provider lives in this
//! process, unmeasured. After a warm-up the counters are zeroed, a fixed number of
//! requests is sent, and the counters are dumped: every instruction of every
//! gateway thread in between (hyper, the cascade, the adapter, the audit writer's
//! SQLite inserts) is divided by the requests. The functions that cost most
//! follow each figure. Written to `bench/INSTRUCTIONS.md`.
//!
//! Needs valgrind (`callgrind_control` comes with it); skipped when it is missing.

mod support;

use serde_json::json;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{load, Gateway};

/// Requests per measured scenario.
const REQUESTS: usize = 400;
/// Requests in flight.
const CONCURRENCY: usize = 4;
/// Functions listed under each figure.
const TOP: usize = 15;

/// The newest callgrind dump in `dir`.
fn newest_dump(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("callgrind.out"))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .expect("callgrind wrote a dump")
}

/// The instructions a dump counted (its `summary:` or `totals:` line).
fn instructions(dump: &Path) -> u64 {
    let text = std::fs::read_to_string(dump).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("the dump has a total")
}

/// The `TOP` functions of a dump by their own instructions, as
/// `callgrind_annotate` lists them.
fn top_functions(dump: &Path) -> Vec<String> {
    let out = Command::new("callgrind_annotate")
        .arg("--inclusive=no")
        .arg("--threshold=100")
        .arg(dump)
        .output()
        .expect("callgrind_annotate runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip_while(|l| !l.contains("file:function"))
        .skip(1)
        .filter(|l| {
            l.trim_start()
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
        // Frames already running when the counters were zeroed (thread starts,
        // the runtime's loop) are charged with everything below them; no
        // function's own cost comes near a third of a request.
        .filter(|l| {
            l.split_once('(')
                .and_then(|(_, rest)| rest.split_once('%'))
                .and_then(|(pct, _)| pct.trim().parse::<f64>().ok())
                .is_some_and(|pct| pct < 30.0)
        })
        .take(TOP)
        .map(|l| l.trim().to_string())
        .collect()
}

fn callgrind_control(flag: &str, pid: u32) {
    let status = Command::new("callgrind_control")
        .arg(flag)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control runs");
    assert!(status.success(), "callgrind_control {flag} failed");
}

#[tokio::main]
async fn main() {
    let have_valgrind = Command::new("callgrind_control")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_valgrind {
        println!("valgrind is not installed: instructions per request not measured");
        return;
    }
    let (openai, anthropic) = support::simulators().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("bench.toml");
    let config = support::simulated_config(&anthropic.base_url, &openai.base_url, "").replacen(
        "[cache]\nenabled = true",
        "[cache]\nenabled = false",
        1,
    );
    assert!(config.contains("[cache]\nenabled = false"));
    std::fs::write(&config_path, config).unwrap();
    // `CALLGRIND_OUT_DIR` keeps the dumps (for `callgrind_annotate --inclusive=yes`).
    let dumps = std::env::var_os("CALLGRIND_OUT_DIR")
        .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from);
    std::fs::create_dir_all(&dumps).unwrap();
    let out_file = format!(
        "--callgrind-out-file={}",
        dumps.join("callgrind.out").display()
    );
    let gateway = Gateway::start_under(
        &["valgrind", "--tool=callgrind", "--dump-instr=no", &out_file],
        support::free_port(),
        &support::gateway_env(&config_path, dir.path()),
        Stdio::null(),
        Duration::from_secs(300),
    )
    .await;
    let pid = gateway.child.id();
    let url = format!("{}/v1/chat/completions", gateway.base);
    let question = |stream: bool| json!({"model": "gpt", "stream": stream, "messages": [{"role": "user", "content": "Where is my order?"}]});

    let mut out = String::new();
    let _ = writeln!(out, "# Instructions per request (callgrind)\n");
    let _ = writeln!(out, "`cargo bench --features ssr --bench instructions` (part of `make bench`): the release gateway under valgrind's callgrind, {REQUESTS} requests at concurrency {CONCURRENCY} to the pinned OpenAI-protocol provider (simulated, pacing off), audit, metrics and live events on, cache off. Every instruction of every gateway thread between zeroing the counters and dumping them, divided by the requests; the same binary and inputs give the same count on a busy or an idle machine.\n");
    let mut per_request = Vec::new();
    for stream in [false, true] {
        // Warm-up: connections, pools, the audit's prepared statements.
        load(&url, &[], question(stream), 100, CONCURRENCY).await;
        // Let the audit writer commit the warm-up before the count starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        callgrind_control("-z", pid);
        load(&url, &[], question(stream), REQUESTS, CONCURRENCY).await;
        // The audit writer flushes within its interval: its inserts are counted.
        tokio::time::sleep(Duration::from_millis(500)).await;
        callgrind_control("-d", pid);
        let dump = newest_dump(&dumps);
        let total = instructions(&dump);
        let each = total / REQUESTS as u64;
        per_request.push(each);
        let kind = if stream { "streamed" } else { "non-streamed" };
        let _ = writeln!(out, "## {kind}: {each} instructions per request\n");
        let _ = writeln!(
            out,
            "Top functions by own instructions (all {REQUESTS} requests):\n\n```"
        );
        for line in top_functions(&dump) {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "```\n");
    }
    let _ = writeln!(
        out,
        "A streamed answer costs {:.2}× the instructions of the same answer not streamed.",
        per_request[1] as f64 / per_request[0] as f64
    );
    gateway.stop();
    println!("{out}");
    std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/bench")).unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/bench/INSTRUCTIONS.md"),
        &out,
    )
    .unwrap();
}
