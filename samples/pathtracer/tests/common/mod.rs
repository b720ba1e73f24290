//! Native rendering helpers for the path tracer's tests.

#![allow(dead_code)]

use pathtracer::PathTracer;
use tessera_guest_sdk::{AovSet, Job, JobError, JobSettings, Rect, SampleRange, TileRequest, TileResult};

pub fn scene_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenes").join(name)
}

pub fn scene(name: &str) -> Vec<u8> {
    std::fs::read(scene_path(name)).unwrap()
}

pub fn settings(w: u32, h: u32, extra: &str) -> JobSettings {
    JobSettings { width: w, height: h, fps: 24.0, extra: extra.into() }
}

pub fn load(bytes: &[u8], w: u32, h: u32, extra: &str) -> Result<PathTracer, JobError> {
    PathTracer::load(bytes, &settings(w, h, extra)).map(|(j, _)| j)
}

pub fn tile(job: &mut PathTracer, frame: i32, rect: Rect, spp: u32) -> TileResult {
    let req =
        TileRequest { frame, rect, samples: SampleRange { start: 0, count: spp }, seed: 7, aovs: AovSet::empty() };
    job.render_tile(&req).unwrap()
}

/// Mean pixel value (colour / weight) over a tile.
pub fn mean(t: &TileResult) -> [f32; 3] {
    let n = t.weight.len();
    let mut m = [0.0f64; 3];
    for i in 0..n {
        for c in 0..3 {
            m[c] += f64::from(t.color[3 * i + c] / t.weight[i]);
        }
    }
    m.map(|v| (v / n as f64) as f32)
}

/// Writes a tile as an 8-bit sRGB PNG (for looking at test renders).
pub fn save_png(t: &TileResult, w: u32, h: u32, path: &std::path::Path) {
    let mut px = Vec::with_capacity((w * h * 3) as usize);
    for i in 0..(w * h) as usize {
        for c in 0..3 {
            let v = (t.color[3 * i + c] / t.weight[i]).clamp(0.0, 1.0);
            let s = if v <= 0.0031308 { 12.92 * v } else { 1.055 * v.powf(1.0 / 2.4) - 0.055 };
            px.push((s * 255.0 + 0.5) as u8);
        }
    }
    image::save_buffer(path, &px, w, h, image::ExtendedColorType::Rgb8).unwrap();
}
