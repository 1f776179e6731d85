//! The ChaosAI server binary: loads configuration, starts the product, and shuts
//! down gracefully on Ctrl-C or SIGTERM.

#[cfg(feature = "ssr")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
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
