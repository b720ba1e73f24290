//! Textures: decoded once at load into 8-bit RGBA, sampled bilinearly with
//! glTF's wrap modes.

use glam::{Vec2, Vec4};

/// How texture coordinates outside [0, 1] are mapped back in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrap {
    Repeat,
    Clamp,
    Mirror,
}

/// A decoded image with its sampler settings.
#[derive(Debug)]
pub struct Texture {
    pub width: u32,
    pub height: u32,
    /// RGBA, 8 bits per channel, row-major from the top; shared by the
    /// textures that use the same image.
    pub texels: std::sync::Arc<Vec<[u8; 4]>>,
    pub wrap_s: Wrap,
    pub wrap_t: Wrap,
    /// `false` for a NEAREST magnification filter.
    pub linear: bool,
}

/// A material's use of a texture: which one, which UV set, and the
/// `KHR_texture_transform` on those coordinates (Blender's exporter writes
/// one for a Mapping node before the image).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextureRef {
    pub texture: usize,
    pub tex_coord: u32,
    pub transform: Option<UvTransform>,
}

/// An affine map of texture coordinates, `KHR_texture_transform`'s
/// `T · R · S`: `u' = m[0]·u + m[1]·v + m[2]`, `v' = m[3]·u + m[4]·v + m[5]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UvTransform(pub [f32; 6]);

impl UvTransform {
    /// From the extension's offset, rotation (radians, counter-clockwise
    /// in UV space) and scale.
    pub fn new(offset: [f32; 2], rotation: f32, scale: [f32; 2]) -> UvTransform {
        let (s, c) = rotation.sin_cos();
        UvTransform([c * scale[0], s * scale[1], offset[0], -s * scale[0], c * scale[1], offset[1]])
    }

    pub fn apply(&self, uv: glam::Vec2) -> glam::Vec2 {
        let m = &self.0;
        glam::Vec2::new(m[0] * uv.x + m[1] * uv.y + m[2], m[3] * uv.x + m[4] * uv.y + m[5])
    }
}

impl TextureRef {
    /// The coordinates to sample at for the mesh's `uv` of this
    /// reference's set.
    pub fn map(&self, uv: glam::Vec2) -> glam::Vec2 {
        match &self.transform {
            Some(t) => t.apply(uv),
            None => uv,
        }
    }
}

/// sRGB-encoded byte → linear float, exact for all 256 values.
pub fn srgb_to_linear(b: u8) -> f32 {
    srgb_decode(f32::from(b) / 255.0)
}

