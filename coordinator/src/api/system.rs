//! Health, the farm summary and Prometheus metrics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::Json;

use super::auth::require;
use super::error::ApiError;
use super::model::{ErrorBody, FarmSummary, Health};
use super::{blocking, AppState};
use tessera_store::{JobState, Scope};

/// Whether the coordinator is up and its store answers; no token needed
/// (load balancers and uptime checks call it).
#[utoipa::path(get, path = "/health", tag = "system",
    responses((status = 200, body = Health), (status = 503, description = "the farm is stopping", body = ErrorBody)))]
pub async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    let status = state.farm.status().await?;
    // A query proves the store is readable, and times it.
    let started = std::time::Instant::now();
    blocking(&state, |store| store.tokens().map(|_| ())).await?;
    let store_latency_ms = started.elapsed().as_secs_f64() * 1e3;
    let term = state.farm.lease_term();
    let (leader, coordinators) = match &state.peers {
        Some(peers) => (Some(peers.me.clone()), crate::standby::listed(&peers.view(), Some(&peers.me))),
        None => (None, Vec::new()),
    };
    Ok(Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: state.farm.uptime().as_secs(),
        workers: status.workers.len(),
        jobs_active: status.jobs.iter().filter(|j| !j.state.is_finished()).count(),
        store: if term.is_some() { "postgres" } else { "sqlite" }.into(),
        role: if term.is_some() { "leader" } else { "only" }.into(),
        term,
        store_latency_ms,
        leader,
        coordinators,
    }))
}

/// Job counts by state, connected workers, their slots and leases.
#[utoipa::path(get, path = "/status", tag = "system",
    responses((status = 200, body = FarmSummary), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn status(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<FarmSummary>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let status = state.farm.status().await?;
    let jobs = job_counts(&state).await?;
    Ok(Json(FarmSummary {
        jobs,
        workers: status.workers.len(),
        slots: status.workers.iter().map(|w| w.slots).sum(),
        leases: status.leases,
    }))
}

async fn job_counts(state: &AppState) -> Result<BTreeMap<String, u64>, ApiError> {
    let live: BTreeMap<u64, JobState> = state.farm.status().await?.jobs.iter().map(|j| (j.id, j.state)).collect();
    blocking(state, move |store| {
        let mut counts: BTreeMap<String, u64> =
            ["queued", "running", "done", "failed", "cancelled"].into_iter().map(|s| (s.to_string(), 0)).collect();
        for (id, state) in store.job_states()? {
            let s = live.get(&id).copied().unwrap_or(state);
            *counts.entry(s.as_str().into()).or_default() += 1;
        }
        Ok(counts)
    })
    .await
}

/// Prometheus text exposition (format 0.0.4). No token: scrapers usually
/// have none, and nothing here names a job or a worker.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let status = state.farm.status().await?;
    let jobs = job_counts(&state).await?;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: f64| vec![(String::new(), v)];
    let c = status.counters;
    metric(
        "tessera_jobs",
        "gauge",
        "Jobs in the store by state.",
        &jobs.iter().map(|(s, n)| (format!("{{state=\"{s}\"}}"), *n as f64)).collect::<Vec<_>>(),
    );
    metric("tessera_workers_connected", "gauge", "Workers connected now.", &one(status.workers.len() as f64));
    metric(
        "tessera_worker_slots",
        "gauge",
        "Tiles the connected workers can render at once.",
        &one(status.workers.iter().map(|w| f64::from(w.slots)).sum()),
    );
    metric("tessera_leases", "gauge", "Tiles out with workers now.", &one(status.leases as f64));
    // Who leads: 1 on the coordinator serving this (a standby serves
    // nothing), with the PostgreSQL lease's term; SQLite has no term.
    let term = state.farm.lease_term();
    metric(
        "tessera_store_leader",
        "gauge",
        "1: this coordinator runs the farm (holds the PostgreSQL lease, or owns the SQLite file).",
        &[(format!("{{store=\"{}\"}}", if term.is_some() { "postgres" } else { "sqlite" }), 1.0)],
    );
    if let Some(term) = term {
        metric(
            "tessera_store_lease_term",
            "gauge",
            "The PostgreSQL lease term (fencing token) written under.",
            &one(term as f64),
        );
    }
    metric("tessera_tiles_done_total", "counter", "Tiles made durable since start.", &one(c.tiles_done as f64));
    metric(
        "tessera_tiles_failed_total",
        "counter",
        "Tile attempts that failed or were refused since start.",
        &one(c.tiles_failed as f64),
    );
    metric(
        "tessera_tiles_adopted_total",
        "counter",
        "Results for tiles leased back to the worker that held them from a lost connection (after a fail-over).",
        &one(c.tiles_adopted as f64),
    );
    metric("tessera_frames_done_total", "counter", "Frames written since start.", &one(c.frames_done as f64));
    metric(
        "tessera_jobs_loaded_total",
        "counter",
        "Jobs submitted, resumed or retried since start.",
        &one(c.jobs_submitted as f64),
    );
    let requests: Vec<(String, f64)> = state
        .requests
        .iter()
        .enumerate()
        .filter_map(|(class, n)| {
            let n = n.load(Ordering::Relaxed);
            (1..=5).contains(&class).then(|| (format!("{{code=\"{class}xx\"}}"), n as f64))
        })
        .collect();
    metric("tessera_http_requests_total", "counter", "HTTP requests answered, by status class.", &requests);
    metric(
        "tessera_uptime_seconds",
        "gauge",
        "Seconds since the coordinator started.",
        &one(state.farm.uptime().as_secs_f64()),
    );
    // The store's group commits (the durable half of every tile's ack).
    let (buckets, sum, count) = state.farm.commit_timings().histogram();
    let mut samples: Vec<(String, f64)> = buckets
        .iter()
        .map(|(le, n)| {
            let le = if le.is_finite() { le.to_string() } else { "+Inf".into() };
            (format!("_bucket{{le=\"{le}\"}}"), *n as f64)
        })
        .collect();
    samples.push(("_sum".into(), sum));
    samples.push(("_count".into(), count as f64));
    metric(
        "tessera_store_commit_seconds",
        "histogram",
        "How long the store's group commits of verified tiles took (durable when they end).",
        &samples,
    );
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out))
}
