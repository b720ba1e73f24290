//! Tiles in, frames out: sums tile accumulators into a frame buffer and
//! writes images ([`output`]: view transforms, PNG and EXR).
//!
//! **Invariant:** accumulators are added in the order tiles are inserted for
//! a pixel; each pixel belongs to exactly one tile per sample range, so a
//! frame's bytes do not depend on which tile arrived first.

mod denoised;
pub mod output;
pub mod view;

pub use denoised::{DenoiseError, ALGORITHM as DENOISER};
pub use output::{write_atomically, ReadError, WriteError, GUIDE_CHANNELS};
pub use view::{OutputOptions, ParseViewTransformError, ViewTransform};

/// Frames may have 1 to this many pixels: a frame buffer holds 16 bytes a
/// pixel, and a typo should not allocate tens of gigabytes.
pub const MAX_PIXELS: u64 = 100_000_000;

use tessera_protocol::TileAccumulators;

/// A frame's accumulators: RGB sums and weights per pixel, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameBuffer {
    pub width: u32,
    pub height: u32,
    pub color: Vec<f32>,
    pub weight: Vec<f32>,
    /// The denoiser's guides, when the frame was rendered with them.
    pub guides: Option<Guides>,
}

/// The denoiser's guides: sums of the first hit's albedo and normal per
/// pixel (the guest's `albedo` and `normal` AOVs, 3 floats a pixel),
/// summed with the same sample weights as `color`, so `sum / weight` is
/// their mean.
#[derive(Clone, Debug, PartialEq)]
pub struct Guides {
    pub albedo: Vec<f32>,
    pub normal: Vec<f32>,
}

/// A tile that does not fit the frame it is added to.
#[derive(Debug, thiserror::Error)]
#[error("tile {x},{y} {width}x{height} does not fit a {frame_width}x{frame_height} frame")]
pub struct TileOutsideFrame {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
    pub frame_width: u32,
    pub frame_height: u32,
}

impl FrameBuffer {
    pub fn new(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        FrameBuffer { width, height, color: vec![0.0; 3 * n], weight: vec![0.0; n], guides: None }
    }

    /// A frame that also sums the denoiser's guides from its tiles' AOVs.
    pub fn with_guides(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        let guides = Guides { albedo: vec![0.0; 3 * n], normal: vec![0.0; 3 * n] };
        FrameBuffer { guides: Some(guides), ..FrameBuffer::new(width, height) }
    }

    /// Adds a tile's accumulators to the frame.
    pub fn add_tile(&mut self, tile: &TileAccumulators) -> Result<(), TileOutsideFrame> {
        let r = tile.rect;
        if r.x.checked_add(r.width).is_none_or(|e| e > self.width)
            || r.y.checked_add(r.height).is_none_or(|e| e > self.height)
        {
            return Err(TileOutsideFrame {
                x: r.x,
                y: r.y,
                width: r.width,
                height: r.height,
                frame_width: self.width,
                frame_height: self.height,
            });
        }
        for row in 0..r.height as usize {
            let dst = (r.y as usize + row) * self.width as usize + r.x as usize;
            let src = row * r.width as usize;
            let w = r.width as usize;
            for (d, s) in self.weight[dst..dst + w].iter_mut().zip(&tile.weight[src..src + w]) {
                *d += s;
            }
            for (d, s) in self.color[3 * dst..3 * (dst + w)].iter_mut().zip(&tile.color[3 * src..3 * (src + w)]) {
                *d += s;
            }
            if let Some(g) = &mut self.guides {
                // A tile without a guide plane leaves it zero there, which
                // the denoiser reads as "no guide".
                for aov in tile.aovs.iter().filter(|a| a.channels == 3) {
                    let plane = match aov.name.as_str() {
                        "albedo" => &mut g.albedo,
                        "normal" => &mut g.normal,
                        _ => continue,
                    };
                    let Some(from) = aov.data.get(3 * src..3 * (src + w)) else { continue };
                    for (d, s) in plane[3 * dst..3 * (dst + w)].iter_mut().zip(from) {
                        *d += s;
                    }
                }
            }
        }
        Ok(())
    }

    /// Linear RGB of pixel `i` (`color / weight`, black where nothing landed).
    /// The pixels of `r` (inside the frame), row by row.
    pub fn region(&self, r: tessera_protocol::Rect) -> Vec<[f32; 3]> {
        let mut out = Vec::with_capacity(r.width as usize * r.height as usize);
        for y in r.y..r.y + r.height {
            for x in r.x..r.x + r.width {
                out.push(self.pixel(y as usize * self.width as usize + x as usize));
            }
        }
        out
    }

    /// Pixel `i` (row-major) resolved: `color / weight`, black where no
    /// weight landed.
    pub fn pixel(&self, i: usize) -> [f32; 3] {
        tessera_protocol::resolve(&self.color, &self.weight, i)
    }

    /// 8-bit sRGB, clipped: the Standard view transform at 0 EV
    /// (see [`FrameBuffer::to_display8`] for the others).
    pub fn to_srgb8(&self) -> Vec<u8> {
        self.to_display8(&OutputOptions::default())
    }
}

/// The sRGB transfer function, clipped to [0, 1]; NaN maps to 0.
pub fn linear_to_srgb(c: f32) -> f32 {
    let c = if c.is_nan() { 0.0 } else { c.clamp(0.0, 1.0) };
    if c <= 0.003_130_8 {
        12.92 * c
    } else {
        1.055 * c.powf(1.0 / 2.4) - 0.055
    }
}

/// A frame of the given linear pixels (weight 2, so `pixel()` really divides).
#[cfg(test)]
pub(crate) fn test_frame(w: u32, h: u32, pixels: &[[f32; 3]]) -> FrameBuffer {
    let mut f = FrameBuffer::new(w, h);
    for (i, p) in pixels.iter().enumerate() {
        // Weight 2 so that pixel() really divides.
        f.color[3 * i..3 * i + 3].copy_from_slice(&p.map(|c| 2.0 * c));
        f.weight[i] = 2.0;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_protocol::Rect;

    #[test]
    fn tiles_land_where_their_rect_says() {
        let mut f = FrameBuffer::new(4, 2);
        let t = TileAccumulators {
            rect: Rect { x: 2, y: 1, width: 2, height: 1 },
            color: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            weight: vec![1.0, 2.0],
            aovs: vec![],
        };
        f.add_tile(&t).unwrap();
        assert_eq!(f.pixel(6), [1.0, 2.0, 3.0]);
        assert_eq!(f.pixel(7), [2.0, 2.5, 3.0]);
        assert_eq!(f.pixel(0), [0.0; 3]);
        let mut bad = t.clone();
        bad.rect.x = 3;
        assert!(f.add_tile(&bad).is_err());
    }

    #[test]
    fn srgb_curve() {
        assert_eq!(linear_to_srgb(0.0), 0.0);
        assert!((linear_to_srgb(1.0) - 1.0).abs() < 1e-6);
        assert!((linear_to_srgb(0.18) - 0.4613).abs() < 1e-3);
        assert_eq!(linear_to_srgb(f32::NAN), 0.0);
    }
}
