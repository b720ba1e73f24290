//! The coordinator's HTTP side (axum): a status page and the first routes
//! of the studios' API. Issue 5 grows the API (OpenAPI, every resource) and
//! issue 7 the artists' page; this module is where both attach.
//!
//! - `GET /`: the farm at a glance (jobs, progress, frames, workers).
//! - `GET /frames/{job}/{frame}.png` and `/thumbnails/{job}/{frame}.png`:
//!   finished frames, from the content-addressed store.
//! - `GET /api/v1/status`, `POST /api/v1/jobs`: bearer API token required.
//!
//! The router comes from [`app`], so tests can drive it without a socket.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::farm::{Farm, FarmError, JobRequest};
use crate::store::TokenKind;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub farm: Arc<Farm>,
    /// The job module used when a submission names none (the path tracer
    /// built into the `tessera` binary).
    pub default_module: Option<Arc<Vec<u8>>>,
}

/// Largest scene upload.
pub const MAX_UPLOAD: usize = 512 << 20;

/// The HTTP routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/frames/{job}/{file}", get(frame_png))
        .route("/thumbnails/{job}/{file}", get(thumbnail_png))
        .route("/api/v1/status", get(api_status))
        .route("/api/v1/jobs", post(api_submit))
        .layer(DefaultBodyLimit::max(MAX_UPLOAD))
        .with_state(state)
}

/// An error as the API returns it: a status and a JSON message.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<FarmError> for ApiError {
    fn from(e: FarmError) -> Self {
        match e {
            FarmError::Spec(_) | FarmError::Sandbox(_) => ApiError(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
            }
        }
    }
}

async fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(StatusCode::UNAUTHORIZED, "an API token is required: Authorization: Bearer ta_…".into())
        })?
        .to_string();
    let store = state.farm.store().clone();
    let ok = tokio::task::spawn_blocking(move || crate::farm::lock(&store).check_token(TokenKind::Api, &token))
        .await
        .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))?
        .map_err(FarmError::Store)?;
    match ok {
        Some(_) => Ok(()),
        None => Err(ApiError(StatusCode::UNAUTHORIZED, "unknown or revoked API token".into())),
    }
}

async fn api_status(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let status = state.farm.status().await?;
    let jobs: Vec<_> = status
        .jobs
        .iter()
        .map(|j| {
            serde_json::json!({
                "id": j.id, "name": j.name, "state": j.state.as_str(), "tiles": j.tiles,
                "tiles_done": j.tiles_done, "frames": j.frames, "frames_done": j.frames_done,
            })
        })
        .collect();
    let workers: Vec<_> = status
        .workers
        .iter()
        .map(|w| serde_json::json!({ "identity": w.identity, "name": w.name, "slots": w.slots, "leases": w.leases, "tiles_done": w.tiles_done }))
        .collect();
    Ok(Json(serde_json::json!({ "jobs": jobs, "workers": workers })).into_response())
}

/// Query of `POST /api/v1/jobs`; the body is the scene (`.glb`, or a
/// `.gltf` with its buffers and images inline).
#[derive(Debug, Deserialize)]
pub struct SubmitQuery {
    pub name: Option<String>,
    pub frames: Option<String>,
    pub spp: Option<u32>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub tile_size: Option<u32>,
    /// Aim for tiles of about this many milliseconds (when no tile size is given).
    pub target_tile_ms: Option<u64>,
    pub seed: Option<u64>,
    pub priority: Option<i32>,
    pub view: Option<String>,
}

