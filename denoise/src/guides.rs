//! Input preparation and the guide-based edge-stopping weights.
//!
//! The radiance is *demodulated*: each channel is divided by the pixel's
//! first-hit albedo, so the filter smooths lighting and the texture is put
//! back untouched afterwards. Normals and the demodulation factors stop
//! the filter at geometry and material edges.

use crate::math::{exp_neg, powi};
use crate::{Frame, Settings};

/// Albedos below this are raised to it before dividing, so black texels,
/// emitters (whose base colour is usually black) and alpha-cut pixels do
/// not blow the demodulated signal up. Pixels under the floor all share
/// it, so they still filter with each other and not with lit surfaces
/// (the albedo weight compares the raised factors).
pub const ALBEDO_FLOOR: f32 = 0.01;

/// Radiance whose magnitude is above this is treated as missing, like NaN:
/// no renderer produces it on purpose, and its square would overflow the
/// variance estimate.
pub const MAX_RADIANCE: f32 = 1e15;

/// Per-pixel guides, validated and normalised once.
pub(crate) struct Guides {
    pub width: usize,
    pub height: usize,
    /// Demodulation factor per channel: `max(albedo, ALBEDO_FLOOR)`, or 1
    /// without an albedo plane.
    pub factor: Vec<[f32; 3]>,
    has_albedo: bool,
    /// Unit first-hit normals; zero where a pixel saw no surface (or the
    /// normal was not finite). `None` without a normal plane.
    normal: Option<Vec<[f32; 3]>>,
    normal_exponent: u32,
    inv_sigma_albedo: f32,
}

impl Guides {
    /// Builds the guides. The caller has checked the planes' lengths.
    pub fn new(frame: &Frame<'_>, settings: &Settings) -> Guides {
        let n = frame.width * frame.height;
        let factor = match frame.albedo {
            Some(a) => (0..n)
                .map(|i| {
                    let f = |c: f32| if c >= ALBEDO_FLOOR && c.is_finite() { c } else { ALBEDO_FLOOR };
                    [f(a[3 * i]), f(a[3 * i + 1]), f(a[3 * i + 2])]
                })
                .collect(),
            None => vec![[1.0; 3]; n],
        };
        let normal = frame.normal.map(|nrm| {
            (0..n)
                .map(|i| {
                    let v = [nrm[3 * i], nrm[3 * i + 1], nrm[3 * i + 2]];
                    let len2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
                    // An averaged normal is shorter than 1 where the
                    // samples disagree; its direction is what matters. Too
                    // short (background, or cancelling) counts as none.
                    if len2.is_finite() && len2 > 1e-12 {
                        let inv = 1.0 / len2.sqrt();
                        [v[0] * inv, v[1] * inv, v[2] * inv]
                    } else {
                        [0.0; 3]
                    }
                })
                .collect()
        });
        Guides {
            width: frame.width,
            height: frame.height,
            factor,
            has_albedo: frame.albedo.is_some(),
            normal,
            normal_exponent: settings.normal_exponent,
            inv_sigma_albedo: 1.0 / settings.sigma_albedo,
        }
    }

    /// `max(0, n_p · n_q)^exponent` (SVGF's normal weight); 1 between two
    /// pixels without a surface, 0 between a surface and no surface.
    #[inline]
    pub fn normal_weight(&self, p: usize, q: usize) -> f32 {
        let Some(n) = &self.normal else { return 1.0 };
        let (a, b) = (n[p], n[q]);
        let a_none = a == [0.0; 3];
        let b_none = b == [0.0; 3];
        if a_none || b_none {
            return if a_none == b_none { 1.0 } else { 0.0 };
        }
        let d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
        if d > 0.0 {
            powi(d.min(1.0), self.normal_exponent)
        } else {
            0.0
        }
    }

    /// The albedo term of the exponent: the relative L1 distance of the
    /// demodulation factors (0 for equal, towards 1 for very different)
    /// over `sigma_albedo`, squared (a Gaussian, as Dammertz et al. use for
    /// their guides): differences well inside `sigma_albedo` (texture
    /// grain, noise in the averaged albedo) barely count, larger ones cut
    /// the tap off entirely, which matters next to emitters, whose
    /// demodulated values are a hundred times their neighbours'. Relative,
    /// so a dark texture's edges stop the filter as well as a bright one's.
    #[inline]
    pub fn albedo_term(&self, p: usize, q: usize) -> f32 {
        if !self.has_albedo {
            return 0.0;
        }
        let (a, b) = (self.factor[p], self.factor[q]);
        let diff = (a[0] - b[0]).abs() + (a[1] - b[1]).abs() + (a[2] - b[2]).abs();
        let sum = (a[0] + b[0]) + (a[1] + b[1]) + (a[2] + b[2]);
        let d = diff / sum * self.inv_sigma_albedo;
        d * d
    }

    /// The weight from guides alone (no luminance): used where a pixel's
    /// own value is missing or not yet estimated.
    #[inline]
    pub fn geometric_weight(&self, p: usize, q: usize) -> f32 {
        let wn = self.normal_weight(p, q);
        if wn == 0.0 {
            return 0.0;
        }
        wn * exp_neg(self.albedo_term(p, q))
    }
}

/// The demodulated radiance (`colour / factor`) and which pixels have a
/// usable value. Negative values are clamped to 0 (radiance is not
/// negative; this also turns `-0` into `+0`); NaN, infinite and absurdly
/// large values make the pixel missing.
pub(crate) fn demodulate(color: &[f32], guides: &Guides) -> (Vec<[f32; 3]>, Vec<bool>) {
    let n = guides.factor.len();
    let mut irr = vec![[0.0f32; 3]; n];
    let mut valid = vec![false; n];
    for i in 0..n {
        let c = [color[3 * i], color[3 * i + 1], color[3 * i + 2]];
        if c.iter().all(|v| v.is_finite() && v.abs() <= MAX_RADIANCE) {
            let f = guides.factor[i];
            irr[i] = [clamp0(c[0]) / f[0], clamp0(c[1]) / f[1], clamp0(c[2]) / f[2]];
            valid[i] = true;
        }
    }
    (irr, valid)
}

/// `v` if positive, else `+0`.
#[inline]
pub(crate) fn clamp0(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}
