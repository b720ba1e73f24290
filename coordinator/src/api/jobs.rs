//! Jobs: submit (multipart), list, read, cancel, retry, delete, log.

use std::collections::BTreeMap;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::require;
use super::error::ApiError;
use super::model::{ErrorBody, Job, JobList, JobSettingsView, LogEntry, LogPage, Progress, SubmitSettings};
use super::scenes::{module, read_form};
use super::submission::request_from;
use super::{blocking, AppState};
use crate::farm::job::JobSpec;
use crate::farm::JobStatus;
use tessera_store::{JobRecord, JobState, Scope, Store};

/// The multipart form of `POST /api/v1/jobs` (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SubmitForm {
    /// The scene: `.glb` or `.gltf`.
    #[schema(value_type = String, format = Binary)]
    scene: Vec<u8>,
    /// Files the `.gltf` references (`scene.bin`, `textures/wood.png`),
    /// each part's filename its path relative to the scene.
    #[schema(value_type = Vec<String>, format = Binary)]
    resource: Vec<Vec<u8>>,
    /// JSON; every key optional.
    settings: Option<SubmitSettings>,
}

/// Submits a scene. The scene is loaded through the job's module before the
/// job is accepted, so a bad scene is a 422 and no job.
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body(content = SubmitForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "accepted", body = Job),
        (status = 400, description = "malformed request or settings", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "upload over the limit", body = ErrorBody),
        (status = 415, description = "not multipart/form-data", body = ErrorBody),
        (status = 422, description = "not a usable scene, or settings out of range", body = ErrorBody),
    ),
    security(("bearer" = ["submit"])))]
pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    let token = require(&state, &headers, Scope::Submit).await?;
    let form = read_form(&state, &headers, multipart).await?;
    let mut request = request_from(&form.settings, &form.file_name)?;
    request.submitted_by =
        Some(if token.label.trim().is_empty() { format!("token {}", token.id) } else { token.label });
    let module = module(&state)?;
    let status = state.farm.status().await?;
    request.farm_slots = status.workers.iter().map(|w| w.slots).sum::<u32>().max(1);
    let id = state.farm.submit_scene(request, form.scene, module.to_vec()).await?;
    tracing::info!(job = id, token = token.id, "job submitted over the API");
    let job = load_job(&state, id).await?;
    Ok((StatusCode::CREATED, Json(job)).into_response())
}

/// `?state=` and `?limit=` of the job list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state.
    pub state: Option<String>,
    /// At most this many, newest first (default 100, at most 10000).
    pub limit: Option<usize>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let wanted = match q.state.as_deref() {
        None => None,
        Some(s) => Some(
            ["queued", "running", "done", "failed", "cancelled"]
                .into_iter()
                .find(|k| *k == s)
                .ok_or_else(|| ApiError::bad_request(format!("state {s:?} is not a job state")))?,
        ),
    };
    let limit = q.limit.unwrap_or(100).min(10_000);
    let live = live_jobs(&state).await?;
    let jobs = blocking(&state, move |store| {
        let mut out = Vec::new();
        for record in store.jobs()? {
            if out.len() >= limit {
                break;
            }
            let view = view(store, &record, live.get(&record.id))?;
            if wanted.is_none_or(|w| view.state == w) {
                out.push(view);
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(JobList { jobs }))
}

/// One job.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = u64, Path)),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    Ok(Json(load_job(&state, job_id(&id)?).await?))
}

/// Stops a job: its leases are revoked and nothing more is rendered.
/// Frames already finished stay.
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = u64, Path)),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["submit"])))]
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    require(&state, &headers, Scope::Submit).await?;
    let id = job_id(&id)?;
    load_job(&state, id).await?;
    state.farm.cancel(id)?;
    // The core handles the cancel before the status request that follows.
    Ok(Json(load_job(&state, id).await?))
}

/// Runs a failed or cancelled job again, keeping its rendered tiles.
#[utoipa::path(post, path = "/jobs/{id}/retry", tag = "jobs", params(("id" = u64, Path)),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "not failed or cancelled", body = ErrorBody)),
    security(("bearer" = ["submit"])))]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Job>, ApiError> {
    require(&state, &headers, Scope::Submit).await?;
    let id = job_id(&id)?;
    state.farm.retry(id).await?;
    Ok(Json(load_job(&state, id).await?))
}

/// Deletes a finished job with its frames, tiles, log and unshared blobs.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs", params(("id" = u64, Path)),
    responses((status = 204, description = "deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "still running", body = ErrorBody)),
    security(("bearer" = ["admin"])))]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require(&state, &headers, Scope::Admin).await?;
    let id = job_id(&id)?;
    state.farm.delete(id).await?;
    tracing::info!(job = id, "job deleted over the API");
    Ok(StatusCode::NO_CONTENT)
}

/// `?after=` and `?limit=` of the log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Only lines after this `seq`.
    pub after: Option<u64>,
    /// At most this many lines (default 1000, at most 10000).
    pub limit: Option<usize>,
}

