//! Tessera's path tracer: a render job for glTF 2.0 scenes as Blender
//! exports them.
//!
//! - `scene/`: glTF → render-ready scene (`gltf_load`), textures, animation.
//! - `frame`: the world at one instant (poses, deformed meshes, the
//!   instance BVH, lights); built by `prepare-frame`.
//! - `bvh`: binned-SAH BVH, deterministic.
//! - `camera`, `shade`, `bsdf`, `integrator`: from a pixel sample to radiance.
//! - `gpu`: the same algorithm in WGSL, run through the worker's GPU
//!   (setting `engine`); the CPU sums its per-sample results.
//!
//! **Pixels are pure** (DESIGN.md invariant 1): every sample draws from a
//! `Sampler` addressed by (seed, frame, x, y, sample index); the film
//! position is importance-sampled from the pixel filter and lands in its
//! own pixel only; samples are summed in index order. So a tile equals the
//! same region of a full-frame render bit for bit, and any pixel can be
//! re-rendered alone.
//!
//! The crate builds natively too (tests, benchmarks) — the same code the
//! farm runs as wasm.

pub mod bsdf;
pub mod bvh;
pub mod camera;
pub mod frame;
pub mod gpu;
pub mod integrator;
pub mod sampler;
pub mod scene;
pub mod settings;
pub mod shade;
pub mod texturing;

use std::sync::{Arc, OnceLock};

use glam::Vec2;
use tessera_guest_sdk::{export_job, AovPlane, Job, JobError, JobSettings, SceneInfo, TileRequest, TileResult};

use crate::camera::FilterTable;
use crate::frame::{Blas, CameraChoice, Frame};
use crate::integrator::PathResult;
use crate::sampler::Sampler;
use crate::scene::gltf_load::{self, LoadError};
use crate::scene::Scene;
use crate::settings::{Engine, Settings};

/// The sRGB → linear table shared by every texture lookup.
pub fn srgb_lut() -> &'static [f32; 256] {
    static LUT: OnceLock<[f32; 256]> = OnceLock::new();
    LUT.get_or_init(scene::texture::srgb_lut)
}

/// Width of the Blackman-Harris pixel filter, in pixels (Cycles' default).
pub const FILTER_WIDTH: f32 = 1.5;

pub struct PathTracer {
    scene: Scene,
    settings: Settings,
    width: u32,
    height: u32,
    fps: f64,
    static_blas: Vec<Arc<Blas>>,
    filter: FilterTable,
    frame: Option<(i32, Frame)>,
    /// The GPU engine's buffers, kept per prepared frame.
    gpu: gpu::GpuEngine,
}

/// A tile's sums: colour and weight in the `TileResult`, the AOVs beside
/// it. Both engines feed it each pixel's samples in index order, through
/// the same `add`, so they sum the same way.
///
/// Samples are summed per *sample block* (`starts_sample_block`: blocks
/// start at 1, 4, 16, …) and each block's sum is then added to the
/// pixel's total, in order. So a tile of samples 0..16 equals, bit for bit,
/// the tiles 0..1, 1..4 and 4..16 added in that order: a progressive
/// job's passes add up to the frame a single pass renders. A range within
/// one block sums exactly as a plain running sum would.
pub(crate) struct TileSums {
    out: Sums,
    /// The current block's sums, per pixel.
    part: Sums,
}

/// Per-pixel sums of one kind: the result (colour, weight) and the AOVs.
struct Sums {
    result: TileResult,
    albedo: Vec<f32>,
    normal: Vec<f32>,
    depth: Vec<f32>,
}

impl Sums {
    fn new(req: &TileRequest) -> Sums {
        let result = TileResult::for_request(req);
        let n = result.weight.len();
        let want = |aov| if req.aovs.contains(aov) { 1 } else { 0 };
        Sums {
            result,
            albedo: vec![0.0f32; 3 * n * want(tessera_guest_sdk::AovSet::ALBEDO)],
            normal: vec![0.0f32; 3 * n * want(tessera_guest_sdk::AovSet::NORMAL)],
            depth: vec![0.0f32; n * want(tessera_guest_sdk::AovSet::DEPTH)],
        }
    }
}

/// `into[k] += from[k]; from[k] = 0` over `range`.
fn drain(into: &mut [f32], from: &mut [f32], range: std::ops::Range<usize>) {
    for (d, s) in into[range.clone()].iter_mut().zip(&mut from[range]) {
        *d += *s;
        *s = 0.0;
    }
}

impl TileSums {
    pub(crate) fn new(req: &TileRequest) -> TileSums {
        TileSums { out: Sums::new(req), part: Sums::new(req) }
    }