/// The sRGB transfer function's inverse, for an encoded value in [0, 1].
pub fn srgb_decode(c: f32) -> f32 {
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn wrap(i: i64, n: u32, mode: Wrap) -> u32 {
    let n = i64::from(n);
    let v = match mode {
        Wrap::Repeat => i.rem_euclid(n),
        Wrap::Clamp => i.clamp(0, n - 1),
        Wrap::Mirror => {
            let period = 2 * n;
            let m = i.rem_euclid(period);
            if m < n {
                m
            } else {
                period - 1 - m
            }
        }
    };
    v as u32
}

impl Texture {
    fn texel(&self, x: i64, y: i64, srgb: &[f32; 256], srgb_rgb: bool) -> Vec4 {
        let x = wrap(x, self.width, self.wrap_s);
        let y = wrap(y, self.height, self.wrap_t);
        let t = self.texels[(y * self.width + x) as usize];
        if srgb_rgb {
            Vec4::new(srgb[t[0] as usize], srgb[t[1] as usize], srgb[t[2] as usize], f32::from(t[3]) / 255.0)
        } else {
            Vec4::new(f32::from(t[0]), f32::from(t[1]), f32::from(t[2]), f32::from(t[3])) / 255.0
        }
    }

    /// Samples at `uv` (glTF: origin top left). With `srgb`, RGB is decoded
    /// from sRGB to linear before filtering (alpha is always linear).
    /// The texture at `uv`, bilinear unless nearest was asked for; `srgb`
    /// decodes the colour channels to linear. With `filter_encoded`, an
    /// sRGB texture is filtered on its encoded values and decoded after,
    /// as Cycles does with 8-bit sRGB images (it keeps them compressed and
    /// converts after interpolation); without, texels are decoded first.
    pub fn sample(&self, uv: Vec2, srgb: bool, filter_encoded: bool, lut: &[f32; 256]) -> Vec4 {
        if srgb && filter_encoded {
            let v = self.sample(uv, false, false, lut);
            return Vec4::new(srgb_decode(v.x), srgb_decode(v.y), srgb_decode(v.z), v.w);
        }
        if !uv.is_finite() {
            return self.texel(0, 0, lut, srgb);
        }
        let x = uv.x * self.width as f32 - 0.5;
        let y = uv.y * self.height as f32 - 0.5;
        if !self.linear {
            return self.texel((x + 0.5).floor() as i64, (y + 0.5).floor() as i64, lut, srgb);
        }
        let (x0, y0) = (x.floor(), y.floor());
        let (fx, fy) = (x - x0, y - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let a = self.texel(x0, y0, lut, srgb);
        let b = self.texel(x0 + 1, y0, lut, srgb);
        let c = self.texel(x0, y0 + 1, lut, srgb);
        let d = self.texel(x0 + 1, y0 + 1, lut, srgb);
        a.lerp(b, fx).lerp(c.lerp(d, fx), fy)
    }
}

/// The sRGB decode table, shared by all textures.
pub fn srgb_lut() -> [f32; 256] {
    let mut t = [0.0; 256];
    for (i, v) in t.iter_mut().enumerate() {
        *v = srgb_to_linear(i as u8);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tex(wrap_mode: Wrap) -> Texture {
        Texture {
            width: 2,
            height: 1,
            texels: std::sync::Arc::new(vec![[0, 0, 0, 255], [255, 255, 255, 255]]),
            wrap_s: wrap_mode,
            wrap_t: wrap_mode,
            linear: true,
        }
    }

    #[test]
    fn wrap_modes() {
        assert_eq!(wrap(-1, 4, Wrap::Repeat), 3);
        assert_eq!(wrap(5, 4, Wrap::Clamp), 3);
        assert_eq!(wrap(4, 4, Wrap::Mirror), 3);
        assert_eq!(wrap(-1, 4, Wrap::Mirror), 0);
        assert_eq!(wrap(8, 4, Wrap::Mirror), 0);
    }

    #[test]
    fn cycles_filters_srgb_textures_before_decoding() {
        let lut = srgb_lut();
        let t = tex(Wrap::Clamp);
        // Halfway between black and white: decoded first, the mean of 0
        // and 1; filtered encoded, sRGB 0.5 decoded (0.214).
        let mid = Vec2::new(0.5, 0.5);
        assert!((t.sample(mid, true, false, &lut).x - 0.5).abs() < 1e-6);
        assert!((t.sample(mid, true, true, &lut).x - srgb_decode(0.5)).abs() < 1e-6);
        assert!((srgb_decode(0.5) - 0.214).abs() < 1e-3);
        // Alpha is never decoded.
        assert_eq!(t.sample(mid, true, true, &lut).w, 1.0);
    }

    #[test]
    fn uv_transforms_scale_then_rotate_then_offset() {
        // KHR_texture_transform: T · R · S.
        let t = UvTransform::new([0.5, 0.25], 0.0, [2.0, 3.0]);
        assert_eq!(t.apply(Vec2::new(1.0, 1.0)), Vec2::new(2.5, 3.25));
        // A quarter turn counter-clockwise in UV space (the image turns
        // clockwise): u' = v, v' = −u.
        let r = UvTransform::new([0.0, 0.0], std::f32::consts::FRAC_PI_2, [1.0, 1.0]);
        let q = r.apply(Vec2::new(1.0, 0.0));
        assert!((q - Vec2::new(0.0, -1.0)).length() < 1e-6, "{q}");
        let q = r.apply(Vec2::new(0.0, 1.0));
        assert!((q - Vec2::new(1.0, 0.0)).length() < 1e-6, "{q}");
        // No transform: the coordinates pass through untouched.
        let plain = TextureRef { texture: 0, tex_coord: 0, transform: None };
        assert_eq!(plain.map(Vec2::new(0.3, 0.7)), Vec2::new(0.3, 0.7));
    }

    #[test]
    fn bilinear_between_texels() {
        let lut = srgb_lut();
        let t = tex(Wrap::Clamp);
        assert_eq!(t.sample(Vec2::new(0.25, 0.5), false, false, &lut).x, 0.0);
        assert_eq!(t.sample(Vec2::new(0.75, 0.5), false, false, &lut).x, 1.0);
        assert!((t.sample(Vec2::new(0.5, 0.5), false, false, &lut).x - 0.5).abs() < 1e-6);
        // Repeat wraps the right edge onto the left texel.
        assert!((tex(Wrap::Repeat).sample(Vec2::new(1.0, 0.5), false, false, &lut).x - 0.5).abs() < 1e-6);
        assert!((srgb_to_linear(188) - 0.5029).abs() < 1e-3);
    }
}
