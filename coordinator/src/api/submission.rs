//! A submission's settings turned into a job request, every value checked:
//! what `POST /jobs` submits and `POST /scenes/inspect` previews. What the
//! scene decides (size, frames) is resolved later from the scene itself.

use super::error::ApiError;
use super::model::{FrameSelection, SubmitSettings};
use crate::farm::job::{Format, MAX_FRAMES};
use crate::farm::JobRequest;
use tessera_frame::ViewTransform;

/// Longest job name kept.
const MAX_NAME: usize = 200;

/// Turns submitted settings into a request, checking every value; what the
/// scene decides (size, frames) is resolved later from the scene itself.
pub fn request_from(s: &SubmitSettings, default_name: &str) -> Result<JobRequest, ApiError> {
    let bad = |m: String| Err(ApiError::unprocessable(m));
    let name = s.name.as_deref().unwrap_or(default_name);
    let name: String = name.chars().filter(|c| !c.is_control()).take(MAX_NAME).collect();
    if name.trim().is_empty() {
        return bad("name must not be empty".into());
    }
    let mut r = JobRequest::new(name);
    r.frames = match &s.frames {
        None => None,
        Some(FrameSelection::Text(t)) => {
            Some(tessera_client::frames::parse_frames(t).map_err(|e| ApiError::unprocessable(format!("frames: {e}")))?)
        }
        Some(FrameSelection::List(list)) => {
            let mut sorted = list.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != list.len() {
                return bad("frames: the list repeats a frame".into());
            }
            if list.is_empty() || list.len() > MAX_FRAMES {
                return bad(format!("frames: a job has 1 to {MAX_FRAMES} frames"));
            }
            Some(list.clone())
        }
    };
    for (key, v, max) in [("width", s.width, 65_536), ("height", s.height, 65_536)] {
        if let Some(v) = v {
            if v == 0 || v > max {
                return bad(format!("{key} must be 1 to {max}, not {v}"));
            }
        }
    }
    r.width = s.width;
    r.height = s.height;
    if let Some(spp) = s.spp {
        if spp == 0 || spp > 1 << 20 {
            return bad(format!("spp must be 1 to {}, not {spp}", 1 << 20));
        }
        r.spp = spp;
    }
    if let Some(t) = s.tile_size {
        if !(1..=4096).contains(&t) {
            return bad(format!("tile_size must be 1 to 4096 pixels, not {t}"));
        }
        r.tile_size = Some(t);
    }
    if let Some(ms) = s.target_tile_ms {
        if !(10..=600_000).contains(&ms) {
            return bad(format!("target_tile_ms must be 10 to 600000, not {ms}"));
        }
        r.target_tile_ms = ms;
    }
    r.seed = s.seed.unwrap_or(0);
    if let Some(fps) = s.fps {
        if !(fps.is_finite() && fps > 0.0 && fps <= 1000.0) {
            return bad(format!("fps must be above 0 and at most 1000, not {fps}"));
        }
        r.fps = fps;
    }
    if let Some(v) = &s.view_transform {
        let view: ViewTransform = v.parse().map_err(|e| ApiError::unprocessable(format!("view_transform: {e}")))?;
        r.view = view.name().into();
    }
    if let Some(e) = s.exposure {
        if !(e.is_finite() && e.abs() <= 32.0) {
            return bad(format!("exposure must be -32 to 32 stops, not {e}"));
        }
        r.exposure = e;
    }
    if let Some(formats) = &s.formats {
        let mut parsed = Vec::new();
        for f in formats {
            let f =
                Format::parse(f).ok_or_else(|| ApiError::unprocessable(format!("formats: {f:?} is not png or exr")))?;
            if !parsed.contains(&f) {
                parsed.push(f);
            }
        }
        if parsed.is_empty() {
            return bad("formats must name at least one of png, exr".into());
        }
        parsed.sort();
        r.formats = parsed;
    }
    r.priority = s.priority.unwrap_or(0);
    if let Some(engine) = &s.engine {
        r.engine = engine.parse().map_err(ApiError::unprocessable)?;
    }
    r.denoise = s.denoise.unwrap_or(false);
    r.progressive = s.progressive.unwrap_or(false);
    r.extra = guest_settings(s)?;
    Ok(r)
}

/// The path tracer's own settings (JSON), with `tessera render`'s defaults.
fn guest_settings(s: &SubmitSettings) -> Result<String, ApiError> {
    let bounces = s.bounces.unwrap_or(8);
    if bounces > 1024 {
        return Err(ApiError::unprocessable(format!("bounces must be at most 1024, not {bounces}")));
    }
    let strength = s.background_strength.unwrap_or(1.0);
    if !(strength.is_finite() && (0.0..=1e6).contains(&strength)) {
        return Err(ApiError::unprocessable(format!("background_strength must be 0 to 1e6, not {strength}")));
    }
    let mut extra = serde_json::json!({ "max_bounces": bounces, "background_strength": strength });
    if let Some(c) = &s.camera {
        if c.is_empty() || c.len() > 1024 {
            return Err(ApiError::unprocessable("camera must be a camera node's name"));
        }
        extra["camera"] = c.clone().into();
    }
    if let Some(bg) = s.background {
        if bg.iter().any(|c| !(c.is_finite() && (0.0..=1e6).contains(c))) {
            return Err(ApiError::unprocessable("background must be three linear values from 0 to 1e6"));
        }
        extra["background"] = serde_json::json!(bg);
    }
    if let Some(shading) = &s.shading {
        if !tessera_client::model::SHADING.contains(&shading.as_str()) {
            return Err(ApiError::unprocessable(format!(
                "shading must be one of {}, not {shading:?}",
                tessera_client::model::SHADING.join(", ")
            )));
        }
        // "auto" is what the guest does unasked: leaving it out keeps the
        // job's settings, and so its content address, the same either way.
        if shading != "auto" {
            extra["shading"] = shading.clone().into();
        }
    }
    Ok(extra.to_string())
}