    /// Adds sample `s` (its global index) of pixel `i` (row-major within
    /// the tile). Each pixel's samples must come in index order.
    #[inline]
    pub(crate) fn add(&mut self, i: usize, s: u32, p: &PathResult) {
        if tessera_guest_sdk::starts_sample_block(s) {
            self.end_block(i);
        }
        // A NaN or infinite sample would poison the pixel: drop it
        // (its weight too, so the pixel stays an average).
        if !p.radiance.is_finite() {
            return;
        }
        let part = &mut self.part;
        part.result.add_sample(i, p.radiance.to_array(), 1.0);
        if !part.albedo.is_empty() {
            for c in 0..3 {
                part.albedo[3 * i + c] += p.albedo[c];
            }
        }
        if !part.normal.is_empty() {
            for c in 0..3 {
                part.normal[3 * i + c] += p.normal[c];
            }
        }
        if !part.depth.is_empty() && p.depth.is_finite() {
            part.depth[i] += p.depth;
        }
    }

    /// Adds pixel `i`'s block sums to its totals and starts a new block.
    fn end_block(&mut self, i: usize) {
        let (out, part) = (&mut self.out, &mut self.part);
        drain(&mut out.result.color, &mut part.result.color, 3 * i..3 * i + 3);
        drain(&mut out.result.weight, &mut part.result.weight, i..i + 1);
        if !out.albedo.is_empty() {
            drain(&mut out.albedo, &mut part.albedo, 3 * i..3 * i + 3);
        }
        if !out.normal.is_empty() {
            drain(&mut out.normal, &mut part.normal, 3 * i..3 * i + 3);
        }
        if !out.depth.is_empty() {
            drain(&mut out.depth, &mut part.depth, i..i + 1);
        }
    }

    /// Sets pixel `i`'s totals (`out`) and current block's sums (`part`):
    /// what [`Self::add`] would hold after that pixel's samples, summed
    /// elsewhere in the same order (the GPU engine sums on the device).
    /// Each is colour (3), weight, albedo (3), normal (3), depth; AOVs not
    /// asked for are ignored.
    pub(crate) fn set_pixel(&mut self, i: usize, out: &[f32], part: &[f32]) {
        for (sums, v) in [(&mut self.out, out), (&mut self.part, part)] {
            sums.result.color[3 * i..3 * i + 3].copy_from_slice(&v[0..3]);
            sums.result.weight[i] = v[3];
            if !sums.albedo.is_empty() {
                sums.albedo[3 * i..3 * i + 3].copy_from_slice(&v[4..7]);
            }
            if !sums.normal.is_empty() {
                sums.normal[3 * i..3 * i + 3].copy_from_slice(&v[7..10]);
            }
            if !sums.depth.is_empty() {
                sums.depth[i] = v[10];
            }
        }
    }

    pub(crate) fn wants_aovs(&self) -> bool {
        let o = &self.out;
        !(o.albedo.is_empty() && o.normal.is_empty() && o.depth.is_empty())
    }

    pub(crate) fn finish(mut self) -> TileResult {
        for i in 0..self.out.result.weight.len() {
            self.end_block(i);
        }
        let Sums { mut result, albedo, normal, depth } = self.out;
        for (name, channels, data) in [("albedo", 3u8, albedo), ("normal", 3, normal), ("depth", 1, depth)] {
            if !data.is_empty() {
                result.aovs.push(AovPlane { name: name.into(), channels, data });
            }
        }
        result
    }
}

impl PathTracer {
    /// The time a frame number stands for: `frame / fps`, as Blender's glTF
    /// exporter writes keyframe times.
    pub fn frame_time(&self, frame: i32) -> f32 {
        (f64::from(frame) / self.fps) as f32
    }

    pub fn scene(&self) -> &Scene {
        &self.scene
    }

    /// The prepared frame, if any.
    pub fn frame(&self) -> Option<&Frame> {
        self.frame.as_ref().map(|(_, f)| f)
    }
}

