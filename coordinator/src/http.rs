//! The coordinator's HTTP side (axum): the API ([`crate::api`]) and a
//! status page. Issue 7 replaces the page with the artists' web page, built
//! on the same API.
//!
//! - `GET /`: the farm at a glance (jobs, progress, frames, workers).
//! - `GET /frames/{job}/{frame}.png` and `/thumbnails/{job}/{frame}.png`:
//!   finished frames, from the content-addressed store.
//! - `/api/v1/…`, `/api/openapi.json`, `/metrics`: see docs/api.md.
//!
//! The router comes from [`app`], so tests can drive it without a socket.

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::api::error::ApiError;
pub use crate::api::{AppState, MAX_UPLOAD};

/// The HTTP routes: the page and the API.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/frames/{job}/{file}", get(frame_png))
        .route("/thumbnails/{job}/{file}", get(thumbnail_png))
        .with_state(state.clone())
        .merge(crate::api::router(state))
}

fn frame_number(file: &str) -> Result<i32, ApiError> {
    file.strip_suffix(".png").and_then(|n| n.parse().ok()).ok_or_else(|| ApiError::not_found("frames are named N.png"))
}

async fn stored_frame(state: &AppState, job: u64, frame: i32, thumbnail: bool) -> Result<Response, ApiError> {
    let store = state.farm.store().clone();
    // Err(message): a 404 for the caller.
    let bytes = tokio::task::spawn_blocking(move || -> Result<Result<Vec<u8>, String>, crate::store::StoreError> {
        let store = crate::farm::lock(&store);
        let Some(f) = store.frame(job, frame)? else { return Ok(Err(format!("job {job} has no frame {frame} yet"))) };
        let Some(hash) = (if thumbnail { Some(f.thumbnail) } else { f.png }) else {
            return Ok(Err(format!("frame {frame} of job {job} was not rendered in that format")));
        };
        Ok(Ok(store.get_blob(&hash)?))
    })
    .await??;
    match bytes {
        Ok(b) => Ok(([(header::CONTENT_TYPE, "image/png")], b).into_response()),
        Err(message) => Err(ApiError::not_found(message)),
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
