//! Workers: every worker the farm has seen, connected ones first.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;

use super::auth::require;
use super::error::ApiError;
use super::model::{ErrorBody, Worker, WorkerCapabilities, WorkerList};
use super::{blocking, AppState};
use crate::store::Scope;

/// Workers with their capabilities, state and counts.
#[utoipa::path(get, path = "/workers", tag = "workers",
    responses((status = 200, body = WorkerList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn list(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<WorkerList>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let status = state.farm.status().await?;
    // A worker may hold two connections for a moment (a reconnect): sum them.
    let mut live: BTreeMap<String, usize> = BTreeMap::new();
    for w in &status.workers {
        *live.entry(w.identity.clone()).or_default() += w.leases;
    }
    let records = blocking(&state, |store| store.workers()).await?;
    let mut workers: Vec<Worker> = records
        .into_iter()
        .map(|r| {
            let leases = live.get(&r.identity).copied();
            let capabilities = serde_json::from_str::<tessera_protocol::wire::Capabilities>(&r.capabilities_json)
                .ok()
                .map(|c| WorkerCapabilities {
                    slots: c.slots,
                    cores: c.cores,
                    memory_bytes: c.memory_bytes,
                    gpu: c.gpu,
                    agent: c.agent,
                });
            Worker {
                state: match leases {
                    Some(0) => "idle",
                    Some(_) => "busy",
                    None => "offline",
                }
                .into(),
                identity: r.identity,
                name: r.name,
                capabilities,
                leases: leases.unwrap_or(0),
                tiles_done: r.tiles_done,
                first_seen_ms: r.first_seen_ms,
                last_seen_ms: r.last_seen_ms,
                reputation: None,
                credit: None,
            }
        })
        .collect();
    // Connected first, then most recently seen.
    workers.sort_by(|a, b| {
        (a.state == "offline", std::cmp::Reverse(a.last_seen_ms), &a.identity).cmp(&(
            b.state == "offline",
            std::cmp::Reverse(b.last_seen_ms),
            &b.identity,
        ))
    });
    Ok(Json(WorkerList { workers }))
}
