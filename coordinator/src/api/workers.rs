//! Workers: every worker the farm has seen, connected ones first.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;

use super::auth::require;
use super::error::ApiError;
use super::model::{EpochSecrets, ErrorBody, Ledger, LedgerEntryView, Worker, WorkerCapabilities, WorkerList};
use super::{blocking, blocking_write, AppState};
use tessera_store::Scope;

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
    let records = blocking(&state, |store| store.workers_with_standing()).await?;
    let threshold = state.farm.trust_threshold();
    let mut workers: Vec<Worker> = records
        .into_iter()
        .map(|(r, standing)| {
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
                reputation: standing.as_ref().map(|s| s.reputation),
                credit: standing.as_ref().map(|s| s.credit),
                trust: standing.as_ref().map_or(0, |s| s.trust),
                gpu_trust: standing.as_ref().map_or(0, |s| s.gpu_trust),
                trust_level: match &standing {
                    Some(s) if s.quarantined => "quarantined",
                    Some(s) if s.trust >= threshold => "trusted",
                    _ => "new",
                }
                .into(),
                verified_tiles: standing.as_ref().map_or(0, |s| s.verified_tiles),
                failed_checks: standing.as_ref().map_or(0, |s| s.failed_checks),
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

/// Lifts a worker's quarantine (its strikes are forgotten; trust is earned
/// again from zero).
#[utoipa::path(post, path = "/workers/{identity}/clear", tag = "workers",
    params(("identity" = String, Path, description = "the worker's identity (64 hex digits)")),
    responses((status = 204, description = "cleared"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn clear(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(identity): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    require(&state, &headers, Scope::Admin).await?;
    let who = identity.clone();
    if !blocking_write(&state, move |store| store.clear_worker(&who)).await? {
        return Err(ApiError::not_found(format!("no worker {identity}")));
    }
    tracing::info!(%identity, "worker cleared by an admin");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// `?worker=`, `?after=`, `?limit=` of the ledger.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    pub worker: Option<String>,
    /// Only entries after this `seq`.
    pub after: Option<u64>,
    /// At most this many (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// The credit ledger: append-only, each entry hash-chained to the one
/// before, so a copy can be checked for edits.
#[utoipa::path(get, path = "/ledger", tag = "workers", params(LedgerQuery),
    responses((status = 200, body = Ledger), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn ledger(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LedgerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Ledger>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let entries = blocking(&state, move |store| store.ledger(q.worker.as_deref(), after, limit)).await?;
    let hex = tessera_protocol::hex;
    Ok(Json(Ledger {
        entries: entries
            .into_iter()
            .map(|e| LedgerEntryView {
                seq: e.seq,
                worker: e.worker,
                job: e.job,
                tile: e.tile,
                credit: e.credit,
                commitment: hex(&e.commitment),
                time_ms: e.time_ms,
                prev: hex(&e.prev),
                hash: hex(&e.hash),
            })
            .collect(),
    }))
}

/// Spot-check secrets of the epochs that are over: with them anyone can
/// replay which pixels of a tile were checked.
#[utoipa::path(get, path = "/proof/epochs", tag = "workers",
    responses((status = 200, body = EpochSecrets), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn epochs(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<EpochSecrets>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let farm = state.farm.clone();
    let (seconds, secrets) = tokio::task::spawn_blocking(move || farm.revealed_secrets()).await??;
    Ok(Json(EpochSecrets {
        epoch_seconds: seconds,
        secrets: secrets.into_iter().map(|(e, s)| (e, tessera_protocol::hex(&s))).collect(),
    }))
}
