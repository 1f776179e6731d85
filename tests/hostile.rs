//! A hostile provider and hostile clients through the whole server: whatever
//! they send or withhold, customers get their answer, the server stays healthy,
//! and nothing it holds grows without bound.

mod support;

use chaosai::config::{Config, ProviderConfig, SimulateMode};
use chaosai::shared::Protocol;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::app::{ask, screenshot, sse_data, streamed_text, TestServer};
use support::binary::Binary;
use support::hostile::{Attack, Hostile};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cascade of the hostile provider, then a simulated one that behaves.
fn behind_hostile(hostile: &Hostile, c: &mut Config) {
    let mut first = ProviderConfig::new(
        "hostile",
        Protocol::OpenAi,
        "hostile-model",
        &hostile.base_url,
    );
    first.api_key = Some("key".into());
    first.open_for_ms = 1_000;
    first.max_open_for_ms = 3_000;
    let backup = ProviderConfig::new(
        "backup",
        Protocol::OpenAi,
        "backup-model",
        "http://127.0.0.1:1/v1",
    );
    c.providers = vec![first, backup];
    c.gateway.simulate = SimulateMode::Auto;
    c.gateway.first_byte_timeout_ms = 1_000;
    c.gateway.first_token_timeout_ms = 1_000;
    c.gateway.stall_timeout_ms = 500;
    c.sim.chunk_delay_min_ms = 0;
    c.sim.chunk_delay_max_ms = 0;
}

async fn healthy(s: &TestServer) {
    let res = s.client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200, "the server is healthy afterwards");
}

#[tokio::test]
async fn no_retry_after_a_provider_sends_panics_or_parks_it_beyond_the_ceiling() {
    for value in [
        "inf",
        "NaN",
        "-1",
        "99999999999999999999",
        "1e309",
        "31536000",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "soon",
    ] {
        let hostile = Hostile::start(Attack::RetryAfter(value.into())).await;
        let s = TestServer::start_with(|c| behind_hostile(&hostile, c)).await;
        for _ in 0..4 {
            let res = s.chat("chaosai", "Where is my order?", false).await;
            assert_eq!(res.status(), 200, "{value}");
            assert_eq!(res.headers()["x-chaosai-served-by"], "backup", "{value}");
        }
        let status = s.provider("hostile").await;
        assert_eq!(status["state"], "open", "{value}");
        assert!(
            status["retry_in_ms"].as_u64().unwrap() <= 3_000,
            "{value}: parked for {}",
            status["retry_in_ms"]
        );
        healthy(&s).await;
    }
}

