//! The real gateway binary as a child process on a loopback port: what the
//! tests that kill or restart a server and the benchmarks that measure one
//! both start. Providers are always simulated, so nothing reaches the internet.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token binaries are started with.
pub const TOKEN: &str = "binary-admin-token";

/// A running gateway binary.
pub struct Binary {
    /// The child process.
    pub child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The port it listens on (a restart can reuse it).
    pub port: u16,
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// CPU time process `pid` has used so far, user + system over all its threads,
/// in seconds (`/proc/<pid>/stat`, in clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis don't.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

impl Binary {
    /// Starts the binary with `env` on a free port and waits for `/healthz`.
    pub async fn start(env: &[(&str, String)], stderr: Stdio) -> Self {
        Self::start_on(free_port(), env, stderr).await
    }

    /// Starts the binary with `env` on `port` and waits for `/healthz`.
    pub async fn start_on(port: u16, env: &[(&str, String)], stderr: Stdio) -> Self {
        Self::start_under(&[], port, env, stderr, Duration::from_secs(30)).await
    }

    /// Starts the binary as the last argument of `wrapper` (a profiler, say:
    /// `["valgrind", "--tool=callgrind"]`; empty runs it directly) and waits up
    /// to `ready_within` for `/healthz`.
    pub async fn start_under(
        wrapper: &[&str],
        port: u16,
        env: &[(&str, String)],
        stderr: Stdio,
        ready_within: Duration,
    ) -> Self {
        let binary = env!("CARGO_BIN_EXE_chaosai");
        let mut command = match wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("CHAOSAI_ADDR", format!("127.0.0.1:{port}"))
            .env("CHAOSAI_ADMIN_TOKEN", TOKEN)
            .env("CHAOSAI_SIMULATE", "always")
            // Whatever keys this machine holds, a test never reaches a real provider.
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("GROQ_API_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("the gateway binary starts");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + ready_within;
        while Instant::now() < deadline {
            let ready = client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                return Self { child, base, port };
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the gateway binary exited during start-up: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the gateway binary did not become ready within {ready_within:?}");
    }

    /// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Restarts the peak RSS (`VmHWM`) from the current RSS, so a later reading
    /// is the peak since now (`/proc/<pid>/clear_refs`, value 5).
    pub fn reset_peak_memory(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// CPU time the process has used so far, user + system over all its
    /// threads, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }

    /// Injects a fault through the chaos API.
    pub async fn inject(&self, provider: &str, spec: serde_json::Value) {
        let res = reqwest::Client::new()
            .put(format!("{}/api/chaos/{provider}", self.base))
            .bearer_auth(TOKEN)
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }

    /// Heals every provider.
    pub async fn heal_all(&self) {
        reqwest::Client::new()
            .delete(format!("{}/api/chaos", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        // A test that panics must not leave a server running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
