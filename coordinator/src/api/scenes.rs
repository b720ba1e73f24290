//! Scene uploads: the multipart form that `POST /jobs` and
//! `POST /scenes/inspect` share, and the inspection a submission form uses
//! to pre-fill its settings.
//!
//! A scene arrives as one part (`scene`: `.glb`, or `.gltf`) plus, for a
//! `.gltf` that references files (Blender's "glTF Separate" export), one
//! `resource` part per file, named by its path relative to the scene
//! (`scene.bin`, `textures/wood.png`). The coordinator inlines them
//! ([`tessera_client::pack::pack_scene_bytes`], the same rules as `tessera submit`
//! applies on disk), so what is stored and sent to workers is one blob.

use std::collections::BTreeMap;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use utoipa::ToSchema;

use super::auth::require;
use super::error::ApiError;
use super::model::{ErrorBody, SceneDefaults, SceneSummary, SubmitSettings};
use super::AppState;
use crate::farm::{job, JobRequest};
use tessera_frame::ViewTransform;
use tessera_store::Scope;

/// Most `resource` parts one form may carry.
const MAX_RESOURCES: usize = 4096;

/// A submission form, read and checked, with its scene packed.
pub struct SceneForm {
    /// The packed scene (external files inlined).
    pub scene: Vec<u8>,
    /// The scene part's file name (`scene.glb` when it had none).
    pub file_name: String,
    pub settings: SubmitSettings,
}

/// Reads a `scene` / `settings` / `resource` form; anything else, or a part
/// twice, is a 400; a scene that is not glTF or whose references cannot be
/// resolved is a 422.
pub async fn read_form(
    state: &AppState,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<SceneForm, ApiError> {
    let content_type = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("multipart/form-data") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "a scene upload is multipart/form-data (a `scene` file part, optional `resource` file parts and an \
                 optional `settings` JSON part), not {content_type:?}"
            ),
        ));
    }
    let mut multipart = multipart.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let (mut scene, mut settings, mut file_name) = (None, None, None);
    let mut resources = BTreeMap::new();
    while let Some(field) = multipart.next_field().await? {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "scene" if scene.is_none() => {
                file_name = field.file_name().map(str::to_string);
                scene = Some(field.bytes().await?);
            }
            "settings" if settings.is_none() => {
                let text = field.text().await?;
                let parsed: SubmitSettings = if text.trim().is_empty() {
                    SubmitSettings::default()
                } else if !text.trim_start().starts_with('{') {
                    // serde would read an array field by field, in order.
                    return Err(ApiError::bad_request("settings must be a JSON object"));
                } else {
                    serde_json::from_str(&text).map_err(|e| ApiError::bad_request(format!("settings: {e}")))?
                };
                settings = Some(parsed);
            }
            "resource" => {
                let path = field
                    .file_name()
                    .map(|n| n.trim_start_matches("./").to_string())
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| {
                        ApiError::bad_request("a `resource` part needs a filename: its path relative to the scene")
                    })?;
                // Names are matched against the scene's URIs, never opened,
                // but a name that climbs or is absolute is refused all the
                // same: it can only be a mistake or a probe.
                if path.starts_with('/')
                    || path.contains('\\')
                    || path.contains(':')
                    || path.chars().any(char::is_control)
                    || path.split('/').any(|c| c == "..")
                {
                    return Err(ApiError::bad_request(format!(
                        "the resource name {path:?} must be a path relative to the scene, without `..`, `\\`, `:` \
                         or a leading `/`"
                    )));
                }
                if resources.len() == MAX_RESOURCES {
                    return Err(ApiError::bad_request(format!("at most {MAX_RESOURCES} resource parts")));
                }
                let bytes = field.bytes().await?;
                if resources.insert(path.clone(), bytes.to_vec()).is_some() {
                    return Err(ApiError::bad_request(format!("the resource {path:?} appears twice")));
                }
            }
            "scene" | "settings" => return Err(ApiError::bad_request(format!("the part {name:?} appears twice"))),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown part {other:?}: the form has a `scene` file, optional `resource` files and optional \
                     `settings` JSON"
                )))
            }
        }
    }
    let scene = scene.ok_or_else(|| ApiError::bad_request("the form needs a `scene` part with the scene file"))?;
    check_gltf(&scene)?;
    let file_name = file_name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| "scene.glb".into());
    // A GLB normally embeds everything: it goes to the sandbox as it came.
    let scene = if scene.starts_with(b"glTF") && resources.is_empty() {
        scene.to_vec()
    } else {
        let (name, max) = (file_name.clone(), state.max_upload as u64);
        tokio::task::spawn_blocking(move || {
            tessera_client::pack::pack_scene_bytes(&name, scene.to_vec(), resources, max)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::unprocessable(e.to_string()))?
    };
    Ok(SceneForm { scene, file_name, settings: settings.unwrap_or_default() })
}

