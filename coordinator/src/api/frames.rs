//! A job's frames: the list, each file (PNG, EXR) and signed manifest
//! (`crate::manifest`), and all of them as one ZIP archive streamed as it
//! is written.

use std::collections::BTreeMap;
use std::io::Write;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

use super::auth::{require, require_read_or_link, sign_link, LINK_LIFETIME_MS};
use super::error::ApiError;
use super::etag::Etag;
use super::jobs::job_id;
use super::model::{ErrorBody, FileInfo, Frame, FrameList, Link, LinkRequest};
use super::{blocking, AppState};
use crate::farm::job::{Format, JobSpec};
use crate::farm::writer::{frame_file, frame_stem, DENOISED};
use tessera_client::manifest;
use tessera_protocol::hex;
use tessera_store::{Blobs, FrameRecord, Scope, Store, StoreError};

/// A job's spec and its finished frames; `None` if there is no such job.
fn job_frames(store: &Store, id: u64) -> Result<Option<(JobSpec, Vec<FrameRecord>)>, StoreError> {
    let Some(record) = store.job(id)? else { return Ok(None) };
    let spec: JobSpec = match serde_json::from_str(&record.spec_json) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(job = id, error = %e, "unreadable job spec");
            return Ok(None);
        }
    };
    let mut frames = store.frames(id)?;
    // The job's own frame order.
    let order: BTreeMap<i32, usize> = spec.frames.iter().enumerate().map(|(i, f)| (*f, i)).collect();
    frames.sort_by_key(|f| order.get(&f.frame).copied().unwrap_or(usize::MAX));
    Ok(Some((spec, frames)))
}

fn blob_of(f: &FrameRecord, format: Format, denoised: bool) -> Option<[u8; 32]> {
    match (format, denoised) {
        (Format::Png, false) => f.png,
        (Format::Exr, false) => f.exr,
        (Format::Png, true) => f.denoised_png,
        (Format::Exr, true) => f.denoised_exr,
    }
}

/// A frame's files among `formats`: the raw ones, then the denoised ones
/// of a denoised job, as (name within the frame: `png`, `denoised.png`…,
/// blob hash). The name is also the manifest's key and the file's suffix.
fn frame_files(f: &FrameRecord, formats: &[Format]) -> Vec<(String, [u8; 32])> {
    let mut out = Vec::new();
    for (denoised, prefix) in [(false, ""), (true, DENOISED)] {
        for &format in formats {
            if let Some(hash) = blob_of(f, format, denoised) {
                out.push((format!("{prefix}{}", format.ext()), hash));
            }
        }
    }
    out
}

/// The blob hashes of a job's frame manifests, by frame (kept in the
/// store's metadata under `manifest::meta_key`).
fn manifests(store: &Store, id: u64) -> Result<BTreeMap<i32, [u8; 32]>, StoreError> {
    let prefix = manifest::meta_prefix(id);
    Ok(store
        .meta_with_prefix(&prefix)?
        .into_iter()
        .filter_map(|(key, value)| {
            let frame = key.strip_prefix(&prefix)?.parse::<i32>().ok()?;
            Some((frame, <[u8; 32]>::try_from(value.as_slice()).ok()?))
        })
        .collect())
}

