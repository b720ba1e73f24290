//! A farm job: what was asked for (kept in the store as JSON), and the plan
//! that numbers its tiles across frames.

use serde::{Deserialize, Serialize};
use tessera_protocol::wire::{Engine, JobDescriptor};
use tessera_protocol::{ContentHash, Rect, SampleRange};
use tessera_worker::sandbox::{FuelBudget, SceneInfo};

use tessera_frame::{OutputOptions, ViewTransform};

/// Everything that decides a job's pixels and files. Stored as JSON in the
/// job's row, so a restarted coordinator plans the job exactly as before.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// The guest module (a wasm component), by hash; its bytes are a blob.
    pub module: String,
    /// The packed scene, by hash; its bytes are a blob.
    pub scene: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// The guest's own settings (JSON), e.g. bounces and background.
    pub extra: String,
    pub spp: u32,
    pub seed: u64,
    /// Tile edge in pixels (see [`tile_size_for`]).
    pub tile_size: u32,
    pub frames: Vec<i32>,
    pub priority: i32,
    /// PNG view transform name and exposure (EXR is always linear).
    pub view: String,
    pub exposure: f32,
    pub fuel_per_tile: u64,
    pub fuel_per_pixel_sample: u64,
    /// The files each frame gets (`png`, `exr`); jobs stored before this
    /// field existed get both.
    #[serde(default = "Format::all")]
    pub formats: Vec<Format>,
    /// The label of the API token that submitted the job, if any: shown in
    /// job lists; not part of what workers are sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
    /// Where tiles may render (`cpu`, the default, for jobs stored before
    /// GPUs; `gpu`; `auto`). GPU tiles are verified within a tolerance and
    /// replicated within their GPU class (`tessera_protocol::gpu_check`).
    #[serde(default)]
    pub engine: Engine,
    /// Ship each frame denoised too (`NAME-0001.denoised.png`/`.exr`
    /// beside the raw files): workers send the denoiser's guides (albedo
    /// and normal AOVs) with every tile, and the frame writer runs
    /// `tessera-denoise`, which is deterministic, so anyone can re-derive
    /// the denoised frame from the raw EXR. Off for jobs stored before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub denoise: bool,
    /// Render in sample passes (`SampleRange::passes`: 1, 3, 12, 48, …
    /// samples, each bringing the frame to the next power of 4): every
    /// frame's first pass is dispatched before any second pass, and each
    /// completed pass of a frame gives a preview of the whole frame. The
    /// final frame equals a plain render's bit for bit. Off for jobs
    /// stored before it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub progressive: bool,
}

/// A frame file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// 8-bit sRGB after the view transform and exposure.
    Png,
    /// Linear 32-bit float, no view transform.
    Exr,
}

impl Format {
    pub fn all() -> Vec<Format> {
        vec![Format::Png, Format::Exr]
    }

    /// The file extension, also the API's name for it.
    pub fn ext(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Exr => "exr",
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "png" => Some(Format::Png),
            "exr" => Some(Format::Exr),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Png => "image/png",
            Format::Exr => "image/x-exr",
        }
    }
}

/// The path tracer's settings as `tessera render` sends them by default
/// (8 bounces, Blender's world strength): jobs submitted without settings
/// render the same pixels as a local check.
pub const RENDER_DEFAULTS: &str = r#"{"background_strength":1.0,"max_bounces":8}"#;

/// A spec that cannot be planned.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
}

pub use tessera_frame::MAX_PIXELS;
/// Most frames in one job.
pub const MAX_FRAMES: usize = 100_000;
/// Most tiles in one job (the scheduler numbers them with `u32`).
pub const MAX_TILES: u64 = 10_000_000;

impl JobSpec {
    /// Checks the spec and numbers its tiles.
    pub fn plan(&self) -> Result<JobPlan, SpecError> {
        let bad = |m: String| Err(SpecError::Invalid(m));
        if self.width == 0 || self.height == 0 || u64::from(self.width) * u64::from(self.height) > MAX_PIXELS {
            return bad(format!(
                "{}x{} is out of range: frames may have 1 to {MAX_PIXELS} pixels",
                self.width, self.height
            ));
        }
        if self.spp == 0 || self.tile_size == 0 {
            return bad("spp and tile size must be positive".into());
        }
        if self.frames.is_empty() || self.frames.len() > MAX_FRAMES {
            return bad(format!("a job has 1 to {MAX_FRAMES} frames, not {}", self.frames.len()));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return bad(format!("fps must be positive, not {}", self.fps));
        }
        for h in [&self.module, &self.scene] {
            h.parse::<ContentHash>().map_err(|e| SpecError::Invalid(format!("bad hash {h:?}: {e}")))?;
        }
        self.view.parse::<ViewTransform>().map_err(|e| SpecError::Invalid(e.to_string()))?;
        if self.formats.is_empty() {
            return bad("a job needs at least one output format (png, exr)".into());
        }
        // Counted before any rectangle is made: a tiny tile on a huge frame
        // must be refused, not allocated.
        let passes = if self.progressive {
            SampleRange::passes(self.spp)
        } else {
            vec![SampleRange { start: 0, count: self.spp }]
        };
        let per_frame = u64::from(self.width.div_ceil(self.tile_size))
            * u64::from(self.height.div_ceil(self.tile_size))
            * passes.len() as u64;
        if per_frame.saturating_mul(self.frames.len() as u64) > MAX_TILES {
            return bad(format!("{per_frame} tiles a frame × {} frames is over {MAX_TILES} tiles", self.frames.len()));
        }
        let rects = Rect::tiles(self.width, self.height, self.tile_size);
        Ok(JobPlan { rects, frames: self.frames.clone(), passes })
    }