#[tokio::test]
async fn answers_that_never_end_are_cut_at_their_cap_and_fail_over() {
    for (attack, stream) in [
        (Attack::EndlessErrorBody, false),
        (Attack::EndlessAnswer, false),
        (Attack::EndlessLine, true),
    ] {
        let hostile = Hostile::start(attack.clone()).await;
        let s = TestServer::start_with(|c| behind_hostile(&hostile, c)).await;
        let started = Instant::now();
        let res = s.chat("chaosai", "Where is my order?", stream).await;
        assert_eq!(res.status(), 200, "{attack:?}");
        assert_eq!(res.headers()["x-chaosai-served-by"], "backup", "{attack:?}");
        let body = res.text().await.unwrap();
        if stream {
            assert!(
                streamed_text(&body).1,
                "{attack:?}: a whole answer from the backup"
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{attack:?}: {:?}",
            started.elapsed()
        );
        // The gateway read up to its cap and hung up: the hostile could not push
        // more than the cap and what the sockets buffer.
        support::eventually(|| async { (hostile.open.load(Ordering::SeqCst) == 0).then_some(()) })
            .await;
        assert!(
            hostile.sent_mib() < 24.0,
            "{attack:?}: {:.1} MiB pushed",
            hostile.sent_mib()
        );
        let outcome = if matches!(attack, Attack::EndlessErrorBody) {
            r#"outcome="server_error""#
        } else {
            r#"outcome="malformed""#
        };
        assert!(
            s.metric(&format!(
                r#"chaosai_attempts_total{{{outcome},provider="hostile"}}"#
            ))
            .await
                >= 1.0,
            "{attack:?}: {}",
            s.metrics_text()
                .await
                .lines()
                .filter(|l| l.contains("attempts_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        healthy(&s).await;
    }
}

#[tokio::test]
async fn a_stream_that_keeps_sending_after_its_first_token_ends_at_the_answer_budget() {
    let hostile = Hostile::start(Attack::PingsForever).await;
    let s = TestServer::start_with(|c| {
        behind_hostile(&hostile, c);
        c.gateway.deadline_ms = 1_000;
        c.gateway.answer_budget_ms = 2_000;
    })
    .await;
    let started = Instant::now();
    let res = s.chat("chaosai", "Where is my order?", true).await;
    assert_eq!(res.headers()["x-chaosai-served-by"], "hostile");
    let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
    let body = res.text().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    let (text, done) = streamed_text(&body);
    assert_eq!(text, "Hello");
    assert!(!done, "never taken as whole");
    let last: Value = serde_json::from_str(sse_data(&body).last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "stream_interrupted");
    let status = s
        .rows(
            &format!(
                "SELECT COUNT(*) FROM requests WHERE id = '{id}' AND status = 'stream_failed'"
            ),
            |n| n == 1,
        )
        .await;
    assert_eq!(status, 1, "the audit row is written");
    support::eventually(|| async { (hostile.open.load(Ordering::SeqCst) == 0).then_some(()) })
        .await;
    healthy(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_provider_cannot_bloat_the_gateway_process() {
    let hostile = Hostile::start(Attack::EndlessAnswer).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hostile.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[gateway]
first_byte_timeout_ms = 1000
first_token_timeout_ms = 1000
stall_timeout_ms = 500
deadline_ms = 10000
answer_budget_ms = 10000

[cache]
enabled = false

[[providers]]
name = "hostile"
protocol = "openai"
model = "hostile-model"
base_url = "{}"
api_key_env = "HOSTILE_KEY"
failure_threshold = 1000
retries = 0

[[providers]]
name = "backup"
protocol = "openai"
model = "backup-model"
base_url = "http://127.0.0.1:1/v1"
"#,
            hostile.base_url
        ),
    )
    .unwrap();
    let server = Binary::start(
        &[
            ("CHAOSAI_CONFIG", config.display().to_string()),
            ("CHAOSAI_SIMULATE", "auto".into()),
            ("HOSTILE_KEY", "key".into()),
            (
                "CHAOSAI_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("h.db").display()),
            ),
            ("CHAOSAI_SIM_CHUNK_DELAY_MS", "0".into()),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.base);
    let warm = |stream: bool| {
        let request = client
            .post(&url)
            .json(&ask("chaosai", "Where is my order?", stream));
        async move {
            let res = request.send().await.unwrap();
            assert_eq!(res.status(), 200);
            let served_by = res.headers()["x-chaosai-served-by"]
                .to_str()
                .unwrap()
                .to_string();
            let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
            res.bytes().await.unwrap();
            (served_by, id)
        }
    };
    let admin = reqwest::Client::new();
    // What the audit says of a request, once its row is written.
    let why = |id: String| {
        let (admin, url) = (
            admin.clone(),
            format!("{}/api/audit/requests/{id}", server.base),
        );
        async move {
            support::eventually(|| async {
                let res = admin
                    .get(&url)
                    .bearer_auth(support::binary::TOKEN)
                    .send()
                    .await
                    .unwrap();
                (res.status() == 200).then_some(res.text().await.unwrap())
            })
            .await
        }
    };
    let (served_by, id) = warm(false).await;
    assert_eq!(served_by, "backup", "{}", why(id).await);
    let before = server.memory_kib("VmRSS");
    let mut rounds = 0;
    for attack in [
        Attack::EndlessAnswer,
        Attack::EndlessErrorBody,
        Attack::EndlessLine,
    ] {
        hostile.set(attack);
        for stream in [false, true, false, true] {
            let (served_by, id) = warm(stream).await;
            assert_eq!(served_by, "backup", "{}", why(id).await);
            rounds += 1;
        }
    }
    let peak = server.memory_kib("VmHWM");
    let after = server.memory_kib("VmRSS");
    eprintln!(
        "hostile provider: {rounds} requests, {:.0} MiB pushed at the gateway; RSS {} -> {} KiB, peak {} KiB",
        hostile.sent_mib(),
        before,
        after,
        peak
    );
    assert!(
        hostile.sent_mib() > 50.0,
        "the attack was real: {:.0} MiB",
        hostile.sent_mib()
    );
    assert!(
        after < before + 48 * 1024,
        "RSS grew from {before} to {after} KiB"
    );
    assert!(
        peak < before + 64 * 1024,
        "peak {peak} KiB from {before} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_hold_the_server_and_are_closed_on_its_own() {
    let s = TestServer::start_with(|c| {
        c.server.header_timeout_ms = 3_000;
    })
    .await;
    // 300 sockets trickle a request head, a byte at a time.
    let mut trickles = Vec::new();
    for _ in 0..300 {
        let addr = s.server.addr;
        trickles.push(tokio::spawn(async move {
            let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
            let opened = Instant::now();
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
            {
                if socket.write_all(&[*byte]).await.is_err() {
                    break;
                }
                // Pacing of the attack itself, not a wait for the server.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut probe = [0u8; 64];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(1), socket.read(&mut probe)).await
                {
                    break;
                }
            }
            opened.elapsed()
        }));
    }
    // One more that sends a whole request and then idles on its keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Meanwhile, a real client is served well before any trickle is cut off
    // (the margin is for a busy 2-core machine, not a speed target).
    let started = Instant::now();
    let res = reqwest::get(s.url("/healthz")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The server closes every trickling socket by itself, soon after the header timeout.
    for trickle in trickles {
        let held = tokio::time::timeout(Duration::from_secs(10), trickle)
            .await
            .unwrap()
            .unwrap();
        assert!(
            held < Duration::from_secs(6),
            "a slow socket was held for {held:?}"
        );
    }
    let mut response = vec![0u8; 4096];
    let idle_closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match idle.read(&mut response).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        idle_closed.is_ok(),
        "an idle keep-alive connection is closed too"
    );
}

#[tokio::test]
async fn a_request_head_beyond_32_kib_is_refused_and_the_server_goes_on() {
    let s = TestServer::start().await;
    // 300 KiB of header: within hyper's default buffer, so every connection
    // under the cap could have held that much.
    let mut socket = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let mut head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 300 << 10));
    head.extend_from_slice(b"\r\n\r\n");
    // The server may stop reading (and close) before the whole head is sent.
    let _ = socket.write_all(&head).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "{}",
        &response[..response.len().min(200)]
    );
    // An ordinary request with a browser's worth of cookies is served.
    let res = s
        .client
        .get(s.url("/healthz"))
        .header("cookie", format!("a={}", "c".repeat(8 << 10)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A conversation's request head on a raw socket, declaring `length` bytes of
/// body (none: chunked), with `extra` header lines, then `body` (which may be
/// only part of it).
async fn raw_post(
    s: &TestServer,
    length: Option<usize>,
    extra: &str,
    body: &[u8],
) -> tokio::net::TcpStream {
    raw_request(s, "POST /v1/chat/completions", length, extra, body).await
}

/// [`raw_post`] with another method and path (`PUT /api/chaos/claude`).
async fn raw_request(
    s: &TestServer,
    line: &str,
    length: Option<usize>,
    extra: &str,
    body: &[u8],
) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(s.server.addr).await.unwrap();
    let framing = match length {
        Some(length) => format!("Content-Length: {length}"),
        None => "Transfer-Encoding: chunked".to_string(),
    };
    let head = format!(
        "{line} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{framing}\r\n{extra}\r\n"
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body).await.unwrap();
    socket
}

/// The head (status line and headers, lower-cased) and body of the next
/// response on `socket`, which must carry a `Content-Length`.
async fn raw_response(socket: &mut (impl tokio::io::AsyncRead + Unpin)) -> (String, String) {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 8192];
    let read = async {
        loop {
            if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .unwrap_or_else(|| panic!("no content-length in {head}"));
                if seen.len() >= end + 4 + length {
                    let body = String::from_utf8_lossy(&seen[end + 4..end + 4 + length]);
                    return (head, body.into_owned());
                }
            }
            let n = socket.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buffer[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("a response within 10 s")
}

#[tokio::test]
async fn large_bodies_share_one_budget_and_are_refused_before_they_are_uploaded() {
    let s = TestServer::start_with(|c| {
        c.server.conversation_body_limit_bytes = 6 << 20;
        c.server.body_budget_bytes = 8 << 20;
    })
    .await;
    let free = || s.metric("chaosai_request_body_budget_free_bytes");
    let budget = (8 << 20) as f64;
    assert_eq!(free().await, budget);
    // Beyond the limit, asking before uploading: a 413 at once, never a
    // `100 Continue` that would have the client send megabytes for nothing.
    let mut socket = raw_post(&s, Some(7 << 20), "Expect: 100-continue\r\n", b"").await;
    let (head, body) = raw_response(&mut socket).await;
    assert!(head.starts_with("http/1.1 413"), "{head}");
    assert!(body.contains("6291456 bytes"), "{body}");
    // A customer's question with a 3.7 MB screenshot, half uploaded, holds
    // its whole size.
    let question = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What does this error mean?"},
        {"type": "image_url", "image_url": {"url": screenshot(3_700_000)}}]}]})
    .to_string();
    assert!(question.len() > 4 << 20 && question.len() < 6 << 20);
    let (first_half, second_half) = question.as_bytes().split_at(question.len() / 2);
    let mut holding = raw_post(&s, Some(question.len()), "", first_half).await;
    let held = budget - question.len() as f64;
    support::eventually(|| async { (free().await == held).then_some(()) }).await;
    // Another as large finds no room: a 503 the SDKs retry, before its upload.
    let mut refused = raw_post(&s, Some(question.len()), "Expect: 100-continue\r\n", b"").await;
    let (head, body) = raw_response(&mut refused).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["code"], "server_busy", "{body}");
    assert_eq!(s.metric("chaosai_request_bodies_refused_total").await, 1.0);
    // Clients that upload without asking first (the SDKs, reqwest, curl
    // below 1 MB) hear the refusal too, not a connection reset: the server
    // reads and drops what they send before answering.
    let url = s.url("/v1/chat/completions");
    let too_large = format!("{{\"padding\": \"{}\"}}", "x".repeat(7 << 20));
    for _ in 0..3 {
        for (body, status, code) in [
            (question.clone(), 503, "server_busy"),
            (too_large.clone(), 413, "request_too_large"),
        ] {
            let res = s
                .client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), status);
            if status == 503 {
                assert_eq!(res.headers()["retry-after"], "1");
            }
            let error: Value = res.json().await.unwrap();
            assert_eq!(error["error"]["code"], code, "{error}");
        }
    }
    assert_eq!(s.metric("chaosai_request_bodies_refused_total").await, 4.0);
    // A client on a slower link, still uploading when it is refused, that
    // reads only once it has sent everything (as httpx does): every write
    // lands and the refusal is there to read, where closing on the unread
    // upload would have reset the connection under it.
    for (body, status) in [(question.as_bytes(), "503"), (too_large.as_bytes(), "413")] {
        let mut socket = raw_post(&s, Some(body.len()), "", b"").await;
        for piece in body.chunks(64 << 10) {
            socket.write_all(piece).await.unwrap();
            // The link's own pace, not a wait for the server.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (head, _) = raw_response(&mut socket).await;
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
    }
    // Small questions never draw on it.
    let res = s.chat("claude", "Where is my order?", false).await;
    assert_eq!(res.status(), 200);
    // The first upload ends and is answered in full; its share comes back
    // once the answer is sent.
    holding.write_all(second_half).await.unwrap();
    let (head, body) = raw_response(&mut holding).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        body.contains("I looked at the picture you sent (a PNG)."),
        "{body}"
    );
    support::eventually(|| async { (free().await == budget).then_some(()) }).await;
    // A client that walks away in the middle of its upload gives it back too.
    let abandoned = raw_post(&s, Some(question.len()), "", first_half).await;
    support::eventually(|| async { (free().await == held).then_some(()) }).await;
    drop(abandoned);
    support::eventually(|| async { (free().await == budget).then_some(()) }).await;
    // A chunked upload, its length unknown, draws as it arrives: while one
    // large body is held, a second chunked one is refused part-way.
    let mut holding = raw_post(&s, Some(question.len()), "", first_half).await;
    support::eventually(|| async { (free().await == held).then_some(()) }).await;
    let mut chunked = Vec::new();
    for piece in question.as_bytes().chunks(256 << 10) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let mut socket = raw_post(&s, None, "", b"").await;
    // The server may stop reading once it refuses.
    let _ = socket.write_all(&chunked).await;
    let (head, _) = raw_response(&mut socket).await;
    assert!(head.starts_with("http/1.1 503"), "{head}");
    holding.write_all(second_half).await.unwrap();
    let (head, _) = raw_response(&mut holding).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    support::eventually(|| async { (free().await == budget).then_some(()) }).await;
    // With the budget free, the same chunked upload is answered.
    let mut socket = raw_post(&s, None, "", &chunked).await;
    let (head, body) = raw_response(&mut socket).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(body.contains("I looked at the picture"), "{body}");
    support::eventually(|| async { (free().await == budget).then_some(()) }).await;
}

