use serde::{Deserialize, Serialize};

/// A rectangle of pixels in a frame, in pixel units, origin at the top left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// Number of pixels, computed in `u64` so that no rectangle can overflow it.
    pub fn pixel_count(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    /// Splits a `width` × `height` frame into tiles of at most `tile` × `tile`
    /// pixels, in row-major order. The order is part of the contract: tile
    /// indices are stable for a given frame size and tile size.
    pub fn tiles(width: u32, height: u32, tile: u32) -> Vec<Rect> {
        let tile = tile.max(1);
        let mut out = Vec::new();
        let mut y = 0;
        while y < height {
            let h = tile.min(height - y);
            let mut x = 0;
            while x < width {
                let w = tile.min(width - x);
                out.push(Rect { x, y, width: w, height: h });
                x += w;
            }
            y += h;
        }
        out
    }
}

/// Samples `start .. start + count` of every pixel in a tile. Sample indices
/// are global to the pixel, so two ranges of the same pixel are independent
/// and their accumulators add up to the render of the union.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SampleRange {
    pub start: u32,
    pub count: u32,
}

impl SampleRange {
    /// Whether sample index `s` starts a *sample block*: 1, 4, 16, 64, …
    /// (the powers of 4). A guest sums each pixel's samples block by block
    /// and adds the block sums in order (the path tracer's `TileSums`), so
    /// ranges cut at block starts, added in order, equal the whole range
    /// bit for bit: progressive jobs' passes rely on it. The guest SDK's
    /// `starts_sample_block` is the same rule.
    pub fn starts_block(s: u32) -> bool {
        s.is_power_of_two() && s.trailing_zeros() % 2 == 0
    }

    /// `0..spp` cut at every block start: a progressive job's passes, of
    /// 1, 3, 12, 48, 192, … samples (each pass brings the total to the
    /// next power of 4, the last one to `spp`).
    pub fn passes(spp: u32) -> Vec<SampleRange> {
        let mut passes = Vec::new();
        let mut start = 0u32;
        while start < spp {
            let mut end = if start == 0 { 1 } else { start.saturating_mul(4) };
            end = end.min(spp);
            passes.push(SampleRange { start, count: end - start });
            start = end;
        }
        passes
    }
}

/// A tile's per-pixel float accumulators, as a guest returned them.
///
/// `color` holds RGB sums (3 floats per pixel, row-major), `weight` the filter
/// weight sum per pixel (the sample count for a box filter). A pixel's value is
/// `color / weight`. AOV planes (albedo, normal, ...) ride along by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TileAccumulators {
    pub rect: Rect,
    pub color: Vec<f32>,
    pub weight: Vec<f32>,
    /// Named extra planes in the order the guest returned them.
    pub aovs: Vec<AovPlane>,
}

/// An extra output plane (arbitrary output variable), e.g. albedo or normal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AovPlane {
    pub name: String,
    pub channels: u8,
    pub data: Vec<f32>,
}

/// A tile whose planes do not have the lengths its rectangle implies.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TileShapeError {
    #[error("{plane} has {got} floats, expected {expected} for a {width}x{height} tile")]
    Length { plane: String, got: usize, expected: u64, width: u32, height: u32 },
    #[error("AOV {name:?} has {channels} channels; 1 to 4 are allowed")]
    Channels { name: String, channels: u8 },
}

impl TileAccumulators {
    /// Checks that every plane has exactly the length the rectangle implies.
    pub fn check_shape(&self) -> Result<(), TileShapeError> {
        let px = self.rect.pixel_count();
        let check = |plane: &str, got: usize, per_px: u64| {
            if got as u64 != px * per_px {
                return Err(TileShapeError::Length {
                    plane: plane.to_string(),
                    got,
                    expected: px * per_px,
                    width: self.rect.width,
                    height: self.rect.height,
                });
            }
            Ok(())
        };
        check("color", self.color.len(), 3)?;
        check("weight", self.weight.len(), 1)?;
        for aov in &self.aovs {
            if !(1..=4).contains(&aov.channels) {
                return Err(TileShapeError::Channels { name: aov.name.clone(), channels: aov.channels });
            }
            check(&format!("AOV {:?}", aov.name), aov.data.len(), u64::from(aov.channels))?;
        }
        Ok(())
    }

    /// Replaces every NaN in every plane by the canonical quiet NaN and returns
    /// how many there were. Only NaN bit patterns differ between hosts
    /// (DESIGN.md invariant 2), so after this the bytes are host-independent.
    pub fn canonicalize_nans(&mut self) -> usize {
        let mut n = canonicalize_nans(&mut self.color) + canonicalize_nans(&mut self.weight);
        for aov in &mut self.aovs {
            n += canonicalize_nans(&mut aov.data);
        }
        n
    }