    /// What workers are told about the job.
    pub fn descriptor(&self, job: u64) -> JobDescriptor {
        JobDescriptor {
            job,
            module: self.module.parse().unwrap_or(ContentHash([0; 32])),
            scene: self.scene.parse().unwrap_or(ContentHash([0; 32])),
            width: self.width,
            height: self.height,
            fps: self.fps,
            extra: self.extra.clone(),
            fuel_per_tile: self.fuel_per_tile,
            fuel_per_pixel_sample: self.fuel_per_pixel_sample,
            engine: self.engine,
            guides: self.denoise,
        }
    }

    pub fn output_options(&self) -> OutputOptions {
        OutputOptions { view: self.view.parse().unwrap_or_default(), exposure: self.exposure }
    }

    /// The job's default fuel budget (the sandbox's defaults).
    pub fn default_fuel() -> (u64, u64) {
        let f = FuelBudget::default();
        (f.per_tile, f.per_pixel_sample)
    }
}

/// A job's tiles, numbered pass by pass, then frame by frame, then
/// rectangle by rectangle: tile `i` is pass `i / (frames × rects)`, frame
/// `frames[i / rects % frames]`, rectangle `rects[i % rects]`. The
/// scheduler hands tiles out in index order, so every frame's first pass
/// goes out before any frame's second. A plain job has one pass of all
/// samples, so its tile `i` is frame `i / rects`, as before passes.
#[derive(Clone, Debug, PartialEq)]
pub struct JobPlan {
    pub rects: Vec<Rect>,
    pub frames: Vec<i32>,
    /// The sample passes, in order; they cover `0..spp`.
    pub passes: Vec<SampleRange>,
}

/// Where a tile lies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TilePlace {
    pub frame: i32,
    /// Position of the frame in the job's frame list.
    pub frame_slot: usize,
    pub rect: Rect,
    /// The rectangle's position in `JobPlan::rects`.
    pub rect_index: usize,
    /// Its pass, and the samples that pass renders.
    pub pass: usize,
    pub samples: SampleRange,
}

impl JobPlan {
    /// Tiles that make one frame: every rectangle in every pass.
    pub fn tiles_per_frame(&self) -> u32 {
        self.tiles_per_pass() * self.passes.len() as u32
    }

    /// Tiles of one pass of one frame: its rectangles.
    pub fn tiles_per_pass(&self) -> u32 {
        self.rects.len() as u32
    }

    pub fn total_tiles(&self) -> u32 {
        self.tiles_per_frame() * self.frames.len() as u32
    }

    pub fn place(&self, tile: u32) -> Option<TilePlace> {
        let per = self.rects.len();
        let per_pass = per * self.frames.len();
        if per_pass == 0 {
            return None;
        }
        let (pass, rest) = (tile as usize / per_pass, tile as usize % per_pass);
        let samples = *self.passes.get(pass)?;
        let slot = rest / per;
        let rect_index = rest % per;
        Some(TilePlace {
            frame: self.frames[slot],
            frame_slot: slot,
            rect: self.rects[rect_index],
            rect_index,
            pass,
            samples,
        })
    }

    /// The tile of `pass` of the frame at `frame_slot` whose rectangle is
    /// `rects[rect]`.
    pub fn tile_of(&self, pass: usize, frame_slot: usize, rect: usize) -> u32 {
        ((pass * self.frames.len() + frame_slot) * self.rects.len() + rect) as u32
    }

    /// The tiles of `pass` of the frame at `frame_slot`.
    pub fn pass_tiles(&self, pass: usize, frame_slot: usize) -> std::ops::Range<u32> {
        let first = self.tile_of(pass, frame_slot, 0);
        first..first + self.tiles_per_pass()
    }

    /// The tiles of the frame at `frame_slot`, all passes, by index.
    pub fn frame_tiles(&self, frame_slot: usize) -> impl Iterator<Item = u32> + '_ {
        (0..self.passes.len()).flat_map(move |p| self.pass_tiles(p, frame_slot))
    }

    /// The samples a frame has after `pass`: what its preview shows.
    pub fn samples_through(&self, pass: usize) -> u32 {
        self.passes.get(pass).map_or(0, |p| p.start + p.count)
    }

    pub fn is_progressive(&self) -> bool {
        self.passes.len() > 1
    }
}

