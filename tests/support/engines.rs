//! Real PostgreSQL and Redis servers for the tests, each in its own temporary
//! directory on a free loopback port, gone when the test ends. Debian's
//! packages (`make test` installs them); PostgreSQL refuses to run as root, so
//! as root it runs as the `postgres` user the package creates. Self-contained,
//! so the cluster benchmark uses it too.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory of PostgreSQL's server programs (`initdb`, `postgres`).
fn postgres_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (`make test` installs Debian's postgresql)")
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    found.sort();
    found
        .pop()
        .expect("PostgreSQL's initdb (`make test` installs Debian's postgresql)")
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `program` with `args`, as the `postgres` user when we are root.
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// A PostgreSQL server of our own.
pub struct Postgres {
    child: Child,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
    /// `postgres://…` of its `chaosai` database.
    pub url: String,
    /// Its port.
    pub port: u16,
}

impl Postgres {
    /// initdb into a temporary directory, then the server on a free port;
    /// returns once it accepts connections.
    pub async fn start() -> Self {
        let bin = postgres_bin();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the PostgreSQL directory");
        }
        let data = dir.path().join("data");
        let init = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "chaosai", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("initdb runs");
        assert!(
            init.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        let port = free_port();
        let child = serve(&bin, &data, dir.path(), port);
        let admin = format!("postgres://chaosai@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match sqlx::PgPool::connect(&admin).await {
                Ok(pool) => {
                    sqlx::query("CREATE DATABASE chaosai")
                        .execute(&pool)
                        .await
                        .unwrap();
                    pool.close().await;
                    break;
                }
                Err(err) if Instant::now() > deadline => panic!("PostgreSQL never answered: {err}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        Self {
            child,
            bin,
            data,
            _dir: dir,
            url: format!("postgres://chaosai@127.0.0.1:{port}/chaosai"),
            port,
        }
    }

    /// Stops the server (SIGINT, a fast shutdown): every connection drops.
    /// Not SIGQUIT: with `synchronous_commit=off` a crash may lose the last
    /// commits, which would be the test server's loss, not the gateway's.
    pub fn stop(&mut self) {
        if let Some(pid) = self.postmaster() {
            signal(pid, "-INT");
        }
        let _ = self.child.wait();
    }

    /// Starts the server again on the same data and port (after [`stop`](Self::stop)).
    pub async fn restart(&mut self) {
        let socket_dir = self.data.parent().unwrap().to_path_buf();
        self.child = serve(&self.bin, &self.data, &socket_dir, self.port);
        let deadline = Instant::now() + Duration::from_secs(30);
        while sqlx::PgPool::connect(&self.url).await.is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not come back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The postmaster's own pid (the child may be `runuser`, which does not
    /// pass signals on).
    fn postmaster(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the directory goes with the TempDir.
        match self.postmaster() {
            Some(pid) => signal(pid, "-QUIT"),
            None => {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
    }
}

/// The server on `port` over `data`, its socket in `socket_dir`.
fn serve(bin: &Path, data: &Path, socket_dir: &Path, port: u16) -> Child {
    as_postgres(&bin.join("postgres"))
        .arg("-D")
        .arg(data)
        .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
        .arg("-k")
        .arg(socket_dir)
        .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
        .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("postgres starts")
}

fn signal(pid: u32, which: &str) {
    let _ = Command::new("kill")
        .arg(which)
        .arg(pid.to_string())
        .status();
}

/// A Redis server of our own, that can be stopped and started again on its port.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Its port.
    pub port: u16,
    /// `redis://127.0.0.1:PORT`.
    pub url: String,
}

impl Redis {
    /// The server on a free port; returns once it answers.
    pub async fn start() -> Self {
        let mut redis = Self {
            child: None,
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            url: String::new(),
        };
        redis.url = format!("redis://127.0.0.1:{}", redis.port);
        redis.restart().await;
        redis
    }

    /// Starts the server again (after [`stop`](Self::stop)) on the same port.
    pub async fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (`make test` installs Debian's redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "Redis never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the server: every connection drops at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
