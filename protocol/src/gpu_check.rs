//! Checking GPU tiles, which cannot be checked bit for bit.
//!
//! A GPU renders the same sample streams as the CPU path (the path tracer
//! draws every sample from (seed, frame, pixel, sample index) on both), but
//! its floating point rounds differently: fused multiply-adds, its own
//! `sqrt`, `sin`, `pow`. Most samples land within a few ulps of the CPU's;
//! now and then a ray grazing an edge takes another branch, and that one
//! sample differs wholly. So a GPU tile is judged in two ways:
//!
//! - **Statistically, against the CPU** (here): the coordinator re-renders
//!   the spot-check pixels on its CPU, as for any tile, and compares each
//!   pixel's mean colour within a tolerance ([`GpuTolerance`]): relative,
//!   plus an absolute floor calibrated per scene from the brightness of the
//!   scene's own re-rendered pixels ([`SceneScale`]). A few pixels may
//!   differ beyond it (diverged samples); more than the allowed share
//!   fails the check. A statistical check never counts against a worker
//!   on its own: a tile that fails it goes to a second worker of the same
//!   GPU class.
//! - **By replication within a GPU class**: on one class (vendor, device,
//!   driver) results are deterministic, so two workers of one class must
//!   agree bit for bit, and a disagreement there is a fact, not a
//!   statistic. Then the CPU render settles who is outside the tolerance,
//!   and that worker gets a failed check.
//!
//! GPU work earns its own trust (`gpu_trust`): a worker's bit-exact CPU
//! record says nothing about its GPU results. Credit is the same for both:
//! the CPU-equivalent fuel of the work, from the coordinator's re-render.

use crate::TileAccumulators;

/// The GPU a tile was rendered on. A GPU's results are deterministic on
/// one class (vendor, device and driver) but not across classes, so GPU
/// tiles are replicated and compared by hash only within their class.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct GpuClass {
    /// PCI vendor and device ids.
    pub vendor: u32,
    pub device: u32,
    /// Driver name and version, as the driver reports them.
    pub driver: String,
    /// The adapter's name, for people.
    pub name: String,
}

/// Longest `driver` or `name` in a [`GpuClass`].
pub const MAX_GPU_CLASS_TEXT: usize = 256;

impl GpuClass {
    /// Whether the class is small enough to keep and show.
    pub fn check(&self) -> Result<(), String> {
        if self.driver.len() > MAX_GPU_CLASS_TEXT || self.name.len() > MAX_GPU_CLASS_TEXT {
            return Err(format!("a GPU description over {MAX_GPU_CLASS_TEXT} bytes"));
        }
        Ok(())
    }
}

impl std::fmt::Display for GpuClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:04x}:{:04x}", self.name, self.vendor, self.device)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        f.write_str(")")
    }
}

/// How far a GPU pixel may be from the CPU's.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GpuTolerance {
    /// Relative error allowed per channel of a pixel's mean colour.
    pub relative: f32,
    /// Absolute error allowed, as a fraction of the scene's scale.
    pub absolute: f32,
    /// Share of checked pixels that may be outside the tolerance (samples
    /// that took another branch on the GPU).
    pub outliers: f64,
}

impl Default for GpuTolerance {
    /// Measured with the path tracer on lavapipe against the CPU path
    /// (worker/tests/all/gpu_pathtracer.rs prints the statistics), with
    /// margin.
    fn default() -> Self {
        GpuTolerance { relative: 2e-3, absolute: 2e-3, outliers: 0.25 }
    }
}

/// A scene's brightness, measured from the CPU re-renders of its spot
/// checks: the absolute floor of the tolerance scales with it, so a dim
/// interior and a sunlit exterior are judged alike.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SceneScale {
    sum: f64,
    count: u64,
}

impl SceneScale {
    /// Adds a CPU-rendered pixel's mean colour.
    pub fn add(&mut self, rgb: [f32; 3]) {
        let v = rgb.iter().copied().filter(|c| c.is_finite()).fold(0.0f32, f32::max);
        self.sum += f64::from(v);
        self.count += 1;
    }

    /// Mean of the brightest channel over the pixels seen; 1 before any.
    pub fn value(&self) -> f32 {
        if self.count == 0 || self.sum <= 0.0 {
            return 1.0;
        }
        (self.sum / self.count as f64) as f32
    }
}

