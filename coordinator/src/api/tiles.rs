//! Tiles: the verified tiles of a job, each one's proof of render, and a
//! preview of its pixels (what a live view draws as tiles arrive).

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::require;
use super::error::ApiError;
use super::etag::Etag;
use super::jobs::job_id;
use super::model::{ErrorBody, SampleSpan, TileDetail, TileList, TileRect, TileSummary};
use super::{blocking, AppState};
use crate::farm::job::{JobPlan, JobSpec};
use tessera_frame::FrameBuffer;
use tessera_protocol::hex;
use tessera_store::{Scope, Store, StoreError};

/// `?frame=N` of the tile list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TileQuery {
    /// Only the tiles of this frame.
    pub frame: Option<i32>,
}

/// The job's spec and plan, `None` for no such job.
fn plan(store: &Store, id: u64) -> Result<Option<(JobSpec, JobPlan)>, StoreError> {
    let Some(record) = store.job(id)? else { return Ok(None) };
    let Ok(spec) = serde_json::from_str::<JobSpec>(&record.spec_json) else { return Ok(None) };
    let Ok(plan) = spec.plan() else { return Ok(None) };
    Ok(Some((spec, plan)))
}

fn rect_of(plan: &JobPlan, tile: u32) -> TileRect {
    plan.place(tile).map_or(TileRect { x: 0, y: 0, width: 0, height: 0 }, |p| {
        let r = p.rect;
        TileRect { x: r.x, y: r.y, width: r.width, height: r.height }
    })
}

/// Names of the workers the store knows, by identity.
fn worker_names(store: &Store) -> Result<std::collections::BTreeMap<String, String>, StoreError> {
    Ok(store.workers()?.into_iter().map(|w| (w.identity, w.name)).collect())
}

/// The job's verified tiles (of one frame with `?frame=`), by index.
#[utoipa::path(get, path = "/jobs/{id}/tiles", tag = "jobs", params(("id" = u64, Path), TileQuery),
    responses((status = 200, body = TileList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<TileQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<TileList>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let id = job_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let tiles = blocking(&state, move |store| {
        let Some((_, plan)) = plan(store, id)? else { return Ok(None) };
        let names = worker_names(store)?;
        let tiles = store
            .tile_index(id, q.frame)?
            .into_iter()
            .map(|(tile, frame, worker, millis)| TileSummary {
                tile,
                frame,
                rect: rect_of(&plan, tile),
                worker_name: names.get(&worker).cloned(),
                worker,
                millis,
            })
            .collect();
        Ok(Some(tiles))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(TileList { tiles }))
}

fn tile_number(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| ApiError::not_found(format!("tiles are numbered from 0, not {text:?}")))
}

/// One verified tile and its proof of render: the worker, what it signed
/// (commitment, signature) and the coordinator's checks and their outcome.
#[utoipa::path(get, path = "/jobs/{id}/tiles/{tile}", tag = "jobs",
    params(("id" = u64, Path), ("tile" = u32, Path)),
    responses((status = 200, body = TileDetail), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, tile)): Path<(String, String)>,
) -> Result<Json<TileDetail>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let (id, index) = (job_id(&id)?, tile_number(&tile)?);
    let found = blocking(&state, move |store| {
        let Some((spec, plan)) = plan(store, id)? else { return Ok(Err(format!("no job {id}"))) };
        let Some(t) = store.tile(id, index)? else {
            return Ok(Err(format!("tile {index} of job {id} is not rendered (or not verified) yet")));
        };
        let names = worker_names(store)?;
        Ok(Ok(TileDetail {
            summary: TileSummary {
                tile: index,
                frame: t.frame,
                rect: rect_of(&plan, index),
                worker_name: names.get(&t.worker).cloned(),
                worker: t.worker,
                millis: t.millis,
            },
            blake3: hex(&t.hash),
            fuel: t.fuel,
            samples: plan.place(index).map_or(SampleSpan { start: 0, count: spec.spp }, |p| SampleSpan {
                start: p.samples.start,
                count: p.samples.count,
            }),
            proof: t.proof.as_deref().and_then(|p| serde_json::from_str(p).ok()),
            preview: format!("/api/v1/jobs/{id}/tiles/{index}/preview.png"),
        }))
    })
    .await?;
    Ok(Json(found.map_err(ApiError::not_found)?))
}

/// A verified tile's pixels as PNG, through the job's view transform and
/// exposure (what the frame's PNG will show there). The `ETag` is the
/// tile's blake3; `If-None-Match` with it gives 304.
#[utoipa::path(get, path = "/jobs/{id}/tiles/{tile}/preview.png", tag = "jobs",
    params(("id" = u64, Path), ("tile" = u32, Path)),
    responses((status = 200, description = "PNG", content_type = "image/png"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn preview(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, tile)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let (id, index) = (job_id(&id)?, tile_number(&tile)?);
    let found = blocking(&state, move |store| {
        let Some((spec, plan)) = plan(store, id)? else { return Ok(Err(format!("no job {id}"))) };
        let Some(t) = store.tile(id, index)? else {
            return Ok(Err(format!("tile {index} of job {id} is not rendered (or not verified) yet")));
        };
        // A progressive job's tile shows the samples so far there: its own
        // and those of the same rectangle's earlier passes that are stored.
        let mut tiles = Vec::new();
        if let Some(place) = plan.place(index).filter(|_| plan.is_progressive()) {
            for pass in 0..place.pass {
                if let Some(earlier) = store.tile(id, plan.tile_of(pass, place.frame_slot, place.rect_index))? {
                    tiles.push((earlier.data, earlier.hash));
                }
            }
        }
        tiles.push((t.data, t.hash));
        Ok(Ok((spec, tiles)))
    })
    .await?;
    let (spec, tiles) = found.map_err(ApiError::not_found)?;
    let etag = if tiles.len() == 1 {
        Etag::of_hex(&hex(&tiles[0].1))
    } else {
        let mut h = blake3::Hasher::new();
        tiles.iter().for_each(|(_, hash)| {
            h.update(hash);
        });
        Etag::of_hex(h.finalize().to_hex().as_str())
    };
    if etag.matches(&headers) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let png = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        use image::ImageEncoder;
        let mut buffer: Option<FrameBuffer> = None;
        let mut r = tessera_protocol::Rect { x: 0, y: 0, width: 0, height: 0 };
        for (data, _) in &tiles {
            let tile: tessera_protocol::TileAccumulators =
                postcard::from_bytes(data).map_err(|e| format!("stored tile does not decode: {e}"))?;
            r = tile.rect;
            // The tile alone, as a frame of its own size.
            let buffer = buffer.get_or_insert_with(|| FrameBuffer::new(r.width, r.height));
            let local = tessera_protocol::TileAccumulators {
                rect: tessera_protocol::Rect { x: 0, y: 0, ..r },
                color: tile.color,
                weight: tile.weight,
                aovs: Vec::new(),
            };
            buffer.add_tile(&local).map_err(|e| e.to_string())?;
        }
        let buffer = buffer.ok_or("no tile")?;
        let pixels = buffer.to_display8(&spec.output_options());
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&pixels, r.width, r.height, image::ExtendedColorType::Rgb8)
            .map_err(|e| e.to_string())?;
        Ok(out)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let mut response = png.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    etag.set(&mut response);
    Ok(response)
}