/// A quick look before the sandbox: GLB magic, or a JSON object.
fn check_gltf(scene: &[u8]) -> Result<(), ApiError> {
    if scene.is_empty() {
        return Err(ApiError::unprocessable("the scene part is empty"));
    }
    let first = scene.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let utf8_bom = scene.starts_with(&[0xEF, 0xBB, 0xBF]);
    if scene.starts_with(b"glTF") || first == Some(b'{') || utf8_bom {
        Ok(())
    } else {
        Err(ApiError::unprocessable("the scene is not glTF: neither a GLB (\"glTF\" magic) nor glTF JSON"))
    }
}

/// The multipart form of `POST /api/v1/scenes/inspect` (for the OpenAPI document).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct InspectForm {
    /// The scene: `.glb` or `.gltf`.
    #[schema(value_type = String, format = Binary)]
    scene: Vec<u8>,
    /// Files the `.gltf` references, each named by its path relative to it.
    #[schema(value_type = Vec<String>, format = Binary)]
    resource: Vec<Vec<u8>>,
    /// JSON, as for a submission (`camera` and `fps` affect what is read).
    settings: Option<SubmitSettings>,
}

/// Reads a scene as a submission would, without submitting it: its frame
/// range, resolution and cameras, and the defaults a job would get. A bad
/// scene is the same 422 a submission gets.
#[utoipa::path(post, path = "/scenes/inspect", tag = "jobs",
    request_body(content = InspectForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, body = SceneSummary),
        (status = 400, description = "malformed form", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 413, description = "upload over the limit", body = ErrorBody),
        (status = 415, description = "not multipart/form-data", body = ErrorBody),
        (status = 422, description = "not a usable scene", body = ErrorBody),
    ),
    security(("bearer" = ["submit"])))]
pub async fn inspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<SceneSummary>, ApiError> {
    require(&state, &headers, Scope::Submit).await?;
    let form = read_form(&state, &headers, multipart).await?;
    let request = super::submission::request_from(&form.settings, &form.file_name)?;
    let module = module(&state)?;
    let bytes = form.scene.len() as u64;
    let inspection =
        state.farm.inspect_scene_with_warnings(form.scene, module.to_vec(), request.fps, request.extra.clone()).await?;
    let (info, warnings) = (inspection.info, inspection.warnings);
    let (width, height) = job::resolve_size(None, None, &info);
    let defaults = JobRequest::new("");
    let bounces = serde_json::from_str::<serde_json::Value>(&request.extra)
        .ok()
        .and_then(|v| v["max_bounces"].as_u64())
        .unwrap_or(8) as u32;
    Ok(Json(SceneSummary {
        name: request.name,
        bytes,
        frame_start: info.frame_start,
        frame_end: info.frame_end,
        width,
        height,
        cameras: info.cameras,
        warnings,
        defaults: SceneDefaults {
            spp: defaults.spp,
            fps: defaults.fps,
            bounces,
            view_transform: defaults.view,
            view_transforms: ViewTransform::ALL.iter().map(|v| v.name().to_string()).collect(),
            exposure: defaults.exposure,
            formats: defaults.formats.iter().map(|f| f.ext().to_string()).collect(),
            priority: defaults.priority,
            denoise: defaults.denoise,
        },
    }))
}

/// The job module submissions use.
pub fn module(state: &AppState) -> Result<std::sync::Arc<Vec<u8>>, ApiError> {
    state.default_module.clone().ok_or_else(|| ApiError::unprocessable("this coordinator has no built-in job module"))
}