/// The finished frames of a job, in the job's frame order, with each
/// file's blake3 and size.
#[utoipa::path(get, path = "/jobs/{id}/frames", tag = "frames", params(("id" = u64, Path)),
    responses((status = 200, body = FrameList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<FrameList>, ApiError> {
    require(&state, &headers, Scope::Read).await?;
    let id = job_id(&id)?;
    let listing = blocking(&state, move |store| {
        let Some((spec, frames)) = job_frames(store, id)? else { return Ok(None) };
        let manifests = manifests(store, id)?;
        let mut out = Vec::with_capacity(frames.len());
        for f in &frames {
            let mut files = BTreeMap::new();
            for (name, hash) in frame_files(f, &spec.formats) {
                let bytes = store.blob_len(&hash)?.unwrap_or(0);
                let url = format!("/api/v1/jobs/{id}/frames/{}.{name}", f.frame);
                files.insert(name, FileInfo { url, blake3: hex(&hash), bytes });
            }
            let manifest = manifests.get(&f.frame).and_then(|hash| {
                let bytes = store.blob_len(hash).ok().flatten()?;
                Some(FileInfo {
                    url: format!("/api/v1/jobs/{id}/frames/{}.manifest.json", f.frame),
                    blake3: hex(hash),
                    bytes,
                })
            });
            let thumbnail = Some(format!("/api/v1/jobs/{id}/frames/{}.thumb.png", f.frame));
            out.push(Frame { frame: f.frame, finished_ms: f.finished_ms, files, manifest, thumbnail });
        }
        Ok(Some(FrameList { stem: frame_stem(&spec), frames: out }))
    })
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(listing))
}

/// One frame file: `{frame}.png`, `{frame}.exr`, a denoised job's
/// `{frame}.denoised.png` and `{frame}.denoised.exr`, a 256-pixel-wide
/// preview `{frame}.thumb.png`, the frame's signed manifest
/// `{frame}.manifest.json` (JSON; see `tessera verify`), or, while a
/// progressive job's frame renders, its latest pass `{frame}.preview.png`
/// (the whole frame, denoised if the job is, at most 1,024 pixels on a
/// side; `X-Tessera-Pass` and `X-Tessera-Samples` say which). The `ETag`
/// is the file's blake3; `If-None-Match` with it gives 304.
#[utoipa::path(get, path = "/jobs/{id}/frames/{file}", tag = "frames",
    params(("id" = u64, Path), ("file" = String, Path, description = "`12.png`, `12.exr`, `12.denoised.png`, `12.denoised.exr`, `12.thumb.png`, `12.manifest.json` or `12.preview.png`"), LinkQuery),
    responses((status = 200, description = "the file", content_type = "application/octet-stream"),
        (status = 304, description = "unchanged"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, file)): Path<(String, String)>,
    query: Result<Query<LinkQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    require_read_or_link(&state, &headers, &format!("/api/v1/jobs/{id}/frames/{file}"), q.link.as_deref()).await?;
    let id = job_id(&id)?;
    let not_named = || {
        ApiError::not_found(format!(
            "frame files are named N.png, N.exr, N.denoised.png, N.denoised.exr, N.thumb.png, N.manifest.json or \
             N.preview.png, not {file:?}"
        ))
    };
    if let Some(number) = file.strip_suffix(".thumb.png") {
        let frame = number.parse::<i32>().map_err(|_| not_named())?;
        return thumbnail(&state, &headers, id, frame).await;
    }
    if let Some(number) = file.strip_suffix(".preview.png") {
        let frame = number.parse::<i32>().map_err(|_| not_named())?;
        return preview(&state, &headers, id, frame).await;
    }
    // `None`: the manifest.
    let (frame, format, denoised) = match file.strip_suffix(".manifest.json") {
        Some(number) => (number.parse::<i32>().map_err(|_| not_named())?, None, false),
        None => file
            .rsplit_once('.')
            .and_then(|(number, ext)| {
                let (number, denoised) = match number.strip_suffix(".denoised") {
                    Some(n) => (n, true),
                    None => (number, false),
                };
                Some((number.parse::<i32>().ok()?, Some(Format::parse(ext)?), denoised))
            })
            .ok_or_else(not_named)?,
    };
    let found = blocking(&state, move |store| {
        let Some((spec, frames)) = job_frames(store, id)? else { return Ok(Err(format!("no job {id}"))) };
        let Some(format) = format else {
            if !frames.iter().any(|f| f.frame == frame) {
                return Ok(Err(format!("frame {frame} of job {id} is not finished")));
            }
            let Some(hash) = manifests(store, id)?.remove(&frame) else {
                return Ok(Err(format!(
                    "frame {frame} of job {id} has no manifest (written before manifests existed)"
                )));
            };
            let name = manifest::file_name(&frame_stem(&spec), frame);
            return Ok(Ok((hash, name, "application/json")));
        };
        let ext = format.ext();
        if !spec.formats.contains(&format) {
            return Ok(Err(format!("job {id} was not asked for {} files", format.ext())));
        }
        if denoised && !spec.denoise {
            return Ok(Err(format!("job {id} was not denoised (submit it with \"denoise\": true)")));
        }
        let Some(f) = frames.iter().find(|f| f.frame == frame) else {
            return Ok(Err(if spec.frames.contains(&frame) {
                format!("frame {frame} of job {id} is not finished yet")
            } else {
                format!("job {id} has no frame {frame}")
            }));
        };
        let key = if denoised { format!("{DENOISED}{ext}") } else { ext.to_string() };
        let Some(hash) = blob_of(f, format, denoised) else {
            return Ok(Err(format!("frame {frame} has no {key} file")));
        };
        Ok(Ok((hash, frame_file(&spec, frame, &key), format.content_type())))
    })
    .await?;
    let (hash, name, content_type) = found.map_err(ApiError::not_found)?;
    let etag = Etag::of_hex(&hex(&hash));
    if etag.matches(&headers) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let path = local_file(&state, hash).await?;
    let file =
        tokio::fs::File::open(&path).await.map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let len = file.metadata().await.map_err(ApiError::internal)?.len();
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    etag.set(&mut response);
    Ok(response)
}