/// What comparing a GPU tile's checked pixels with the CPU found.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GpuComparison {
    /// Pixels compared.
    pub pixels: u32,
    /// Pixels outside the tolerance.
    pub outliers: u32,
    /// Most outliers allowed for this many pixels.
    pub allowed: u32,
    /// The largest error relative to the allowed error, over all pixels
    /// (1 is at the edge of the tolerance).
    pub worst: f32,
    /// The pixel where it was (frame coordinates).
    pub worst_at: Option<(u32, u32)>,
}

impl GpuComparison {
    pub fn within(&self) -> bool {
        self.outliers <= self.allowed
    }
}

/// A pixel's mean colour and weight, if the tile has the pixel.
fn mean(acc: &TileAccumulators, x: u32, y: u32) -> Option<([f32; 3], f32)> {
    let (c, w) = acc.pixel_at(x, y)?;
    Some(if w > 0.0 { ([c[0] / w, c[1] / w, c[2] / w], w) } else { ([0.0; 3], w) })
}

/// Compares `got` (a GPU tile) with CPU renders at the given pixels: each
/// `(x, y, cpu)` names a pixel and a CPU tile that holds it (a 1×1 tile
/// from a spot check, or a whole tile). `scale` is the scene's
/// [`SceneScale::value`].
pub fn compare<'a>(
    checked: impl IntoIterator<Item = (u32, u32, &'a TileAccumulators)>,
    got: &TileAccumulators,
    tolerance: GpuTolerance,
    scale: f32,
) -> GpuComparison {
    let floor = tolerance.absolute * scale.max(1e-6);
    let mut out = GpuComparison::default();
    for (x, y, cpu) in checked {
        let error = pixel_error(cpu, got, x, y, tolerance.relative, floor);
        out.pixels += 1;
        if error > 1.0 {
            out.outliers += 1;
        }
        if out.worst_at.is_none() || error > out.worst {
            out.worst = error;
            out.worst_at = Some((x, y));
        }
    }
    out.allowed = (tolerance.outliers * f64::from(out.pixels)).floor() as u32;
    out
}

/// Compares a GPU tile with the coordinator's CPU render of the whole
/// tile, the scale taken from that render.
pub fn compare_tiles(cpu: &TileAccumulators, gpu: &TileAccumulators, tolerance: GpuTolerance) -> GpuComparison {
    let r = cpu.rect;
    let pixels: Vec<(u32, u32)> =
        (r.y..r.y + r.height).flat_map(|y| (r.x..r.x + r.width).map(move |x| (x, y))).collect();
    let mut scale = SceneScale::default();
    for &(x, y) in &pixels {
        if let Some((m, _)) = mean(cpu, x, y) {
            scale.add(m);
        }
    }
    compare(pixels.iter().map(|&(x, y)| (x, y, cpu)), gpu, tolerance, scale.value())
}

/// [`pixel_error`] for two final pixel colours (a frame's EXR and a
/// re-render, as `tessera verify --recheck` has them).
pub fn colour_error(cpu: [f32; 3], gpu: [f32; 3], tolerance: GpuTolerance, scale: f32) -> f32 {
    let floor = tolerance.absolute * scale.max(1e-6);
    channel_error(cpu, gpu, tolerance.relative, floor)
}

fn channel_error(cpu: [f32; 3], gpu: [f32; 3], relative: f32, floor: f32) -> f32 {
    cpu.iter()
        .zip(gpu.iter())
        .map(|(a, b)| {
            let err = (a - b).abs() / (relative * a.abs().max(b.abs()) + floor);
            if err.is_nan() {
                f32::INFINITY
            } else {
                err
            }
        })
        .fold(0.0f32, f32::max)
}

/// `|cpu − gpu|` over the allowed error, for the worst channel of the
/// pixel's mean colour; infinite when the pixel is missing or the weights
/// differ by more than one sample (a GPU that drops or adds samples is not
/// rendering the job's sample range).
fn pixel_error(cpu: &TileAccumulators, gpu: &TileAccumulators, x: u32, y: u32, relative: f32, floor: f32) -> f32 {
    match (mean(cpu, x, y), mean(gpu, x, y)) {
        (Some((e, ew)), Some((g, gw))) if (ew - gw).abs() <= 1.0 + 1e-3 * ew.abs() => {
            channel_error(e, g, relative, floor)
        }
        _ => f32::INFINITY,
    }
}