/// Picks a tile edge so a tile takes about `target_ms` on one core at
/// `paths_per_sec` (the path tracer renders 0.4–0.5 M paths/s/core in wasm
/// on the sample scenes: BENCHMARKS.md), a multiple of 16 between 16 and
/// 256, and no larger than needed for every slot of a `slots`-slot farm to
/// get two tiles of each frame.
pub fn tile_size_for(width: u32, height: u32, spp: u32, target_ms: u64, paths_per_sec: f64, slots: u32) -> u32 {
    let pixels = paths_per_sec * target_ms as f64 / 1000.0 / f64::from(spp.max(1));
    let by_time = pixels.sqrt();
    let per_slot = (f64::from(width) * f64::from(height) / f64::from(2 * slots.max(1))).sqrt();
    let edge = by_time.min(per_slot).clamp(16.0, 256.0);
    ((edge / 16.0).round() as u32).max(1) * 16
}

/// Width and height from what was asked and what the scene's camera says:
/// one side given keeps the camera's aspect, none gives the camera's size
/// (or 1920×1080 without a camera).
pub fn resolve_size(width: Option<u32>, height: Option<u32>, info: &SceneInfo) -> (u32, u32) {
    match (width, height) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) if info.width > 0 => {
            (w, ((u64::from(w) * u64::from(info.height)) / u64::from(info.width)).max(1) as u32)
        }
        (None, Some(h)) if info.height > 0 => {
            (((u64::from(h) * u64::from(info.width)) / u64::from(info.height)).max(1) as u32, h)
        }
        (w, h) if info.width > 0 => (w.unwrap_or(info.width), h.unwrap_or(info.height)),
        (w, h) => (w.unwrap_or(1920), h.unwrap_or(1080)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_tile_count_is_refused_before_any_tile_is_made() {
        let spec = JobSpec {
            name: "big".into(),
            module: "0".repeat(64),
            scene: "0".repeat(64),
            width: 10_000,
            height: 10_000,
            fps: 24.0,
            extra: "{}".into(),
            spp: 1,
            seed: 0,
            tile_size: 1,
            frames: vec![1],
            priority: 0,
            view: "agx".into(),
            exposure: 0.0,
            fuel_per_tile: 1,
            fuel_per_pixel_sample: 1,
            formats: Format::all(),
            submitted_by: None,
            engine: Default::default(),
            denoise: false,
            progressive: false,
        };
        let err = spec.plan().unwrap_err().to_string();
        assert!(err.contains("100000000 tiles a frame"), "{err}");
        assert_eq!(JobSpec { tile_size: 64, ..spec.clone() }.plan().unwrap().total_tiles(), 157 * 157);

        // Progressive: pass-major numbering, every frame's first pass first.
        let p =
            JobSpec { width: 64, height: 32, tile_size: 32, spp: 20, frames: vec![5, 6], progressive: true, ..spec }
                .plan()
                .unwrap();
        assert_eq!(p.passes.len(), 4); // 1, 3, 12, 4 samples
        assert_eq!((p.tiles_per_pass(), p.tiles_per_frame(), p.total_tiles()), (2, 8, 16));
        let place = |t| p.place(t).map(|q| (q.frame, q.rect.x, q.pass, q.samples.start, q.samples.count));
        assert_eq!(place(0), Some((5, 0, 0, 0, 1)));
        assert_eq!(place(3), Some((6, 32, 0, 0, 1)));
        assert_eq!(place(4), Some((5, 0, 1, 1, 3)));
        assert_eq!(place(15), Some((6, 32, 3, 16, 4)));
        assert_eq!(place(16), None);
        assert_eq!(p.frame_tiles(1).collect::<Vec<_>>(), vec![2, 3, 6, 7, 10, 11, 14, 15]);
        assert_eq!(p.samples_through(1), 4);
        for t in 0..16 {
            let q = p.place(t).unwrap();
            let rect = p.rects.iter().position(|r| *r == q.rect).unwrap();
            assert_eq!(q.rect_index, rect);
            assert_eq!(p.tile_of(q.pass, q.frame_slot, rect), t);
        }
    }

    #[test]
    fn tile_size_follows_cost_and_farm() {
        // 64 spp at 0.45 Mpaths/s, 2 s a tile: ~118 px → 112.
        assert_eq!(tile_size_for(1920, 1080, 64, 2000, 450_000.0, 8), 112);
        // A small frame on a big farm: smaller tiles so every slot works.
        assert_eq!(tile_size_for(320, 180, 16, 2000, 450_000.0, 16), 48);
        assert_eq!(tile_size_for(10, 10, 1, 2000, 450_000.0, 1000), 16);
    }
}