/// A frame's 256-pixel-wide preview (the view transform's PNG, scaled).
async fn thumbnail(state: &AppState, headers: &HeaderMap, id: u64, frame: i32) -> Result<Response, ApiError> {
    let found = blocking(state, move |store| {
        let Some(f) = store.frame(id, frame)? else {
            return Ok(Err(format!("frame {frame} of job {id} is not finished")));
        };
        Ok(Ok(f.thumbnail))
    })
    .await?;
    let hash = found.map_err(ApiError::not_found)?;
    let etag = Etag::of_hex(&hex(&hash));
    if etag.matches(headers) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let path = local_file(state, hash).await?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    etag.set(&mut response);
    Ok(response)
}

/// A progressive frame's latest pass (see [`file`]).
async fn preview(state: &AppState, headers: &HeaderMap, id: u64, frame: i32) -> Result<Response, ApiError> {
    let found = blocking(state, move |store| {
        let Some(value) = store.meta(&crate::farm::writer::preview_key(id, frame))? else {
            return Ok(Err(format!(
                "frame {frame} of job {id} has no preview (a progressive job's frames have one after their first pass)"
            )));
        };
        Ok(Ok(value))
    })
    .await?;
    let value = found.map_err(ApiError::not_found)?;
    if value.len() < 8 {
        return Err(ApiError::internal(format!("the preview of frame {frame} of job {id} is truncated")));
    }
    let word = |at: usize| u32::from_le_bytes([value[at], value[at + 1], value[at + 2], value[at + 3]]);
    let (pass, samples) = (word(0), word(4));
    let png = value[8..].to_vec();
    let etag = Etag::of_hex(blake3::hash(&png).to_hex().as_str());
    if etag.matches(headers) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let mut response = png.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    h.insert("x-tessera-pass", HeaderValue::from(pass));
    h.insert("x-tessera-samples", HeaderValue::from(samples));
    etag.set(&mut response);
    Ok(response)
}

/// `?formats=png,exr` of the archive.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ArchiveQuery {
    /// Comma-separated; default: the job's formats.
    pub formats: Option<String>,
    /// A download link's signature (`POST /api/v1/links`), instead of a token.
    pub link: Option<String>,
}

/// `?link=` of a frame file.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// A download link's signature (`POST /api/v1/links`), instead of a token.
    pub link: Option<String>,
}