    /// The canonical byte form hashed into a proof-of-render: the rectangle,
    /// then each plane as little-endian `f32`, AOVs in order with their names.
    /// Call [`Self::canonicalize_nans`] first.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let floats = self.color.len() + self.weight.len() + self.aovs.iter().map(|a| a.data.len()).sum::<usize>();
        let mut out = Vec::with_capacity(16 + 4 * floats + 16 * self.aovs.len());
        for v in [self.rect.x, self.rect.y, self.rect.width, self.rect.height] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let mut plane = |data: &[f32]| {
            out.extend_from_slice(&(data.len() as u64).to_le_bytes());
            for f in data {
                out.extend_from_slice(&f.to_le_bytes());
            }
        };
        plane(&self.color);
        plane(&self.weight);
        for aov in &self.aovs {
            out.extend_from_slice(&(aov.name.len() as u32).to_le_bytes());
            out.extend_from_slice(aov.name.as_bytes());
            out.push(aov.channels);
            out.extend_from_slice(&(aov.data.len() as u64).to_le_bytes());
            for f in &aov.data {
                out.extend_from_slice(&f.to_le_bytes());
            }
        }
        out
    }

    /// The resolved pixel value `color / weight`, or black where no weight landed.
    pub fn pixel(&self, i: usize) -> [f32; 3] {
        resolve(&self.color, &self.weight, i)
    }
}

/// Replaces each NaN in `data` by `f32::NAN` (quiet, positive, zero payload);
/// returns how many it replaced.
pub fn canonicalize_nans(data: &mut [f32]) -> usize {
    let mut n = 0;
    for f in data.iter_mut().filter(|f| f.is_nan()) {
        *f = f32::from_bits(0x7fc0_0000);
        n += 1;
    }
    n
}

/// Pixel `i` of row-major RGB sums and weights resolved: `color / weight`,
/// or black where no weight landed. What a tile's and a frame's pixels
/// are, so the EXR and the manifests' pixel hashes agree.
pub fn resolve(color: &[f32], weight: &[f32], i: usize) -> [f32; 3] {
    let w = weight[i];
    if w > 0.0 {
        [color[3 * i] / w, color[3 * i + 1] / w, color[3 * i + 2] / w]
    } else {
        [0.0; 3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_cut_at_powers_of_four_and_cover_every_sample() {
        let r = |start, count| SampleRange { start, count };
        assert_eq!(SampleRange::passes(1), vec![r(0, 1)]);
        assert_eq!(SampleRange::passes(16), vec![r(0, 1), r(1, 3), r(4, 12)]);
        assert_eq!(SampleRange::passes(100), vec![r(0, 1), r(1, 3), r(4, 12), r(16, 48), r(64, 36)]);
        assert!(SampleRange::passes(0).is_empty());
        for spp in [1, 2, 5, 64, 1000, 1 << 20] {
            let passes = SampleRange::passes(spp);
            assert_eq!(passes.iter().map(|p| p.count).sum::<u32>(), spp);
            for p in &passes[1..] {
                assert!(SampleRange::starts_block(p.start), "{p:?}");
            }
        }
        let starts: Vec<u32> = (0..300).filter(|s| SampleRange::starts_block(*s)).collect();
        assert_eq!(starts, vec![1, 4, 16, 64, 256]);
    }

    #[test]
    fn tiles_cover_the_frame_exactly_once() {
        let tiles = Rect::tiles(100, 37, 16);
        let covered: u64 = tiles.iter().map(Rect::pixel_count).sum();
        assert_eq!(covered, 100 * 37);
        assert_eq!(tiles.len(), 7 * 3);
        assert_eq!(tiles.last().unwrap(), &Rect { x: 96, y: 32, width: 4, height: 5 });
        assert!(Rect::tiles(0, 10, 16).is_empty());
    }

    #[test]
    fn nans_become_canonical_bytes() {
        let rect = Rect { x: 0, y: 0, width: 1, height: 1 };
        let mut a = TileAccumulators {
            rect,
            color: vec![f32::from_bits(0x7fc0_0001), 1.0, -f32::NAN],
            weight: vec![1.0],
            aovs: vec![],
        };
        let mut b = a.clone();
        b.color[0] = f32::from_bits(0xffc0_1234);
        assert_ne!(a.canonical_bytes(), b.canonical_bytes());
        assert_eq!(a.canonicalize_nans(), 2);
        assert_eq!(b.canonicalize_nans(), 2);
        assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    }

    #[test]
    fn shape_is_checked() {
        let rect = Rect { x: 0, y: 0, width: 2, height: 2 };
        let mut t = TileAccumulators { rect, color: vec![0.0; 12], weight: vec![0.0; 4], aovs: vec![] };
        assert!(t.check_shape().is_ok());
        t.weight.push(1.0);
        assert!(matches!(t.check_shape(), Err(TileShapeError::Length { got: 5, expected: 4, .. })));
        t.weight.pop();
        t.aovs.push(AovPlane { name: "n".into(), channels: 9, data: vec![] });
        assert!(matches!(t.check_shape(), Err(TileShapeError::Channels { .. })));
    }
}