#[cfg(test)]
mod tests {
    use crate::Rect;

    use super::*;

    fn tile(rect: Rect, f: impl Fn(u32, u32) -> [f32; 3], spp: f32) -> TileAccumulators {
        let mut acc = TileAccumulators { rect, color: Vec::new(), weight: Vec::new(), aovs: Vec::new() };
        for y in rect.y..rect.y + rect.height {
            for x in rect.x..rect.x + rect.width {
                let c = f(x, y);
                acc.color.extend(c.map(|v| v * spp));
                acc.weight.push(spp);
            }
        }
        acc
    }

    const RECT: Rect = Rect { x: 8, y: 4, width: 16, height: 16 };

    fn shade(x: u32, y: u32) -> [f32; 3] {
        [0.2 + x as f32 * 0.01, 0.5, 0.05 + y as f32 * 0.02]
    }

    #[test]
    fn rounding_differences_pass_and_a_few_diverged_pixels_are_allowed() {
        let cpu = tile(RECT, shade, 16.0);
        // A few ulps everywhere, like another device's arithmetic.
        let gpu = tile(RECT, |x, y| shade(x, y).map(|v| v * (1.0 + 3e-6)), 16.0);
        let c = compare_tiles(&cpu, &gpu, GpuTolerance::default());
        assert_eq!((c.pixels, c.outliers), (256, 0));
        assert!(c.within() && c.worst < 0.1, "{c:?}");
        // One sample in sixteen took another branch in 10 % of the pixels.
        let diverged = tile(
            RECT,
            |x, y| {
                let s = shade(x, y);
                if (x + y * 16) % 10 == 0 {
                    s.map(|v| v + 1.0 / 16.0)
                } else {
                    s
                }
            },
            16.0,
        );
        let c = compare_tiles(&cpu, &diverged, GpuTolerance::default());
        assert!(c.outliers > 0 && c.within(), "{c:?}");
    }

    #[test]
    fn faked_or_lazy_tiles_fail() {
        let cpu = tile(RECT, shade, 16.0);
        // Rendered with another seed: close on average, wrong per pixel.
        let noisy =
            tile(RECT, |x, y| shade(x, y).map(|v| v * if (x * 7 + y * 3) % 2 == 0 { 1.05 } else { 0.95 }), 16.0);
        assert!(!compare_tiles(&cpu, &noisy, GpuTolerance::default()).within());
        // Half the samples, same means: the weights give it away.
        let lazy = tile(RECT, shade, 8.0);
        let c = compare_tiles(&cpu, &lazy, GpuTolerance::default());
        assert_eq!(c.outliers, c.pixels, "{c:?}");
        // A flat colour.
        let flat = tile(RECT, |_, _| [0.3, 0.5, 0.2], 16.0);
        assert!(!compare_tiles(&cpu, &flat, GpuTolerance::default()).within());
        // NaNs.
        let nan = tile(RECT, |_, _| [f32::NAN; 3], 16.0);
        assert!(!compare_tiles(&cpu, &nan, GpuTolerance::default()).within());
    }

    #[test]
    fn the_floor_scales_with_the_scene() {
        let mut s = SceneScale::default();
        assert_eq!(s.value(), 1.0);
        s.add([0.5, 2.0, 1.0]);
        s.add([0.0, 0.0, 0.0]);
        assert_eq!(s.value(), 1.0);
        s.add([f32::NAN, 4.0, 0.0]);
        assert_eq!(s.value(), 2.0);
        // A dark pixel off by 1e-4 in a dim scene is an outlier, in a bright one it is not.
        let cpu = tile(Rect { x: 0, y: 0, width: 1, height: 1 }, |_, _| [0.0, 0.0, 0.0], 4.0);
        let gpu = tile(Rect { x: 0, y: 0, width: 1, height: 1 }, |_, _| [1e-4, 0.0, 0.0], 4.0);
        let tol = GpuTolerance::default();
        assert_eq!(compare([(0, 0, &cpu)], &gpu, tol, 0.01).outliers, 1);
        assert_eq!(compare([(0, 0, &cpu)], &gpu, tol, 1.0).outliers, 0);
    }
}
