//! The board's controls: server functions that need the admin cookie the board
//! link sets. They share the chaos API's code path, so a button does exactly what
//! `PUT /api/chaos/{provider}` does.

#[cfg(feature = "ssr")]
use super::super::admin_state;
use crate::shared::history::BoardSeed;
use crate::shared::FaultSpec;
use leptos::prelude::*;
use leptos::server_fn::codec::Json;

/// The board as it stands, with the last minutes, for a browser holding the
/// admin cookie; `None` for anyone else (who gets the login form).
#[server(input = Json, endpoint = "board/seed")]
pub async fn load_board() -> Result<Option<BoardSeed>, ServerFnError> {
    let state = expect_context::<crate::api::AppState>();
    let headers: axum::http::HeaderMap = leptos_axum::extract().await?;
    if crate::api::admin::check(&headers, &state.admin_token).is_err() {
        return Ok(None);
    }
    crate::api::history::board_seed(&state)
        .await
        .map(Some)
        .map_err(|e| ServerFnError::new(e.to_string()))
}

/// Injects a fault into one provider.
#[server(input = Json, endpoint = "board/fault")]
pub async fn set_fault(provider: String, spec: FaultSpec) -> Result<(), ServerFnError> {
    let state = admin_state().await?;
    state
        .gateway
        .faults()
        .set(&provider, spec, crate::shared::FaultChangedBy::Admin)
        .map_err(|err| ServerFnError::new(err.to_string()))
}

/// Heals one provider, or every provider when `provider` is `None`.
#[server(input = Json, endpoint = "board/heal")]
pub async fn heal(provider: Option<String>) -> Result<(), ServerFnError> {
    use crate::shared::FaultChangedBy;
    let state = admin_state().await?;
    let faults = state.gateway.faults();
    match provider {
        Some(name) => faults
            .heal(&name, FaultChangedBy::Admin)
            .map(|_| ())
            .map_err(|err| ServerFnError::new(err.to_string())),
        None => {
            faults.heal_all(FaultChangedBy::Admin);
            Ok(())
        }
    }
}

/// A named scenario: `primary_outage`, `total_blackout`, `latency_everywhere`.
#[server(input = Json, endpoint = "board/scenario")]
pub async fn scenario(name: String) -> Result<(), ServerFnError> {
    use crate::shared::FaultKind;
    let state = admin_state().await?;
    let providers: Vec<String> = state
        .gateway
        .cascade()
        .providers()
        .map(|p| p.name().to_string())
        .collect();
    let (targets, kind) = match name.as_str() {
        "primary_outage" => (
            providers.into_iter().take(1).collect::<Vec<_>>(),
            FaultKind::Outage,
        ),
        "total_blackout" => (providers, FaultKind::Outage),
        "latency_everywhere" => (
            providers,
            FaultKind::Latency {
                delay_ms: 6_000,
                jitter_ms: 1_000,
            },
        ),
        other => return Err(ServerFnError::new(format!("unknown scenario {other:?}"))),
    };
    for provider in targets {
        let spec = FaultSpec {
            kind: kind.clone(),
            duration_s: None,
        };
        state
            .gateway
            .faults()
            .set(&provider, spec, crate::shared::FaultChangedBy::Admin)
            .map_err(|err| ServerFnError::new(err.to_string()))?;
    }
    Ok(())
}

/// Starts or stops the synthetic customer traffic; returns whether it runs.
#[server(input = Json, endpoint = "board/traffic")]
pub async fn traffic(on: bool) -> Result<bool, ServerFnError> {
    let state = admin_state().await?;
    if on {
        state.traffic.start(state.gateway.clone(), 3);
    } else {
        state.traffic.stop();
    }
    Ok(state.traffic.running())
}
