//! The denoiser's worth, in time (issue 17): on the sample scenes rendered
//! natively by the path tracer, the error against a high-spp reference of
//! raw and denoised frames at rising sample counts, the time each took, the
//! time raw rendering needs to reach the denoised 16-spp frame's error, and
//! the denoiser's own time per megapixel.
//!
//! relMSE = mean over pixels and channels of (x − ref)² / (ref² + 0.01), as
//! `denoise/tests/quality.rs` measures it; the reference has another seed,
//! so its own noise is independent of the renders'. Renders use every core
//! (rows split between threads; pixels are pure, so the split changes no
//! pixel); the denoiser is the coordinator's, single-threaded.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use pathtracer::PathTracer;
use tessera_denoise::{denoise, Frame, Settings};
use tessera_guest_sdk::{AovSet, Job, JobSettings, Rect, SampleRange, TileRequest};

use crate::{median_per_iter, Effort, Row};

/// A render's per-pixel means (3 floats each) and how long it took.
struct Render {
    color: Vec<f32>,
    albedo: Vec<f32>,
    normal: Vec<f32>,
    time: Duration,
}

fn render(bytes: &[u8], frame: i32, (w, h): (u32, u32), spp: u32, seed: u64) -> Result<Render> {
    let settings = JobSettings { width: w, height: h, fps: 24.0, extra: r#"{"engine":"cpu"}"#.into() };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let rows_per = h.div_ceil(threads);
    let mut jobs = Vec::new();
    for _ in 0..threads {
        jobs.push(PathTracer::load(bytes, &settings).map_err(|e| anyhow!("{e:?}"))?.0);
    }
    let start = Instant::now();
    let parts: Vec<Result<tessera_guest_sdk::TileResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter_mut()
            .enumerate()
            .map(|(i, job)| {
                s.spawn(move || {
                    let y = i as u32 * rows_per;
                    let rect = Rect { x: 0, y, width: w, height: rows_per.min(h.saturating_sub(y)) };
                    if rect.height == 0 {
                        return Ok(tessera_guest_sdk::TileResult { color: vec![], weight: vec![], aovs: vec![] });
                    }
                    let req = TileRequest {
                        frame,
                        rect,
                        samples: SampleRange { start: 0, count: spp },
                        seed,
                        aovs: AovSet::ALBEDO | AovSet::NORMAL,
                    };
                    job.render_tile(&req).map_err(|e| anyhow!("{e:?}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("render thread panicked")))).collect()
    });
    let time = start.elapsed();
    let mut out = Render { color: Vec::new(), albedo: Vec::new(), normal: Vec::new(), time };
    for part in parts {
        let tile = part?;
        let mean = |sums: &[f32]| (0..sums.len()).map(|i| sums[i] / tile.weight[i / 3].max(1e-9)).collect::<Vec<_>>();
        let aov = |name: &str| {
            tile.aovs.iter().find(|a| a.name == name).map(|a| mean(&a.data)).ok_or_else(|| anyhow!("no {name} AOV"))
        };
        out.color.extend(mean(&tile.color));
        out.albedo.extend(aov("albedo")?);
        out.normal.extend(aov("normal")?);
    }
    Ok(out)
}

fn rel_mse(x: &[f32], reference: &[f32]) -> f64 {
    let sum: f64 = x
        .iter()
        .zip(reference)
        .map(|(a, r)| {
            let (a, r) = (f64::from(*a), f64::from(*r));
            (a - r) * (a - r) / (r * r + 0.01)
        })
        .sum();
    sum / x.len() as f64
}

fn denoised(r: &Render, (w, h): (u32, u32)) -> Result<(Vec<f32>, Duration)> {
    let frame = Frame {
        width: w as usize,
        height: h as usize,
        color: &r.color,
        albedo: Some(&r.albedo),
        normal: Some(&r.normal),
        variance: None,
    };
    let start = Instant::now();
    let out = denoise(&frame, &Settings::default()).map_err(|e| anyhow!("{e}"))?;
    Ok((out, start.elapsed()))
}

/// Where the log-log line through the measured (spp, relMSE) points
/// reaches `target`, in spp (extrapolated past the ends).
fn spp_for(points: &[(u32, f64)], target: f64) -> f64 {
    let seg = points.windows(2).find(|p| p[1].1 <= target).unwrap_or(&points[points.len() - 2..]);
    let ((s0, e0), (s1, e1)) = ((f64::from(seg[0].0).ln(), seg[0].1.ln()), (f64::from(seg[1].0).ln(), seg[1].1.ln()));
    let slope = (e1 - e0) / (s1 - s0);
    (s0 + (target.ln() - e0) / slope).exp()
}

pub fn run(effort: Effort) -> Result<Vec<Row>> {
    let (ref_spp, spps): (u32, &[u32]) = match effort {
        Effort::Quick => (16, &[1, 4]),
        Effort::Full => (1024, &[4, 16, 64, 256]),
    };
    let scenes_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples/scenes");
    let mut rows = Vec::new();
    for (name, frame, size) in [("cornell.gltf", 1, (192u32, 192u32)), ("turntable.glb", 12, (256, 144))] {
        let bytes = std::fs::read(scenes_dir.join(name))?;
        let reference = render(&bytes, frame, size, ref_spp, 99)?;
        let mut raw_points = Vec::new();
        let mut at16 = None;
        for &spp in spps {
            let r = render(&bytes, frame, size, spp, 1)?;
            let (d, dt) = denoised(&r, size)?;
            let (raw_e, den_e) = (rel_mse(&r.color, &reference.color), rel_mse(&d, &reference.color));
            raw_points.push((spp, raw_e));
            if spp == 16 || at16.is_none() {
                at16 = Some((spp, den_e, r.time + dt, r.time));
            }
            rows.push(Row {
                name: format!("denoise {name} {}×{}, {spp} spp", size.0, size.1),
                value: format!("relMSE raw {raw_e:.5}, denoised {den_e:.5}"),
                note: format!(
                    "render {:.2} s, denoise {:.3} s; reference {ref_spp} spp, other seed",
                    r.time.as_secs_f64(),
                    dt.as_secs_f64()
                ),
            });
        }
        if let Some((spp, den_e, den_time, render_time)) = at16 {
            let raw_spp = spp_for(&raw_points, den_e);
            let per_spp = render_time.as_secs_f64() / f64::from(spp);
            let raw_time = raw_spp * per_spp;
            rows.push(Row {
                name: format!("equal quality, {name}: raw spp to match denoised {spp} spp"),
                value: format!("{raw_spp:.0} spp, {:.1}× the time", raw_time / den_time.as_secs_f64()),
                note: format!(
                    "raw {raw_time:.2} s (log-log between measured points) vs render + denoise {:.2} s for relMSE \
                     {den_e:.5}",
                    den_time.as_secs_f64()
                ),
            });
        }
        drop(reference);
    }

    // Time per megapixel on a 1920×1080 frame (the 16-spp turntable render
    // repeated across it: the filter's cost depends on the pixel count).
    let bytes = std::fs::read(scenes_dir.join("turntable.glb"))?;
    let small = render(&bytes, 12, (256, 144), if effort == Effort::Quick { 1 } else { 16 }, 1)?;
    let (w, h) = (1920usize, 1080usize);
    let tile = |plane: &[f32]| {
        let mut out = Vec::with_capacity(3 * w * h);
        for y in 0..h {
            for x in 0..w {
                let p = 3 * ((y % 144) * 256 + x % 256);
                out.extend_from_slice(&plane[p..p + 3]);
            }
        }
        out
    };
    let (color, albedo, normal) = (tile(&small.color), tile(&small.albedo), tile(&small.normal));
    let frame =
        Frame { width: w, height: h, color: &color, albedo: Some(&albedo), normal: Some(&normal), variance: None };
    let rounds = if effort == Effort::Quick { 1 } else { 3 };
    let t = median_per_iter(rounds, 1, || {
        std::hint::black_box(denoise(&frame, &Settings::default()).expect("denoise"));
    });
    let mp = (w * h) as f64 / 1e6;
    rows.push(Row {
        name: format!(
            "denoiser time per megapixel (1920×1080, {} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
        ),
        value: format!("{:.3} s/MP", t.as_secs_f64() / mp),
        note: format!("{:.2} s for the frame, median of {rounds}; guided by albedo and normal", t.as_secs_f64()),
    });
    Ok(rows)
}