impl Job for PathTracer {
    fn load(bytes: &[u8], settings: &JobSettings) -> Result<(Self, SceneInfo), JobError> {
        let parsed = Settings::parse(&settings.extra).map_err(JobError::InvalidSettings)?;
        if settings.width == 0 || settings.height == 0 || settings.width > 65536 || settings.height > 65536 {
            return Err(JobError::InvalidSettings(format!(
                "resolution {}x{} is out of range (1 to 65536 on each side)",
                settings.width, settings.height
            )));
        }
        if !(settings.fps.is_finite() && settings.fps > 0.0 && settings.fps <= 1000.0) {
            return Err(JobError::InvalidSettings(format!("fps must be in (0, 1000], got {}", settings.fps)));
        }
        let mut scene = gltf_load::load(bytes, parsed.scene.as_deref()).map_err(|e| match e {
            LoadError::Invalid(m) => JobError::InvalidScene(m),
            LoadError::Unsupported(m) => JobError::Unsupported(m),
        })?;
        scene.shading = parsed.shading.resolve(scene.shading);
        // Cycles renders and lights both sides of every face of a Blender
        // scene: Backface Culling, which the exporter writes as
        // `doubleSided: false`, is a viewport setting it ignores (a
        // one-sided light quad under a ceiling left the Cornell box 9 %
        // darker than Cycles'). `shading: "gltf"` keeps glTF's culling.
        if parsed.shading != settings::Shading::Gltf && scene::ShadingModel::is_blender(scene.generator.as_deref()) {
            for m in &mut scene.materials {
                m.double_sided = true;
            }
        }
        let cameras: Vec<String> = scene.camera_nodes().into_iter().map(|(_, n)| n).collect();
        if let Some(name) = &parsed.camera {
            if !cameras.contains(name) {
                return Err(JobError::InvalidSettings(format!(
                    "no camera named {name:?} (the scene has: {})",
                    if cameras.is_empty() { "none".to_string() } else { cameras.join(", ") }
                )));
            }
        }
        let static_blas = scene.meshes.iter().map(|m| Arc::new(Blas::build(&m.positions, &m.indices))).collect();

        let (t0, t1) = scene.time_range();
        let fps = settings.fps;
        let (frame_start, frame_end) =
            if t1 > t0 { ((f64::from(t0) * fps).round() as i32, (f64::from(t1) * fps).round() as i32) } else { (1, 1) };
        let aspect = scene
            .camera_nodes()
            .first()
            .and_then(|&(n, _)| scene.cameras[scene.nodes[n].camera?].aspect)
            .filter(|a| a.is_finite() && *a > 0.0);
        let (width, height) = match aspect {
            Some(a) => (1920, ((1920.0 / a).round() as u32).max(1)),
            None => (0, 0),
        };
        let info = SceneInfo { frame_start, frame_end, width, height, cameras };

        let job = PathTracer {
            scene,
            settings: parsed,
            width: settings.width,
            height: settings.height,
            fps,
            static_blas,
            filter: FilterTable::blackman_harris(FILTER_WIDTH),
            frame: None,
            gpu: gpu::GpuEngine::default(),
        };
        Ok((job, info))
    }

    fn prepare_frame(&mut self, frame: i32) -> Result<(), JobError> {
        let choice = match &self.settings.camera {
            Some(name) => CameraChoice::Named(name.clone()),
            None => CameraChoice::Active,
        };
        let built = Frame::build(&self.scene, &self.static_blas, self.frame_time(frame), &choice)
            .map_err(JobError::InvalidSettings)?;
        self.frame = Some((frame, built));
        // The GPU copy of another frame is stale: free it now.
        self.gpu.forget_unless(frame);
        Ok(())
    }

    fn render_tile(&mut self, req: &TileRequest) -> Result<TileResult, JobError> {
        if self.frame.as_ref().map(|(f, _)| *f) != Some(req.frame) {
            self.prepare_frame(req.frame)?;
        }
        let Some((_, frame)) = &self.frame else { return Err(JobError::NotLoaded) };
        let r = req.rect;
        if r.x.checked_add(r.width).is_none_or(|e| e > self.width)
            || r.y.checked_add(r.height).is_none_or(|e| e > self.height)
        {
            return Err(JobError::InvalidSettings(format!(
                "tile {}x{} at {},{} is outside the {}x{} frame",
                r.width, r.height, r.x, r.y, self.width, self.height
            )));
        }
        // Asked per tile: the host may withhold its GPU from single tiles
        // (a CPU-only re-render for verification), which `auto` follows.
        let has_gpu = self.settings.engine != Engine::Cpu && tessera_guest_sdk::gpu::adapter().is_some();
        let use_gpu = match self.settings.engine {
            Engine::Cpu => false,
            Engine::Auto => has_gpu,
            Engine::Gpu if !has_gpu => {
                return Err(JobError::Unsupported(
                    "this job asks for the GPU engine and the worker offers no GPU (run the worker with --gpu, \
                     or set \"engine\": \"auto\" or \"cpu\")"
                        .into(),
                ))
            }
            Engine::Gpu => true,
        };
        let mut sums = TileSums::new(req);
        if use_gpu {
            let ctx = gpu::Context {
                scene: &self.scene,
                frame,
                settings: &self.settings,
                filter: &self.filter,
                width: self.width,
                height: self.height,
            };
            self.gpu.render(&ctx, req, &mut sums)?;
            return Ok(sums.finish());
        }
        for row in 0..r.height {
            for col in 0..r.width {
                let (x, y) = (r.x + col, r.y + row);
                let i = (row * r.width + col) as usize;
                for s in req.samples.start..req.samples.start.saturating_add(req.samples.count) {
                    let mut rng = Sampler::new(req.seed, req.frame, x, y, s);
                    let (fx, fy) = rng.next_2d();
                    let film =
                        Vec2::new(x as f32 + 0.5 + self.filter.sample(fx), y as f32 + 0.5 + self.filter.sample(fy));
                    let ray = frame.camera.ray(film, self.width, self.height);
                    let p = integrator::trace(&self.scene, frame, &self.settings, ray, &mut rng);
                    sums.add(i, s, &p);
                }
            }
        }
        Ok(sums.finish())
    }
}

export_job!(PathTracer);
