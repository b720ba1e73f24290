//! Firefly clamping and the per-pixel noise that drives the luminance
//! weights.
//!
//! **Variance.** The filter needs each pixel's noise: the variance of its
//! mean (demodulated) luminance. A renderer may supply it; Tessera's path
//! tracer does not yet, so by default it is estimated from the image. SVGF
//! without temporal history takes the plain spatial variance of a 7×7
//! window (Schied et al. 2017, §4.2), but that counts every edge and
//! gradient in the window as noise: next to a light source the "noise"
//! becomes the light's brightness and the filter smears the light into the
//! ceiling. So the estimate here is a robust one, after Donoho and
//! Johnstone's median-absolute-deviation estimator of wavelet noise:
//!
//! 1. Each pixel's high-pass residual is the smallest of its four second
//!    differences `|l_p − (l_a + l_b)/2|` (horizontal, vertical and both
//!    diagonal neighbour pairs). Noise shows in all four; an edge that is
//!    straight at the pixel's scale leaves the one along it small.
//! 2. The noise deviation is the median of those residuals over a
//!    `(2r+1)²` window (default 7×7), divided by 0.2753, the median of
//!    this residual for unit Gaussian noise (measured by simulation). The
//!    median ignores the minority of edge pixels in the window.
//! 3. The window counts only pixels of the same surface (guide weight at
//!    least ½) when they fill at least 2/5 of it, so a border of mixed
//!    pixels (a light's edge) gets its own, larger noise; where the pixel
//!    has fewer such neighbours (corners) the whole window is used, which
//!    keeps isolated pixels from reading as very noisy.
//!
//! **Fireflies.** A rare high-energy path makes one pixel far brighter
//! than everything around it, and the wavelet filter would spread it into
//! a blotch. Before filtering, a pixel's demodulated luminance is limited
//! to `k` times the brightest of its 3×3 neighbours on the same surface
//! (a despeckle: lines, edges and highlights wider than a pixel always have
//! a neighbour as bright, so only lone peaks are touched), scaling its RGB
//! together so the hue stays. This loses a firefly's energy (a slight
//! darkening) and flattens highlights one pixel wide; with
//! `Settings::firefly_k = None` nothing is clamped.

use crate::guides::Guides;
use crate::math::luminance;

/// The median of the residual above for Gaussian noise of unit deviation.
const RESIDUAL_MEDIAN: f32 = 0.2753;

/// Guide weight from which a neighbour counts as the same surface.
const SAME_SURFACE: f32 = 0.5;

/// Visits the in-bounds pixels within `radius` of `p` (the centre
/// included), in row-major order.
#[inline]
pub(crate) fn window(g: &Guides, p: usize, radius: isize, mut f: impl FnMut(usize)) {
    let (w, h) = (g.width as isize, g.height as isize);
    let (px, py) = ((p % g.width) as isize, (p / g.width) as isize);
    for y in (py - radius).max(0)..=(py + radius).min(h - 1) {
        for x in (px - radius).max(0)..=(px + radius).min(w - 1) {
            f((y * w + x) as usize);
        }
    }
}

/// Limits fireflies in place (see the module docs).
pub(crate) fn clamp_fireflies(g: &Guides, irr: &mut [[f32; 3]], valid: &[bool], k: f32) {
    let lum: Vec<f32> = irr.iter().map(|&c| luminance(c)).collect();
    for p in 0..irr.len() {
        if !valid[p] || lum[p] <= 0.0 {
            continue;
        }
        let (mut count, mut brightest) = (0usize, f32::NEG_INFINITY);
        window(g, p, 1, |q| {
            if q != p && valid[q] && g.geometric_weight(p, q) >= SAME_SURFACE {
                count += 1;
                if lum[q] > brightest {
                    brightest = lum[q];
                }
            }
        });
        // A pixel with a single like neighbour is a thin feature, not a
        // firefly we could tell apart.
        if count < 2 {
            continue;
        }
        let limit = k * brightest;
        if lum[p] > limit {
            let s = if limit > 0.0 { limit / lum[p] } else { 0.0 };
            irr[p] = [irr[p][0] * s, irr[p][1] * s, irr[p][2] * s];
        }
    }
}

/// The robust spatial variance estimate (see the module docs); 0 for
/// missing pixels.
pub(crate) fn estimate(g: &Guides, irr: &[[f32; 3]], valid: &[bool], radius: u32) -> Vec<f32> {
    let lum: Vec<f32> = irr.iter().map(|&c| luminance(c)).collect();
    let resid = residuals(g, &lum, valid);
    let r = radius as isize;
    let side = (2 * radius + 1) as usize;
    let min_same = (2 * side * side).div_ceil(5);
    let mut var = vec![0.0f32; lum.len()];
    let mut set = Vec::with_capacity(side * side);
    for p in 0..lum.len() {
        if !valid[p] {
            continue;
        }
        set.clear();
        window(g, p, r, |q| {
            if !resid[q].is_nan() && g.geometric_weight(p, q) >= SAME_SURFACE {
                set.push(resid[q]);
            }
        });
        if set.len() < min_same {
            set.clear();
            window(g, p, r, |q| {
                if !resid[q].is_nan() {
                    set.push(resid[q]);
                }
            });
        }
        if set.is_empty() {
            continue;
        }
        // The order statistic is the same value whatever order the
        // selection visits, so this is deterministic.
        let mid = set.len() / 2;
        let (_, m, _) = set.select_nth_unstable_by(mid, f32::total_cmp);
        let sd = *m * (1.0 / RESIDUAL_MEDIAN);
        var[p] = sd * sd;
    }
    var
}

/// Step 1 of the estimate: each pixel's smallest second difference; NaN
/// where no pair of neighbours is valid (or the pixel itself is missing).
fn residuals(g: &Guides, lum: &[f32], valid: &[bool]) -> Vec<f32> {
    let (w, h) = (g.width as isize, g.height as isize);
    (0..lum.len())
        .map(|p| {
            let mut best = f32::NAN;
            if !valid[p] {
                return best;
            }
            let (x, y) = ((p % g.width) as isize, (p / g.width) as isize);
            for (dx, dy) in [(1isize, 0isize), (0, 1), (1, 1), (1, -1)] {
                let (ax, ay, bx, by) = (x + dx, y + dy, x - dx, y - dy);
                if ax < 0 || ax >= w || bx < 0 || bx >= w || ay < 0 || ay >= h || by < 0 || by >= h {
                    continue;
                }
                let (a, b) = ((ay * w + ax) as usize, (by * w + bx) as usize);
                if valid[a] && valid[b] {
                    let r = (lum[p] - 0.5 * (lum[a] + lum[b])).abs();
                    if best.is_nan() || r < best {
                        best = r;
                    }
                }
            }
            best
        })
        .collect()
}

/// A caller's variance plane (of the mean luminance of the *modulated*
/// colour) converted to the demodulated signal: divided by the squared
/// luminance of the demodulation factor, and capped at `1e30` so sums of
/// it stay finite. Entries that are negative or not finite take the
/// estimate's value (`fallback`, computed only when some entry needs it).
pub(crate) fn from_plane(g: &Guides, plane: &[f32], fallback: &[f32]) -> Vec<f32> {
    (0..plane.len())
        .map(|p| {
            let v = plane[p];
            if v.is_finite() && v >= 0.0 {
                let l = luminance(g.factor[p]);
                (v / (l * l)).min(1e30)
            } else {
                fallback.get(p).copied().unwrap_or(0.0)
            }
        })
        .collect()
}