/// A link that downloads one frame file or a job's archive without an
/// `Authorization` header, for five minutes: what a browser's download
/// needs. The path must be `/api/v1/jobs/{id}/frames/{file}` or
/// `/api/v1/jobs/{id}/archive`.
#[utoipa::path(post, path = "/links", tag = "frames", request_body = LinkRequest,
    responses((status = 200, body = Link), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn link(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LinkRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Link>, ApiError> {
    let token = require(&state, &headers, Scope::Read).await?;
    let Json(request) = body.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let path = request.path;
    let rest = path.strip_prefix("/api/v1/jobs/").unwrap_or("");
    let ok = match rest.split('/').collect::<Vec<_>>().as_slice() {
        [id, "archive"] => job_id(id).is_ok(),
        [id, "frames", file] => job_id(id).is_ok() && !file.is_empty(),
        _ => false,
    };
    if !ok || path.contains(['?', '#', '%']) {
        return Err(ApiError::bad_request(format!(
            "links are for /api/v1/jobs/{{id}}/frames/{{file}} and /api/v1/jobs/{{id}}/archive, not {path:?}"
        )));
    }
    let expires_ms = crate::farm::writer::unix_ms() + LINK_LIFETIME_MS;
    let signature = sign_link(&state, token.id, expires_ms, &path)?;
    Ok(Json(Link { url: format!("{path}?link={signature}"), expires_ms }))
}

/// Every finished frame as one ZIP archive (files stored, not compressed:
/// PNG and EXR already are), each frame's files (raw, then a denoised
/// job's denoised ones) followed by its signed
/// manifest (`<stem>-NNNN.manifest.json`), streamed while it is written.
#[utoipa::path(get, path = "/jobs/{id}/archive", tag = "frames", params(("id" = u64, Path), ArchiveQuery),
    responses((status = 200, description = "a ZIP archive", content_type = "application/zip"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = ["read"])))]
pub async fn archive(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ArchiveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::bad_request(e.body_text()))?;
    require_read_or_link(&state, &headers, &format!("/api/v1/jobs/{id}/archive"), q.link.as_deref()).await?;
    let id = job_id(&id)?;
    let wanted: Option<Vec<Format>> = q
        .formats
        .as_deref()
        .map(|list| {
            list.split(',')
                .map(|f| {
                    Format::parse(f.trim()).ok_or_else(|| ApiError::bad_request(format!("{f:?} is not png or exr")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let entries = blocking(&state, move |store| {
        let Some((spec, frames)) = job_frames(store, id)? else { return Ok(None) };
        let formats: Vec<Format> =
            spec.formats.iter().copied().filter(|f| wanted.as_ref().is_none_or(|w| w.contains(f))).collect();
        let manifests = manifests(store, id)?;
        let mut entries = Vec::new();
        for f in &frames {
            let before = entries.len();
            for (name, hash) in frame_files(f, &formats) {
                entries.push((frame_file(&spec, f.frame, &name), hash));
            }
            // A frame in the archive comes with its manifest.
            if entries.len() > before {
                if let Some(hash) = manifests.get(&f.frame) {
                    entries.push((manifest::file_name(&frame_stem(&spec), f.frame), *hash));
                }
            }
        }
        Ok(Some((frame_stem(&spec), entries)))
    })
    .await?;
    let (stem, entries) = entries.ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    let blobs = state.farm.blobs();
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        if let Err(e) = write_zip(sink, &blobs, &entries) {
            tracing::warn!(job = id, error = %e, "archive stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = body.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{stem}-job{id}.zip\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

const CHUNK: usize = 256 << 10;

fn write_zip(sink: ChannelWriter, blobs: &Blobs, entries: &[(String, [u8; 32])]) -> zip::result::ZipResult<()> {
    let mut zip = zip::ZipWriter::new_stream(sink);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    for (name, hash) in entries {
        zip.start_file(name.as_str(), options)?;
        let path = blobs.local_path(hash).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::open(path)?;
        std::io::copy(&mut file, &mut zip)?;
    }
    let mut sink = zip.finish()?.into_inner();
    sink.flush()?;
    Ok(())
}

/// The local file of a blob, fetched from the farm's shared tier first if
/// another coordinator stored it (outside the store's lock: it may be a
/// large read).
async fn local_file(state: &AppState, hash: [u8; 32]) -> Result<std::path::PathBuf, ApiError> {
    let blobs = state.farm.blobs();
    tokio::task::spawn_blocking(move || blobs.local_path(&hash)).await.map_err(ApiError::internal)?.map_err(|e| match e
    {
        StoreError::NotFound(what) => ApiError::not_found(format!("{what} (a frame's file)")),
        other => ApiError::internal(other),
    })
}

/// A `Write` that hands full chunks to the response body; a client that
/// went away ends the writing with an error.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}