async fn api_submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<SubmitQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorize(&state, &headers).await?;
    let bad = |m: String| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m);
    if body.is_empty() {
        return Err(bad("the request body must be the scene (.glb)".into()));
    }
    let module =
        state.default_module.clone().ok_or_else(|| bad("this coordinator has no built-in job module".into()))?;
    let mut request = JobRequest::new(q.name.unwrap_or_else(|| "scene.glb".into()));
    request.frames =
        q.frames.as_deref().map(crate::frames::parse_frames).transpose().map_err(|e| bad(e.to_string()))?;
    request.spp = q.spp.unwrap_or(request.spp);
    request.width = q.width;
    request.height = q.height;
    request.tile_size = q.tile_size;
    if let Some(ms) = q.target_tile_ms {
        request.target_tile_ms = ms.clamp(10, 600_000);
    }
    request.seed = q.seed.unwrap_or(0);
    request.priority = q.priority.unwrap_or(0);
    if let Some(v) = q.view {
        request.view = v;
    }
    request.extra = crate::farm::job::RENDER_DEFAULTS.into();
    // Tiles sized so the farm as it is now has work for every slot.
    request.farm_slots = state.farm.status().await?.workers.iter().map(|w| w.slots).sum::<u32>().max(1);
    let id = state.farm.submit_scene(request, body.to_vec(), module.to_vec()).await?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))).into_response())
}

fn frame_number(file: &str) -> Result<i32, ApiError> {
    file.strip_suffix(".png")
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "frames are named N.png".into()))
}

async fn stored_frame(state: &AppState, job: u64, frame: i32, thumbnail: bool) -> Result<Response, ApiError> {
    let store = state.farm.store().clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        let store = crate::farm::lock(&store);
        let Some(f) = store.frames(job)?.into_iter().find(|f| f.frame == frame) else { return Ok(None) };
        Ok(Some(store.get_blob(if thumbnail { &f.thumbnail } else { &f.png })?))
    })
    .await
    .map_err(|_| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into()))?
    .map_err(FarmError::Store)?;
    match bytes {
        Some(b) => Ok(([(header::CONTENT_TYPE, "image/png")], b).into_response()),
        None => Err(ApiError(StatusCode::NOT_FOUND, format!("job {job} has no frame {frame} yet"))),
    }
}

async fn frame_png(
    State(state): State<AppState>,
    Path((job, file)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    stored_frame(&state, job, frame_number(&file)?, false).await
}

async fn thumbnail_png(
    State(state): State<AppState>,
    Path((job, file)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    stored_frame(&state, job, frame_number(&file)?, true).await
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

async fn index(State(state): State<AppState>) -> Result<Html<String>, ApiError> {
    let status = state.farm.status().await?;
    let store = state.farm.store().clone();
    let ids: Vec<u64> = status.jobs.iter().map(|j| j.id).collect();
    let frames = tokio::task::spawn_blocking(move || {
        let store = crate::farm::lock(&store);
        ids.iter().map(|id| (*id, store.frames(*id).unwrap_or_default())).collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=utf-8><meta http-equiv=refresh content=2>\
         <title>Tessera</title><style>body{font:14px system-ui;margin:2em}img{margin:2px;image-rendering:pixelated}\
         td,th{padding:2px 10px;text-align:left}</style></head><body><h1>Tessera</h1><h2>Jobs</h2>\
         <table><tr><th>job</th><th>name</th><th>state</th><th>tiles</th><th>frames</th></tr>",
    );
    for j in &status.jobs {
        html += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}/{}</td><td>{}/{}</td></tr>",
            j.id,
            escape(&j.name),
            j.state.as_str(),
            j.tiles_done,
            j.tiles,
            j.frames_done,
            j.frames
        );
    }
    html += "</table>";
    for (job, frames) in &frames {
        if frames.is_empty() {
            continue;
        }
        html += &format!("<h3>Job {job}</h3><p>");
        for f in frames {
            html += &format!(
                "<a href=\"/frames/{job}/{0}.png\"><img src=\"/thumbnails/{job}/{0}.png\" title=\"frame {0}\"></a>",
                f.frame
            );
        }
        html += "</p>";
    }
    html += "<h2>Workers</h2><table><tr><th>name</th><th>identity</th><th>slots</th><th>leases</th><th>tiles</th></tr>";
    for w in &status.workers {
        html += &format!(
            "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&w.name),
            &w.identity[..16.min(w.identity.len())],
            w.slots,
            w.leases,
            w.tiles_done
        );
    }
    html += "</table></body></html>";
    Ok(Html(html))
}