#[tokio::test]
async fn a_large_body_of_countless_tiny_values_is_refused_without_being_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Binary::start(
        &[
            (
                "CHAOSAI_DATABASE_URL",
                format!("sqlite://{}", dir.path().join("v.db").display()),
            ),
            ("CHAOSAI_CACHE", "off".to_string()),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.base);
    let before = server.memory_kib("VmHWM");
    // 16 MB of `0,`: within the conversation limit, and eight million values,
    // some 250 MiB once parsed.
    let mut bomb = ask("claude", "Where is my order?", false);
    bomb["padding"] = json!([]);
    let bomb = bomb
        .to_string()
        .replace("[]", &format!("[{}0]", "0,".repeat(8 << 20)));
    assert!(bomb.len() > 16 << 20 && bomb.len() < 20 << 20);
    for _ in 0..3 {
        let res = client
            .post(&url)
            .header("content-type", "application/json")
            .body(bomb.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let error: Value = res.json().await.unwrap();
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("more than 100000 JSON values"),
            "{message}"
        );
    }
    let peak = server.memory_kib("VmHWM");
    eprintln!("value bomb: peak RSS {before} -> {peak} KiB");
    // Three bodies were held (16 MB each, one at a time), none parsed.
    assert!(
        peak < before + 64 * 1024,
        "peak {peak} KiB from {before} KiB"
    );
    // A large body of few values (a screenshot) is still answered.
    let question = json!({"model": "claude", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What does this error mean?"},
        {"type": "image_url", "image_url": {"url": screenshot(3 << 20)}}]}]});
    let res = client.post(&url).json(&question).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_body_that_stops_or_trickles_is_a_408_within_the_body_timeout_and_holds_nothing() {
    let s = TestServer::start_with(|c| {
        c.server.body_timeout_ms = 500;
    })
    .await;
    let question = ask("claude", "Where is my order?", false).to_string();
    let budget = s.metric("chaosai_request_body_budget_free_bytes").await;
    // A body that stops: part sent, then nothing (a small one and a large one
    // holding its share of the budget meanwhile).
    for declared in [question.len(), 1 << 20] {
        let mut socket = raw_post(&s, Some(declared), "", &question.as_bytes()[..10]).await;
        let (head, body) = raw_response(&mut socket).await;
        assert!(head.starts_with("http/1.1 408"), "{head}");
        let error: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["code"], "request_timeout", "{body}");
    }
    assert_eq!(
        s.metric("chaosai_request_body_budget_free_bytes").await,
        budget
    );
    // A body trickled a byte every 50 ms: every read is well within the
    // timeout, the whole body (10 s of it) far beyond. On a conversation and
    // on an admin route alike, the server stops waiting at the timeout.
    let fault = format!("{{\"kind\": \"outage\"{}}}", " ".repeat(150));
    let cases = [
        ("POST /v1/chat/completions", "", question.as_bytes()),
        (
            "PUT /api/chaos/claude",
            "Authorization: Bearer test-admin-token\r\n",
            fault.as_bytes(),
        ),
    ];
    for (line, extra, body) in cases {
        assert!(body.len() >= 100, "{line}: {} bytes", body.len());
        let socket = raw_request(&s, line, Some(body.len()), extra, b"").await;
        let (mut reader, mut writer) = socket.into_split();
        let body = body.to_vec();
        let trickle = tokio::spawn(async move {
            for byte in body {
                if writer.write_all(&[byte]).await.is_err() {
                    return;
                }
                // The attack's own pacing, not a wait for the server.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let started = Instant::now();
        let (head, body) = raw_response(&mut reader).await;
        assert!(head.starts_with("http/1.1 408"), "{line}: {head}");
        assert!(body.contains("request_timeout"), "{line}: {body}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{line}: answered after {:?}",
            started.elapsed()
        );
        trickle.abort();
    }
    // The trickled fault was never set.
    assert_eq!(
        s.metric("chaosai_faults_active{provider=\"claude\"}").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_releases_the_provider_within_the_stall_limit() {
    let hostile = Hostile::start(Attack::EndlessTokens).await;
    let s = TestServer::start_with(|c| {
        behind_hostile(&hostile, c);
        c.gateway.answer_budget_ms = 120_000;
        c.gateway.max_answer_bytes = 1 << 30;
    })
    .await;
    // A client with a tiny receive window that reads the head and then nothing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(&s.server.addr.into()).unwrap();
    socket.set_nonblocking(true).unwrap();
    let mut stream = tokio::net::TcpStream::from_std(socket.into()).unwrap();
    let body = ask("chaosai", "Where is my order?", true).to_string();
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 512];
    let _ = stream.read(&mut head).await.unwrap();
    support::eventually(|| async { (hostile.open.load(Ordering::SeqCst) == 1).then_some(()) })
        .await;
    let started = Instant::now();
    // Not reading any more: the gateway gives up on this reader and hangs up on
    // the provider, well before the two-minute answer budget.
    support::eventually(|| async { (hostile.open.load(Ordering::SeqCst) == 0).then_some(()) })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(stream);
    let status = s
        .rows(
            "SELECT COUNT(*) FROM requests WHERE status = 'client_disconnected'",
            |n| n == 1,
        )
        .await;
    assert_eq!(status, 1);
}

#[tokio::test]
async fn a_conversation_beyond_the_caps_gets_a_400_naming_the_limit() {
    let s = TestServer::start_with(|c| {
        c.server.max_messages = 20;
        c.server.max_message_chars = 1_000;
    })
    .await;
    let many: Vec<Value> = (0..21)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": "hi"}))
        .collect();
    let long = vec![json!({"role": "user", "content": "x".repeat(1_001)})];
    for (messages, param, limit) in [
        (many, "messages", "at most 20"),
        (long, "messages[0].content", "at most 1000"),
    ] {
        let res = s
            .client
            .post(s.url("/v1/chat/completions"))
            .json(&json!({"model": "chaosai", "messages": messages}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400);
        let error: Value = res.json().await.unwrap();
        assert_eq!(error["error"]["param"], param);
        assert!(
            error["error"]["message"].as_str().unwrap().contains(limit),
            "{error}"
        );
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn websocket(
    s: &TestServer,
    origin: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://{}/ws/events", s.server.addr)
        .into_client_request()
        .unwrap();
    let headers = request.headers_mut();
    headers.insert("authorization", "Bearer test-admin-token".parse().unwrap());
    if let Some(origin) = origin {
        headers.insert("origin", origin.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

#[tokio::test]
async fn the_event_socket_refuses_other_sites_and_big_frames() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = TestServer::start().await;
    match websocket(&s, Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403)
        }
        other => panic!(
            "a cross-site upgrade must be refused: {:?}",
            other.map(|_| ())
        ),
    }
    let mut socket = websocket(&s, Some(&s.base))
        .await
        .expect("same site is fine");
    assert!(
        matches!(socket.next().await, Some(Ok(Message::Text(_)))),
        "the snapshot"
    );
    // The board never sends anything big: a 64 KiB frame ends the connection.
    let _ = socket.send(Message::text("x".repeat(64 * 1024))).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the connection was closed");
}

#[tokio::test]
async fn a_cookie_bearing_post_from_another_site_changes_nothing() {
    let s = TestServer::start().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = no_redirects
        .post(s.url("/chaos/login"))
        .form(&[("token", "test-admin-token")])
        .send()
        .await
        .unwrap();
    assert!(login.status().is_redirection());
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    for attribute in ["HttpOnly", "SameSite=Strict", "Max-Age="] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http here: {cookie}");
    let cookie = cookie.split(';').next().unwrap().to_string();
    let body = json!({"provider": "claude", "spec": {"kind": "outage"}}).to_string();
    // A form on another site posting text/plain with the admin cookie.
    for (origin, fetch_site) in [
        (Some("https://evil.example"), None),
        (None, Some("cross-site")),
    ] {
        let mut request = s
            .client
            .post(s.url("/api/board/fault"))
            .header("cookie", &cookie)
            .header("content-type", "text/plain")
            .body(body.clone());
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(site) = fetch_site {
            request = request.header("sec-fetch-site", site);
        }
        let res = request.send().await.unwrap();
        assert_eq!(res.status(), 403);
        assert!(
            s.provider("claude").await["fault"].is_null(),
            "nothing changed"
        );
    }
    // The same request from the board's own page goes through.
    let res = s
        .client
        .post(s.url("/api/board/fault"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .header("origin", &s.base)
        .header("sec-fetch-site", "same-origin")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    assert_eq!(
        s.provider("claude").await["fault"]["spec"]["kind"],
        "outage"
    );
}

#[tokio::test]
async fn the_board_login_never_takes_the_token_in_a_url_and_its_link_works_once() {
    let s = TestServer::start().await;
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = no_redirects
        .get(s.url("/chaos/login?token=test-admin-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert!(res.headers().get("set-cookie").is_none());
    let link = s.server.board_link().expect("a one-time link");
    assert!(!link.contains("test-admin-token"));
    let first = no_redirects.get(&link).send().await.unwrap();
    assert!(first.status().is_redirection());
    assert!(first.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .starts_with("chaosai_admin="));
    let again = no_redirects.get(&link).send().await.unwrap();
    assert!(
        again.headers().get("set-cookie").is_none(),
        "a used link logs nobody in"
    );
    assert_eq!(again.headers()["location"], "/chaos?login=expired");
    assert!(s.server.board_link().is_none());
    // A wrong token is sent back to the form.
    let wrong = no_redirects
        .post(s.url("/chaos/login"))
        .form(&[("token", "not-the-admin-token")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.headers()["location"], "/chaos?login=failed");

    // Behind https the cookie is Secure.
    let s = TestServer::start_with(|c| {
        c.server.public_url = Some("https://support.example.com".into())
    })
    .await;
    let res = no_redirects
        .post(s.url("/chaos/login"))
        .form(&[("token", "test-admin-token")])
        .send()
        .await
        .unwrap();
    assert!(res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_beyond_the_embedders_queue_skip_the_cache_instead_of_waiting() {
    let s = TestServer::start_with(|c| {
        c.cache.enabled = true;
        c.cache.max_waiting_embeddings = 1;
    })
    .await;
    let mut questions = Vec::new();
    for i in 0..24 {
        let (client, url) = (s.client.clone(), s.url("/v1/chat/completions"));
        questions.push(tokio::spawn(async move {
            let res = client
                .post(&url)
                .json(&ask(
                    "chaosai",
                    &format!("Question number {i}: how do I reset my password?"),
                    false,
                ))
                .send()
                .await
                .unwrap();
            res.status()
        }));
    }
    for q in questions {
        assert_eq!(q.await.unwrap(), 200);
    }
    assert!(
        s.metric(r#"chaosai_cache_lookups_total{result="bypassed_busy"}"#)
            .await
            > 0.0,
        "some lookups skipped the busy model"
    );
}

#[tokio::test]
async fn a_bad_worker_thread_count_stops_start_up_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("w.db").display());
    for bad in ["lots", "0", "100000"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_chaosai"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CHAOSAI_WORKER_THREADS", bad)
            .env("CHAOSAI_SIMULATE", "always")
            .env("CHAOSAI_DATABASE_URL", &database)
            .env("CHAOSAI_ADDR", "127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{bad} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!(
                "CHAOSAI_WORKER_THREADS must be a whole number from 1 to 1024, not \"{bad}\""
            )),
            "{stderr}"
        );
    }
    // One worker is a choice like any other: the server starts and answers.
    let server = Binary::start(
        &[
            ("CHAOSAI_WORKER_THREADS", "1".into()),
            ("CHAOSAI_DATABASE_URL", database.clone()),
        ],
        std::process::Stdio::null(),
    )
    .await;
    let answer = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", server.base))
        .json(&json!({"model": "chaosai", "messages": [{"role": "user", "content": "Where is my order?"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}
