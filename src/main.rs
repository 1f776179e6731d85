//! The ChaosAI server binary: loads configuration, starts the product, and shuts
//! down gracefully on Ctrl-C or SIGTERM.

/// jemalloc for every Rust allocation: a request makes a few hundred small
/// ones across threads, and glibc's malloc and free were a fifth of the
/// gateway's instructions per request (callgrind). ONNX Runtime, a C++ library,
/// keeps glibc's allocator (jemalloc's symbols are prefixed).
#[cfg(all(feature = "ssr", unix))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read once at its first allocation. Freed memory must go
/// back to the system, not stay resident: a hostile provider's capped bodies
/// (8 MiB each) are freed at once, and mimalloc, tried before, kept 58 MiB of
/// them. A background thread returns dirty pages a second after they are freed
/// (`dirty_decay_ms`), skipping the lazy "muzzy" stage, instead of waiting for
/// the next allocation in the same arena to notice. `_RJEM_MALLOC_CONF` in the
/// environment still overrides this.
#[cfg(all(feature = "ssr", unix))]
#[export_name = "_rjem_malloc_conf"]
static JEMALLOC_OPTIONS: &u8 = &b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0"[0];

/// The runtime's worker threads: `CHAOSAI_WORKER_THREADS`, or one per core.
/// Measured on two cores shared with the load generator and the provider
/// (`make bench`, wrk at concurrency 64): one worker served non-streamed
/// answers about 10% faster for a fifth less CPU each (no cross-thread wake-ups
/// or work stealing), but streamed answers about 30% slower, so the default
/// stays one per core and the choice is the operator's.
#[cfg(feature = "ssr")]
fn worker_threads() -> anyhow::Result<usize> {
    use anyhow::Context;
    match std::env::var("CHAOSAI_WORKER_THREADS") {
        Ok(value) => value
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1024).contains(n))
            .with_context(|| {
                format!(
                    "CHAOSAI_WORKER_THREADS must be a whole number from 1 to 1024, not {value:?}"
                )
            }),
        Err(_) => Ok(std::thread::available_parallelism().map_or(1, |n| n.get())),
    }
}

#[cfg(feature = "ssr")]
fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads()?)
        .enable_all()
        .build()?
        .block_on(serve())
}

#[cfg(feature = "ssr")]
async fn serve() -> anyhow::Result<()> {
    use anyhow::Context;
    use chaosai::config::Config;
    use tracing_subscriber::EnvFilter;

    // Logs go to stderr; stdout carries only the start-up banner.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn,hnsw_rs=warn")),
        )
        .init();

    let config_path =
        std::env::var("CHAOSAI_CONFIG").unwrap_or_else(|_| "config/chaosai.toml".into());
    let config = Config::load(std::path::Path::new(&config_path))
        .with_context(|| format!("loading {config_path}"))?;
    // Site options: Leptos.toml, with LEPTOS_* variables (as cargo-leptos sets them) on top.
    let leptos_file = std::path::Path::new("Leptos.toml");
    let leptos_options = if leptos_file.exists() {
        leptos::prelude::get_configuration(Some("Leptos.toml"))
    } else {
        leptos::prelude::get_configuration(None)
    }
    .context("reading the Leptos site options")?
    .leptos_options;

    let mut server = chaosai::server::start(config, leptos_options)
        .await
        .context("starting the server")?;
    release_freed_heap();
    // Printed to the terminal only, never logged: the board link carries a
    // one-time code, not the token, and a token from the environment is never
    // printed at all.
    println!("ChaosAI is answering on http://{}", server.addr);
    if let Some(link) = server.board_link() {
        println!("Chaos board: {link}  (one-time link; or log in with the admin token)");
    }
    if server.token_generated {
        println!(
            "Chaos API:   curl -H 'Authorization: Bearer {token}' http://{addr}/api/providers\n\
             (a fresh token each start; set CHAOSAI_ADMIN_TOKEN, 16+ characters, to choose one)",
            addr = server.addr,
            token = server.admin_token.expose()
        );
    } else {
        println!(
            "Chaos API:   curl -H \"Authorization: Bearer $CHAOSAI_ADMIN_TOKEN\" http://{}/api/providers",
            server.addr
        );
    }

    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested: finishing in-flight answers");
            if !server.shutdown().await {
                tracing::warn!("some answers were still running when the grace period ended");
            }
        }
        _ = server.wait() => {}
    }
    Ok(())
}

/// Hands the heap that start-up freed back to the system. Loading the embedding
/// model builds and drops tens of MiB inside ONNX Runtime (the parsed model, the
/// int8 weights turned into fp32), which allocates through glibc, and glibc keeps
/// freed pages in its arenas: without this the gateway idles about 60 MiB above
/// what it uses. (Rust's own allocations are jemalloc's, which purges itself.) Once, before any traffic, so
/// walking the arenas stalls nobody.
#[cfg(all(feature = "ssr", target_os = "linux", target_env = "gnu"))]
fn release_freed_heap() {
    // SAFETY: malloc_trim takes no pointers and glibc serialises it with every
    // other allocator call; it only returns whole free pages.
    let released = unsafe { libc::malloc_trim(0) } == 1;
    tracing::debug!(released, "returned freed start-up heap to the system");
}

/// Without glibc there is no arena to trim.
#[cfg(all(feature = "ssr", not(all(target_os = "linux", target_env = "gnu"))))]
fn release_freed_heap() {}

#[cfg(feature = "ssr")]
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(not(feature = "ssr"))]
fn main() {
    // The browser half starts from `hydrate()` in lib.rs.
}