/// A job's log: what was planned, tiles that failed and why, frames
/// written, state changes.
#[utoipa::path(get, path = "/jobs/{id}/log", tag = "jobs", params(("id" = u64, Path), LogQuery),
    responses((status = 200, body = LogPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn log(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let id = job_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let (after, limit) = (q.after.unwrap_or(0), q.limit.unwrap_or(1000).min(10_000));
    let entries = blocking(&state, move |store| {
        if store.job(id)?.is_none() {
            return Ok(None);
        }
        Ok(Some(store.job_log(id, after, limit)?))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let entries = entries
        .into_iter()
        .map(|e| LogEntry { seq: e.seq, time_ms: e.time_ms, level: e.level.as_str().into(), message: e.message })
        .collect();
    Ok(Json(LogPage { entries }))
}

/// A job id from the path: a clear 404 for anything that is not one.
pub fn job_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(format!("no job {text:?}: job ids are positive integers")))
}

/// The live status of jobs the core holds, by id.
async fn live_jobs(state: &AppState) -> Result<BTreeMap<u64, JobStatus>, ApiError> {
    Ok(state.farm.status().await?.jobs.into_iter().map(|j| (j.id, j)).collect())
}

/// One job as the API shows it; 404 if there is none.
pub async fn load_job(state: &AppState, id: u64) -> Result<Job, ApiError> {
    let live = live_jobs(state).await?.remove(&id);
    blocking(state, move |store| match store.job(id)? {
        Some(record) => Ok(Some(view(store, &record, live.as_ref())?)),
        None => Ok(None),
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// A job from its record, with the core's live progress when it has one
/// (the store's counts otherwise).
fn view(store: &Store, record: &JobRecord, live: Option<&JobStatus>) -> Result<Job, tessera_store::StoreError> {
    let spec: Option<JobSpec> = serde_json::from_str(&record.spec_json).ok();
    let (tiles_done, frames_done, eta_s) = match live {
        Some(l) => (l.tiles_done, l.frames_done, l.eta_s),
        None if record.state == JobState::Done => (record.tiles, record.frames.len(), None),
        None => (store.tile_count(record.id)?, store.frames(record.id)?.len(), None),
    };
    // The core's state is newer than the store's while a change is being written.
    let state = live.map_or(record.state, |l| l.state);
    let tiles = record.tiles;
    Ok(Job {
        id: record.id,
        name: record.name.clone(),
        state: state.as_str().into(),
        error: record.error.clone(),
        created_ms: record.created_ms,
        // The core's state may be newer than the store's row for a moment.
        finished_ms: record.finished_ms.or_else(|| state.is_finished().then(crate::farm::writer::unix_ms)),
        submitted_by: spec.as_ref().and_then(|s| s.submitted_by.clone()),
        settings: settings_view(spec.as_ref(), record),
        progress: Progress {
            tiles,
            tiles_done,
            frames: record.frames.len(),
            frames_done,
            fraction: if tiles == 0 { 1.0 } else { f64::from(tiles_done) / f64::from(tiles) },
            eta_s,
        },
    })
}

fn settings_view(spec: Option<&JobSpec>, record: &JobRecord) -> JobSettingsView {
    let extra: serde_json::Value =
        spec.and_then(|s| serde_json::from_str(&s.extra).ok()).unwrap_or(serde_json::Value::Null);
    let background = extra["background"].as_array().and_then(|a| {
        let v: Vec<f32> = a.iter().filter_map(|x| x.as_f64()).map(|x| x as f32).collect();
        <[f32; 3]>::try_from(v).ok()
    });
    JobSettingsView {
        width: spec.map_or(0, |s| s.width),
        height: spec.map_or(0, |s| s.height),
        spp: spec.map_or(0, |s| s.spp),
        frames: record.frames.clone(),
        tile_size: spec.map_or(0, |s| s.tile_size),
        seed: spec.map_or(0, |s| s.seed),
        fps: spec.map_or(0.0, |s| s.fps),
        priority: record.priority,
        view_transform: spec.map_or_else(String::new, |s| s.view.clone()),
        exposure: spec.map_or(0.0, |s| s.exposure),
        formats: spec.map_or_else(Vec::new, |s| s.formats.iter().map(|f| f.ext().to_string()).collect()),
        camera: extra["camera"].as_str().map(str::to_string),
        background,
        background_strength: extra["background_strength"].as_f64().unwrap_or(1.0) as f32,
        bounces: extra["max_bounces"].as_u64().unwrap_or(8) as u32,
        shading: extra["shading"].as_str().unwrap_or("auto").to_string(),
        engine: spec.map_or(tessera_protocol::wire::Engine::Cpu, |s| s.engine).to_string(),
        denoise: spec.is_some_and(|s| s.denoise),
        progressive: spec.is_some_and(|s| s.progressive),
    }
}
